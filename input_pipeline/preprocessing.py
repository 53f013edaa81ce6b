"""Image preprocessing in the Inception tradition, with stateless randomness.

Training: a random distorted bounding-box crop (area and aspect-ratio ranges
from the config), a random horizontal flip, a bilinear resize to image_size and
scaling to [-1, 1] (x / 127.5 - 1, the Keras 'tf' convention). Evaluation: a
central crop keeping `crop_fraction` of each side, then the same resize and
scaling. JPEG bytes are decoded only inside the crop window
(`tf.image.decode_and_crop_jpeg`); other formats (PNG, GIF, BMP) are decoded
whole and then cropped.

Every random choice comes from `tf.random.stateless_*` ops keyed by a per-example
seed, so a result depends on the seed alone: not on parallelism, not on what
ran before, and it is the same after a resume.
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

CropWindowFn = Callable[[tf.Tensor], tf.Tensor]


def decode_and_crop(image_bytes: tf.Tensor,
                    crop_window_fn: CropWindowFn) -> tf.Tensor:
  """Decodes encoded image bytes inside a crop window: uint8 [h, w, 3].

  Args:
    image_bytes: scalar string, JPEG/PNG/GIF/BMP file contents.
    crop_window_fn: maps the image shape (int32 [3]: height, width, channels)
      to the window int32 [4]: offset_y, offset_x, height, width. Must be a
      pure function of the shape (it is traced in two branches).
  """

  def jpeg():
    shape = tf.image.extract_jpeg_shape(image_bytes)
    window = crop_window_fn(shape)
    return tf.image.decode_and_crop_jpeg(image_bytes, window, channels=3)

  def other():
    image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8,
                               expand_animations=False)
    window = crop_window_fn(tf.shape(image))
    return tf.slice(image, tf.stack([window[0], window[1], 0]),
                    tf.stack([window[2], window[3], 3]))

  image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, other)
  image.set_shape([None, None, 3])
  return image


def distorted_crop_window(
    shape: tf.Tensor, seed: tf.Tensor, *,
    area_range: Sequence[float] = (0.08, 1.0),
    aspect_range: Sequence[float] = (3 / 4, 4 / 3),
    min_object_covered: float = 0.1,
    max_attempts: int = 10) -> tf.Tensor:
  """Inception's random crop window; the whole image when no try fits."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape,
      bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32,
                                 shape=[1, 1, 4]),
      seed=seed,
      min_object_covered=min_object_covered,
      aspect_ratio_range=tuple(aspect_range),
      area_range=tuple(area_range),
      max_attempts=max_attempts,
      use_image_if_no_bounding_boxes=True)
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def central_crop_window(shape: tf.Tensor, fraction: float) -> tf.Tensor:
  """The centred window of `tf.image.central_crop(image, fraction)`."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"eval_crop_fraction must be in (0, 1], got {fraction}.")
  h, w = shape[0], shape[1]
  hd, wd = tf.cast(h, tf.float64), tf.cast(w, tf.float64)
  start_h = tf.cast((hd - hd * fraction) / 2, tf.int32)
  start_w = tf.cast((wd - wd * fraction) / 2, tf.int32)
  return tf.stack([start_h, start_w, h - 2 * start_h, w - 2 * start_w])


def resize_and_scale(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """uint8 [h, w, 3] -> float32 [S, S, 3] in [-1, 1]."""
  image = tf.image.resize(image, [image_size, image_size], method="bilinear")
  image = tf.clip_by_value(image / 127.5 - 1.0, -1.0, 1.0)
  image.set_shape([image_size, image_size, 3])
  return image


def preprocess_train(image_bytes: tf.Tensor, seed: tf.Tensor, *,
                     image_size: int,
                     area_range: Sequence[float] = (0.08, 1.0),
                     aspect_range: Sequence[float] = (3 / 4, 4 / 3),
                     min_object_covered: float = 0.1) -> tf.Tensor:
  """Random crop, random flip, resize, scale; deterministic in `seed` (int [2])."""
  crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, num=2))
  window_fn = lambda shape: distorted_crop_window(
      shape, crop_seed, area_range=area_range, aspect_range=aspect_range,
      min_object_covered=min_object_covered)
  image = decode_and_crop(image_bytes, window_fn)
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return resize_and_scale(image, image_size)


def preprocess_eval(image_bytes: tf.Tensor, *, image_size: int,
                    crop_fraction: float = 0.875) -> tf.Tensor:
  """Central crop, resize, scale."""
  image = decode_and_crop(
      image_bytes, lambda shape: central_crop_window(shape, crop_fraction))
  return resize_and_scale(image, image_size)


def multi_hot(labels: tf.Tensor, num_classes: int) -> tf.Tensor:
  """int [n] class ids -> float32 [num_classes] with ones at the ids present.

  Raises (when the dataset is iterated) InvalidArgumentError naming the range
  if an id is outside [0, num_classes).
  """
  labels = tf.cast(tf.reshape(labels, [-1]), tf.int64)
  with tf.control_dependencies([check_label_range(labels, num_classes)]):
    counts = tf.math.bincount(labels, minlength=num_classes,
                              maxlength=num_classes, dtype=tf.float32)
  return tf.minimum(counts, 1.0)


def single_label(label: tf.Tensor, num_classes: int) -> tf.Tensor:
  label = tf.cast(label, tf.int64)
  with tf.control_dependencies([check_label_range(label, num_classes)]):
    return tf.cast(tf.identity(label), tf.int32)


def check_label_range(labels: tf.Tensor, num_classes: int) -> tf.Operation:
  ok = tf.reduce_all((labels >= 0) & (labels < num_classes))
  return tf.debugging.Assert(
      ok, [f"Label id out of range [0, {num_classes}) (num_classes="
           f"{num_classes}); offending labels:", labels], summarize=64)
