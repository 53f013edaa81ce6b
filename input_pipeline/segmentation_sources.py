"""Where segmentation examples come from: tfds datasets with an image and a mask.

A `SegmentationSource` turns `config.dataset` into per-process streams of
records holding the still-encoded image and mask bytes (cheap to shuffle and
skip); `parse` decodes them into `{"image": uint8 [h, w, 3], "label": int32
[h, w]}` with the stored mask values mapped to class ids (ignore label 255
where nothing is labelled). Process shares follow the classification sources'
rule (`sources.share_bounds`, i.e. `tfds.even_splits`).

Accepted datasets (`SEGMENTATION_DATASETS`; add a row to read another one):

  "voc_segmentation"              PASCAL VOC 2012 (voc_segmentation.py, manual
                                  download): 21 classes, 255 = borders.
  "oxford_iiit_pet"               tfds: its trimap `segmentation_mask` holds
                                  1 = pet, 2 = background, 3 = border; mapped to
                                  class 1 (pet), class 0 (background), 255.
  "embedded_shapes_segmentation"  generated locally (config.embedded_segmentation):
                                  background + the embedded classes.

`scene_parse150` is not in the table: its tfds build stores ADE20K's instance
annotations (`annotations_instance`, RGB with instance ids), not the 150-class
semantic maps, so no fixed value table gives its classes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import embedded_shapes_segmentation
from input_pipeline import segmentation_preprocessing
from input_pipeline import sources
from input_pipeline import voc_segmentation

IGNORE_LABEL = 255
EMBEDDED_NAME = embedded_shapes_segmentation.NAME


@dataclasses.dataclass(frozen=True)
class SegmentationSpec:
  """How a tfds dataset stores its masks.

  mask: the mask feature (an Image with one channel, or several: the first is
    read). num_classes: classes of the task (None: from the builder's
    metadata, the embedded dataset). values: stored value -> class id or the
    ignore label; None keeps values in [0, num_classes) and 255 as they are.
  """
  mask: str
  num_classes: int | None
  values: dict[int, int] | None = None
  image: str = "image"


SEGMENTATION_DATASETS: dict[str, SegmentationSpec] = {
    voc_segmentation.NAME: SegmentationSpec("segmentation_mask", voc_segmentation.NUM_CLASSES),
    "oxford_iiit_pet": SegmentationSpec("segmentation_mask", 2,
                                        {1: 1, 2: 0, 3: IGNORE_LABEL}),
    EMBEDDED_NAME: SegmentationSpec("segmentation_mask", None),
}


def value_table(spec: SegmentationSpec, num_classes: int) -> np.ndarray:
  """int32 [256]: stored mask value -> class id / ignore label, -1 = invalid."""
  table = np.full(256, -1, np.int32)
  if spec.values is None:
    table[:num_classes] = np.arange(num_classes)
    table[IGNORE_LABEL] = IGNORE_LABEL
  else:
    for value, cls in spec.values.items():
      table[value] = cls
  return table


class SegmentationSource:
  """Records of a prepared tfds segmentation dataset's train and eval splits."""

  task = "segmentation"

  def __init__(self, builder: tfds.core.DatasetBuilder, name: str,
               spec: SegmentationSpec, splits: dict[str, str | None]):
    self.builder = builder
    self.name = name
    self._spec = spec
    self._splits = splits
    features = builder.info.features
    for key in (spec.image, spec.mask):
      if key not in features or not isinstance(features[key], tfds.features.Image):
        raise ValueError(f"{name} has no image feature {key!r}; features: "
                         f"{list(features.keys())}.")
    num_classes = spec.num_classes
    if num_classes is None:
      num_classes = len(builder.info.metadata["class_names"])
    self.num_classes = int(num_classes)
    self._table = value_table(spec, self.num_classes)
    self._decoders = tfds.decode.PartialDecoding(
        {spec.image: True, spec.mask: True},
        decoders={spec.image: tfds.decode.SkipDecoding(),
                  spec.mask: tfds.decode.SkipDecoding()})
    self._num_examples = {"train": self._count(splits["train"])}
    if splits.get("eval"):
      self._num_examples["eval"] = self._count(splits["eval"])

  def _as_dataset(self, split, ordered: bool) -> tf.data.Dataset:
    read_config = tfds.ReadConfig(
        try_autocache=False, interleave_cycle_length=1 if ordered else 16,
        interleave_block_length=1, enable_ordering_guard=False,
        assert_cardinality=True)
    try:
      return self.builder.as_dataset(split=split, shuffle_files=False,
                                     decoders=self._decoders, read_config=read_config)
    except (AssertionError, FileNotFoundError, tf.errors.NotFoundError) as e:
      raise sources.DatasetNotPreparedError(
          sources._not_prepared_message(self.builder, self.name)) from e  # pylint: disable=protected-access

  def _count(self, split: str) -> int:
    n = int(self._as_dataset(split, ordered=True).cardinality())
    return n if n >= 0 else int(self.builder.info.splits[split].num_examples)

  def has_eval(self) -> bool:
    return "eval" in self._num_examples

  def num_examples(self, role: str) -> int:
    return self._num_examples[role]

  def records(self, role: str, process_index: int, process_count: int, *,
              ordered: bool) -> tuple[tf.data.Dataset, int]:
    """This process's share (a contiguous run of the split) and its size."""
    split = self._splits[role]
    if process_count > 1:
      split = tfds.even_splits(split, n=process_count)[process_index]
    ds = self._as_dataset(split, ordered)
    n = int(ds.cardinality())
    if n < 0:
      start, end = sources.share_bounds(self._num_examples[role], process_index,
                                        process_count)
      n = end - start
    return ds, n

  def decode(self, record: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Decodes image (uint8 [h, w, 3]) and stored mask (uint8 [h, w]); a bad image
    fails here (the pipeline drops it)."""
    image = tf.io.decode_image(record[self._spec.image], channels=3, dtype=tf.uint8,
                               expand_animations=False)
    mask = tf.io.decode_image(record[self._spec.mask], dtype=tf.uint8,
                              expand_animations=False)[..., 0]
    image.set_shape([None, None, 3])
    return {"image": image, "mask": mask}

  def to_label(self, mask: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
    """Stored mask values -> int32 class ids (ignore label 255); checks the values
    and that the mask has the image's size (errors, not skips)."""
    label = segmentation_preprocessing.map_labels(mask, tf.constant(self._table),
                                                  self.name)
    check = tf.debugging.assert_equal(
        tf.shape(image)[:2], tf.shape(label),
        message=f"{self.name}: image and mask sizes differ")
    with tf.control_dependencies([check]):
      return tf.identity(label)

  def parse(self, record: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """{"image": uint8 [h, w, 3], "label": int32 [h, w] class ids}."""
    example = self.decode(record)
    return {"image": example["image"], "label": self.to_label(example["mask"],
                                                              example["image"])}


def open_source(config, get) -> SegmentationSource:
  """The source for config.dataset (`get(field)` reads config fields with defaults)."""
  dataset = str(get("dataset"))
  data_dir = get("data_dir")
  splits = {"train": get("train_split"), "eval": get("eval_split")}
  name = dataset.split(":")[0]
  spec = SEGMENTATION_DATASETS.get(name, SEGMENTATION_DATASETS.get(name.split("/")[0]))
  if spec is None:
    raise ValueError(
        f"config.dataset = {dataset!r} is not a segmentation dataset; known: "
        f"{sorted(SEGMENTATION_DATASETS)} (add a row to input_pipeline."
        "segmentation_sources.SEGMENTATION_DATASETS naming its mask feature).")
  if name == EMBEDDED_NAME:
    params = get("embedded_segmentation")
    params = params.to_dict() if hasattr(params, "to_dict") else dict(params)
    builder = embedded_shapes_segmentation.prepare(data_dir, **params)
  elif name == voc_segmentation.NAME:
    builder = voc_segmentation.builder(data_dir)
    if not builder.is_prepared():
      raise sources.DatasetNotPreparedError(voc_segmentation.not_prepared_message(data_dir))
  else:
    builder = sources._tfds_builder(dataset, data_dir)  # pylint: disable=protected-access
  return SegmentationSource(builder, dataset, spec, splits)


def check_num_classes(source: SegmentationSource, wanted: Any) -> None:
  if wanted and int(wanted) != source.num_classes:
    raise ValueError(f"config.num_classes = {wanted} but {source.name} has "
                     f"{source.num_classes} segmentation classes.")
