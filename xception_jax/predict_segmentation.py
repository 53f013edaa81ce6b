"""Colour-coded class maps and overlays from a segmentation (DeepLab v3+) checkpoint.

    python -m xception_jax.predict --checkpoint=runs/deeplab_demo --output_dir=masks a.png

`xception_jax.predict` comes here when the checkpoint's model fields name a
segmentation architecture (`deeplabv3plus`). Each image is decoded to RGB and goes
through the evaluation pipeline's own function
(`input_pipeline.segmentation_preprocessing.preprocess_eval`): kept at full size
(downscaled to fit only when a side exceeds `image_size`), scaled to [-1, 1], padded at
the bottom and right to a square of `image_size` (default: the image's longer side;
give the run's eval_image_size, e.g. 513 for VOC, to see exactly what evaluation saw).
The model's per-pixel argmax, cropped to the image, is written as

    <output_dir>/<name>_mask.png      RGB, each class in PASCAL VOC's colour
    <output_dir>/<name>_overlay.png   the image, with every non-background pixel
                                      blended half-and-half with its class colour

PASCAL VOC's palette (`voc_palette`, DeepLab's `create_pascal_label_colormap`): class
c gets the colour whose bits are c's bits interleaved over R, G, B from the top bit
down (0 black, 1 (128, 0, 0), 2 (0, 128, 0), 15 (192, 128, 128), 255 (224, 224, 192)).
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xception_jax import paths as xpaths  # "paths" names image lists here

SEGMENTATION_ARCHITECTURES = ("deeplabv3plus",)
BACKGROUND = 0
OVERLAY_ALPHA = 0.5


def voc_palette(num_colours: int = 256) -> np.ndarray:
  """uint8 [num_colours, 3]: PASCAL VOC's colour of each class id."""
  palette = np.zeros((num_colours, 3), np.int64)
  ids = np.arange(num_colours)
  for shift in range(7, -1, -1):
    for channel in range(3):
      palette[:, channel] |= ((ids >> channel) & 1) << shift
    ids = ids >> 3
  return palette.astype(np.uint8)


def colour_mask(classes: np.ndarray) -> np.ndarray:
  """int [H, W] class ids -> uint8 [H, W, 3] in VOC's palette."""
  return voc_palette()[np.asarray(classes, np.int64) % 256]


def overlay(image: np.ndarray, classes: np.ndarray, alpha: float = OVERLAY_ALPHA
            ) -> np.ndarray:
  """uint8 [H, W, 3]: the image, non-background pixels blended with their colour."""
  blended = (1 - alpha) * image.astype(np.float64) + alpha * colour_mask(classes)
  blended = np.where((np.asarray(classes) != BACKGROUND)[..., None], blended, image)
  return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def is_segmentation(fields: dict) -> bool:
  return fields.get("architecture") in SEGMENTATION_ARCHITECTURES


def checkpoint_model_fields(checkpoint: str) -> dict:
  """The model fields a checkpoint stores (its JSON item), without reading its arrays."""
  import orbax.checkpoint as ocp

  from xception_jax import checkpointing

  root, step = checkpointing._split_root_and_step(checkpoint)  # pylint: disable=protected-access
  manager = checkpointing.create_manager(root, max_to_keep=None, asynchronous=False,
                                         read_only=True)
  try:
    step = manager.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{checkpoint!r} holds no checkpoint steps.")
    restored = manager.restore(step, args=ocp.args.Composite(
        **{checkpointing.MODEL: ocp.args.JsonRestore()}))
    return dict(restored[checkpointing.MODEL])
  finally:
    manager.close()


def load_image(path: str, image_size: Optional[int] = None
               ) -> tuple[np.ndarray, np.ndarray]:
  """(float32 [S, S, 3] in [-1, 1] padded, uint8 [h, w, 3] the image the model sees).

  S = image_size, or the image's longer side; the image is downscaled only when a side
  exceeds image_size (the evaluation pipeline's rule)."""
  import tensorflow as tf

  from input_pipeline import segmentation_preprocessing

  if not xpaths.isfile(path):
    raise FileNotFoundError(f"No image file at {path!r}.")
  data = xpaths.read_bytes(path)
  try:
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
    message = (e.message or str(e)).strip().splitlines()[0]
    raise ValueError(
        f"Cannot decode {path!r} as an image (JPEG, PNG, GIF or BMP): {message}") from None
  size = int(image_size or max(image.shape[0], image.shape[1]))
  label = tf.zeros(tf.shape(image)[:2], tf.uint8)
  padded, _, (height, width) = segmentation_preprocessing.preprocess_eval(
      image, label, eval_size=size)
  padded = padded.numpy().astype(np.float32)
  seen = np.round((padded[:int(height), :int(width)] + 1.0) * 127.5)
  return padded, np.clip(seen, 0, 255).astype(np.uint8)


@functools.partial(jax.jit, static_argnames=("model",))
def _classes(model, variables, images):
  return jnp.argmax(model.apply(variables, images, train=False), axis=-1)


class SegmentationPredictor:
  """A segmentation checkpoint's model and variables; `classes(image)` per pixel."""

  def __init__(self, variables: dict, fields: dict, step: int, *,
               depthwise_impl: str = "auto"):
    from xception_jax.models import factory

    if not is_segmentation(fields):
      raise ValueError(f"Not a segmentation checkpoint: architecture "
                       f"{fields.get('architecture')!r} (expected one of "
                       f"{list(SEGMENTATION_ARCHITECTURES)}).")
    self.model = factory.create_model(fields, depthwise_impl=depthwise_impl)
    self.variables, self.step = variables, step

  @classmethod
  def from_checkpoint(cls, checkpoint: str, **kwargs) -> "SegmentationPredictor":
    from xception_jax import checkpointing
    return cls(*checkpointing.load_variables(checkpoint), **kwargs)

  @property
  def num_classes(self) -> int:
    return self.model.num_classes

  def classes(self, padded: np.ndarray, height: int, width: int) -> np.ndarray:
    """int32 [height, width]: the argmax class of each pixel of the image."""
    out = _classes(self.model, self.variables, jnp.asarray(padded)[None])
    return np.asarray(out[0, :height, :width], np.int32)


@dataclasses.dataclass(frozen=True)
class MaskPrediction:
  path: str
  mask_path: str
  overlay_path: str
  classes: np.ndarray          # int32 [h, w]


def _output_names(paths: Sequence[str]) -> list[str]:
  """File stems, made unique (a repeated stem gets _2, _3, ...)."""
  names, seen = [], {}
  for path in paths:
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    seen[stem] = seen.get(stem, 0) + 1
    names.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
  return names


def _write_png(path: str, rgb: np.ndarray) -> None:
  import tensorflow as tf
  xpaths.write_bytes(path, tf.io.encode_png(rgb).numpy())  # local or gs://


def predict_masks(predictor: SegmentationPredictor, paths: Sequence[str], output_dir: str,
                  image_size: Optional[int] = None) -> list[MaskPrediction]:
  """Writes <name>_mask.png and <name>_overlay.png per image into output_dir."""
  if not paths:
    raise ValueError("Give at least one image file.")
  if image_size is not None and image_size < 1:
    raise ValueError(f"--image_size must be >= 1; got {image_size}.")
  # Every image is read before anything is computed, so a bad path fails fast.
  loaded = [load_image(p, image_size) for p in paths]
  xpaths.makedirs(output_dir)
  predictions = []
  for path, name, (padded, seen) in zip(paths, _output_names(paths), loaded):
    classes = predictor.classes(padded, seen.shape[0], seen.shape[1])
    mask_path = xpaths.join(output_dir, f"{name}_mask.png")
    overlay_path = xpaths.join(output_dir, f"{name}_overlay.png")
    _write_png(mask_path, colour_mask(classes))
    _write_png(overlay_path, overlay(seen, classes))
    predictions.append(MaskPrediction(path, mask_path, overlay_path, classes))
  return predictions


def format_masks(predictions: Sequence[MaskPrediction], num_classes: int) -> str:
  """Per image: the input path, the two written files, the share of each class."""
  lines = []
  for p in predictions:
    counts = np.bincount(p.classes.ravel(), minlength=num_classes)
    shares = ", ".join(f"{c}: {n / p.classes.size:.1%}" for c, n in enumerate(counts) if n)
    lines += [p.path, f"  mask     {p.mask_path}", f"  overlay  {p.overlay_path}",
              f"  classes  {shares}"]
  return "\n".join(lines)
