"""input_pipeline/preprocessing.py against NumPy references."""

import numpy as np
import pytest
import tensorflow as tf

import input_pipeline  # noqa: F401  (configures TensorFlow)
from input_pipeline import preprocessing


def _smooth_image(h, w, seed=0):
  """A photo-like image (smooth gradients + mild noise) so JPEG is accurate."""
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
  img = np.stack([
      128 + 100 * np.sin(xx / 17.0 + 1.0),
      128 + 100 * np.cos(yy / 23.0),
      128 + 60 * np.sin((xx + yy) / 31.0),
  ], -1) + rng.normal(0, 2, size=(h, w, 3))
  return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _png(img):
  return tf.io.encode_png(img).numpy()


def _jpeg(img):
  return tf.io.encode_jpeg(img, quality=95).numpy()


def _bilinear_resize(img, size):
  """TF2 bilinear resize (half-pixel centres, no antialiasing) in NumPy."""
  img = img.astype(np.float64)

  def axis_weights(n_in):
    src = (np.arange(size) + 0.5) * (n_in / size) - 0.5
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo

  ylo, yhi, fy = axis_weights(img.shape[0])
  xlo, xhi, fx = axis_weights(img.shape[1])
  rows = img[ylo] * (1 - fy)[:, None, None] + img[yhi] * fy[:, None, None]
  return rows[:, xlo] * (1 - fx)[None, :, None] + rows[:, xhi] * fx[None, :,
                                                                    None]


def _reference_eval(img, size, fraction):
  h, w = img.shape[:2]  # tf.image.central_crop's rounding:
  oy, ox = int((h - h * fraction) / 2), int((w - w * fraction) / 2)
  crop = img[oy:h - oy, ox:w - ox]
  return np.clip(_bilinear_resize(crop, size) / 127.5 - 1.0, -1, 1)


@pytest.mark.parametrize("h,w,size,fraction", [(75, 50, 32, 0.875),
                                                (40, 61, 48, 1.0),
                                                (9, 7, 16, 0.5)])
def test_eval_matches_numpy_reference_png(h, w, size, fraction):
  img = _smooth_image(h, w)
  out = preprocessing.preprocess_eval(
      tf.constant(_png(img)), image_size=size, crop_fraction=fraction).numpy()
  assert out.shape == (size, size, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, _reference_eval(img, size, fraction),
                             atol=2e-5)


def test_eval_jpeg_decodes_only_the_crop_like_full_decode():
  img = _smooth_image(120, 90, seed=1)
  jpeg = _jpeg(img)
  decoded = tf.io.decode_jpeg(jpeg, channels=3).numpy()  # Lossy reference.
  out = preprocessing.preprocess_eval(tf.constant(jpeg), image_size=40,
                                      crop_fraction=0.875).numpy()
  # decode_and_crop_jpeg may differ from decode-then-crop by chroma
  # upsampling at the window edge: a few grey levels.
  np.testing.assert_allclose(out, _reference_eval(decoded, 40, 0.875),
                             atol=6 / 127.5)
  assert np.abs(out - _reference_eval(decoded, 40, 0.875)).mean() < 0.5 / 127.5


def test_train_crop_flip_resize_match_reference():
  img = _smooth_image(64, 48, seed=2)
  png = tf.constant(_png(img))
  flipped_count = 0
  for s in range(12):
    seed = tf.constant([7, s], tf.int64)
    out = preprocessing.preprocess_train(png, seed, image_size=24).numpy()
    assert out.shape == (24, 24, 3) and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0
    # Recover the window with the same split of the seed.
    crop_seed = tf.random.experimental.stateless_split(seed, 2)[0]
    oy, ox, ch, cw = preprocessing.distorted_crop_window(
        tf.constant([64, 48, 3]), crop_seed).numpy()
    crop = img[oy:oy + ch, ox:ox + cw]
    ref = np.clip(_bilinear_resize(crop, 24) / 127.5 - 1, -1, 1)
    ref_flipped = ref[:, ::-1]
    err, err_flipped = np.abs(out - ref).max(), np.abs(out - ref_flipped).max()
    assert min(err, err_flipped) < 2e-5, (err, err_flipped)
    flipped_count += err_flipped < err
  assert 2 <= flipped_count <= 10  # Flips happen about half the time.


def test_train_is_a_function_of_the_seed():
  png = tf.constant(_png(_smooth_image(50, 70, seed=3)))
  a = preprocessing.preprocess_train(png, tf.constant([1, 5], tf.int64),
                                     image_size=16).numpy()
  b = preprocessing.preprocess_train(png, tf.constant([1, 5], tf.int64),
                                     image_size=16).numpy()
  c = preprocessing.preprocess_train(png, tf.constant([1, 6], tf.int64),
                                     image_size=16).numpy()
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).max() > 0.05


def test_crop_windows_respect_area_and_aspect_ranges():
  shape = tf.constant([300, 400, 3])
  areas, aspects = [], []
  for s in range(200):
    _, _, h, w = preprocessing.distorted_crop_window(
        shape, tf.constant([3, s], tf.int64), area_range=(0.3, 0.6),
        aspect_range=(0.8, 1.25), min_object_covered=0.0).numpy()
    areas.append(h * w / (300 * 400))
    aspects.append(w / h)
  areas, aspects = np.array(areas), np.array(aspects)
  full = areas == 1.0  # No window fitted within max_attempts: whole image.
  assert full.mean() < 0.05
  assert areas[~full].min() >= 0.3 - 0.01 and areas[~full].max() <= 0.6 + 0.01
  assert aspects[~full].min() >= 0.8 - 0.02
  assert aspects[~full].max() <= 1.25 + 0.02
  assert areas[~full].std() > 0.05  # Really random.


def test_jpeg_train_path_matches_decode_then_crop():
  img = _smooth_image(96, 128, seed=4)
  jpeg = tf.constant(_jpeg(img))
  decoded = tf.io.decode_jpeg(jpeg, channels=3).numpy()
  seed = tf.constant([0, 11], tf.int64)
  out = preprocessing.preprocess_train(jpeg, seed, image_size=32).numpy()
  png_of_decoded = tf.constant(_png(decoded))
  ref = preprocessing.preprocess_train(png_of_decoded, seed,
                                       image_size=32).numpy()
  assert np.abs(out - ref).mean() < 0.5 / 127.5
  assert np.abs(out - ref).max() < 8 / 127.5


def test_grayscale_and_rgba_become_rgb():
  grey = np.arange(30 * 20, dtype=np.uint8).reshape(30, 20, 1)
  out = preprocessing.preprocess_eval(tf.constant(_png(grey)), image_size=8,
                                      crop_fraction=1.0).numpy()
  assert out.shape == (8, 8, 3)
  np.testing.assert_array_equal(out[..., 0], out[..., 1])
  rgba = np.concatenate([_smooth_image(10, 10), np.full((10, 10, 1), 255,
                                                         np.uint8)], -1)
  out = preprocessing.preprocess_eval(tf.constant(_png(rgba)), image_size=10,
                                      crop_fraction=1.0).numpy()
  np.testing.assert_allclose(out, _smooth_image(10, 10) / 127.5 - 1, atol=1e-5)


def test_multi_hot_and_label_range():
  out = preprocessing.multi_hot(tf.constant([3, 0, 3, 5], tf.int64), 6).numpy()
  np.testing.assert_array_equal(out, [1, 0, 0, 1, 0, 1])
  assert out.dtype == np.float32
  np.testing.assert_array_equal(
      preprocessing.multi_hot(tf.zeros([0], tf.int64), 4).numpy(), [0] * 4)
  with pytest.raises(tf.errors.InvalidArgumentError, match="out of range"):
    preprocessing.multi_hot(tf.constant([1, 6], tf.int64), 6)
  with pytest.raises(tf.errors.InvalidArgumentError, match="out of range"):
    preprocessing.multi_hot(tf.constant([-1], tf.int64), 6)
  assert preprocessing.single_label(tf.constant(4, tf.int64), 5).numpy() == 4
  with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 5\)"):
    preprocessing.single_label(tf.constant(5, tf.int64), 5)


def test_undecodable_bytes_raise_inside_tf():
  with pytest.raises(tf.errors.InvalidArgumentError):
    preprocessing.preprocess_eval(tf.constant(b"not an image"), image_size=8)
  truncated = _jpeg(_smooth_image(64, 64))[:300]
  with pytest.raises(tf.errors.InvalidArgumentError):
    preprocessing.preprocess_eval(tf.constant(truncated), image_size=8)
