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

import dataclasses
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import embedded_shapes

NAME = "embedded_shapes_segmentation"
BACKGROUND = "background"

DEFAULT_PARAMS = dict(
    num_train=1000, num_eval=200, image_size=64, num_classes=8,
    max_objects=3, seed=0, zipf_exponent=0.0)


@dataclasses.dataclass(eq=False)
class EmbeddedShapesSegmentationConfig(tfds.core.BuilderConfig):
  """Size, resolution and object-class count (background not counted)."""

  num_train: int = 1000
  num_eval: int = 200
  image_size: int = 64
  num_classes: int = 8
  max_objects: int = 3
  seed: int = 0
  zipf_exponent: float = 0.0


make_builder_config, _DEFAULT_CONFIG = embedded_shapes.builder_configs(
    EmbeddedShapesSegmentationConfig, DEFAULT_PARAMS, "Embedded shapes segmentation",
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


class EmbeddedShapesSegmentation(tfds.core.GeneratorBasedBuilder):
  """Locally generated shapes with class maps (see the module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  BUILDER_CONFIGS = [_DEFAULT_CONFIG]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return None  # As embedded_shapes: nothing to download, no checksums.

  @property
  def params(self) -> dict[str, Any]:
    c = self.builder_config
    return {k: getattr(c, k) for k in DEFAULT_PARAMS}

  def _info(self) -> tfds.core.DatasetInfo:
    p = self.params
    size = p["image_size"]
    return self.dataset_info_from_configs(
        description=__doc__.split("\n\n")[1],
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            "segmentation_mask": tfds.features.Image(shape=(size, size, 1),
                                                     encoding_format="png"),
            "id": np.int64,
        }),
        supervised_keys=("image", "segmentation_mask"),
        metadata=tfds.core.MetadataDict(class_names=class_names(p["num_classes"])),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    p = self.params
    return {"train": self._generate_examples("train", p["num_train"]),
            "validation": self._generate_examples("validation", p["num_eval"])}

  def _generate_examples(self, split, num_examples):
    for index in range(num_examples):
      plan = embedded_shapes.plan_example(self.params, split, index)
      yield index, {"image": embedded_shapes.render(plan),
                    "segmentation_mask": class_map(plan)[..., None], "id": index}


def builder(data_dir: str | None = None, **params: Any) -> EmbeddedShapesSegmentation:
  return EmbeddedShapesSegmentation(config=make_builder_config(**params),
                                    data_dir=data_dir)


def prepare(data_dir: str | None = None, **params: Any) -> EmbeddedShapesSegmentation:
  """Generates the dataset once (no-op when already there); returns the builder."""
  b = builder(data_dir, **params)
  if not b.is_prepared():
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP, try_download_gcs=False))
  return b


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
