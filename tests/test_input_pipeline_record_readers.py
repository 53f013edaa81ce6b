"""input_pipeline/record_readers.py: the TFRecord index against TensorFlow's own reader,
and its refusals (a file cut inside a header or a record, a span past a file's end, a
split that mixes ArrayRecord and TFRecord files), each one line naming the file.

The files are written by `tf.io.TFRecordWriter` (not by the project's writer) and read
back by `tf.data.TFRecordDataset`, the independent reference.
"""
import os

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import record_readers
from input_pipeline.record_readers import FileSpan


def _write(path, payloads):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for payload in payloads:
      writer.write(payload)
  return str(path)


def _payloads(seed, count):
  rng = np.random.default_rng(seed)
  return [rng.bytes(int(n)) for n in rng.integers(0, 300, count)]  # empty records too


def _one_line(info, *fragments):
  message = str(info.value)
  assert "\n" not in message, message
  for fragment in fragments:
    assert fragment in message, message


def test_index_reads_what_tensorflow_reads_over_spans(tmp_path):
  a = _write(tmp_path / "a.tfrecord", _payloads(0, 9))
  b = _write(tmp_path / "b.tfrecord", _payloads(1, 6))
  spans = [FileSpan(a, skip=2, take=5), FileSpan(b, skip=1)]
  reader = record_readers.open_records(spans)
  assert isinstance(reader, record_readers.TFRecordIndex)
  want = ([r.numpy() for r in tf.data.TFRecordDataset(a).skip(2).take(5)]
          + [r.numpy() for r in tf.data.TFRecordDataset(b).skip(1)])
  assert len(reader) == len(want) == 10
  order = np.random.default_rng(2).permutation(len(want))  # random access
  assert [reader[i] for i in order] == [want[i] for i in order]
  with pytest.raises(IndexError, match=r"record id 10 not in \[0, 10\)"):
    reader[10]


def test_a_file_cut_inside_a_header_is_refused_naming_it(tmp_path):
  path = _write(tmp_path / "cut.tfrecord", _payloads(3, 4))
  offsets, lengths = record_readers.scan_tfrecord(path)
  end_of_second = int(offsets[1] + lengths[1] + 4)
  with open(path, "r+b") as f:
    f.truncate(end_of_second + 5)  # 5 of the third record's 12 header bytes
  with pytest.raises(ValueError) as info:
    record_readers.scan_tfrecord(path)
  _one_line(info, path, f"truncated TFRecord header at byte {end_of_second}")


def test_a_file_cut_inside_a_record_is_refused_naming_it(tmp_path):
  payloads = [b"x" * 100, b"y" * 100, b"z" * 100]
  path = _write(tmp_path / "cut.tfrecord", payloads)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) - 30)  # inside the third record's payload
  with pytest.raises(ValueError) as info:
    record_readers.TFRecordIndex([FileSpan(path)])
  _one_line(info, path, f"record at byte {2 * (12 + 100 + 4)} runs past the end of the file")


def test_a_file_in_another_format_is_refused(tmp_path):
  path = tmp_path / "images.tfrecord"
  path.write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not a TFRecord file" * 3)
  with pytest.raises(ValueError) as info:
    record_readers.scan_tfrecord(str(path))
  _one_line(info, str(path), "runs past the end of the file", "not a TFRecord file")


@pytest.mark.parametrize("span, records", [
    (dict(skip=4, take=3), "[4, 7)"),     # past the end
    (dict(skip=6), "[6, 5)"),             # the skip alone past the end
    (dict(skip=-1, take=2), "[-1, 1)"),   # a negative skip
])
def test_a_span_outside_its_file_is_refused(tmp_path, span, records):
  path = _write(tmp_path / "five.tfrecord", _payloads(4, 5))
  with pytest.raises(ValueError) as info:
    record_readers.TFRecordIndex([FileSpan(path, **span)])
  _one_line(info, path, f"holds 5 records; cannot read records {records}")


def test_a_split_mixing_formats_is_refused(tmp_path):
  tfrecord = _write(tmp_path / "train-00000-of-00002.tfrecord", _payloads(5, 2))
  array_record = str(tmp_path / "train.array_record-00001-of-00002")
  assert record_readers.is_array_record(array_record)
  assert not record_readers.is_array_record(tfrecord)
  with pytest.raises(ValueError) as info:  # refused before either file is opened
    record_readers.open_records([FileSpan(tfrecord), FileSpan(array_record)])
  _one_line(info, "mixes ArrayRecord and TFRecord files", tfrecord, array_record,
            "one format per split")
