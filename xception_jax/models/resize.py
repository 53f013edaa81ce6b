"""Bilinear resizing of NHWC maps in either geometry DeepLab code uses.

    align_corners=True   TensorFlow's `tf.image.resize_bilinear(..., align_corners=True)`,
                         which DeepLab's official code uses everywhere: output pixel i
                         samples input coordinate i * (in - 1) / (out - 1) (0 when
                         out == 1), so the first and last pixels of input and output
                         coincide, as the centres of a stride-s feature map computed by
                         symmetric 'SAME'-padded stride-2 convolutions do with the
                         image's (pixel i of the map sits over pixel s * i).
    align_corners=False  half-pixel centres: (i + 0.5) * in / out - 0.5, clamped
                         (jax.image.resize's 'bilinear', TF2's default, PyTorch's
                         align_corners=False); no antialiasing when shrinking.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _align_corners_axis(x: jax.Array, size: int, axis: int) -> jax.Array:
  """Linear interpolation along `axis` to `size` samples, corners aligned."""
  n = x.shape[axis]
  if size == n:
    return x
  if n == 1 or size == 1:
    return jnp.repeat(jnp.take(x, jnp.array([0]), axis=axis), size, axis=axis)
  coords = jnp.arange(size, dtype=jnp.float32) * ((n - 1) / (size - 1))
  low = jnp.clip(jnp.floor(coords).astype(jnp.int32), 0, n - 2)
  frac = (coords - low).astype(x.dtype)
  shape = [1] * x.ndim
  shape[axis] = size
  frac = frac.reshape(shape)
  return (jnp.take(x, low, axis=axis) * (1 - frac)
          + jnp.take(x, low + 1, axis=axis) * frac)


def resize_bilinear(x: jax.Array, height: int, width: int, align_corners: bool
                    ) -> jax.Array:
  """[N, H, W, C] -> [N, height, width, C], bilinear in the given geometry."""
  if x.ndim != 4:
    raise ValueError(f"resize_bilinear expects NHWC maps [N, H, W, C]; got {x.shape}.")
  if height < 1 or width < 1:
    raise ValueError(f"resize_bilinear: height and width must be >= 1; got "
                     f"{(height, width)}.")
  if x.shape[1:3] == (height, width):
    return x
  if not align_corners:
    return jax.image.resize(x, (x.shape[0], height, width, x.shape[-1]), "bilinear")
  return _align_corners_axis(_align_corners_axis(x, height, 1), width, 2)


def scaled_size(size: int, scale: float, align_corners: bool) -> int:
  """The side of an image resized by `scale` for multi-scale inference: TF DeepLab's
  (size - 1) * scale + 1 truncated (corners stay aligned) or round(size * scale)."""
  if align_corners:
    return max(1, int((size - 1) * scale + 1.0))
  return max(1, round(size * scale))
