"""Depthwise convolution alone: forward and forward+backward time per layer.

  python benchmarks/bench_depthwise.py                          # 150 and 299, batch 8
  python benchmarks/bench_depthwise.py --impls=shift,native --image_sizes=299 --repeats=7

For each of Xception's depthwise shapes (3x3, stride 1, float32; entry, middle and
exit flow at the given input size) and each implementation, times the jitted forward
and the jitted forward + backward (the input and kernel gradients of sum(y * g)),
median of --repeats calls after a warm-up call, and prints milliseconds per layer and
the sum over the network's 34 depthwise layers. Compare figures only within one run.
"""
from __future__ import annotations

import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, ".")
from xception_jax.models import depthwise  # pylint: disable=wrong-import-position

flags.DEFINE_list("impls", ["feature_group", "shift", "native"], "Depthwise implementations.")
flags.DEFINE_list("image_sizes", ["150", "299"], "Input sides.")
flags.DEFINE_integer("batch_size", 8, "Batch.")
flags.DEFINE_integer("repeats", 5, "Timed calls per figure (the median is printed).")
flags.DEFINE_integer("dilation", 1, "Kernel dilation.")
FLAGS = flags.FLAGS


def xception_depthwise_shapes(image_size: int) -> list[tuple[int, int, int]]:
  """(side, channels, count) of Xception's depthwise convolutions (Fig. 5).

  Two valid 3x3 convolutions (stride 2, then 1) and one 'SAME' stride-2 max-pool
  after each entry-flow module and the first exit-flow module.
  """
  side = (image_size - 3) // 2 + 1 - 2
  sides = [side]
  for _ in range(4):
    sides.append((sides[-1] + 1) // 2)
  s1, s2, s3, middle, exit2 = sides
  return [(s1, 64, 1), (s1, 128, 1), (s2, 128, 1), (s2, 256, 1), (s3, 256, 1),
          (s3, 728, 1), (middle, 728, 8 * 3 + 2), (exit2, 1024, 1), (exit2, 1536, 1)]


def time_call(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  timings = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    timings.append(time.perf_counter() - start)
  return 1e3 * statistics.median(timings)


def measure(impl: str, side: int, channels: int) -> tuple[float, float]:
  conv = depthwise.DEPTHWISE_IMPLEMENTATIONS[impl]
  dilation = FLAGS.dilation
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(FLAGS.batch_size, side, side, channels)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 1, channels)), jnp.float32)
  g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  forward = jax.jit(lambda x, k: conv(x, k, dilation))
  both = jax.jit(jax.grad(lambda x, k, g: jnp.sum(conv(x, k, dilation) * g), argnums=(0, 1)))
  return time_call(forward, x, kernel), time_call(both, x, kernel, g)


def main(_):
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, batch {FLAGS.batch_size}, "
        f"float32, 3x3, dilation {FLAGS.dilation}; ms per layer, median of {FLAGS.repeats}")
  for impl in FLAGS.impls:
    depthwise.resolve_depthwise_impl(impl)  # a clear error for an unknown or unbuilt impl
  for image_size in map(int, FLAGS.image_sizes):
    shapes = xception_depthwise_shapes(image_size)
    print(f"\nimage {image_size}: {sum(n for *_, n in shapes)} depthwise layers")
    print(f"{'shape (HxWxC) x layers':24s}" +
          "".join(f"{impl + ' fwd':>18s}{impl + ' f+b':>18s}" for impl in FLAGS.impls))
    totals = {impl: [0.0, 0.0] for impl in FLAGS.impls}
    for side, channels, count in shapes:
      row = f"{side}x{side}x{channels} x {count}"
      line = f"{row:24s}"
      for impl in FLAGS.impls:
        fwd, both = measure(impl, side, channels)
        totals[impl][0] += count * fwd
        totals[impl][1] += count * both
        line += f"{fwd:18.2f}{both:18.2f}"
      print(line, flush=True)
    print(f"{'network total':24s}" +
          "".join(f"{t[0]:18.1f}{t[1]:18.1f}" for t in totals.values()))


if __name__ == "__main__":
  app.run(main)
