"""Workdir and data on gs://, against a local GCS emulator (gcp-storage-emulator).

The emulator (through tests/gcs_emulator.py, which adds the generation header and
conditions of GCS downloads that TensorStore needs) runs on a free port of 127.0.0.1
for this module and is stopped after it. Processes reach it through the two standard variables only: STORAGE_EMULATOR_HOST
(gcsfs, under xception_jax/paths.py) and TENSORSTORE_GCS_HTTP_URL (TensorStore,
under Orbax). The main.py runs work in an empty directory, which must stay empty.
"""
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from xception_jax import paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "xception-test"
NUM_CLASSES = 6
TINY = {"image_size": 72, "batch_size": 8, "eval_batch_size": 8,
        "model.num_middle_blocks": 1, "log_every_steps": 2, "eval_every_steps": 4,
        "checkpoint_every_steps": 2, "async_checkpointing": True,
        "progress_every_secs": 3600.0, "num_classes": NUM_CLASSES}

def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
  """http://127.0.0.1:PORT of a running emulator with an empty bucket BUCKET."""
  port = _free_port()
  url = f"http://127.0.0.1:{port}"
  store = tmp_path_factory.mktemp("gcs")
  log = open(store / "emulator.log", "wb")  # pylint: disable=consider-using-with
  proc = subprocess.Popen(
      [sys.executable, os.path.join(ROOT, "tests", "gcs_emulator.py"), "-d",
       str(store / "data"), "start", "--host=127.0.0.1", f"--port={port}",
       f"--default-bucket={BUCKET}"], stdout=log, stderr=subprocess.STDOUT)
  saved = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST",
                                          "TENSORSTORE_GCS_HTTP_URL")}
  os.environ["STORAGE_EMULATOR_HOST"] = os.environ["TENSORSTORE_GCS_HTTP_URL"] = url
  try:
    deadline = time.monotonic() + 30
    while True:
      try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
      except OSError:
        if time.monotonic() > deadline or proc.poll() is not None:
          raise RuntimeError("gcp-storage-emulator did not start within 30 s")
        time.sleep(0.2)
    yield url
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
      proc.kill()
    log.close()
    for k, v in saved.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v


@pytest.fixture(scope="module")
def corpus(emulator, tmp_path_factory):
  """A small TFRecord corpus on local disk and the same files in the bucket:
  {"local": dir, "remote": gs://dir}."""
  from input_pipeline import tfrecord_format  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  local = tmp_path_factory.mktemp("corpus")
  def examples(n):
    return [{"image": rng.integers(0, 256, (40 + i % 9, 44, 3), dtype=np.uint8),
             "labels": sorted(rng.choice(NUM_CLASSES, 1 + i % 3, replace=False).tolist())}
            for i in range(n)]
  tfrecord_format.write_examples(str(local / "train-*.tfrecord"), examples(40), 2)
  tfrecord_format.write_examples(str(local / "eval-*.tfrecord"), examples(16), 1)
  remote = f"gs://{BUCKET}/data"
  for name in sorted(os.listdir(local)):
    paths.write_bytes(f"{remote}/{name}", (local / name).read_bytes())
  return {"local": str(local), "remote": remote}


def _data_fields(root):
  return {"dataset": f"tfrecord_multilabel:{root}/train-*.tfrecord",
          "eval_files": f"{root}/eval-*.tfrecord"}


def _main(emulator, workdir, cwd, steps, data_root, extra=(), timeout=600):
  env = {k: v for k, v in os.environ.items()
         if k not in ("XCEPTION_JAX_TEST_FAULT", "EPATH_USE_TF")}
  cache = os.path.join(os.environ.get("PYTEST_JAX_CACHE", "/tmp"), "xception_jax_test_cache")
  env.update(PYTHONUNBUFFERED="1", PYTHONPATH=ROOT, STORAGE_EMULATOR_HOST=emulator,
             TENSORSTORE_GCS_HTTP_URL=emulator, JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  fields = {**TINY, **_data_fields(data_root), "num_train_steps": steps}
  command = [sys.executable, os.path.join(ROOT, "main.py"),
             f"--config={os.path.join(ROOT, 'configs', 'demo.py')}", f"--workdir={workdir}",
             *[f"--config.{k}={v}" for k, v in fields.items()], *extra]
  proc = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)
  return proc.returncode, proc.stdout


def _steps(root):
  """Finished steps under a checkpoint root in the bucket (Orbax's commit marker)."""
  return sorted(int(n) for n in paths.listdir(root)
                if n.isdigit() and paths.exists(f"{root}/{n}/commit_success.txt"))


@pytest.mark.slow
def test_workdir_in_the_bucket_resumes_and_moves_damage_aside(emulator, corpus, tmp_path):
  from xception_jax.report import runs  # pylint: disable=import-outside-toplevel
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  workdir = f"gs://{BUCKET}/run"
  root = f"{workdir}/checkpoints"

  # 1. A new run, data from the bucket too: everything lands in the bucket.
  code, log = _main(emulator, workdir, cwd, 4, corpus["remote"])
  assert code == 0, log[-5000:]
  assert os.listdir(cwd) == []
  assert _steps(root) == [2, 4]
  assert paths.isfile(f"{workdir}/config.json")
  scalars = runs.read_scalars(runs.event_files(workdir))
  assert sorted(scalars["train_loss"]) == [2, 4] and 4 in scalars["eval_map_at_100"]
  # The offset indexes were stored beside the data, in the bucket.
  assert sum(n.endswith(".offsets.npz") for n in paths.listdir(corpus["remote"])) == 3

  # 2. The same command with more steps resumes from the bucket at its step.
  code, log = _main(emulator, workdir, cwd, 6, corpus["remote"])
  assert code == 0, log[-5000:]
  assert f"Resuming from {root} at step 4" in log, log[-3000:]
  assert _steps(root)[-1] == 6 and paths.isfile(f"{workdir}/config_step4.json")
  assert os.listdir(cwd) == []

  # 3. Step 6 damaged in the bucket (its largest object cut to half): moved aside
  # inside the bucket, the run resumes from step 4 and trains to 6 again.
  objects = [f for f in paths.walk_files(f"{root}/6/variables")]
  largest = max(objects, key=paths.size)
  cut = paths.read_bytes(largest)[:paths.size(largest) // 2]
  paths.write_bytes(largest, cut)
  code, log = _main(emulator, workdir, cwd, 6, corpus["remote"])
  assert code == 0, log[-5000:]
  assert f"Checkpoint {root}/6 cannot be restored" in log, log[-3000:]
  assert f"Resuming from {root} at step 4" in log
  damaged = paths.listdir(f"{workdir}/checkpoints_damaged")
  assert len(damaged) == 1 and damaged[0].startswith("6-")
  kept = f"{workdir}/checkpoints_damaged/{damaged[0]}" + largest[len(f"{root}/6"):]
  assert paths.read_bytes(kept) == cut  # kept as it was, for inspection
  assert _steps(root)[-1] == 6
  assert os.listdir(cwd) == []


@pytest.mark.slow
def test_data_in_the_bucket_gives_the_same_batches_as_local_disk(corpus):
  import input_pipeline  # pylint: disable=import-outside-toplevel
  from configs import demo  # pylint: disable=import-outside-toplevel

  def batches(root):
    config = demo.get_config()
    config.update_from_flattened_dict({**TINY, **_data_fields(root)})
    data = input_pipeline.create_datasets(config, process_index=0, process_count=1,
                                          start_step=0)
    train = [next(data.train) for _ in range(3)]
    evaluation = list(data.eval_batches())
    return train, evaluation, data

  local_train, local_eval, local = batches(corpus["local"])
  remote_train, remote_eval, remote = batches(corpus["remote"])
  assert remote.num_train_examples == local.num_train_examples == 40
  for a, b in zip(local_train, remote_train, strict=True):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert len(local_eval) == len(remote_eval) == 2  # 16 eval examples, batches of 8
  for a, b in zip(local_eval, remote_eval, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


def test_missing_remote_paths_are_one_line_errors(emulator):
  from configs import demo  # pylint: disable=import-outside-toplevel
  from xception_jax import validation  # pylint: disable=import-outside-toplevel
  config = demo.get_config()
  config.update_from_flattened_dict({
      **TINY, **_data_fields(f"gs://{BUCKET}/no-such-dir")})
  with pytest.raises(validation.ConfigError) as info:
    validation.validate(config, f"gs://{BUCKET}/run-x")
  message = str(info.value)
  assert "\n" not in message and f"gs://{BUCKET}/no-such-dir/train-*.tfrecord" in message
  assert "no file matches" in message
  config = demo.get_config()
  with pytest.raises(validation.ConfigError, match="bucket gs://no-such-bucket does not "
                     "exist"):
    validation.validate(config, "gs://no-such-bucket/run")
  # The other path fields, each missing in the (existing) bucket.
  missing = f"gs://{BUCKET}/missing"
  for field, value, expected in [
      ("class_weights_file", f"{missing}/weights.txt", "no such file"),
      ("init_from", f"{missing}/run", "no such directory"),
      ("eval_files", f"{missing}/eval-*.tfrecord", "no file matches")]:
    config = demo.get_config()
    config.update_from_flattened_dict({**TINY, **_data_fields(f"gs://{BUCKET}/present")})
    config.update_from_flattened_dict({field: value})
    for name in ("train-0.tfrecord", "eval-0.tfrecord"):  # the other globs match
      paths.write_bytes(f"gs://{BUCKET}/present/{name}", b"")
    with pytest.raises(validation.ConfigError) as info:
      validation.validate(config)
    assert str(info.value).startswith(f"config.{field} = {value!r}: {expected}")


def test_an_unreachable_bucket_is_reported_fast(tmp_path):
  """A closed port as the endpoint: one line on stderr, exit 2, within seconds."""
  env = {k: v for k, v in os.environ.items() if k != "EPATH_USE_TF"}
  closed = f"http://127.0.0.1:{_free_port()}"
  env.update(STORAGE_EMULATOR_HOST=closed, TENSORSTORE_GCS_HTTP_URL=closed)
  start = time.monotonic()
  proc = subprocess.run(
      [sys.executable, "-c", "from xception_jax import paths; "
       "print(paths.check_reachable('gs://some-bucket/run', '--workdir', timeout_s=3))"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
      timeout=60, check=False)
  elapsed = time.monotonic() - start
  assert proc.returncode == 0
  (line,) = proc.stdout.strip().splitlines()
  assert line.startswith("--workdir: bucket gs://some-bucket did not answer within 3 s")
  assert closed in line
  assert elapsed < 30  # the client's own retries (minutes) do not hold up the exit


@pytest.mark.slow
def test_main_reports_an_unreachable_bucket_in_one_line_and_exits(tmp_path):
  """main.py with the endpoint on a closed port: exit 2 and one error line, before any
  compilation, within the 10 s bound plus start-up."""
  closed = f"http://127.0.0.1:{_free_port()}"
  start = time.monotonic()
  code, log = _main(closed, "gs://some-bucket/run", tmp_path, 4, "gs://some-bucket/data")
  elapsed = time.monotonic() - start
  assert code == 2, log[-3000:]
  errors = [line for line in log.splitlines() if line.startswith("error:")]
  assert errors == [
      f"error: config.dataset = 'tfrecord_multilabel:gs://some-bucket/data/train-*.tfrecord'"
      f": bucket gs://some-bucket did not answer within 10 s (STORAGE_EMULATOR_HOST="
      f"{closed}: is the emulator running?). (--debug shows the traceback)"], log[-3000:]
  assert "trainable parameters" not in log and elapsed < 90  # stopped before the model
  assert os.listdir(tmp_path) == []


def test_orbax_skips_and_removes_an_unfinished_step_in_the_bucket(emulator):
  """On GCS a step is finished when it holds commit_success.txt: one without it (a
  killed save) is not listed, and a writing manager removes it when it opens."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from xception_jax import checkpointing  # pylint: disable=import-outside-toplevel
  root = f"gs://{BUCKET}/orbax/checkpoints"
  manager = checkpointing.create_manager(root, asynchronous=False)
  checkpointing.save(manager, 1, variables={"params": {"w": jnp.arange(3.0)},
                                            "batch_stats": {}},
                     model_config={"num_classes": 3}, force=True)
  manager.close()
  assert paths.isfile(f"{root}/1/commit_success.txt")
  paths.write_bytes(f"{root}/2/variables/half_written", b"x")  # no commit_success.txt
  assert checkpointing.latest_step(root) == 1  # read-only: listed steps only
  assert paths.exists(f"{root}/2/variables/half_written")  # and left alone
  checkpointing.create_manager(root, asynchronous=False).close()
  assert paths.listdir(root) == ["1"]
  variables, _, step = checkpointing.load_variables(root)
  assert step == 1
  np.testing.assert_array_equal(jax.device_get(variables["params"]["w"]), [0.0, 1.0, 2.0])
