"""Depthwise spatial convolution: two implementations that compute the same thing.

A depthwise convolution ("a spatial convolution performed independently over each
channel of an input", paper section 1.2) with a kernel of shape (kh, kw, 1, C) in
Flax's HWIO layout.

- `depthwise_conv_feature_group`: `lax.conv_general_dilated` with
  `feature_group_count=C`. The reference, and the default on GPU/TPU, where XLA has
  a good kernel for it.
- `depthwise_conv_shift`: a shift-and-multiply formulation (pad, then the sum of
  kh*kw shifted slices times the kernel's taps) wrapped in a `jax.custom_vjp`
  whose input gradient is the same operation with the kernel flipped in both
  spatial axes. On XLA:CPU `feature_group_count` is 30-80x slower than other
  frameworks' depthwise kernels; this form is several times faster there
  (measured in shared/DESIGN.md and docs/performance/cpu.md).
- 'native' (`depthwise_conv_native` here, calling `xception_jax.native`'s kernel when
  its C++ library is built): the same custom VJP with the forward, input gradient and
  kernel gradient done by a C++ kernel registered with XLA through `jax.ffi`; float32
  on CPU (other dtypes take the shift form, which this module passes in). `auto`
  picks it on CPU when it loaded.

All take NHWC inputs, stride 1, 'SAME' padding with odd kernel sizes and a kernel
`dilation` (atrous convolution, DeepLab's "output stride": the taps sit `dilation`
pixels apart and the input is padded by dilation * (k // 2) on each side; the
shift-and-multiply form simply shifts further). They are tested against each other,
against a per-channel loop and against the undilated convolution of the spaced-out
kernel in tests/test_depthwise.py.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from xception_jax import native as _native
from xception_jax.models import implementations

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def depthwise_conv_feature_group(x: jax.Array, kernel: jax.Array,
                                 dilation: int = 1) -> jax.Array:
  """Depthwise 'SAME' convolution through `feature_group_count` (the reference).

  Args:
    x: [N, H, W, C] inputs.
    kernel: [kh, kw, 1, C] depthwise kernel (Flax HWIO layout, one filter per channel).
    dilation: spacing of the kernel's taps (1: an ordinary convolution).
  Returns:
    [N, H, W, C] outputs.
  """
  _check_kernel(x, kernel, dilation)
  return lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding=same_padding(kernel.shape[:2], dilation),
      rhs_dilation=(dilation, dilation), dimension_numbers=_DIMENSION_NUMBERS,
      feature_group_count=x.shape[-1])


def same_padding(kernel_size: tuple[int, int], dilation: int = 1) -> tuple[tuple[int, int], ...]:
  """Symmetric 'SAME' padding of an odd kernel with dilated taps: dilation * (k // 2)."""
  return tuple((dilation * (k // 2), dilation * (k // 2)) for k in kernel_size)


# The depthwise contract (dilation, kernel shape, odd sizes) lives below both this
# module and the native kernel package, which imports nothing from models/.
_check_kernel = _native.check_arguments


def _pad(x: jax.Array, kh: int, kw: int, dilation: int) -> jax.Array:
  (top, bottom), (left, right) = same_padding((kh, kw), dilation)
  return jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))


def _shift_and_multiply(x: jax.Array, taps: jax.Array, dilation: int) -> jax.Array:
  """sum_{i,j} pad(x)[:, d*i : d*i+H, d*j : d*j+W, :] * taps[i, j]: a 'SAME' depthwise
  correlation whose taps sit d = dilation pixels apart."""
  kh, kw, _ = taps.shape
  height, width = x.shape[1], x.shape[2]
  padded = _pad(x, kh, kw, dilation)
  out = None
  for i in range(kh):
    for j in range(kw):
      di, dj = i * dilation, j * dilation
      term = padded[:, di:di + height, dj:dj + width, :] * taps[i, j]
      out = term if out is None else out + term
  return out


# native/depthwise_ffi.py's `_depthwise_native` has the same custom-VJP skeleton on
# purpose: the two are one algorithm (forward = correlation, input gradient = the
# correlation with flipped taps, kernel gradient = per-tap reductions) done by two
# engines (XLA ops here, C++ custom calls there). Kept apart so that the native package
# needs nothing from models/ and each reads top to bottom; tests/test_depthwise_native.py
# holds them equal in value and both gradients.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _depthwise_shift(x: jax.Array, taps: jax.Array, dilation: int) -> jax.Array:
  return _shift_and_multiply(x, taps, dilation)


def _depthwise_shift_fwd(x, taps, dilation):
  return _shift_and_multiply(x, taps, dilation), (x, taps)


def _depthwise_shift_bwd(dilation, residuals, g):
  x, taps = residuals
  kh, kw, _ = taps.shape
  # Input gradient: the transposed correlation, i.e. the same op with flipped taps
  # (symmetric padding makes the dilated 'SAME' correlation's transpose its own kind).
  dx = _shift_and_multiply(g, taps[::-1, ::-1, :], dilation)
  # Kernel gradient: one multiply-and-reduce over N, H, W per tap, accumulated in f32.
  height, width = x.shape[1], x.shape[2]
  padded = _pad(x, kh, kw, dilation)
  rows = []
  for i in range(kh):
    row = []
    for j in range(kw):
      di, dj = i * dilation, j * dilation
      window = padded[:, di:di + height, dj:dj + width, :]
      row.append(jnp.sum(window * g, axis=(0, 1, 2), dtype=jnp.float32))
    rows.append(jnp.stack(row))
  dtaps = jnp.stack(rows).astype(taps.dtype)
  return dx, dtaps


_depthwise_shift.defvjp(_depthwise_shift_fwd, _depthwise_shift_bwd)


def depthwise_conv_shift(x: jax.Array, kernel: jax.Array, dilation: int = 1) -> jax.Array:
  """Depthwise 'SAME' convolution as shift-and-multiply with a custom VJP (fast on CPU).

  Same contract as `depthwise_conv_feature_group`.
  """
  _check_kernel(x, kernel, dilation)
  return _depthwise_shift(x, kernel[:, :, 0, :], dilation)


def depthwise_conv_native(x: jax.Array, kernel: jax.Array, dilation: int = 1) -> jax.Array:
  """The native CPU kernel for float32 (`xception_jax.native`); other dtypes (bfloat16)
  take `depthwise_conv_shift`. Same contract as `depthwise_conv_feature_group`."""
  return _native.depthwise_conv_native(x, kernel, dilation, fallback=depthwise_conv_shift)


DEPTHWISE_IMPLEMENTATIONS = {
    "feature_group": depthwise_conv_feature_group,
    "shift": depthwise_conv_shift,
}
# The native CPU kernel, when its library is built and loads (else one warning line
# at import says why and how to build it).
if _native.available():
  DEPTHWISE_IMPLEMENTATIONS["native"] = depthwise_conv_native


@functools.cache
def _cpu_default() -> str:
  if jax.default_backend() != "cpu":
    return "feature_group"
  return "native" if "native" in DEPTHWISE_IMPLEMENTATIONS else "shift"


def resolve_depthwise_impl(name: str) -> str:
  """Maps 'auto' to the fast choice for the default backend; validates the name.

  'auto': 'feature_group' on GPU/TPU; on CPU 'native' when its library loaded (it
  computes float32 itself and hands other dtypes to 'shift'), else 'shift'.
  """
  if name == "native" and name not in DEPTHWISE_IMPLEMENTATIONS:
    raise ValueError(f"depthwise_impl 'native' is unavailable: {_native.unavailable_reason()}")
  return implementations.resolve("depthwise_impl", name, sorted(DEPTHWISE_IMPLEMENTATIONS),
                                 _cpu_default)
