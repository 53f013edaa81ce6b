"""Segmentation augmentation keeps image and mask aligned; eval padding keeps the size."""

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import segmentation_preprocessing as sp

# Far-apart colours (class -> RGB), none at the mean pixel 127.5 (the padding value).
PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0],
                    [255, 0, 255]], np.uint8)


def colour_coded(rng, height, width, block=6):
  """An image of blocks whose colour encodes the class; its mask; a 255 border."""
  classes = rng.integers(0, len(PALETTE), size=(-(-height // block), -(-width // block)))
  label = np.kron(classes, np.ones((block, block), np.int64))[:height, :width]
  image = PALETTE[label]
  label = label.astype(np.uint8)
  label[0, :] = 255  # A VOC-style ignore border, drawn white.
  image[0, :] = 255
  return image, label


def check_aligned(image, label):
  """Returns the fraction of labelled pixels whose colour is their class's colour.

  Fails if any pixel whose colour is (nearly) a palette colour carries another
  class, or if a padding pixel (label 255, image 0 = mean pixel) is not padding.
  """
  rgb = (image.astype(np.float64) + 1.0) * 127.5
  distance = np.linalg.norm(rgb[:, :, None, :] - PALETTE[None, None].astype(np.float64),
                            axis=-1)
  nearest = distance.argmin(-1)
  pure = distance.min(-1) < 20.0  # Bilinear blends of distinct colours are far.
  labelled = label != 255
  mismatched = pure & labelled & (nearest != label)
  assert not mismatched.any(), f"{mismatched.sum()} pixels disagree with their mask"
  padding = (label == 255) & (np.abs(image).max(-1) == 0)
  white = (label == 255) & (np.abs(rgb - 255).max(-1) < 20)
  assert ((label != 255) | padding | white | ~pure).all()
  return (pure & labelled & (nearest == label)).sum() / max(labelled.sum(), 1)


@pytest.fixture(scope="module")
def train_fn():
  @tf.function(reduce_retracing=True)
  def fn(image, label, seed):
    return sp.preprocess_train(image, label, seed, crop_size=40, min_scale=0.5,
                               max_scale=2.0, scale_step=0.25)
  return fn


def test_image_and_mask_stay_aligned_through_scale_crop_flip(train_fn):
  rng = np.random.default_rng(0)
  fractions, padded = [], 0
  for i in range(60):
    h, w = rng.integers(20, 70, size=2)
    image, label = colour_coded(rng, int(h), int(w))
    seed = tf.constant([3, i], tf.int64)
    out_image, out_label = (t.numpy() for t in train_fn(image, label, seed))
    assert out_image.shape == (40, 40, 3) and out_label.shape == (40, 40)
    assert out_image.dtype == np.float32 and out_label.dtype == np.int32
    assert -1.0 <= out_image.min() and out_image.max() <= 1.0
    fractions.append(check_aligned(out_image, out_label))
    padded += (out_label == 255).sum() > 40  # More than the 255 border row.
    # The same seed gives the same result (stateless).
    again = train_fn(image, label, seed)
    np.testing.assert_array_equal(again[1].numpy(), out_label)
  # Most labelled pixels are interior block pixels with a pure colour.
  assert np.mean(fractions) > 0.6, np.mean(fractions)
  assert padded > 5  # Small scales of small images pad with the ignore label.


def test_flip_is_a_mirror_and_scale_two_is_nearest_upsampling():
  rng = np.random.default_rng(1)
  image, label = colour_coded(rng, 20, 20)
  mirrored = 0
  for i in range(16):  # Scale 1, crop = image: the input or its mirror.
    out_image, out_label = sp.preprocess_train(image, label, tf.constant([0, i], tf.int64),
                                               crop_size=20, min_scale=1.0, max_scale=1.0)
    flipped = not np.array_equal(out_label.numpy(), label)
    mirrored += flipped
    expected_label = label[:, ::-1] if flipped else label
    expected_image = image[:, ::-1] if flipped else image
    np.testing.assert_array_equal(out_label.numpy(), expected_label)
    np.testing.assert_allclose(out_image.numpy(), expected_image / 127.5 - 1, atol=1e-6)
  assert 3 <= mirrored <= 13
  # Scale 2, crop = scaled image: the mask is each pixel repeated 2 x 2.
  _, out_label = sp.preprocess_train(image, label, tf.constant([0, 0], tf.int64),
                                     crop_size=40, min_scale=2.0, max_scale=2.0)
  up = np.repeat(np.repeat(label, 2, 0), 2, 1)
  assert np.array_equal(out_label.numpy(), up) or np.array_equal(out_label.numpy(),
                                                                   up[:, ::-1])


def test_discrete_scale_factors():
  values = {float(sp.scale_factor(tf.constant([0, i], tf.int64), 0.5, 2.0, 0.25))
            for i in range(200)}
  assert values == {0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0}
  continuous = [float(sp.scale_factor(tf.constant([0, i], tf.int64), 0.5, 2.0, 0.0))
                for i in range(50)]
  assert len(set(continuous)) == 50 and 0.5 <= min(continuous) and max(continuous) <= 2.0
  with pytest.raises(ValueError, match="min_scale_factor"):
    sp.scale_factor(tf.constant([0, 0], tf.int64), 2.0, 1.0, 0.25)


def test_eval_pads_with_the_ignore_label_and_keeps_the_size():
  rng = np.random.default_rng(2)
  image, label = colour_coded(rng, 30, 45)
  out_image, out_label, size = (t.numpy() for t in sp.preprocess_eval(
      image, label, eval_size=48))
  assert size.tolist() == [30, 45]
  np.testing.assert_array_equal(out_label[:30, :45], label)
  assert (out_label[30:] == 255).all() and (out_label[:, 45:] == 255).all()
  np.testing.assert_allclose(out_image[:30, :45], image / 127.5 - 1.0, atol=1e-6)
  assert (out_image[30:] == 0).all() and (out_image[:, 45:] == 0).all()
  # Larger than eval_size: resized to fit, still aligned.
  image, label = colour_coded(rng, 50, 100, block=10)
  out_image, out_label, size = (t.numpy() for t in sp.preprocess_eval(
      image, label, eval_size=48))
  assert size.tolist() == [24, 48]
  assert check_aligned(out_image, out_label) > 0.6
  assert (out_label[24:] == 255).all()


def test_map_labels_rejects_unmapped_values():
  table = tf.constant([-1, 1, 0, 255] + [-1] * 252, tf.int32)
  np.testing.assert_array_equal(
      sp.map_labels(tf.constant([[1, 2, 3]], tf.uint8), table, "pets").numpy(),
      [[1, 0, 255]])
  with pytest.raises(tf.errors.InvalidArgumentError, match="pets holds a mask value"):
    sp.map_labels(tf.constant([[1, 7]], tf.uint8), table, "pets")
