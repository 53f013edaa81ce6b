"""Random access to the records of a split: record id -> serialised record bytes.

The train stream (train_stream.py) asks for records by id in the order of a global
permutation, so every reader here is a sequence: `len(reader)` records, `reader[i]`
the bytes of record i, where ids run over the files in the given order (each file
contributing its `take` records after skipping `skip`).

  ArrayRecordFiles   ArrayRecord files (tfds `file_format='array_record'`, or files
                     written by `python -m input_pipeline.convert_tfrecords`): native
                     random access through the array_record package.
  TFRecordIndex      TFRecord files: a record-offset index built by reading every
                     record's 12-byte header once (no payload is read), then one
                     positioned read (`os.pread`) per record. Building the index
                     touches every record, so for large corpora convert them to
                     ArrayRecord once instead (docs/DATA.md).

Both are safe to call from several threads (tf.data's parallel map does).
"""

from __future__ import annotations

import dataclasses
import os
import struct
from typing import Sequence

from absl import logging
import numpy as np

_HEADER = struct.Struct("<QI")  # Record length, masked CRC32C of the length.
_FOOTER_BYTES = 4  # Masked CRC32C of the payload.


@dataclasses.dataclass(frozen=True)
class FileSpan:
  """Records [skip, skip + take) of one file; take=None means to the end."""
  path: str
  skip: int = 0
  take: int | None = None


def is_array_record(path: str) -> bool:
  name = os.path.basename(path)
  return name.endswith(".array_record") or ".array_record-" in name


class ArrayRecordFiles:
  """Records of ArrayRecord files, by id."""

  def __init__(self, spans: Sequence[FileSpan]):
    # Imported here: only this reader needs the package.
    from array_record.python import array_record_data_source as ards  # pylint: disable=g-import-not-at-top
    instructions = []
    for span in spans:
      if span.skip == 0 and span.take is None:
        instructions.append(span.path)
      else:
        total = _array_record_length(ards, span.path)
        take = total - span.skip if span.take is None else span.take
        instructions.append(ards.FileInstruction(
            filename=span.path, skip=span.skip, take=take,
            examples_in_shard=total))
    self._source = ards.ArrayRecordDataSource(instructions)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> bytes:
    return self._source[int(i)]


def _array_record_length(ards, path: str) -> int:
  return len(ards.ArrayRecordDataSource([path]))


class TFRecordIndex:
  """Records of TFRecord files, by id, through a record-offset index."""

  def __init__(self, spans: Sequence[FileSpan]):
    self._paths, self._fds = [], []
    offsets, lengths, files = [], [], []
    for file_id, span in enumerate(spans):
      starts, sizes = scan_tfrecord(span.path)
      end = len(starts) if span.take is None else span.skip + span.take
      if not 0 <= span.skip <= end <= len(starts):
        raise ValueError(
            f"{span.path} holds {len(starts)} records; cannot read records "
            f"[{span.skip}, {end}).")
      offsets.append(starts[span.skip:end])
      lengths.append(sizes[span.skip:end])
      files.append(np.full(end - span.skip, file_id, np.int32))
      self._paths.append(span.path)
    self._offsets = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)
    self._lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    self._files = np.concatenate(files) if files else np.zeros(0, np.int32)
    self._fds = [os.open(p, os.O_RDONLY) for p in self._paths]

  def __len__(self) -> int:
    return len(self._offsets)

  def __getitem__(self, i: int) -> bytes:
    i = int(i)
    if not 0 <= i < len(self._offsets):
      raise IndexError(f"record id {i} not in [0, {len(self._offsets)}).")
    fd = self._fds[self._files[i]]
    return os.pread(fd, int(self._lengths[i]), int(self._offsets[i]))

  def __del__(self):
    for fd in getattr(self, "_fds", ()):
      try:
        os.close(fd)
      except OSError:
        pass


def scan_tfrecord(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(payload offsets, payload lengths) of every record of a TFRecord file.

  Reads 12 bytes per record and seeks over the payload; raises ValueError naming
  the file when it ends inside a record (a truncated or non-TFRecord file).
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(
        f"{path}: the TFRecord reader needs a local (or mounted) file; copy the "
        "shards locally or convert them: python -m input_pipeline."
        "convert_tfrecords IN_GLOB OUT_DIR.")
  size = os.path.getsize(path)
  offsets, lengths = [], []
  position = 0
  with open(path, "rb", buffering=1 << 16) as f:
    while position < size:
      header = f.read(_HEADER.size)
      if len(header) < _HEADER.size:
        raise ValueError(f"{path}: truncated TFRecord header at byte {position}.")
      length, _ = _HEADER.unpack(header)
      start = position + _HEADER.size
      position = start + length + _FOOTER_BYTES
      if position > size:
        raise ValueError(
            f"{path}: record at byte {start - _HEADER.size} runs past the end of "
            "the file (truncated, or not a TFRecord file).")
      offsets.append(start)
      lengths.append(length)
      f.seek(position)
  logging.log_first_n(logging.INFO, "Indexed TFRecord file %s: %d records.", 4,
                      path, len(offsets))
  return np.asarray(offsets, np.int64), np.asarray(lengths, np.int64)


def open_records(spans: Sequence[FileSpan]):
  """The reader for these files (all ArrayRecord, or all TFRecord)."""
  kinds = {is_array_record(s.path) for s in spans}
  if len(kinds) > 1:
    raise ValueError(
        "A split mixes ArrayRecord and TFRecord files: "
        f"{[s.path for s in spans][:4]}...; use one format per split.")
  if kinds == {True}:
    return ArrayRecordFiles(spans)
  return TFRecordIndex(spans)
