"""The train stream against the previous tf.data pipeline, side by side.

  python benchmarks/bench_train_stream.py throughput [--baseline REF] [--records 512]
                                                    [--repeats 2] [--batches 24]
  python benchmarks/bench_train_stream.py resume [--baseline REF] [--records 50000]

Both run the public entry point `input_pipeline.create_datasets(config, 0, 1,
start_step)` of two code trees on the same generated corpus, each measurement in a
fresh Python process:

  old   the input_pipeline/ of git REF (default: c6a3c6e, the last `main` before the
        index-based stream: the skip-based pipeline with a
        per-process shuffle buffer that reads TFRecords sequentially), extracted with
        `git archive` into a temporary directory;
  new   this tree's (the index-based stream, train_stream.py), on the same TFRecord
        files (record-offset index) and on their ArrayRecord conversion.

throughput  host images/s of train batches at 299 with Inception augmentation
            (distorted crop decoded by decode_and_crop_jpeg, flip, resize), batch 32,
            all cores, from `--records` records that cycle through 64 synthetic
            500x375 JPEGs (benchmarks/bench_input_pipeline.py's, ~74 KiB each).
            Runs alternate old/new `--repeats` times (the machine may be shared).
resume      seconds from `create_datasets(start_step=s)` to the first train batch, at
            stream positions 0, half an epoch, one epoch less one batch (the old
            pipeline's worst case in epoch 1: it skips all but one batch of the
            epoch) and ten and a half epochs, on `--records` small (32x32 JPEG)
            records, batch 64, image_size 32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# ---- The worker: one measurement in a fresh process, against the tree at --root.

def _worker(args) -> None:
  sys.path.insert(0, args.root)
  import input_pipeline  # pylint: disable=import-outside-toplevel
  config = input_pipeline.default_data_config()
  config.dataset = "tfrecord_multilabel:" + args.files
  config.eval_split = None
  config.num_classes = args.num_classes
  config.image_size = args.image_size
  config.batch_size = args.batch_size
  if args.mode == "throughput":
    bundle = input_pipeline.create_datasets(config, 0, 1, start_step=0)
    for _ in range(args.warmup):
      next(bundle.train)
    start = time.perf_counter()
    for _ in range(args.batches):
      batch = next(bundle.train)
    seconds = time.perf_counter() - start
    assert batch["image"].shape == (args.batch_size, args.image_size,
                                    args.image_size, 3)
    result = {"images_per_s": args.batches * args.batch_size / seconds}
  else:
    start = time.perf_counter()
    bundle = input_pipeline.create_datasets(config, 0, 1, start_step=args.step)
    next(bundle.train)
    result = {"seconds_to_first_batch": time.perf_counter() - start}
  print("RESULT " + json.dumps(result), flush=True)


HUNG_AT_EXIT = []  # Workers that printed their result but did not exit.


def _measure(root: str, files: str, mode: str, **kw) -> dict:
  command = [sys.executable, os.path.abspath(__file__), "_worker", "--root", root,
             "--files", files, "--mode", mode]
  for key, value in kw.items():
    command += [f"--{key}", str(value)]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  # The result is read as soon as it is printed: a worker that then fails to exit
  # (a tf.data iterator destroyed during interpreter shutdown can wait forever for
  # reader threads, docs/performance/input_pipeline.md) is killed and reported, not
  # waited for.
  with tempfile.TemporaryFile("w+") as err, subprocess.Popen(
      command, stdout=subprocess.PIPE, stderr=err, text=True, env=env) as proc:
    result = None
    for line in proc.stdout:
      if line.startswith("RESULT "):
        result = json.loads(line[len("RESULT "):])
        break
    try:
      proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
      proc.kill()
      HUNG_AT_EXIT.append(" ".join(command[3:]))
      print(f"  (worker hung at exit and was killed: {mode} {kw})", flush=True)
    if result is None:
      err.seek(0)
      raise RuntimeError(f"{' '.join(command)} failed:\n{err.read()[-3000:]}")
  return result


# ---- The parent: corpora, the old tree, the table.

def _old_tree(ref: str, dest: str) -> str:
  """input_pipeline/ and xception_jax/ of git `ref`, extracted under dest."""
  archive = subprocess.run(["git", "-C", ROOT, "archive", ref, "input_pipeline",
                            "xception_jax"], capture_output=True, check=True).stdout
  subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
  return dest


def _corpus(directory: str, records: int, image_side: int | None,
            num_classes: int) -> tuple[str, str]:
  """TFRecord shards and their ArrayRecord conversion; returns the two globs."""
  sys.path.insert(0, ROOT)
  sys.path.insert(0, HERE)
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from input_pipeline import convert_tfrecords, tfrecord_format  # pylint: disable=import-outside-toplevel
  if image_side is None:
    import bench_input_pipeline  # pylint: disable=import-outside-toplevel
    jpegs = bench_input_pipeline.synthetic_jpegs(64)
  else:
    rng = np.random.default_rng(0)
    jpegs = [tf.io.encode_jpeg(rng.integers(0, 256, (image_side, image_side, 3),
                                            dtype=np.uint8)).numpy()
             for _ in range(64)]
  rng = np.random.default_rng(1)
  examples = ({"image": jpegs[i % len(jpegs)],
               "labels": sorted(set(rng.integers(0, num_classes, 3).tolist()))}
              for i in range(records))
  tfrecord_format.write_examples(os.path.join(directory, "tfr", "train-*.tfrecord"),
                                 examples, num_shards=8)
  tfr = os.path.join(directory, "tfr", "train-*.tfrecord")
  convert_tfrecords.convert(tfr, os.path.join(directory, "ar"))
  return tfr, os.path.join(directory, "ar", "train-*.array_record")


def _header(args) -> None:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  cores = len(os.sched_getaffinity(0))
  print(f"baseline (old): git {args.baseline}; new: this tree; TensorFlow "
        f"{tf.__version__}; Python {sys.version.split()[0]}; {cores} cores; load "
        f"average {os.getloadavg()[0]:.1f} at start", flush=True)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("command", choices=["throughput", "resume", "_worker"])
  parser.add_argument("--baseline", default="c6a3c6e")
  parser.add_argument("--records", type=int)
  parser.add_argument("--repeats", type=int, default=2)
  # Worker arguments.
  parser.add_argument("--mode", choices=["throughput", "resume"])
  parser.add_argument("--root")
  parser.add_argument("--files")
  parser.add_argument("--num_classes", type=int, default=20)
  parser.add_argument("--image_size", type=int)
  parser.add_argument("--batch_size", type=int)
  parser.add_argument("--batches", type=int, default=0)
  parser.add_argument("--warmup", type=int, default=0)
  parser.add_argument("--step", type=int, default=0)
  args = parser.parse_args(argv)
  if args.command == "_worker":
    _worker(args)
    return
  _header(args)
  with tempfile.TemporaryDirectory() as tmp:
    os.makedirs(os.path.join(tmp, "old"))
    old = _old_tree(args.baseline, os.path.join(tmp, "old"))
    start = time.perf_counter()
    if args.command == "throughput":
      records = args.records or 512
      tfr, ar = _corpus(os.path.join(tmp, "data"), records, None, 20)
      print(f"corpus: {records} records (64 distinct 500x375 JPEGs) in 8 shards, "
            f"written in {time.perf_counter() - start:.0f} s", flush=True)
      kw = dict(image_size=299, batch_size=32, batches=args.batches or 24, warmup=4)
      runs = {"old, TFRecord": (old, tfr), "new, TFRecord": (ROOT, tfr),
              "new, ArrayRecord": (ROOT, ar)}
      rates = {name: [] for name in runs}
      for _ in range(args.repeats):
        for name, (root, files) in runs.items():
          rates[name].append(_measure(root, files, "throughput", **kw)["images_per_s"])
          print(f"  {name:18s} {rates[name][-1]:7.1f} images/s", flush=True)
      base = rates["old, TFRecord"]
      print(f"\nimages/s at 299, batch 32, all cores, over {args.repeats} rounds:")
      print(f"  {'':18s} {'best':>7s} {'median':>7s}   ratio to old: best, median, "
            "per round (min-max)")
      for name, values in rates.items():
        rounds = [v / b for v, b in zip(values, base)]
        print(f"  {name:18s} {max(values):7.1f} {statistics.median(values):7.1f}   "
              f"{max(values) / max(base):.2f}, "
              f"{statistics.median(values) / statistics.median(base):.2f}, "
              f"{min(rounds):.2f}-{max(rounds):.2f}")
    else:
      records = args.records or 50_000
      tfr, ar = _corpus(os.path.join(tmp, "data"), records, 32, 20)
      print(f"corpus: {records} records (32x32 JPEGs) in 8 shards, written in "
            f"{time.perf_counter() - start:.0f} s", flush=True)
      batch = 64
      positions = {"0": 0, "0.5 epoch": records // 2,
                   "1 epoch - 1 batch": records - batch,
                   "10.5 epochs": 10 * records + records // 2}
      runs = {"old, TFRecord": (old, tfr), "new, TFRecord": (ROOT, tfr),
              "new, ArrayRecord": (ROOT, ar)}
      print("\nseconds from create_datasets(start_step) to the first batch:")
      print(f"  {'position':20s}" + "".join(f"{name:>18s}" for name in runs))
      for label, position in positions.items():
        step = position // batch
        row = []
        for root, files in runs.values():
          row.append(_measure(root, files, "resume", image_size=32, batch_size=batch,
                              step=step)["seconds_to_first_batch"])
        print(f"  {label + f' (step {step})':20s}" + "".join(f"{t:18.2f}" for t in row),
              flush=True)
  print(f"load average {os.getloadavg()[0]:.1f} at the end; workers hung at exit: "
        f"{len(HUNG_AT_EXIT)}")


if __name__ == "__main__":
  main()
