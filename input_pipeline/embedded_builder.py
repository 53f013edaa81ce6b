"""The tfds builder both embedded datasets share: embedded_shapes.py (multi-label
images) and embedded_shapes_segmentation.py (the same images with class maps).

Nothing to download; the parameters are the builder config's fields; a train and a
validation split of `num_train` and `num_eval` examples, example `index` of a split
drawn from its own plan; the features are the PNG image, what the dataset adds, and
the example's index (`id`). A dataset says how to plan an example (`_plan`), what it
stores beside the image (`_features`, `_example`) and, optionally, its supervised keys
and metadata.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Optional

import numpy as np
import tensorflow_datasets as tfds

SPLIT_SIZES = {"train": "num_train", "validation": "num_eval"}  # split -> its size field


@dataclasses.dataclass(eq=False, kw_only=True)
class EmbeddedConfig(tfds.core.BuilderConfig):
  """Size, resolution, object classes (background not counted) and seed of an embedded
  dataset; no defaults here: each dataset's DEFAULT_PARAMS gives every field
  (embedded_shapes.builder_configs)."""

  num_train: int
  num_eval: int
  image_size: int
  num_classes: int
  max_objects: int
  seed: int
  zipf_exponent: float


class EmbeddedBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the embedded builders (not a dataset itself: never registered)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First version."}
  DEFAULT_PARAMS: dict[str, Any] = {}  # The config's fields and their defaults.
  DESCRIPTION = ""                      # One paragraph for the DatasetInfo.
  SUPERVISED_KEYS: Optional[tuple[str, str]] = None

  # tfds 4.9.10 finds a builder's source through `importlib_resources`, which
  # it does not install; the path only locates download checksums, and these
  # builders download nothing.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls):
    return None

  @property
  def params(self) -> dict[str, Any]:
    c = self.builder_config
    return {k: getattr(c, k) for k in self.DEFAULT_PARAMS}

  def _features(self, params: dict[str, Any]) -> dict[str, Any]:
    """The features stored between the image and the id."""
    raise NotImplementedError

  def _metadata(self, params: dict[str, Any]) -> Optional[tfds.core.Metadata]:
    del params
    return None

  def _plan(self, split: str, index: int) -> dict:
    """The plan of one example (embedded_shapes.plan_example)."""
    raise NotImplementedError

  def _example(self, plan: dict, index: int) -> dict[str, Any]:
    """The stored example drawn from `plan`."""
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    p = self.params
    size = p["image_size"]
    return self.dataset_info_from_configs(
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(size, size, 3), encoding_format="png"),
            **self._features(p),
            "id": np.int64,
        }),
        supervised_keys=self.SUPERVISED_KEYS,
        metadata=self._metadata(p),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    p = self.params
    return {split: self._generate_examples(split, p[field])
            for split, field in SPLIT_SIZES.items()}

  def _generate_examples(self, split: str, num_examples: int) -> Iterator[tuple[int, dict]]:
    for index in range(num_examples):
      yield index, self._example(self._plan(split, index), index)


def prepare_once(b: EmbeddedBuilder, **download_and_prepare_kwargs: Any) -> EmbeddedBuilder:
  """Generates `b`'s dataset unless it is there already (no statistics, nothing
  fetched); returns `b`."""
  if not b.is_prepared():
    b.download_and_prepare(**download_and_prepare_kwargs,
                           download_config=tfds.download.DownloadConfig(
                               compute_stats=tfds.download.ComputeStatsMode.SKIP,
                               try_download_gcs=False))
  return b
