"""Where segmentation examples come from: tfds datasets with an image and a mask.

A `SegmentationSource` is a `sources.Source`: random access to the still-encoded
records of a split by record id (`lookup(role)`, through the same readers as the
classification tfds sources, `sources.open_tfds_split`: the tfds ArrayRecord data
source, or a TFRecord offset index for TFRecord builds), so the train stream
(train_stream.py) reads records in the order of its global permutation. `decode`
turns a record into the decoded image and stored mask (`{"image": uint8 [h, w, 3],
"mask": uint8 [h, w]}`, a bad image fails here and is skipped), `to_label` maps the
stored mask values to class ids (ignore label 255 where nothing is labelled; an
unmapped value or a mask of another size than its image is an error, not a skip).
The eval stream reads a process's share (`records`, the classification sources'
rule `sources.share_bounds`, i.e. `tfds.even_splits`) through the same lookup.

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
# Starts of the errors raised (not skipped) for a bad mask: a stored value with no
# class (segmentation_preprocessing.map_labels' message), a size that differs from
# its image's.
LABEL_ERROR = "Label id out of range"
SIZE_ERROR = "Image and mask sizes differ"
# How many distinct unmapped mask values `check_label` reports.
_REPORTED_VALUES = 16
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


class SegmentationSource(sources.ReaderSource):
  """Random access to the records of a prepared tfds segmentation dataset's train
  and eval splits (raw serialised examples, deserialised by `decode`)."""

  task = "segmentation"

  def __init__(self, builder: tfds.core.DatasetBuilder, name: str,
               spec: SegmentationSpec, splits: dict[str, str | None]):
    self.builder = builder
    self.name = name
    self._spec = spec
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
    # Only the image and mask are deserialised (as tfds' own reader does).
    self._features = self._decoders.extract_features(features)
    # Opening the splits here checks the data is there, before any work.
    self._readers = {"train": sources.open_tfds_split(builder, name, splits["train"])}
    if splits.get("eval"):
      self._readers["eval"] = sources.open_tfds_split(builder, name, splits["eval"])

  def decode(self, record: tf.Tensor) -> dict[str, tf.Tensor]:
    """A serialised record -> decoded image (uint8 [h, w, 3]) and stored mask
    (uint8 [h, w]); a bad image or record fails here (the pipeline skips it)."""
    record = self._features.deserialize_example(record,
                                                decoders=self._decoders.decoders)
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
        message=f"{SIZE_ERROR} in {self.name} (a mask must have its image's height "
        "and width; rebuild the dataset)")
    with tf.control_dependencies([check]):
      return tf.identity(label)

  def label_unchecked(self, mask: tf.Tensor,
                      image: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
    """`to_label` without its checks: int32 class ids (-1 where a stored value has
    no class) and what `check_label` needs to raise them later.

    The train stream skips examples whose map fails (undecodable data) and raises
    only in its `label_fn`; a bad mask must be an error there, not a skip."""
    mask = tf.cast(mask, tf.int32)
    label = tf.gather(tf.constant(self._table), mask)
    bad = tf.unique(tf.boolean_mask(mask, label < 0))[0][:_REPORTED_VALUES]
    bad = tf.pad(bad, [[0, _REPORTED_VALUES - tf.shape(bad)[0]]], constant_values=-1)
    bad.set_shape([_REPORTED_VALUES])
    sizes = tf.concat([tf.shape(image)[:2], tf.shape(mask)[:2]], 0)
    return label, {"_unmapped_values": bad, "_sizes": sizes}

  def check_label(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Raises (when run) the errors `label_unchecked` deferred; drops its fields."""
    example = dict(example)
    bad, sizes = example.pop("_unmapped_values"), example.pop("_sizes")
    checks = [
        tf.debugging.Assert(
            bad[0] < 0,
            [f"{LABEL_ERROR}: {self.name} holds a mask value with no class "
             "(offending values):", tf.boolean_mask(bad, bad >= 0)],
            summarize=_REPORTED_VALUES),
        tf.debugging.Assert(
            tf.reduce_all(tf.equal(sizes[:2], sizes[2:])),
            [f"{SIZE_ERROR} in {self.name} (a mask must have its image's height and "
             "width; rebuild the dataset): image, mask", sizes[:2], sizes[2:]]),
    ]
    with tf.control_dependencies(checks):
      return {key: tf.identity(value) for key, value in example.items()}

  def parse(self, record: tf.Tensor) -> dict[str, tf.Tensor]:
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
