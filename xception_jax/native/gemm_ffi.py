"""Float32 matrix products by the native BLAS handler, as a JAX function with a custom VJP.

`matmul(x, w)` = x [M, K] @ w [K, N] through one XLA custom call (gemm_cpu.cc), which
splits the rows over XLA's intra-op pool and runs one single-threaded CBLAS sgemm per
thread (the library: blas.py). The gradients are the same call with sgemm's transpose
flags, no copies:

  input gradient   dx = g @ w^T
  kernel gradient  dw = x^T @ g

float32 only: other dtypes go to the `fallback` the caller passes in (the models pass
XLA's product). Under a sharded jit the custom call is opaque to XLA's partitioner,
which gathers its operands (correct, not split), as for the native depthwise kernel.
"""
from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

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


@jax.custom_vjp
def _matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  return _gemm(x, w, False, False)


def _matmul_fwd(x, w):
  return _gemm(x, w, False, False), (x, w)


def _matmul_bwd(residuals, g):
  x, w = residuals
  g = g.astype(jnp.float32)
  return _gemm(g, w, False, True), _gemm(x, g, True, False)


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
