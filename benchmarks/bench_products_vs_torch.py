"""The eval forward's 1x1 products: XLA:CPU's dot and ours ('blas') against PyTorch's,
shape by shape.

  python benchmarks/bench_products_vs_torch.py                 # batch 8 at 299
  python benchmarks/bench_products_vs_torch.py --image_size=150 --repeats=9

Issue 27 asks for an eval forward at 299 >= 1.0x timm's `legacy_xception`; the profile
(docs/performance/cpu.md) puts ~70% of our eval step in the 1x1 products. This script
takes every matrix product of our eval forward (the `dot_general`s of the jaxpr of full-
width Xception, float32, the CPU's `auto` implementations) and times each shape alone:
XLA's `x @ w` (jitted, the package's XLA:CPU flags), `pointwise_impl='blas'`'s product
(MKL's single-threaded sgemm split over XLA's pool; models/pointwise.py, when it loads)
and, on the same float32 NumPy data,
the 1x1 convolution timm runs (`torch.nn.functional.conv2d` on a channels_last NCHW
tensor) and `torch.mm`, alternating, median of --repeats calls, each timed call after
an untimed one of the same engine (timed right after another engine's call, XLA's dot
on 2888 x 728 x 728 measured 242 GFLOP/s instead of ~310: PyTorch's OpenMP threads
spin after their call, and the other engine's data fill the caches). It prints GFLOP/s per
shape and the sum over the forward (each shape times the number of its products):
the milliseconds the products take per eval step in each engine.
"""
from __future__ import annotations

import collections
import statistics
import time

from absl import app, flags

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined when run as a script only: tests import `product_shapes` in a process
  whose absl flags may hold the same names."""
  flags.DEFINE_integer("image_size", 299, "Input size of the eval forward.")
  flags.DEFINE_integer("batch_size", 8, "Images per step.")
  flags.DEFINE_integer("repeats", 7, "Alternating timed calls per shape and engine.")
  flags.DEFINE_integer("threads", 2, "torch.set_num_threads (XLA uses every core).")


def product_shapes(image_size: int, batch_size: int) -> collections.Counter:
  """{(M, K, N): count} of the 2-D matrix products in Xception's eval forward."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from xception_jax.models import factory  # pylint: disable=import-outside-toplevel

  # XLA's products, so that each is a dot_general in the jaxpr ('blas' makes them custom calls).
  model = factory.create_model({"architecture": "xception", "pointwise_impl": "xla"},
                               num_classes=1000)
  images = jax.ShapeDtypeStruct((batch_size, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, images)
  shapes = collections.Counter()

  def visit(inner):
    for eqn in inner.eqns:
      if eqn.primitive.name == "dot_general":
        lhs, rhs = (v.aval.shape for v in eqn.invars)
        (contract, _), _ = eqn.params["dimension_numbers"]
        if len(lhs) == 2 and len(rhs) == 2 and tuple(contract) == (1,):
          shapes[(lhs[0], lhs[1], rhs[1])] += 1
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          if isinstance(sub, jax.extend.core.ClosedJaxpr):
            visit(sub.jaxpr)
          elif isinstance(sub, jax.extend.core.Jaxpr):
            visit(sub)

  visit(jaxpr.jaxpr)
  return shapes


def main(argv):
  del argv
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import xception_jax  # pylint: disable=import-outside-toplevel,unused-import  # XLA:CPU flags

  torch.set_num_threads(FLAGS.threads)
  shapes = product_shapes(FLAGS.image_size, FLAGS.batch_size)
  print(f"jax {jax.__version__}, torch {torch.__version__} ({FLAGS.threads} threads, "
        f"{torch.backends.cpu.get_cpu_capability()}); eval forward at {FLAGS.image_size}, "
        f"batch {FLAGS.batch_size}: {sum(shapes.values())} products, {len(shapes)} shapes")
  from xception_jax.models import pointwise  # pylint: disable=import-outside-toplevel

  xla_dot = jax.jit(lambda x, w: x @ w)
  blas_dot = None
  if pointwise.resolve_pointwise_impl("auto") == "blas":
    blas_dot = jax.jit(lambda x, w: pointwise.pointwise_product(x, w, "blas"))
  rng = np.random.default_rng(0)
  totals = collections.defaultdict(float)
  names = {"xla": "XLA dot", "blas": "ours blas", "conv": "torch conv2d 1x1 (channels_last)",
           "mm": "torch.mm"}
  if blas_dot is None:
    del names["blas"]
    print("(pointwise_impl 'blas' unavailable here: no 'ours blas' column)")
  print("| M x K x N | count | " + " | ".join(names.values()) + " | GFLOP/s |")
  print("|---|---|" + "---|" * len(names) + "---|")
  for (m, k, n), count in sorted(shapes.items(), key=lambda item: -item[0][1] * item[0][2]):
    x = rng.standard_normal((m, k), np.float32)
    w = (rng.standard_normal((k, n), np.float32) / np.sqrt(k)).astype(np.float32)
    side = int(round((m / FLAGS.batch_size) ** 0.5))
    if FLAGS.batch_size * side * side != m:
      raise ValueError(f"{m} rows are not {FLAGS.batch_size} square maps")
    xj, wj = jax.device_put(x), jax.device_put(w)
    xt, wt = torch.from_numpy(x), torch.from_numpy(w)
    # NHWC rows as timm's channels_last NCHW tensor (the same memory), OIHW 1x1 kernel.
    xc = xt.view(FLAGS.batch_size, side, side, k).permute(0, 3, 1, 2)
    wc = wt.t().contiguous().view(n, k, 1, 1)
    engines = {
        "xla": lambda: xla_dot(xj, wj).block_until_ready(),
        "blas": lambda: blas_dot(xj, wj).block_until_ready(),
        "conv": lambda: torch.nn.functional.conv2d(xc, wc),
        "mm": lambda: torch.mm(xt, wt),
    }
    engines = {name: run for name, run in engines.items() if name in names}
    reference = np.asarray(xla_dot(xj, wj))
    if blas_dot is not None:
      np.testing.assert_allclose(np.asarray(blas_dot(xj, wj)), reference, rtol=1e-3, atol=1e-3)
    with torch.no_grad():
      conv = engines["conv"]().permute(0, 2, 3, 1).reshape(m, n).numpy()
      np.testing.assert_allclose(conv, reference, rtol=1e-3, atol=1e-3)
      np.testing.assert_allclose(engines["mm"]().numpy(), reference, rtol=1e-3, atol=1e-3)
      times = {name: [] for name in engines}
      for _ in range(FLAGS.repeats):
        for name, run in engines.items():
          run()  # untimed: the other engine's threads spin and its data fill the caches
          start = time.perf_counter()
          run()
          times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    gflop = 2 * m * k * n / 1e9
    for name, seconds in medians.items():
      totals[name] += count * seconds
    print(f"| {m} x {k} x {n} | {count} | " + " | ".join(
        f"{gflop / medians[name]:.0f}" for name in engines) + " | |", flush=True)
  print("per eval step (ms, sum over the products): " + ", ".join(
      f"{name} {1e3 * total:.0f}" for name, total in totals.items()))


if __name__ == "__main__":
  _define_flags()
  app.run(main)
