"""xception_jax/event_writer.py: event files that TensorBoard reads, local or in parts."""
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.util import tensor_util

from xception_jax import event_writer, paths
from xception_jax.report import runs


def _scalars_by_tensorboard(logdir):
  """{tag: {step: value}} as TensorBoard's own EventAccumulator reads the directory."""
  acc = event_accumulator.EventAccumulator(
      str(logdir), size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  out = {}
  for tag in acc.Tags()["tensors"]:
    for e in acc.Tensors(tag):
      value = tensor_util.make_ndarray(e.tensor_proto)
      out.setdefault(tag, {})[e.step] = (
          value.item().decode() if value.dtype == object else float(value))
  return out


@pytest.mark.parametrize("parts", [False, True])
def test_tensorboard_reads_what_was_written(tmp_path, parts):
  rng = np.random.default_rng(0)
  values = {s: {"loss": float(rng.normal()), "top_1": float(rng.uniform())}
            for s in range(1, 7)}
  writer = event_writer.EventWriter(str(tmp_path), parts=parts)
  for step, scalars in values.items():
    writer.write_scalars(step, scalars)
    if step % 2 == 0:
      writer.flush()  # parts: one object per flush (3 objects)
  writer.write_texts(7, {"note": "hello"})
  writer.close()
  files = sorted(p.name for p in tmp_path.iterdir())
  assert len(files) == (4 if parts else 1), files  # 3 flushes + close
  got = _scalars_by_tensorboard(tmp_path)
  for tag in ("loss", "top_1"):
    # Stored as float32 tensors, as tf.summary.scalar stores them.
    assert got[tag] == {s: float(np.float32(v[tag])) for s, v in values.items()}
  assert got["note"] == {7: "hello"}
  # The report tool reads the same numbers through the path layer.
  assert runs.read_scalars(runs.event_files(str(tmp_path)))["loss"] == got["loss"]


def test_appends_across_flushes_locally_and_keeps_earlier_records(tmp_path):
  writer = event_writer.EventWriter(str(tmp_path), parts=False)
  writer.write_scalars(1, {"a": 1.0})
  writer.flush()
  first = paths.read_bytes(runs.event_files(str(tmp_path))[0])
  writer.write_scalars(2, {"a": 2.0})
  writer.close()
  (path,) = runs.event_files(str(tmp_path))
  assert paths.read_bytes(path).startswith(first)
  assert _scalars_by_tensorboard(tmp_path)["a"] == {1: 1.0, 2: 2.0}


def test_flushes_by_itself_after_flush_every_secs(tmp_path):
  writer = event_writer.EventWriter(str(tmp_path), parts=True, flush_every_secs=0.0)
  writer.write_scalars(3, {"a": 3.0})
  # Written without flush()/close(): the time since the last flush has passed.
  assert _scalars_by_tensorboard(tmp_path)["a"] == {3: 3.0}


def test_unsupported_summaries_say_what_is_supported(tmp_path):
  writer = event_writer.EventWriter(str(tmp_path))
  with pytest.raises(NotImplementedError, match="scalars, texts, histograms"):
    writer.write_images(0, {"x": np.zeros((1, 2, 2, 3))})


def test_records_after_the_last_flush_are_written_at_exit(tmp_path):
  """A writer never flushed nor closed (the trainer's last write after its final
  flush): the records reach the file when the process exits."""
  import subprocess  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = ("from xception_jax import event_writer; "
          f"w = event_writer.EventWriter({str(tmp_path)!r}); "
          "w.write_scalars(9, {'a': 9.0})")
  subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)
  assert _scalars_by_tensorboard(tmp_path)["a"] == {9: 9.0}


def test_two_writers_of_one_process_write_two_files(tmp_path):
  """A resumed run in the same process (tests, the study) gets its own event file."""
  for step in (1, 2):
    writer = event_writer.EventWriter(str(tmp_path))
    writer.write_scalars(step, {"a": float(step)})
    writer.close()
  files = runs.event_files(str(tmp_path))
  assert len(files) == 2
  assert [sorted(runs.read_scalars([f])["a"]) for f in files] == [[1], [2]]
