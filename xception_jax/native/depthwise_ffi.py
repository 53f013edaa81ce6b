"""The native CPU depthwise convolution as a JAX function with a custom VJP.

Same contract as `xception_jax.models.depthwise.depthwise_conv_shift` (whose argument
check is this module's `check_arguments`): NHWC inputs,
a (kh, kw, 1, C) kernel, stride 1, 'SAME' padding of odd kernels, an integer
`dilation`. Three XLA custom calls (depthwise_cpu.cc) do the work:

  forward          y  = correlate(x, taps)
  input gradient   dx = correlate(g, taps flipped in both spatial axes)
  kernel gradient  dtaps = sum_n dtaps_n, with dtaps_n = sum_{h,w} shifted x * g
                   from the library (float32 registers per row, float64 across rows);
                   the sum over the batch is a small XLA reduction.

float32 only: other dtypes (bfloat16 on CPU) go to the `fallback` the caller passes in;
`depthwise_impl='native'` (models/depthwise.py) passes the pure-JAX 'shift' form, whose
products XLA computes in that dtype. This package imports nothing from
`xception_jax.models`: the models import it. Under a sharded jit the custom calls are
opaque to XLA's partitioner, which gathers their operands (correct, not split).
"""
from __future__ import annotations

import functools
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from xception_jax.native import loader


def check_arguments(x: jax.Array, kernel: jax.Array, dilation: int) -> None:
  """One-line errors for a bad dilation or a kernel that is not (kh, kw, 1, C), C = x's
  channels, with odd kh and kw (every depthwise implementation's contract)."""
  if not isinstance(dilation, int) or dilation < 1:
    raise ValueError(f"depthwise dilation must be a positive integer; got {dilation!r}.")
  if x.ndim != 4 or kernel.ndim != 4:
    raise ValueError(f"depthwise convolution needs NHWC x and a (kh, kw, 1, C) kernel; got "
                     f"{x.shape} and {kernel.shape}.")
  kh, kw, one, channels = kernel.shape
  if one != 1 or channels != x.shape[-1]:
    raise ValueError(
        f"depthwise kernel must have shape (kh, kw, 1, C) with C = {x.shape[-1]} input "
        f"channels; got {kernel.shape}.")
  if kh % 2 == 0 or kw % 2 == 0:
    raise ValueError(f"depthwise kernel sizes must be odd for 'SAME' padding; got {(kh, kw)}.")


def _require_library() -> None:
  """Loads and registers the library (once); a clear error when it is unavailable."""
  if not loader.available():
    raise RuntimeError(f"depthwise_impl 'native': {loader.unavailable_reason()}")


def _correlate(x: jax.Array, taps: jax.Array, dilation: int) -> jax.Array:
  _require_library()
  return jax.ffi.ffi_call(loader.FORWARD_TARGET, jax.ShapeDtypeStruct(x.shape, x.dtype),
                          vmap_method="sequential")(x, taps, dilation=np.int64(dilation))


def _kernel_grad(x: jax.Array, g: jax.Array, kernel_size: tuple[int, int],
                 dilation: int) -> jax.Array:
  _require_library()
  per_sample = jax.ShapeDtypeStruct((x.shape[0], *kernel_size, x.shape[-1]), jnp.float32)
  dtaps = jax.ffi.ffi_call(loader.KERNEL_GRAD_TARGET, per_sample,
                           vmap_method="sequential")(x, g, dilation=np.int64(dilation))
  return jnp.sum(dtaps, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise_native(x: jax.Array, taps: jax.Array, dilation: int) -> jax.Array:
  return _correlate(x, taps, dilation)


def _depthwise_native_fwd(x, taps, dilation):
  return _correlate(x, taps, dilation), (x, taps)


def _depthwise_native_bwd(dilation, residuals, g):
  x, taps = residuals
  g = g.astype(jnp.float32)
  dx = _correlate(g, taps[::-1, ::-1, :], dilation)
  dtaps = _kernel_grad(x, g, taps.shape[:2], dilation)
  return dx, dtaps


_depthwise_native.defvjp(_depthwise_native_fwd, _depthwise_native_bwd)


def depthwise_conv_native(x: jax.Array, kernel: jax.Array, dilation: int = 1, *,
                          fallback: Optional[Callable[..., jax.Array]] = None) -> jax.Array:
  """Depthwise 'SAME' convolution by the native CPU kernel. Same contract as
  `depthwise_conv_shift`.

  The kernel computes float32; other dtypes call `fallback(x, kernel, dilation)`
  (`depthwise_impl='native'` passes `depthwise_conv_shift`), or, without one, raise a
  one-line error.
  """
  check_arguments(x, kernel, dilation)
  if x.dtype != jnp.float32 or kernel.dtype != jnp.float32:
    if fallback is None:
      raise ValueError(
          f"the native depthwise kernel computes float32; got {x.dtype} inputs and a "
          f"{kernel.dtype} kernel: pass fallback= (depthwise_impl='native' in "
          "xception_jax.models.depthwise passes the 'shift' form).")
    return fallback(x, kernel, dilation)
  return _depthwise_native(x, kernel[:, :, 0, :], dilation)
