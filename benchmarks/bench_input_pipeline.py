"""Throughput of JPEG decode + Inception augmentation at 299 (tf.data, CPU).

  python benchmarks/bench_input_pipeline.py [--images 600] [--size 299]

Synthetic photo-like JPEGs (500x375, quality 90, ~ImageNet's typical size) are
encoded once in memory; the benchmark then times the training preprocessing of
input_pipeline/preprocessing.py (random distorted crop decoded with
decode_and_crop_jpeg, flip, bilinear resize, scaling) and the evaluation
preprocessing, each on one thread (images/s per core) and on all cores. A full
decode_jpeg of the same files is timed for reference.
"""

import argparse
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

import input_pipeline  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import
from input_pipeline import preprocessing  # pylint: disable=g-import-not-at-top,wrong-import-position


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def synthetic_jpegs(count: int, height: int = 375, width: int = 500):
  """Smooth colour fields, edges and sensor-like noise: realistic JPEG sizes."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  out = []
  for _ in range(count):
    f = rng.uniform(5, 60, size=6)
    p = rng.uniform(0, 6.3, size=6)
    img = np.stack([
        128 + 90 * np.sin(xx / f[0] + p[0]) * np.cos(yy / f[1] + p[1]),
        128 + 90 * np.sin(yy / f[2] + p[2]) * np.cos(xx / f[3] + p[3]),
        128 + 90 * np.sin((xx + yy) / f[4] + p[4]),
    ], -1)
    y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
    img[y0:y0 + height // 3, x0:x0 + width // 3] = rng.uniform(0, 255, size=3)
    img += rng.normal(0, 12, size=img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    out.append(tf.io.encode_jpeg(img, quality=90).numpy())
  return out


def rate(fn, jpegs, threads: int, images: int) -> float:
  ds = tf.data.Dataset.from_tensor_slices(jpegs).repeat().enumerate()
  ds = ds.map(fn, num_parallel_calls=threads if threads == 1 else
              tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(32).prefetch(2)
  options = tf.data.Options()
  options.threading.private_threadpool_size = threads
  options.threading.max_intra_op_parallelism = 1
  ds = ds.with_options(options)
  it = iter(ds)
  for _ in range(3):  # Warm up (tracing, thread start).
    next(it)
  batches = max(images // 32, 1)
  start = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * 32 / (time.perf_counter() - start)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--images", type=int, default=640)
  parser.add_argument("--size", type=int, default=299)
  parser.add_argument("--distinct", type=int, default=64)
  args = parser.parse_args()
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
      else os.cpu_count()
  jpegs = synthetic_jpegs(args.distinct)
  size = args.size

  def train(k, jpeg):
    return preprocessing.preprocess_train(
        jpeg, tf.stack([tf.constant(0, tf.int64), k]), image_size=size)

  def evaluate(k, jpeg):
    del k
    return preprocessing.preprocess_eval(jpeg, image_size=size)

  def decode_only(k, jpeg):
    del k
    return tf.io.decode_jpeg(jpeg, channels=3)

  print(f"CPU: {cpu_model()}, {cores} cores available; TensorFlow "
        f"{tf.__version__}; {args.distinct} distinct 500x375 JPEGs, mean "
        f"{np.mean([len(j) for j in jpegs]) / 1024:.0f} KiB; output {size}x{size}")
  for name, fn in (("train (crop+decode+flip+resize)", train),
                   ("eval (central crop+resize)", evaluate),
                   ("full decode_jpeg only", decode_only)):
    one = rate(fn, jpegs, 1, args.images // 2)
    all_cores = rate(fn, jpegs, cores, args.images)
    print(f"{name:34s} 1 thread: {one:7.1f} images/s | {cores} threads: "
          f"{all_cores:7.1f} images/s = {all_cores / cores:6.1f} images/s/core")


if __name__ == "__main__":
  main()
