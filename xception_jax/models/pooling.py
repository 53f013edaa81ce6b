"""2D max-pooling in two implementations that compute the same function and gradient.

- 'xla': `flax.linen.max_pool` (`lax.reduce_window`); autodiff's gradient is XLA's
  select-and-scatter, which XLA:CPU runs as a slow scalar loop.
- 'shift': the window maximum as the elementwise maximum of kh * kw strided slices of
  the (-inf) padded input, and a `jax.custom_vjp` whose gradient routes each output's
  cotangent to the window position that holds the maximum, found by shifted compares,
  and places it back with `lax.pad` (interior padding = stride - 1): no scatter.
  Ties follow XLA's select-and-scatter for max (`select = ge`, scanning the window in
  row-major order): the FIRST position in row-major order that equals the maximum
  takes the whole cotangent.
- 'auto': 'shift' on the CPU backend (measured faster, docs/performance/cpu.md), 'xla'
  elsewhere.

NHWC inputs; padding 'SAME' (TensorFlow's: the extra pixel at the bottom/right) or
'VALID'. Tested against `nn.max_pool` and its autodiff gradient, ties included, in
tests/test_fast_layers.py.
"""
from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from xception_jax.models import implementations

MAX_POOL_IMPLEMENTATIONS = ("xla", "shift")


@functools.cache
def _cpu_default() -> str:
  return "shift" if jax.default_backend() == "cpu" else "xla"


def resolve_max_pool_impl(name: str) -> str:
  """Maps 'auto' to the fast choice for the default backend; validates the name."""
  return implementations.resolve("max_pool_impl", name, MAX_POOL_IMPLEMENTATIONS,
                                 _cpu_default)


def _padding(size: int, window: int, stride: int, padding: str) -> tuple[int, int, int]:
  """(low, high, output size) along one axis, as lax.padtype_to_pads computes them."""
  if padding == "VALID":
    return 0, 0, (size - window) // stride + 1
  out = -(-size // stride)
  total = max((out - 1) * stride + window - size, 0)
  return total // 2, total - total // 2, out


def _geometry(shape, window, strides, padding):
  (_, height, width, _), (kh, kw), (sh, sw) = shape, window, strides
  top, bottom, out_h = _padding(height, kh, sh, padding)
  left, right, out_w = _padding(width, kw, sw, padding)
  return (top, bottom, left, right), (out_h, out_w)


def _windows(x, window, strides, padding):
  """The kh * kw strided slices of the padded input, row-major: each [N, Ho, Wo, C]."""
  (top, bottom, left, right), (out_h, out_w) = _geometry(x.shape, window, strides, padding)
  padded = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)),
                   constant_values=-jnp.inf)
  (kh, kw), (sh, sw) = window, strides
  return [padded[:, i:i + (out_h - 1) * sh + 1:sh, j:j + (out_w - 1) * sw + 1:sw, :]
          for i in range(kh) for j in range(kw)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool_shift(x, window, strides, padding):
  return functools.reduce(jnp.maximum, _windows(x, window, strides, padding))


def _max_pool_shift_fwd(x, window, strides, padding):
  y = _max_pool_shift(x, window, strides, padding)
  return y, (x, y)


def _max_pool_shift_bwd(window, strides, padding, residuals, g):
  x, y = residuals
  (top, bottom, left, right), (out_h, out_w) = _geometry(x.shape, window, strides, padding)
  (kh, kw), (sh, sw) = window, strides
  height, width = x.shape[1], x.shape[2]
  zero = jnp.zeros((), g.dtype)
  taken = None
  dx = None
  for index, candidate in enumerate(_windows(x, window, strides, padding)):
    i, j = divmod(index, kw)
    hit = candidate == y
    chosen = hit if taken is None else hit & ~taken   # the first maximum wins
    taken = hit if taken is None else taken | hit
    routed = jnp.where(chosen, g, zero)
    # Output (p, q) came from padded position (i + p*sh, j + q*sw), i.e. input
    # (i + p*sh - top, j + q*sw - left): interior padding places it there, negative
    # edge padding crops what fell in the padding.
    config = ((0, 0, 0),
              (i - top, height - (i - top) - ((out_h - 1) * sh + 1), sh - 1),
              (j - left, width - (j - left) - ((out_w - 1) * sw + 1), sw - 1),
              (0, 0, 0))
    placed = lax.pad(routed, zero, config)
    dx = placed if dx is None else dx + placed
  return (dx,)


_max_pool_shift.defvjp(_max_pool_shift_fwd, _max_pool_shift_bwd)


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: str = "VALID", impl: str = "xla") -> jax.Array:
  """2D max-pooling of NHWC `x` by the implementation `impl` ('xla', 'shift', 'auto')."""
  window, strides = tuple(window), tuple(strides)
  if resolve_max_pool_impl(impl) == "xla":
    return nn.max_pool(x, window, strides=strides, padding=padding)
  if padding not in ("SAME", "VALID") or x.ndim != 4 or len(window) != 2:
    raise ValueError(f"max_pool_impl='shift' takes NHWC inputs, a 2D window and padding "
                     f"'SAME' or 'VALID'; got shape {x.shape}, window {window}, {padding!r}.")
  with jax.named_scope("max_pool"):  # names the ops in profiles (profile_train_step.py)
    return _max_pool_shift(x, window, strides, padding)
