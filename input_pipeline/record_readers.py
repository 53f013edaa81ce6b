"""Random access to the records of a split: record id -> serialised record bytes.

The train stream (train_stream.py) asks for records by id in the order of a global
permutation, so every reader here is a sequence: `len(reader)` records, `reader[i]`
the bytes of record i, where ids run over the files in the given order (each file
contributing its `take` records after skipping `skip`).

  ArrayRecordFiles   ArrayRecord files (tfds `file_format='array_record'`, or files
                     written by `python -m input_pipeline.convert_tfrecords`): native
                     random access through the array_record package.
  TFRecordIndex      TFRecord files (local or remote, e.g. gs://): a record-offset
                     index, then one positioned read per record (`os.pread`, or one
                     ranged request on a bucket). The index of a file is built once
                     by reading every record's 12-byte header, and stored beside the
                     file (`<file>.offsets.npz`) or in `index_dir`
                     (config.record_index_dir) with the file's size and modification
                     time; every later start and every process loads it instead,
                     and rebuilds it only when the file changed.

Paths go through xception_jax/paths.py. ArrayRecord files are read by the
array_record package, which reads local files only.

Both are safe to call from several threads (tf.data's parallel map does).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import os
import struct
from typing import Optional, Sequence

from absl import logging
import numpy as np

from xception_jax import paths

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
    remote = [s.path for s in spans if paths.is_remote(s.path)]
    if remote:
      raise ValueError(
          f"{remote[0]}: the ArrayRecord reader reads local files only; copy the "
          "shards to a local disk, or keep TFRecord files in the bucket (read "
          "through a stored offset index, docs/DATA.md).")
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

  def __init__(self, spans: Sequence[FileSpan], index_dir: Optional[str] = None):
    self._paths, self._readers = [], []
    offsets, lengths, files = [], [], []
    # Files are indexed (or their stored indexes loaded) concurrently: on a bucket
    # each costs a few requests, which would add up over thousands of shards.
    with concurrent.futures.ThreadPoolExecutor(INDEX_THREADS) as pool:
      indexes = list(pool.map(lambda s: load_or_build_index(s.path, index_dir), spans))
    for file_id, (span, (starts, sizes)) in enumerate(zip(spans, indexes)):
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
    self._readers = [paths.RangeReader(p) for p in self._paths]

  def __len__(self) -> int:
    return len(self._offsets)

  def __getitem__(self, i: int) -> bytes:
    i = int(i)
    if not 0 <= i < len(self._offsets):
      raise IndexError(f"record id {i} not in [0, {len(self._offsets)}).")
    return self._readers[self._files[i]].read(int(self._offsets[i]),
                                              int(self._lengths[i]))


def scan_tfrecord(path: str) -> tuple[np.ndarray, np.ndarray]:
  """(payload offsets, payload lengths) of every record of a TFRecord file.

  Reads 12 bytes per record and seeks over the payload; raises ValueError naming
  the file when it ends inside a record (a truncated or non-TFRecord file).
  """
  if not paths.isfile(path):
    raise FileNotFoundError(f"{path}: no such TFRecord file.")
  size = paths.size(path)
  offsets, lengths = [], []
  position = 0
  with paths.open(path, "rb") as f:
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


INDEX_SUFFIX = ".offsets.npz"
INDEX_THREADS = 16  # Files indexed at once.
_INDEX_VERSION = 1


def index_path(path: str, index_dir: Optional[str] = None) -> str:
  """Where the offset index of a TFRecord file is stored: beside it, or in
  `index_dir` under a name unique to the file's full path."""
  path = paths.resolve(path)
  if not index_dir:
    return path + INDEX_SUFFIX
  digest = hashlib.sha1(path.encode()).hexdigest()[:16]
  return paths.join(index_dir, f"{paths.basename(path)}-{digest}{INDEX_SUFFIX}")


def load_or_build_index(path: str, index_dir: Optional[str] = None
                        ) -> tuple[np.ndarray, np.ndarray]:
  """(payload offsets, payload lengths) of a TFRecord file: the stored index when
  it was built from the file as it is now (same size and modification time), else
  scanned (`scan_tfrecord`) and stored for the next start and the other processes."""
  try:
    size, mtime = paths.stat_key(path)
  except FileNotFoundError:
    raise FileNotFoundError(f"{path}: no such TFRecord file.") from None
  stored = index_path(path, index_dir)
  try:
    with np.load(io.BytesIO(paths.read_bytes(stored))) as index:
      if (int(index["version"]) == _INDEX_VERSION and int(index["size"]) == size
          and int(index["mtime"]) == mtime):
        return index["offsets"], index["lengths"]
    logging.info("Offset index %s is stale (the file changed); rebuilding it.", stored)
  except FileNotFoundError:
    pass
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("Offset index %s unreadable (%s); rebuilding it.", stored, e)
  offsets, lengths = scan_tfrecord(path)
  buffer = io.BytesIO()
  np.savez(buffer, version=_INDEX_VERSION, size=size, mtime=mtime, offsets=offsets,
           lengths=lengths)
  try:
    _write_whole(stored, buffer.getvalue())
  except Exception as e:  # pylint: disable=broad-except
    logging.warning(
        "Could not store the offset index of %s at %s (%s: %s); it will be rebuilt "
        "at every start. Set config.record_index_dir to a writable directory.", path,
        stored, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
  return offsets, lengths


def _write_whole(path: str, data: bytes) -> None:
  """Writes a file so that a reader sees the old one or the whole new one: a
  remote object is written in one piece; a local file is renamed into place."""
  paths.makedirs(paths.parent(path))
  if paths.is_remote(path):
    paths.write_bytes(path, data)
    return
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def data_files(pattern: str) -> list[str]:
  """The record files a glob names, sorted; stored offset indexes beside them
  (`*.offsets.npz`) are left out."""
  return [f for f in paths.glob(pattern) if not f.endswith(INDEX_SUFFIX)]


def open_records(spans: Sequence[FileSpan], index_dir: Optional[str] = None):
  """The reader for these files (all ArrayRecord, or all TFRecord; a TFRecord
  file's offset index is stored beside it, or in `index_dir`)."""
  kinds = {is_array_record(s.path) for s in spans}
  if len(kinds) > 1:
    raise ValueError(
        "A split mixes ArrayRecord and TFRecord files: "
        f"{[s.path for s in spans][:4]}...; use one format per split.")
  if kinds == {True}:
    return ArrayRecordFiles(spans)
  return TFRecordIndex(spans, index_dir)
