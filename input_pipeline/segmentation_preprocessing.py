"""Segmentation preprocessing as DeepLab's, applied to an image and its mask alike.

Training (DeepLab's `input_preprocess.preprocess_image_and_label`), in order:

1. Random scale by a factor s in [min_scale, max_scale] (DeepLab: 0.5 to 2.0),
   drawn from {min, min + step, ..., max} when step > 0 (DeepLab's
   scale_factor_step_size 0.25), uniformly in the interval when step is 0. The
   image is resized bilinearly, the mask by nearest neighbour (half-pixel
   centres for both, so a mask pixel takes the class of the source pixel that
   carries the largest bilinear weight of the image pixel).
2. Pad at the bottom and right to at least the crop size: the image with the
   mean pixel (127.5, which is 0 after scaling to [-1, 1]; DeepLab pads with
   the mean pixel too), the mask with the ignore label (255).
3. A random crop of crop_size x crop_size, the same window for both.
4. A random left-right flip, the same for both.

Images come out float32 in [-1, 1] (x / 127.5 - 1), masks int32 class ids
with the ignore label where nothing is labelled.

Evaluation: the image at its full size, scaled to [-1, 1], padded at the
bottom and right to eval_size x eval_size (image 0, mask ignore label) so that
a batch has one shape; the true (height, width) is kept. An image larger than
eval_size on a side is first resized to fit (keeping its aspect ratio; image
bilinear, mask nearest); DeepLab instead sets the eval crop to the largest
image (513 for VOC, whose images are at most 500 px), where this never happens.

Every random choice comes from `tf.random.stateless_*` ops keyed by the
example's seed (int [2]), as in preprocessing.py: the result depends on the
seed alone.
"""

from __future__ import annotations

import tensorflow as tf

IGNORE_LABEL = 255


def scale_factor(seed: tf.Tensor, min_scale: float, max_scale: float,
                 step: float) -> tf.Tensor:
  """A random scale factor (float32 scalar), DeepLab's `get_random_scale`."""
  if not 0 < min_scale <= max_scale:
    raise ValueError(f"Scale factors must satisfy 0 < min_scale_factor <= "
                     f"max_scale_factor, got {min_scale} and {max_scale}.")
  if step < 0:
    raise ValueError(f"scale_factor_step_size must be >= 0, got {step}.")
  if min_scale == max_scale:
    return tf.constant(min_scale, tf.float32)
  if step == 0:
    return tf.random.stateless_uniform([], seed, min_scale, max_scale, tf.float32)
  num_steps = int(round((max_scale - min_scale) / step)) + 1
  k = tf.random.stateless_uniform([], seed, 0, num_steps, tf.int32)
  return tf.cast(min_scale + tf.cast(k, tf.float64) * step, tf.float32)


def _resize_pair(image: tf.Tensor, label: tf.Tensor, size: tf.Tensor):
  """float32 [h, w, 3] bilinear and int32 [h, w, 1] nearest to `size` (int32 [2])."""
  image = tf.image.resize(image, size, method="bilinear")
  label = tf.image.resize(label, size, method="nearest")
  return image, label


def _pad_pair(image: tf.Tensor, label: tf.Tensor, height, width, ignore_label: int):
  """Pads image (with 0) and label (with ignore_label) at the bottom and right."""
  shape = tf.shape(image)
  pad_h, pad_w = tf.maximum(height - shape[0], 0), tf.maximum(width - shape[1], 0)
  paddings = [[0, pad_h], [0, pad_w], [0, 0]]
  return (tf.pad(image, paddings, constant_values=0.0),
          tf.pad(label, paddings, constant_values=ignore_label))


def _as_inputs(image: tf.Tensor, label: tf.Tensor):
  """uint8 image [h, w, 3] -> float32 in [-1, 1]; label [h, w] or [h, w, 1] -> int32 [h, w, 1]."""
  image = tf.cast(image, tf.float32) / 127.5 - 1.0
  label = tf.cast(label, tf.int32)
  if label.shape.rank == 2:
    label = label[..., None]
  return image, label


def preprocess_train(image: tf.Tensor, label: tf.Tensor, seed: tf.Tensor, *,
                     crop_size: int, min_scale: float = 0.5, max_scale: float = 2.0,
                     scale_step: float = 0.25,
                     ignore_label: int = IGNORE_LABEL) -> tuple[tf.Tensor, tf.Tensor]:
  """Random scale, pad, crop and flip (module docstring).

  Args:
    image: uint8 [h, w, 3].
    label: integer class ids [h, w] or [h, w, 1] (ignore_label allowed).
    seed: int [2], the example's stateless seed.
    crop_size: side of the output.

  Returns:
    float32 [crop_size, crop_size, 3] in [-1, 1] and int32 [crop_size, crop_size].
  """
  scale_seed, crop_seed_y, crop_seed_x, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=4))
  image, label = _as_inputs(image, label)
  # 1. Scale.
  scale = scale_factor(scale_seed, min_scale, max_scale, scale_step)
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  new_size = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), 1)
  image, label = _resize_pair(image, label, new_size)
  # 2. Pad (after scaling to [-1, 1], 0 is the mean pixel 127.5).
  image, label = _pad_pair(image, label, crop_size, crop_size, ignore_label)
  # 3. Crop.
  shape = tf.shape(image)
  y = tf.random.stateless_uniform([], crop_seed_y, 0, shape[0] - crop_size + 1, tf.int32)
  x = tf.random.stateless_uniform([], crop_seed_x, 0, shape[1] - crop_size + 1, tf.int32)
  image = tf.slice(image, tf.stack([y, x, 0]), [crop_size, crop_size, 3])
  label = tf.slice(label, tf.stack([y, x, 0]), [crop_size, crop_size, 1])
  # 4. Flip.
  flip = tf.random.stateless_uniform([], flip_seed) < 0.5
  image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
  label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
  image = tf.clip_by_value(image, -1.0, 1.0)
  image.set_shape([crop_size, crop_size, 3])
  label.set_shape([crop_size, crop_size, 1])
  return image, label[..., 0]


def preprocess_eval(image: tf.Tensor, label: tf.Tensor, *, eval_size: int,
                    ignore_label: int = IGNORE_LABEL
                    ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Full size (downscaled only if larger than eval_size), padded to eval_size.

  Returns:
    float32 [eval_size, eval_size, 3] in [-1, 1], int32 [eval_size,
    eval_size] (ignore_label in the padding) and int32 [2], the (height,
    width) of the image inside the padded square.
  """
  image, label = _as_inputs(image, label)
  shape = tf.shape(image)[:2]
  longer = tf.cast(tf.reduce_max(shape), tf.float64)
  fit = tf.minimum(tf.constant(1.0, tf.float64), eval_size / longer)
  size = tf.clip_by_value(tf.cast(tf.round(tf.cast(shape, tf.float64) * fit), tf.int32),
                          1, eval_size)
  image, label = tf.cond(
      tf.reduce_all(tf.equal(size, shape)), lambda: (image, label),
      lambda: _resize_pair(image, label, size))
  image, label = _pad_pair(image, label, eval_size, eval_size, ignore_label)
  image = tf.clip_by_value(image, -1.0, 1.0)
  image.set_shape([eval_size, eval_size, 3])
  label.set_shape([eval_size, eval_size, 1])
  return image, label[..., 0], size


def map_labels(label: tf.Tensor, table: tf.Tensor, description: str) -> tf.Tensor:
  """Stored mask values -> class ids through `table` (int32 [256]; -1 = invalid).

  Raises (when iterated) InvalidArgumentError naming the dataset if a stored
  value maps to -1.
  """
  ids = tf.gather(table, tf.cast(label, tf.int32))
  ok = tf.reduce_all(ids >= 0)
  check = tf.debugging.Assert(
      ok, [f"Label id out of range: {description} holds a mask value with no class "
           "(offending values):", tf.boolean_mask(label, ids < 0)], summarize=16)
  with tf.control_dependencies([check]):
    return tf.identity(ids)
