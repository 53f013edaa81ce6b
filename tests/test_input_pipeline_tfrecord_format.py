"""input_pipeline/tfrecord_format.py: writing and reading the user format."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import input_pipeline  # noqa: F401
from input_pipeline import tfrecord_format


def _examples(n, seed=0):
  rng = np.random.default_rng(seed)
  return [{"image": rng.integers(0, 256, size=(8 + i % 3, 10, 3),
                                 dtype=np.uint8),
           "labels": sorted(rng.choice(50, size=i % 4, replace=False).tolist())}
          for i in range(n)]


def test_write_read_roundtrip_png(tmp_path):
  examples = _examples(11)
  pattern = str(tmp_path / "train-*.tfrecord")
  paths = tfrecord_format.write_examples(pattern, examples, num_shards=3,
                                         image_format="png")
  assert [os.path.basename(p) for p in paths] == [
      f"train-0000{i}-of-00003.tfrecord" for i in range(3)]
  files, counts = tfrecord_format.list_shards(pattern)
  assert files == paths and counts == [4, 3, 4] and sum(counts) == 11
  with open(tmp_path / tfrecord_format.COUNTS_FILENAME) as f:
    assert json.load(f) == {os.path.basename(p): c
                            for p, c in zip(paths, counts)}
  # Records come back in order, shard after shard, with lossless PNG pixels.
  records = tf.data.TFRecordDataset(files).map(tfrecord_format.parse_example)
  for ex, rec in zip(examples, records, strict=True):
    np.testing.assert_array_equal(tf.io.decode_png(rec["image"]).numpy(),
                                  ex["image"])
    assert rec["labels"].dtype == tf.int64
    np.testing.assert_array_equal(rec["labels"].numpy(), ex["labels"])


def test_jpeg_and_pre_encoded_bytes(tmp_path):
  img = np.full((16, 16, 3), 200, np.uint8)
  raw = b"\x89PNG-pretend"
  tfrecord_format.write_examples(
      str(tmp_path / "x-*.rec"),
      [{"image": img, "labels": [1]}, {"image": raw, "labels": []}], 1)
  recs = list(tf.data.TFRecordDataset(str(tmp_path / "x-00000-of-00001.rec"))
              .map(tfrecord_format.parse_example).as_numpy_iterator())
  assert recs[0]["image"][:3] == b"\xff\xd8\xff"  # JPEG by default.
  np.testing.assert_allclose(tf.io.decode_jpeg(recs[0]["image"]).numpy(), img,
                             atol=2)
  assert recs[1]["image"] == raw and recs[1]["labels"].tolist() == []


def test_counts_missing_from_index_are_counted(tmp_path):
  path = str(tmp_path / "other-00000-of-00001.tfrecord")
  with tf.io.TFRecordWriter(path) as w:
    for ex in _examples(5):
      w.write(tfrecord_format.serialize_example(ex["image"], ex["labels"]))
  files, counts = tfrecord_format.list_shards(str(tmp_path / "other-*"))
  assert files == [path] and counts == [5]
  tfrecord_format.write_record_counts(str(tmp_path), {"a": 1})
  tfrecord_format.write_record_counts(str(tmp_path), {"b": 2})
  assert tfrecord_format.read_record_counts(str(tmp_path)) == {"a": 1, "b": 2}


def test_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="No TFRecord files match"):
    tfrecord_format.list_shards(str(tmp_path / "none-*.tfrecord"))
  with pytest.raises(ValueError, match="exactly one"):
    tfrecord_format.write_examples(str(tmp_path / "x.tfrecord"), [], 1)
  with pytest.raises(ValueError, match="uint8"):
    tfrecord_format.encode_image(np.zeros((4, 4, 3), np.float32))
