"""Where examples come from: tfds datasets, image folders, TFRecord/ArrayRecord shards.

A `Source` turns `config.dataset` into random access to the *records* of a split:
`source.lookup(role)` maps a vector of record ids (int64 [n], 0 <= id < N, the
split's stored order) to their still-encoded records ([n] leading dimension),
inside a tf.data map over chunks of ids (one Python call per chunk, not per record:
`LOOKUP_CHUNK`).
`Source.parse` (run in the same map, where bad data is caught) turns a record into
`{"image": encoded bytes, "label": int64 []}` (single-label) or
`{"image": encoded bytes, "labels": int64 [n]}` (multi-label).

The lookup machinery (record ids -> records a chunk at a time, process shares) is
in record_lookup.py; opening a prepared tfds split (or saying how to prepare it)
in tfds_splits.py. Their names stay importable from here.

Readers (record_readers.py): tfds datasets prepared as ArrayRecord are read through
`builder.as_data_source` (raw bytes, deserialised by tfds' own graph code);
datasets prepared as TFRecord the old way, and TFRecord corpora, through a
record-offset index built once per start; folders through their file list.

Process shares (the eval stream): the examples of a split, in their stored order,
are cut into `process_count` contiguous runs, the first `N % process_count` one
example longer (exactly `tfds.even_splits`); process p reads only run p. A share's
global offset is `p * (N // P) + min(p, N % P)`.

Accepted `config.dataset` values:
  "<tfds name>"                e.g. "imagenet2012", "cifar10", "voc/2012",
                               "coco/2017", "open_images_v4" (prepared in
                               config.data_dir; never downloaded from here)
  "embedded_shapes"            the locally generated dataset (config.embedded)
  "folder:/root"               tfds.folder_dataset.ImageFolder layout
                               (/root/<split>/<class name>/<image>)
  "tfrecord_multilabel:/glob"  tfrecord_format.py (eval shards: config.eval_files);
                               TFRecord files, or ArrayRecord files converted by
                               `python -m input_pipeline.convert_tfrecords`
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import defaults
from input_pipeline import embedded_shapes
from input_pipeline import record_readers
from input_pipeline import tfds_splits
from input_pipeline import tfrecord_format
# The lookup machinery and the opening of prepared tfds splits live in their own
# files; their names stay importable from here.
from input_pipeline.record_lookup import (  # pylint: disable=unused-import
    LOOKUP_CHUNK, chunked_lookup, lookup_one, python_lookup, share_bounds)
from input_pipeline.tfds_splits import (  # pylint: disable=unused-import
    MANUAL_FILES, DatasetNotPreparedError, open_tfds_split)
from xception_jax import paths
from xception_jax.evaluation import class_weights as weights_io

SINGLE_LABEL = "single_label"
MULTI_LABEL = "multi_label"
TASKS = (SINGLE_LABEL, MULTI_LABEL)
FOLDER_PREFIX = "folder:"
TFRECORD_PREFIX = "tfrecord_multilabel:"
EMBEDDED_NAME = "embedded_shapes"
_base_name = tfds_splits.base_name
_lookup = tfds_splits.table_lookup


@dataclasses.dataclass(frozen=True)
class MultiLabelSpec:
  """Where a tfds dataset keeps an image's label ids.

  labels: path of the int label-id sequence ("objects/label" = ex["objects"]
    ["label"]). confidence / min_confidence: optional path of a per-label
    confidence and the smallest value that counts as present.
  """
  labels: str
  confidence: str | None = None
  min_confidence: int | float | None = None


# Multi-label tfds datasets, by full name first ("coco/2017_panoptic"), then by
# the name before "/". Add a row to read another one.
MULTI_LABEL_DATASETS: dict[str, MultiLabelSpec] = {
    "voc": MultiLabelSpec("labels"),  # Image-level, difficult objects included.
    "coco": MultiLabelSpec("objects/label"),
    "coco/2017_panoptic": MultiLabelSpec("panoptic_objects/label"),
    "coco/2014_panoptic": MultiLabelSpec("panoptic_objects/label"),
    # Image-level labels, verified by humans (confidence 10 = present, 0 =
    # verified absent) or machine-generated (1..9, tenths): keep >= 0.5.
    "open_images_v4": MultiLabelSpec("objects/label", "objects/confidence", 5),
    EMBEDDED_NAME: MultiLabelSpec("labels"),
}


def _get_path(tree: Any, path: str) -> Any:
  if isinstance(tree, dict) and path in tree:
    return tree[path]
  node = tree
  for part in path.split("/"):
    node = node[part]
  return node


def _nested_true(paths: list[str]) -> dict:
  out: dict = {}
  for path in paths:
    node = out
    parts = path.split("/")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = True
  return out


class Source:
  """Random access to the records of a dataset's train and eval splits."""

  name: str
  task: str
  num_classes: int

  def has_eval(self) -> bool:
    """Whether an eval split / eval files are configured."""
    raise NotImplementedError

  def num_examples(self, role: str) -> int:
    """Examples in the whole train or eval split (role: "train" | "eval")."""
    raise NotImplementedError

  def lookup(self, role: str) -> Callable[[tf.Tensor], Any]:
    """A graph function: record ids (int64 [n]) -> their still-encoded records
    (a string [n] tensor, or a dict of [n]-leading tensors)."""
    raise NotImplementedError

  def records(self, role: str, process_index: int = 0, process_count: int = 1,
              *, ordered: bool = True) -> tuple[tf.data.Dataset, int]:
    """This process's share in stored order, and its number of examples.

    Position k of the share is example `start + k` of the split. (`ordered` is
    kept for callers; every source reads in stored order.)
    """
    del ordered
    start, end = share_bounds(self.num_examples(role), process_index,
                              process_count)
    ds = chunked_lookup(tf.data.Dataset.range(start, end), self.lookup(role))
    return ds.map(lambda record_id, record: record), end - start

  def parse(self, record: Any) -> dict[str, tf.Tensor]:
    return record

  def class_weights(self) -> np.ndarray | None:
    return None


class ReaderSource(Source):
  """A Source whose splits are record readers (`len`, `reader[i]` -> bytes) in
  `self._readers` by role ("train", and "eval" when configured)."""

  _readers: dict[str, Any]

  def has_eval(self):
    return "eval" in self._readers

  def num_examples(self, role):
    return len(self._readers[role])

  def lookup(self, role):
    return python_lookup(self._readers[role])


# ----------------------------------------------------------------------------
# tfds builders (incl. the embedded dataset).


class TfdsSource(ReaderSource):
  """Any prepared tfds image dataset, single- or multi-label."""

  def __init__(self, builder: tfds.core.DatasetBuilder, name: str, task: str,
               splits: dict[str, str | None],
               class_weights_path: str | None = None):
    self.builder = builder
    self.name = name
    self.task = task
    self._splits = splits
    self._class_weights_path = class_weights_path
    features = builder.info.features
    supervised = builder.info.supervised_keys
    supervised = supervised[:2] if (
        isinstance(supervised, tuple) and len(supervised) >= 2 and
        all(isinstance(k, str) for k in supervised[:2])) else None
    image_key = supervised[0] if supervised else "image"
    if image_key not in features or not isinstance(
        features[image_key], tfds.features.Image):
      raise ValueError(f"{name} has no image feature {image_key!r}; features: "
                       f"{list(features.keys())}.")
    self._image_key = image_key
    if task == SINGLE_LABEL:
      label_key = supervised[1] if supervised else "label"
      label_feature = features[label_key] if label_key in features else None
      if _lookup(MULTI_LABEL_DATASETS, name) is not None or not isinstance(
          label_feature, tfds.features.ClassLabel) or label_feature.shape:
        raise ValueError(
            f"{name} is not a single-label classification dataset (no scalar "
            f"ClassLabel '{label_key}'); set config.task = '{MULTI_LABEL}' if "
            "it is in MULTI_LABEL_DATASETS, or choose another dataset.")
      self._label_key = label_key
      self._spec = None
      self.num_classes = int(label_feature.num_classes)
      paths = [image_key, label_key]
    else:
      spec = _lookup(MULTI_LABEL_DATASETS, name)
      if spec is None:
        raise ValueError(
            f"Unknown multi-label dataset {name!r}: no entry for it in "
            "input_pipeline.sources.MULTI_LABEL_DATASETS (known: "
            f"{sorted(MULTI_LABEL_DATASETS)}). Add a row naming its label-id "
            "feature, or convert it to the TFRecord format of "
            "input_pipeline/tfrecord_format.py.")
      self._spec = spec
      label_feature = _get_path(features, spec.labels)
      while isinstance(label_feature, tfds.features.Sequence):
        label_feature = label_feature.feature
      if not isinstance(label_feature, tfds.features.ClassLabel):
        raise ValueError(f"{name}: {spec.labels} is not a ClassLabel feature.")
      self.num_classes = int(label_feature.num_classes)
      paths = [image_key, spec.labels] + ([spec.confidence]
                                          if spec.confidence else [])
    self._decoders = tfds.decode.PartialDecoding(
        _nested_true(paths), decoders={image_key: tfds.decode.SkipDecoding()})
    # Only the features read are deserialised (as tfds' own reader does).
    self._features = self._decoders.extract_features(features)
    # Opening the splits here checks the data is there, before any work.
    self._readers = {"train": open_tfds_split(builder, name, splits["train"])}
    if splits.get("eval"):
      self._readers["eval"] = open_tfds_split(builder, name, splits["eval"])

  def parse(self, record):
    record = self._features.deserialize_example(
        record, decoders=self._decoders.decoders)
    image = record[self._image_key]
    if self._spec is None:
      return {"image": image, "label": record[self._label_key]}
    labels = _get_path(record, self._spec.labels)
    if self._spec.confidence:
      confidence = _get_path(record, self._spec.confidence)
      labels = tf.boolean_mask(labels, confidence >= self._spec.min_confidence)
    return {"image": image, "labels": tf.cast(labels, tf.int64)}

  def class_weights(self):
    if self._class_weights_path:
      return weights_io.load_class_weights(self._class_weights_path, self.num_classes)
    return None


# ----------------------------------------------------------------------------
# A folder of images (tfds.folder_dataset.ImageFolder layout).


class FolderSource(Source):
  """root/<split>/<class name>/<image file>; single-label."""

  def __init__(self, root: str, splits: dict[str, str | None]):
    if not paths.isdir(root):
      raise FileNotFoundError(
          f"config.dataset = 'folder:{root}': no such directory. Expected "
          "root/<split>/<class name>/<images>.")
    self.builder = tfds.folder_dataset.ImageFolder(root)
    self.name = FOLDER_PREFIX + root
    self.task = SINGLE_LABEL
    label = self.builder.info.features["label"]
    self.num_classes = int(label.num_classes)
    self._paths, self._labels = {}, {}
    available = sorted(self.builder.info.splits.keys())
    for role, split in splits.items():
      if split is None:
        continue
      if split not in available:
        raise ValueError(
            f"{self.name}: split {split!r} not found (folder splits are plain "
            f"sub-directory names, no slicing): {available}.")
      # ImageFolder lists and deterministically shuffles the files per split.
      examples = self.builder._split_examples[split]  # pylint: disable=protected-access
      self._paths[role] = np.array([e.image_path for e in examples])
      self._labels[role] = np.array([label.str2int(e.label) for e in examples],
                                    np.int64)

  def has_eval(self):
    return "eval" in self._paths

  def num_examples(self, role):
    return len(self._paths[role])

  def lookup(self, role):
    paths = tf.constant(self._paths[role], tf.string)
    labels = tf.constant(self._labels[role], tf.int64)
    return lambda ids: {"path": tf.gather(paths, ids),
                        "label": tf.gather(labels, ids)}

  def parse(self, record):
    # The file is read here, per example, where a missing one is caught.
    return {"image": tf.io.read_file(record["path"]), "label": record["label"]}


# ----------------------------------------------------------------------------
# TFRecord shards in the project's multi-label format.


class TfrecordSource(ReaderSource):
  """tf.train.Example shards (input_pipeline/tfrecord_format.py), as TFRecord
  files (read through a record-offset index) or ArrayRecord files (converted by
  `python -m input_pipeline.convert_tfrecords`)."""

  def __init__(self, train_pattern: str, eval_pattern: str | None,
               num_classes: int | None, index_dir: str | None = None):
    if not num_classes:
      raise ValueError(
          "config.num_classes must be set for a tfrecord_multilabel dataset "
          "(the records do not carry it).")
    self.name = TFRECORD_PREFIX + train_pattern
    self.task = MULTI_LABEL
    self.num_classes = int(num_classes)
    self._index_dir = index_dir
    self._readers = {"train": self._open(train_pattern, "config.dataset")}
    if eval_pattern:
      self._readers["eval"] = self._open(eval_pattern, "config.eval_files")

  def _open(self, pattern: str, field: str):
    files = record_readers.data_files(pattern)
    if not files:
      raise FileNotFoundError(
          f"{field}: no files match {pattern!r}. Write TFRecords with "
          "input_pipeline.tfrecord_format.write_examples (see its docstring for "
          "the format), convert them with python -m "
          "input_pipeline.convert_tfrecords, or fix the glob.")
    return record_readers.open_records(
        [record_readers.FileSpan(f) for f in files], self._index_dir)

  def parse(self, record):
    return tfrecord_format.parse_example(record)


# ----------------------------------------------------------------------------


def open_source(config) -> Source:
  """The source for config.dataset; raises before expensive work if unusable."""
  get = lambda key: defaults.get(config, key)
  task = get("task")
  if task not in TASKS:
    raise ValueError(f"config.task must be one of {TASKS}, got {task!r}.")
  dataset = str(get("dataset"))
  data_dir = get("data_dir")
  splits = {"train": get("train_split"), "eval": get("eval_split")}
  if dataset.startswith(TFRECORD_PREFIX):
    if task != MULTI_LABEL:
      raise ValueError(f"{TFRECORD_PREFIX} datasets are multi-label; set "
                       f"config.task = '{MULTI_LABEL}'.")
    return TfrecordSource(dataset[len(TFRECORD_PREFIX):], get("eval_files"),
                          get("num_classes"), get("record_index_dir"))
  if dataset.startswith(FOLDER_PREFIX):
    if task != SINGLE_LABEL:
      raise ValueError(f"{FOLDER_PREFIX} datasets are single-label; set "
                       f"config.task = '{SINGLE_LABEL}'.")
    return FolderSource(paths.resolve(dataset[len(FOLDER_PREFIX):]),
                        splits)
  if _base_name(dataset) == EMBEDDED_NAME:
    if task != MULTI_LABEL:
      raise ValueError(f"{EMBEDDED_NAME} is multi-label; set config.task = "
                       f"'{MULTI_LABEL}'.")
    embedded = get("embedded")
    params = embedded.to_dict() if hasattr(embedded, "to_dict") else dict(
        embedded)
    builder = embedded_shapes.prepare(data_dir, **params)
    return TfdsSource(builder, EMBEDDED_NAME, task, splits,
                      embedded_shapes.class_weights_path(builder))
  builder = _tfds_builder(dataset, data_dir)
  return TfdsSource(builder, dataset, task, splits)


def _tfds_builder(name: str, data_dir: str | None):
  try:
    return tfds.builder(name, data_dir=data_dir)
  except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
    known = tfds.list_builders(with_community_datasets=False)
    close = difflib.get_close_matches(_base_name(name), known, n=5)
    raise ValueError(
        f"Unknown dataset {name!r} in config.dataset"
        + (f" (did you mean {', '.join(close)}?)" if close else "")
        + f". Use a tfds name (e.g. imagenet2012, voc/2012, coco/2017, "
        f"open_images_v4), '{EMBEDDED_NAME}', '{FOLDER_PREFIX}/path/to/root' or "
        f"'{TFRECORD_PREFIX}/path/train-*.tfrecord'. tfds said: "
        f"{str(e).splitlines()[0]}") from e
