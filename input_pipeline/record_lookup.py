"""Record lookup machinery shared by every source: a process's share of a split,
and record ids -> still-encoded records, a chunk of ids per call.

`python_lookup(reader)` turns a record reader (`len`, `reader[i]` -> bytes;
record_readers.py, or a tfds data source) into a graph function over a vector of
ids; `chunked_lookup` feeds it `LOOKUP_CHUNK` ids at a time (one Python call per
chunk, not per record); `share_bounds` cuts a split into per-process runs
(`tfds.even_splits`' rule).
"""

from __future__ import annotations

from typing import Any, Callable

from absl import logging
import numpy as np
import tensorflow as tf


def share_bounds(num_examples: int, process_index: int,
                 process_count: int) -> tuple[int, int]:
  """[start, end) of a process's run of a split (tfds.even_splits' rule)."""
  base, extra = divmod(num_examples, process_count)
  start = process_index * base + min(process_index, extra)
  return start, start + base + (1 if process_index < extra else 0)


# Record ids read per lookup call. A reader backed by Python takes the GIL and
# crosses into Python once per call; per record, that cost the parallel decoders
# 10% of their throughput (docs/performance/input_pipeline.md, "Train stream").
LOOKUP_CHUNK = 32


def python_lookup(reader) -> Callable[[tf.Tensor], tf.Tensor]:
  """A graph function: record ids (int64 [n]) -> their bytes (string [n]), read by
  `reader` (`len`, `reader[i]`) in one Python call.

  A record that cannot be read comes back empty (b""), which fails to parse: it is
  skipped like an undecodable one, without failing the other records of its call.
  """

  def read(i: int) -> bytes:
    try:
      return reader[i]
    except Exception as e:  # pylint: disable=broad-except
      if isinstance(e, IndexError) and not 0 <= i < len(reader):
        raise  # A bug, not bad data.
      logging.log_every_n_seconds(
          logging.WARNING, "Record %d could not be read (%s: %s); it is skipped.",
          60, i, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
      return b""

  def fetch(ids):
    records = np.empty([len(ids)], dtype=object)
    records[:] = [read(int(i)) for i in ids]
    return records

  def lookup(record_ids):
    records = tf.numpy_function(fetch, [record_ids], tf.string, stateful=False)
    records.set_shape(record_ids.shape)
    return records

  return lookup


def lookup_one(lookup: Callable, record_id: tf.Tensor) -> Any:
  """The record of one id (int64 scalar) through a vector `lookup`."""
  records = lookup(tf.reshape(tf.cast(record_id, tf.int64), [1]))
  return tf.nest.map_structure(lambda t: t[0], records)


def chunked_lookup(ids: tf.data.Dataset, lookup: Callable) -> tf.data.Dataset:
  """A dataset of record ids (int64 scalars) -> (id, record) pairs in the same
  order, looked up LOOKUP_CHUNK ids at a time."""
  return ids.batch(LOOKUP_CHUNK).map(
      lambda chunk: (chunk, lookup(chunk)), num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True).unbatch()
