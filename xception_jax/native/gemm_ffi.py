"""Float32 matrix products by the native BLAS handler, as a JAX function with a custom VJP.

`matmul(x, w)` = x [M, K] @ w [K, N] through one XLA custom call (gemm_cpu.cc), which
splits the rows over XLA's intra-op pool and runs one single-threaded CBLAS sgemm per
thread (the library: blas.py). The gradients are the same call with sgemm's transpose
flags, no copies:

  input gradient   dx = g @ w^T
  kernel gradient  dw = x^T @ g

float32 only: other dtypes go to the `fallback` the caller passes in (the models pass
XLA's product).

Sharding: each of the three products is a `custom_partitioning` function, so that under
a jit sharded over several devices (data parallelism: the rows, i.e. the pixels of a
batch split by image) every device multiplies only its own rows: the forward and the
input gradient keep the rows' sharding with no communication, the kernel gradient
(a sum over the rows) is each device's partial product summed by one all-reduce over
the rows' mesh axes. The other dimensions are replicated (gathered if they were
sharded), and rows that do not split evenly over their axes are gathered too.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

from xception_jax.native import blas, loader


def _require_library() -> None:
  """Loads the native library and the CBLAS sgemm (once); a clear error without them."""
  if not blas.available():
    raise RuntimeError(f"pointwise_impl 'blas': {blas.unavailable_reason()}")


def _gemm(a: jax.Array, b: jax.Array, trans_a: bool, trans_b: bool) -> jax.Array:
  _require_library()
  m = a.shape[1] if trans_a else a.shape[0]
  n = b.shape[0] if trans_b else b.shape[1]
  return jax.ffi.ffi_call(loader.GEMM_TARGET, jax.ShapeDtypeStruct((m, n), jnp.float32),
                          vmap_method="sequential")(a, b, trans_a=trans_a, trans_b=trans_b)


def _rows_axes(mesh, arg_shape):
  """The mesh axes the first operand's rows are split over, when they split evenly;
  else None (replicated)."""
  sharding = arg_shape.sharding
  spec = sharding.spec if isinstance(sharding, NamedSharding) else P()
  axes = spec[0] if len(spec) else None
  if axes is None:
    return None
  names = axes if isinstance(axes, tuple) else (axes,)
  shards = int(np.prod([mesh.shape[name] for name in names]))
  return axes if arg_shape.shape[0] % shards == 0 else None


def _partitioned(trans_a: bool, trans_b: bool, rule: str, replicated: tuple[str, ...],
                 sum_rows: bool):
  """One of the three products as a `custom_partitioning` function of (a, b): a's
  first axis (the rows) keeps its sharding; with `sum_rows` (the kernel gradient, whose
  rows are contracted) b is split like a and the partial products are summed."""

  @custom_partitioning
  def product(a, b):
    return _gemm(a, b, trans_a, trans_b)

  def shardings(mesh, rows):
    operand = NamedSharding(mesh, P(rows, None))
    b = operand if sum_rows else NamedSharding(mesh, P(None, None))
    result = NamedSharding(mesh, P(None, None) if sum_rows else P(rows, None))
    return result, (operand, b)

  def infer_sharding_from_operands(mesh, arg_shapes, result_shape):
    del result_shape
    return shardings(mesh, _rows_axes(mesh, arg_shapes[0]))[0]

  def partition(mesh, arg_shapes, result_shape):
    del result_shape
    rows = _rows_axes(mesh, arg_shapes[0])

    def lower(a, b):
      local = _gemm(a, b, trans_a, trans_b)
      return jax.lax.psum(local, rows) if sum_rows and rows is not None else local

    return (mesh, lower, *shardings(mesh, rows))

  options = {"reduction_factors": ("m",)} if sum_rows else {}
  product.def_partition(partition=partition,
                        infer_sharding_from_operands=infer_sharding_from_operands,
                        sharding_rule=rule, need_replication_factors=replicated, **options)
  return product


# Factors of the sharding rules: m = rows (pixels), k = input and n = output channels.
_forward = _partitioned(False, False, "m k, k n -> m n", ("k", "n"), sum_rows=False)
_input_grad = _partitioned(False, True, "m n, k n -> m k", ("n", "k"), sum_rows=False)
_kernel_grad = _partitioned(True, False, "m k, m n -> k n", ("k", "n"), sum_rows=True)


@jax.custom_vjp
def _matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  return _forward(x, w)


def _matmul_fwd(x, w):
  return _forward(x, w), (x, w)


def _matmul_bwd(residuals, g):
  x, w = residuals
  g = g.astype(jnp.float32)
  return _input_grad(g, w), _kernel_grad(x, g)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(x: jax.Array, w: jax.Array, *,
           fallback: Optional[Callable[[jax.Array, jax.Array], jax.Array]] = None) -> jax.Array:
  """x [M, K] @ w [K, N] by the CBLAS sgemm, differentiable in both arguments.

  Inputs other than float32 call `fallback(x, w)` or, without one, raise a one-line
  error.
  """
  if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
    raise ValueError(f"matmul needs x [M, K] and w [K, N]; got {x.shape} and {w.shape}.")
  if x.dtype != jnp.float32 or w.dtype != jnp.float32:
    if fallback is None:
      raise ValueError(f"the BLAS products compute float32; got {x.dtype} and {w.dtype}: "
                       "pass fallback= (pointwise_impl='blas' in xception_jax.models passes "
                       "XLA's product).")
    return fallback(x, w)
  return _matmul(x, w)
