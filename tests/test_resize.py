"""models/resize.py against brute-force loops of the two geometries' formulas."""
import jax
import numpy as np
import pytest

from xception_jax.models.resize import resize_bilinear, scaled_size


def _align_corners_reference(x, height, width):
  """TF's resize_bilinear(align_corners=True), one output pixel at a time."""
  n, h, w, c = x.shape
  out = np.zeros((n, height, width, c), np.float64)
  sy = (h - 1) / (height - 1) if height > 1 else 0.0
  sx = (w - 1) / (width - 1) if width > 1 else 0.0
  for i in range(height):
    for j in range(width):
      y, xx = i * sy, j * sx
      y0, x0 = int(np.floor(y)), int(np.floor(xx))
      y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
      fy, fx = y - y0, xx - x0
      out[:, i, j] = ((1 - fy) * (1 - fx) * x[:, y0, x0] + (1 - fy) * fx * x[:, y0, x1]
                      + fy * (1 - fx) * x[:, y1, x0] + fy * fx * x[:, y1, x1])
  return out


@pytest.mark.parametrize("in_hw,out_hw", [((4, 5), (13, 17)), ((9, 7), (3, 4)),
                                          ((1, 1), (5, 3)), ((6, 5), (1, 1)),
                                          ((1, 6), (4, 11)), ((5, 5), (5, 9))])
def test_align_corners_matches_the_formula(in_hw, out_hw):
  x = np.random.default_rng(0).normal(size=(2, *in_hw, 3)).astype(np.float32)
  got = np.asarray(resize_bilinear(x, *out_hw, align_corners=True))
  np.testing.assert_allclose(got, _align_corners_reference(x.astype(np.float64), *out_hw),
                             rtol=1e-5, atol=1e-5)


def test_align_corners_keeps_the_corners_and_half_pixel_does_not():
  x = np.random.default_rng(1).normal(size=(1, 5, 5, 2)).astype(np.float32)
  aligned = np.asarray(resize_bilinear(x, 9, 9, align_corners=True))
  np.testing.assert_allclose(aligned[:, ::2, ::2], x, rtol=1e-6, atol=1e-6)
  half = np.asarray(resize_bilinear(x, 9, 9, align_corners=False))
  assert not np.allclose(half[:, ::2, ::2], x, atol=1e-3)


def test_half_pixel_is_jax_image_resize():
  x = np.random.default_rng(2).normal(size=(1, 4, 6, 2)).astype(np.float32)
  np.testing.assert_array_equal(
      np.asarray(resize_bilinear(x, 7, 5, align_corners=False)),
      np.asarray(jax.image.resize(x, (1, 7, 5, 2), "bilinear")))


def test_scaled_size():
  assert scaled_size(513, 0.5, True) == 257      # TF DeepLab's _scale_dimension
  assert scaled_size(513, 1.75, True) == 897
  assert scaled_size(64, 0.5, False) == 32
  assert scaled_size(1, 0.25, True) == 1


def test_bad_sizes_are_refused():
  with pytest.raises(ValueError, match="height and width"):
    resize_bilinear(np.zeros((1, 2, 2, 1)), 0, 3, align_corners=True)
