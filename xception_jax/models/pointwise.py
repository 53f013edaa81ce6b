"""The 1x1 convolution's matrix product and its implementations (`pointwise_impl`).

- 'xla': XLA's dot. On the CPU backend it is written on x flattened to 2-D ([pixels, C])
  and reshaped back: the same function, but the kernel gradient autodiff derives is
  then a 2-D dot with one contracting axis, which XLA:CPU runs on its operands as they
  lie; over the 4-D activations it contracts three axes, XLA canonicalises the dot by
  transposing the (pixels, F) cotangent into an (F, pixels) copy fused into the
  producer (BatchNorm's backward pass), a strided write that took ~19% of the training
  step's thunk time at 150x150 (docs/performance/cpu.md, "Issue 27"). Other backends
  keep the plain product.
- 'blas' (CPU, float32): the same 2-D product, its forward and both gradients, by a
  CBLAS sgemm (Intel MKL from its wheel) through the native handler
  (xception_jax/native: gemm_cpu.cc, blas.py), one single-threaded call per thread of
  XLA's pool. Other dtypes (bfloat16) use 'xla'.
- 'auto': 'blas' on the CPU backend when the native library and a CBLAS library load,
  else 'xla'.
All compute the same function; tests/test_pointwise.py holds them to it.
"""
from __future__ import annotations

import functools

import jax
from jax.ad_checkpoint import checkpoint_name

from xception_jax import native as _native
from xception_jax.models import implementations

POINTWISE_IMPLEMENTATIONS = ("xla", "blas")
# The products' outputs carry this name, so that a rematerialisation policy can keep
# them whichever engine computed them (models/remat.py).
CHECKPOINT_NAME = "pointwise_product"


def _xla_product(x: jax.Array, matrix: jax.Array) -> jax.Array:
  return x @ matrix


def pointwise_product(x: jax.Array, matrix: jax.Array, impl: str = "xla") -> jax.Array:
  """x [..., C] @ matrix [C, F] over the last axis, by `impl` ('xla' or 'blas';
  resolve 'auto' first with `resolve_pointwise_impl`), named CHECKPOINT_NAME."""
  if impl not in POINTWISE_IMPLEMENTATIONS:
    raise ValueError(f"pointwise_product: impl must be one of {POINTWISE_IMPLEMENTATIONS} "
                     f"(resolve 'auto' first); got {impl!r}.")
  if x.ndim <= 2 or (impl == "xla" and jax.default_backend() != "cpu"):
    product = _product(x, matrix, impl)
  else:
    rows = _product(x.reshape(-1, x.shape[-1]), matrix, impl)
    product = rows.reshape(*x.shape[:-1], matrix.shape[-1])
  return checkpoint_name(product, CHECKPOINT_NAME)


def _product(x: jax.Array, matrix: jax.Array, impl: str) -> jax.Array:
  if impl == "blas" and x.ndim == 2:
    return _native.matmul(x, matrix, fallback=_xla_product)
  return x @ matrix


@functools.cache
def _default() -> str:
  if jax.default_backend() == "cpu" and _native.blas_available():
    return "blas"
  return "xla"


def resolve_pointwise_impl(name: str) -> str:
  """Maps 'auto' to the fast choice for the default backend; validates the name.

  'blas' needs the CPU backend and a loaded CBLAS library: otherwise a one-line error
  says why (and how to install one).
  """
  resolved = implementations.resolve("pointwise_impl", name, POINTWISE_IMPLEMENTATIONS,
                                     _default)
  if resolved == "blas":
    if jax.default_backend() != "cpu":
      raise ValueError(f"pointwise_impl 'blas' runs on the CPU backend only; this one is "
                       f"{jax.default_backend()!r}: use 'auto' or 'xla'.")
    if not _native.blas_available():
      raise ValueError(f"pointwise_impl 'blas' is unavailable: "
                       f"{_native.blas_unavailable_reason()}")
  return resolved
