"""The TFRecord format for a user's own multi-label corpus (JFT-style).

A corpus is a set of TFRecord shards. Each record is a serialised
`tf.train.Example` with two features:

  image/encoded  bytes_list, one value: the JPEG or PNG file bytes.
  image/labels   int64_list, zero or more values: the class ids present in the
                 image, each in [0, num_classes). Order and repeats do not matter.

Other features may be present and are ignored. Shards are read in the sorted
order of their file names; the records of shard i come before those of shard
i + 1, and that order defines an example's global position (the eval `index`).

Point the config at the shards with a glob:

  config.dataset = "tfrecord_multilabel:/data/mycorpus/train-*.tfrecord"
  config.eval_files = "/data/mycorpus/eval-*.tfrecord"
  config.num_classes = 17000       # required: the records do not carry it
  config.class_weights_file = "/data/mycorpus/class_weights.txt"  # optional

To shard the data exactly between processes without reading it, the reader
needs each shard's record count. `write_examples` stores them in
`record_counts.json` in the shards' directory ({file name: count}); shards
missing from it are counted by reading them once (records only, no decoding),
with a warning. Writing shards with another tool? Write that file too, e.g.
with `write_record_counts`.

Writing a corpus:

  from input_pipeline import tfrecord_format
  tfrecord_format.write_examples(
      "/data/mycorpus/train-*.tfrecord",
      ({"image": uint8_hwc_array_or_encoded_bytes, "labels": [3, 17]}
       for ...),
      num_shards=64)

The `*` in the pattern becomes `00000-of-00064` ... `00063-of-00064`, so the
same string is the glob the config uses.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Mapping, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from xception_jax import paths as xpaths  # "paths" names shard lists here

IMAGE_KEY = "image/encoded"
LABELS_KEY = "image/labels"
COUNTS_FILENAME = "record_counts.json"

FEATURE_SPEC = {
    IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
    LABELS_KEY: tf.io.VarLenFeature(tf.int64),
}


def shard_paths(path_pattern: str, num_shards: int) -> list[str]:
  if path_pattern.count("*") != 1:
    raise ValueError(
        f"path_pattern must contain exactly one '*', got {path_pattern!r}.")
  return [path_pattern.replace("*", f"{i:05d}-of-{num_shards:05d}")
          for i in range(num_shards)]


def encode_image(image: Any, image_format: str = "jpeg") -> bytes:
  """Encoded bytes of a uint8 [H, W, 3] array; bytes pass through unchanged."""
  if isinstance(image, (bytes, bytearray)):
    return bytes(image)
  image = np.asarray(image)
  if image.dtype != np.uint8 or image.ndim != 3:
    raise ValueError(
        f"image must be uint8 [H, W, C] or encoded bytes, got {image.dtype} "
        f"{image.shape}.")
  if image_format == "jpeg":
    return tf.io.encode_jpeg(image, quality=95).numpy()
  if image_format == "png":
    return tf.io.encode_png(image).numpy()
  raise ValueError(f"image_format must be 'jpeg' or 'png', got {image_format!r}")


def serialize_example(image: Any, labels: Iterable[int],
                      image_format: str = "jpeg") -> bytes:
  labels = [int(l) for l in np.asarray(list(labels), np.int64).reshape(-1)]
  example = tf.train.Example(features=tf.train.Features(feature={
      IMAGE_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[encode_image(image, image_format)])),
      LABELS_KEY: tf.train.Feature(int64_list=tf.train.Int64List(
          value=labels)),
  }))
  return example.SerializeToString()


def write_examples(path_pattern: str, examples: Iterable[Mapping[str, Any]],
                   num_shards: int, image_format: str = "jpeg") -> list[str]:
  """Writes examples into `num_shards` TFRecord files; returns their paths.

  Args:
    path_pattern: file pattern with one `*`, e.g. "/d/train-*.tfrecord".
    examples: dicts with "image" (uint8 [H, W, 3] array, or already encoded
      JPEG/PNG bytes, written as is) and "labels" (a list of int class ids).
    num_shards: number of files. Examples are split into contiguous runs, in
      order, so example k has global position k.
    image_format: "jpeg" or "png", for array images.
  """
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
  examples = list(examples)
  paths = shard_paths(path_pattern, num_shards)
  xpaths.makedirs(xpaths.parent(paths[0]))
  bounds = np.linspace(0, len(examples), num_shards + 1).round().astype(int)
  counts = {}
  for path, start, end in zip(paths, bounds[:-1], bounds[1:]):
    with tf.io.TFRecordWriter(path) as writer:
      for ex in examples[start:end]:
        writer.write(serialize_example(ex["image"], ex["labels"], image_format))
    counts[os.path.basename(path)] = int(end - start)
  write_record_counts(xpaths.parent(paths[0]), counts)
  return paths


def write_raw_records(path: str, records: Sequence[bytes]) -> None:
  """Writes already serialised records to one file (tests: corrupt data)."""
  with tf.io.TFRecordWriter(path) as writer:
    for r in records:
      writer.write(r)
  write_record_counts(xpaths.parent(path), {xpaths.basename(path): len(records)})


def write_record_counts(directory: str, counts: Mapping[str, int]) -> None:
  """Merges {file name: record count} into the directory's counts file."""
  path = xpaths.join(directory, COUNTS_FILENAME)
  merged = read_record_counts(directory)
  merged.update({k: int(v) for k, v in counts.items()})
  text = json.dumps(merged, indent=1, sort_keys=True)
  if xpaths.is_remote(path):  # An object is written whole.
    xpaths.write_text(path, text)
    return
  tmp = path + ".tmp"
  xpaths.write_text(tmp, text)
  os.replace(tmp, path)


def read_record_counts(directory: str) -> dict[str, int]:
  path = xpaths.join(directory, COUNTS_FILENAME)
  if not xpaths.exists(path):
    return {}
  return {k: int(v) for k, v in json.loads(xpaths.read_text(path)).items()}


def count_records(path: str) -> int:
  """Counts the records of one file by reading it (no parsing)."""
  return int(tf.data.TFRecordDataset(path).reduce(
      np.int64(0), lambda n, _: n + 1).numpy())


def list_shards(pattern: str) -> tuple[list[str], list[int]]:
  """The sorted files matching `pattern` and their record counts."""
  files = [f for f in xpaths.glob(pattern)
           if not f.endswith((".offsets.npz", COUNTS_FILENAME))]
  if not files:
    raise FileNotFoundError(
        f"No TFRecord files match {pattern!r}. Write them with "
        "input_pipeline.tfrecord_format.write_examples (see its docstring for "
        "the format) or fix the glob.")
  counts = []
  cache: dict[str, dict[str, int]] = {}
  for f in files:
    directory = xpaths.parent(f)
    if directory not in cache:
      cache[directory] = read_record_counts(directory)
    n = cache[directory].get(os.path.basename(f))
    if n is None:
      logging.warning("%s is not in %s; counting its records by reading it.",
                      f, os.path.join(directory, COUNTS_FILENAME))
      n = count_records(f)
    counts.append(n)
  return files, counts


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
  """{"image": encoded bytes (scalar string), "labels": int64 [n]}."""
  parsed = tf.io.parse_single_example(serialized, FEATURE_SPEC)
  return {
      "image": parsed[IMAGE_KEY],
      "labels": tf.sparse.to_dense(parsed[LABELS_KEY]),
  }
