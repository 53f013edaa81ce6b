"""input_pipeline/record_readers.py: the TFRecord offset index is built once, stored
with what it was built from, and reused by later starts (which read no record)."""
import os

import numpy as np
import pytest
import tensorflow as tf

import input_pipeline  # noqa: F401
from input_pipeline import record_readers, tfrecord_format
from xception_jax import paths


def _write(tmp_path, n=9, shards=2):
  rng = np.random.default_rng(0)
  examples = [{"image": rng.integers(0, 256, (6 + i % 4, 7, 3), dtype=np.uint8),
               "labels": [i % 5]} for i in range(n)]
  return tfrecord_format.write_examples(str(tmp_path / "data" / "train-*.tfrecord"),
                                        examples, num_shards=shards, image_format="png")


def _expected(files):
  """Every record's bytes, read by TensorFlow's own TFRecord reader."""
  return [r.numpy() for r in tf.data.TFRecordDataset(files)]


def _open(files, index_dir=None):
  return record_readers.open_records([record_readers.FileSpan(f) for f in files],
                                     index_dir)


def _count_file_reads(monkeypatch):
  """Counts what opening a reader reads of the record files themselves."""
  reads = {"scans": 0, "records": 0}
  scan = record_readers.scan_tfrecord
  def counting_scan(path):
    reads["scans"] += 1
    return scan(path)
  monkeypatch.setattr(record_readers, "scan_tfrecord", counting_scan)
  read = paths.RangeReader.read
  def counting_read(self, offset, length):
    reads["records"] += 1
    return read(self, offset, length)
  monkeypatch.setattr(paths.RangeReader, "read", counting_read)
  return reads


def test_second_start_loads_the_stored_index_and_reads_no_record(tmp_path, monkeypatch):
  files = _write(tmp_path)
  reads = _count_file_reads(monkeypatch)
  first = _open(files)
  assert reads == {"scans": 2, "records": 0}
  for f in files:  # stored beside each file
    assert os.path.isfile(f + record_readers.INDEX_SUFFIX)
  assert record_readers.data_files(str(tmp_path / "data" / "train-*")) == files
  second = _open(files)  # a restart, or another process
  assert reads == {"scans": 2, "records": 0}
  expected = _expected(files)
  assert [second[i] for i in range(len(second))] == expected
  assert [first[i] for i in range(len(first))] == expected


def test_a_changed_file_is_indexed_again(tmp_path, monkeypatch):
  files = _write(tmp_path)
  _open(files)
  # Rewrite one shard with other records (different size and time).
  tfrecord_format.write_raw_records(files[0], [b"x" * 5, b"yy", b"z" * 40])
  os.utime(files[0], (1, 1))
  reads = _count_file_reads(monkeypatch)
  reader = _open(files)
  assert reads["scans"] == 1
  assert [reader[i] for i in range(len(reader))] == _expected(files)


def test_index_dir_keeps_the_data_directory_untouched(tmp_path, monkeypatch):
  files = _write(tmp_path)
  before = sorted(os.listdir(tmp_path / "data"))
  _open(files, str(tmp_path / "cache"))
  assert sorted(os.listdir(tmp_path / "data")) == before
  assert len(os.listdir(tmp_path / "cache")) == len(files)
  reads = _count_file_reads(monkeypatch)
  reader = _open(files, str(tmp_path / "cache"))
  assert reads == {"scans": 0, "records": 0}
  assert [reader[i] for i in range(len(reader))] == _expected(files)


def test_an_unwritable_index_place_still_reads(tmp_path, monkeypatch):
  files = _write(tmp_path)
  def refuse(path, data):
    raise PermissionError(f"{path}: read-only")
  monkeypatch.setattr(record_readers, "_write_whole", refuse)
  reader = _open(files)
  assert [reader[i] for i in range(len(reader))] == _expected(files)


def test_a_truncated_file_is_named(tmp_path):
  (path,) = _write(tmp_path, n=3, shards=1)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 3)
  with pytest.raises(ValueError, match="runs past the end"):
    _open([path])
