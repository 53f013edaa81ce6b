"""The embedded dataset's segmentation variant: the same shapes with per-pixel classes.

`embedded_shapes_segmentation` is a tfds builder like `embedded_shapes`: its
images are planned and drawn by exactly the functions of embedded_shapes.py
(`plan_example`, `render`), and each image comes with a class map painted by
the same shape masks in the same order, so where an object shows, the mask
holds its class:

  class 0:           background
  class 1 + k:       embedded class k, i.e. CLASS_NAMES[k] (colour x shape)

With the defaults (`num_classes=8`: red/green/blue/yellow x circle/square) the
model has 9 classes: colour is a per-pixel cue, circle vs square needs the
object's outline (context), so a tiny encoder-decoder learns it in CPU
minutes. Class frequencies are uniform by default (`zipf_exponent=0`).

Chance levels of mIoU on the default validation split (`python -m
input_pipeline.embedded_shapes_segmentation`): predicting background
everywhere gives IoU_bg = the background fraction (0.867) and 0 for the
others, so mIoU = 0.867 / 9 = 0.096; uniformly random classes give 0.025.

Features of an example:
  image:             uint8 [S, S, 3], PNG.
  segmentation_mask: uint8 [S, S, 1], PNG: class ids (0 background).
  id:                the example's index in its split.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import embedded_builder, embedded_shapes, segmentation_defaults

NAME = segmentation_defaults.EMBEDDED_NAME
BACKGROUND = "background"

_DESCRIPTION = __doc__.split("\n\n")[1]  # The module docstring's first paragraph.
DEFAULT_PARAMS = segmentation_defaults.EMBEDDED_PARAMS


make_builder_config, _DEFAULT_CONFIG = embedded_shapes.builder_configs(
    embedded_builder.EmbeddedConfig, DEFAULT_PARAMS, "Embedded shapes segmentation",
    "embedded_segmentation")


def class_names(num_classes: int) -> list[str]:
  """Segmentation class names: background, then the embedded classes."""
  return [BACKGROUND] + list(embedded_shapes.CLASS_NAMES[:num_classes])


def class_map(plan: dict) -> np.ndarray:
  """uint8 [S, S]: the class (1 + embedded class, 0 background) of each pixel.

  Painted like `embedded_shapes.render` paints colours: the same masks, the
  same pixel grid, later objects over earlier ones.
  """
  size = plan["size"]
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
  out = np.zeros((size, size), np.uint8)
  for cls, (cy, cx), r in zip(plan["classes"], plan["centres"], plan["half_sizes"]):
    _, shape = embedded_shapes.class_colour_shape(int(cls))
    out[embedded_shapes.shape_mask(shape, yy, xx, cy, cx, r)] = int(cls) + 1
  return out


class EmbeddedShapesSegmentation(embedded_builder.EmbeddedBuilder):
  """Locally generated shapes with class maps (see the module docstring)."""

  BUILDER_CONFIGS = [_DEFAULT_CONFIG]
  DEFAULT_PARAMS = DEFAULT_PARAMS
  DESCRIPTION = _DESCRIPTION
  SUPERVISED_KEYS = ("image", "segmentation_mask")

  def _features(self, params: dict[str, Any]) -> dict[str, Any]:
    size = params["image_size"]
    return {"segmentation_mask": tfds.features.Image(shape=(size, size, 1),
                                                     encoding_format="png")}

  def _metadata(self, params: dict[str, Any]) -> tfds.core.MetadataDict:
    return tfds.core.MetadataDict(class_names=class_names(params["num_classes"]))

  def _plan(self, split: str, index: int) -> dict:
    return embedded_shapes.plan_example(self.params, split, index)

  def _example(self, plan: dict, index: int) -> dict[str, Any]:
    return {"image": embedded_shapes.render(plan),
            "segmentation_mask": class_map(plan)[..., None], "id": index}


def builder(data_dir: str | None = None, **params: Any) -> EmbeddedShapesSegmentation:
  return EmbeddedShapesSegmentation(config=make_builder_config(**params),
                                    data_dir=data_dir)


def prepare(data_dir: str | None = None, **params: Any) -> EmbeddedShapesSegmentation:
  """Generates the dataset once (no-op when already there); returns the builder."""
  return embedded_builder.prepare_once(builder(data_dir, **params))


def chance_levels(params: dict[str, Any] | None = None, split: str = "validation",
                  seed: int = 0) -> dict[str, float]:
  """mIoU of predicting background everywhere and of uniformly random classes."""
  from xception_jax.evaluation import mean_iou  # pylint: disable=g-import-not-at-top
  params = dict(DEFAULT_PARAMS, **(params or {}))
  count = params["num_eval"] if split == "validation" else params["num_train"]
  labels = np.stack([class_map(embedded_shapes.plan_example(params, split, i))
                     for i in range(count)])
  c = params["num_classes"] + 1
  rng = np.random.default_rng(seed)
  return {
      "all_background": mean_iou(np.zeros_like(labels), labels, c)["mean_iou"],
      "uniform_random": mean_iou(rng.integers(0, c, labels.shape), labels, c)["mean_iou"],
      "background_fraction": float((labels == 0).mean()),
  }


if __name__ == "__main__":
  for name, value in chance_levels().items():
    print(f"{name}: {value:.4f}")
