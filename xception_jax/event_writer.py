"""TensorBoard event files written through the path layer (local or `gs://`).

clu's SummaryWriter writes through `tf.summary`, i.e. TensorFlow's own file system,
whose GCS client cannot be pointed at an emulator or at any endpoint but Google's.
`EventWriter` is a clu `MetricWriter` that frames TensorBoard `Event` protos as
TFRecords itself (tensorboard's RecordWriter) and writes the bytes through
xception_jax/paths.py:

  local directory   one file, `events.out.tfevents.<time>.<host>.<pid>.<n>.v2`,
                    appended at every flush (as tf.summary does);
  remote directory  an object store cannot append, so every flush writes the records
                    since the previous flush as a new whole object,
                    `events.out.tfevents.<time>.<host>.<pid>.<n>.<part 6 digits>.v2`.
                    TensorBoard reads the files of a directory in name order, so the
                    parts read as one file.

Scalars, texts, histograms and tensor summaries are written as `tf.summary` writes
them (a tensor with the plugin's metadata), so TensorBoard and tests reading
`value.tensor` see the same records. Records are buffered and written at `flush()`,
at `close()`, at the first write `flush_every_secs` after the last flush, and when
the process exits.
"""
from __future__ import annotations

import atexit
import itertools
import os
import socket
import struct
import threading
import time
from typing import Any, Mapping, Optional

from clu.metric_writers import interface
from clu.metric_writers import logging_writer
from clu.metric_writers import multi_writer
from clu.metric_writers import async_writer
import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer import record_writer
from tensorboard.util import tensor_util

from xception_jax import paths

PREFIX = "events.out.tfevents."
_WRITER_IDS = itertools.count()
_HEADER = struct.Struct("<QI")


class _Buffer:
  """A file-like sink for tensorboard's RecordWriter: collects framed records."""

  def __init__(self):
    self.chunks: list[bytes] = []
    self.closed = False

  def write(self, data: bytes) -> None:
    self.chunks.append(data)

  def flush(self) -> None:
    pass

  def close(self) -> None:
    self.closed = True


class EventWriter(interface.MetricWriter):
  """Writes TensorBoard event records into `logdir` (local or remote)."""

  def __init__(self, logdir: str, *, flush_every_secs: float = 60.0,
               parts: Optional[bool] = None):
    """parts: write each flush as a new object (default: when `logdir` is remote)."""
    self._dir = paths.resolve(logdir)
    paths.makedirs(self._dir)
    self._parts = paths.is_remote(self._dir) if parts is None else parts
    # Unique per writer, as tf.summary's names are (two runs in one process in the
    # same second must not share a file).
    self._base = (f"{PREFIX}{int(time.time()):010d}.{socket.gethostname()}."
                  f"{os.getpid()}.{next(_WRITER_IDS)}")
    self._part = 0
    self._flush_every_secs = flush_every_secs
    self._last_flush = time.monotonic()
    self._lock = threading.Lock()
    self._buffer = _Buffer()
    self._records = record_writer.RecordWriter(self._buffer)
    self._add(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
    # Records written after the last flush (e.g. the trainer's final metrics) are
    # written when the process exits, as tf.summary's writer does.
    atexit.register(self.flush)

  @property
  def directory(self) -> str:
    return self._dir

  def _add(self, event: event_pb2.Event) -> None:
    with self._lock:
      self._records.write(event.SerializeToString())
    if time.monotonic() - self._last_flush >= self._flush_every_secs:
      self.flush()

  def _add_summary(self, step: int, summary: summary_pb2.Summary) -> None:
    self._add(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    summary = summary_pb2.Summary()
    for tag, value in scalars.items():
      summary.value.extend(scalar_summary.scalar_pb(tag, np.asarray(value)).value)
    self._add_summary(step, summary)

  def write_texts(self, step: int, texts: Mapping[str, str]):
    summary = summary_pb2.Summary()
    for tag, text in texts.items():
      summary.value.extend(text_summary.text_pb(tag, text).value)
    self._add_summary(step, summary)

  def write_histograms(self, step: int, arrays: Mapping[str, Any],
                       num_buckets: Optional[Mapping[str, int]] = None):
    summary = summary_pb2.Summary()
    for tag, array in arrays.items():
      buckets = num_buckets.get(tag) if num_buckets else None
      summary.value.extend(histogram_summary.histogram_pb(
          tag, np.asarray(array), buckets=buckets).value)
    self._add_summary(step, summary)

  def write_summaries(self, step: int, values: Mapping[str, Any],
                      metadata: Optional[Mapping[str, Any]] = None):
    summary = summary_pb2.Summary()
    for tag, value in values.items():
      meta = (metadata or {}).get(tag)
      if isinstance(meta, bytes):
        meta = summary_pb2.SummaryMetadata.FromString(meta)
      summary.value.add(tag=tag, metadata=meta,
                        tensor=tensor_util.make_tensor_proto(np.asarray(value)))
    self._add_summary(step, summary)

  def _unsupported(self, what: str):
    raise NotImplementedError(
        f"EventWriter writes scalars, texts, histograms and tensor summaries; {what} "
        "need TensorFlow's image/audio encoders (clu's SummaryWriter, local workdirs).")

  def write_images(self, step, images):
    self._unsupported("images")

  def write_videos(self, step, videos):
    self._unsupported("videos")

  def write_audios(self, step, audios, *, sample_rate):
    self._unsupported("audios")

  def write_hparams(self, hparams: Mapping[str, Any]):
    # Kept as text (step 0), readable in TensorBoard's text tab.
    self.write_texts(0, {"hparams": "\n".join(
        f"{k}: {v}" for k, v in sorted(hparams.items()))})

  def flush(self):
    with self._lock:
      data = b"".join(self._buffer.chunks)
      self._buffer.chunks.clear()
      self._last_flush = time.monotonic()
      if not data:
        return
      if self._parts:
        path = paths.join(self._dir, f"{self._base}.{self._part:06d}.v2")
        self._part += 1
        paths.write_bytes(path, data)
      else:
        with paths.open(paths.join(self._dir, f"{self._base}.v2"), "ab") as f:
          f.write(data)

  def close(self):
    self.flush()


def read_records(path: str) -> list[bytes]:
  """The payloads of a TFRecord file read through the path layer (CRCs not checked;
  a truncated last record, e.g. a file still being written, is dropped)."""
  data = paths.read_bytes(path)
  records, position = [], 0
  while position + _HEADER.size <= len(data):
    length, _ = _HEADER.unpack_from(data, position)
    start = position + _HEADER.size
    if start + length + 4 > len(data):
      break
    records.append(data[start:start + length])
    position = start + length + 4
  return records


def read_events(path: str) -> list[event_pb2.Event]:
  """The Event protos of one event file (local or remote)."""
  return [event_pb2.Event.FromString(r) for r in read_records(path)]


def create_default_writer(logdir: str, *, just_logging: bool = False,
                          asynchronous: bool = True) -> interface.MetricWriter:
  """clu's default writer (console + TensorBoard), with events through EventWriter."""
  writers: list[interface.MetricWriter] = [logging_writer.LoggingWriter()]
  if not just_logging:
    writers.append(EventWriter(logdir))
  if asynchronous:
    return async_writer.AsyncMultiWriter(writers)
  return multi_writer.MultiWriter(writers)
