"""Times MAP@100 at FastEval14k's size: whole-matrix (jit, CPU) and streaming.

  python benchmarks/bench_map_at_k.py [--images 14000] [--classes 17000] [--repeats 3]

Synthetic data: float32 scores ``[images, classes]`` (standard normal noise,
+2.5 on the positives so the metric is neither 0 nor 1) and ~36 positives per
image, like FastEval14k's ~36.5 labels per image (FastEval14k has 6,000
classes; the JFT models score all 17,000). Every timing is taken after a
warm-up call (the compile); the best of ``--repeats`` is printed, with the CPU
time of that run (all threads), which helps to read a busy machine's figures.
"""

import argparse
import importlib
import os
import platform
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from xception_jax.evaluation import StreamingMapAtK, map_at_k, map_at_k_jax


def synthetic_problem(num_images, num_classes, labels_per_image, seed=0):
  """Scores and labels, generated without any per-element Python loop."""
  rng = np.random.default_rng(seed)
  labels = np.zeros((num_images, num_classes), bool)
  rows = np.repeat(np.arange(num_images), labels_per_image)
  labels[rows, rng.integers(0, num_classes, rows.size)] = True  # Rare repeats: ~36 per image.
  scores = rng.standard_normal((num_images, num_classes), dtype=np.float32)
  np.add(scores, 2.5, out=scores, where=labels)  # In place: positives score higher.
  return scores, labels


def best_time(fn, repeats):
  """(best wall seconds, CPU seconds of that run, result) after one warm-up call.

  CPU seconds (all threads) help read a wall time taken on a busy machine.
  """
  result = fn()
  runs = []
  for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    runs.append((time.perf_counter() - wall, time.process_time() - cpu))
  wall, cpu = min(runs)
  return wall, cpu, result


def report(name, wall, cpu, value, k):
  print(f"{name:56s} {wall:7.3f} s wall {cpu:7.3f} s CPU   MAP@{k} = {value:.6f}", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=14_000)
  parser.add_argument("--classes", type=int, default=17_000)
  parser.add_argument("--labels_per_image", type=int, default=36)
  parser.add_argument("--k", type=int, default=100)
  parser.add_argument("--batch", type=int, default=1024)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()

  print(f"jax {jax.__version__}, numpy {np.__version__}, python {platform.python_version()}, "
        f"backend {jax.default_backend()}, {os.cpu_count()} CPUs")
  start = time.perf_counter()
  scores, labels = synthetic_problem(args.images, args.classes, args.labels_per_image)
  print(f"data: scores {scores.shape} float32 ({scores.nbytes / 2**30:.2f} GiB), "
        f"{labels.sum() / args.images:.1f} positives per image, "
        f"generated in {time.perf_counter() - start:.2f} s")

  k = args.k
  device_scores, device_labels = jax.device_put(scores), jax.device_put(labels)
  jitted = jax.jit(lambda s, y: map_at_k_jax(s, y, k=k))
  map_lib = importlib.import_module("xception_jax.evaluation.map_at_k")
  ones = np.ones(args.classes, np.float32)

  def one_top_k():  # The blocked selection's baseline: one top_k over all images.
    ranked, positives = map_lib.rank_per_class_jit(device_scores, device_labels, k=k, block=1)
    return map_lib.finish_per_class(ranked, positives, ones)

  runs = [
      ("map_at_k, JAX arrays (checks + jit)",
       lambda: map_at_k(device_scores, device_labels, k=k)),
      ("map_at_k, NumPy arrays (checks + transfer + jit)",
       lambda: map_at_k(scores, labels, k=k)),
      ("jit(map_at_k_jax), JAX arrays (no checks)",
       lambda: float(jitted(device_scores, device_labels))),
      ("  baseline: one top_k over the transposed matrix", one_top_k),
  ]
  results = {}
  for name, fn in runs:
    wall, cpu, value = best_time(fn, args.repeats)
    results[name] = value
    report(name, wall, cpu, value, k)

  def stream():
    evaluator = StreamingMapAtK(args.classes, k=k)
    for start in range(0, args.images, args.batch):
      evaluator.update(scores[start:start + args.batch], labels[start:start + args.batch])
    return evaluator.result()

  wall, cpu, value = best_time(stream, args.repeats)
  report(f"StreamingMapAtK, batches of {args.batch} (NumPy)", wall, cpu, value, k)
  print(f"streaming == whole matrix (bit for bit): {value == results[runs[1][0]]}")

  wall, cpu, value = best_time(
      lambda: map_at_k(device_scores, device_labels, k=k, mode="per_image"), args.repeats)
  report("map_at_k mode=per_image, JAX arrays", wall, cpu, value, k)


if __name__ == "__main__":
  main()
