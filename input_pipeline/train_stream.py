"""The train stream: global batches that are a function of the config alone.

Positions. The stream is a sequence of global positions g = 0, 1, 2, ...; global
step s holds positions [s * B, (s + 1) * B) with B = config.batch_size, in that
order. Position g lies in epoch e = g // N at rank k = g % N (N: train examples)
and shows record

    record_id(g) = permutation_e(k)

where permutation_e is a seeded bijection of [0, N) per epoch
(`tf.random.experimental.index_shuffle` with seed (config.seed, e): a full
shuffle of the whole split that needs no memory and no state), or the identity
when config.shuffle is False. The example is augmented by the caller's `augment`
(example dict, seed) -> example dict, with stateless random ops seeded by
seed = (config.seed, g): classification passes Inception augmentation of the image
(`augment_image(preprocessing.preprocess_train, ...)`), segmentation DeepLab's joint
augmentation of the image and its class map.

Processes. With P processes and b = B // P, process p feeds rows
[p * b, (p + 1) * b) of every global batch: its local position q (step q // b,
row q % b) is global position (q // b) * B + p * b + q % b. It reads only those
records. So the examples of a step and their augmentation are the same for any
number of processes and devices, and the concatenation of the P local batches of
a step, in process order, is the global batch.

Resume. Starting at step s starts the local positions at s * b: nothing before
it is read, so the cost does not depend on s, and no iterator state is needed
beyond the step.

Undecodable images. The example at position g whose image (or record) fails to
decode is replaced by the first record that decodes among ranks k + 1, k + 2, ...
of the same epoch's permutation (wrapping around), still augmented with seed g.
Every other position keeps its example, so a bad record never shifts the
stream. The fast path drops the failing element (tf.data `ignore_errors`); the
iterator notices the missing position, computes the substitute eagerly with the
same graph function, counts it, and restarts the tf.data pipeline at the next
step (cheap, as above). Errors whose message holds one of `clear_errors` (a label
id out of range, a mask of another size than its image) are bad data that must be
fixed, not skipped: they are raised as a one-line ValueError. Raise them in
`label_fn`, which runs after the filter: the filter drops an error raised in
`augment` silently, as a skip (segmentation therefore checks its masks in
`label_fn`). A stream whose reads run far ahead of the last delivered batch (every
record since failed: a dataset in another format than configured) ends with a
RuntimeError instead of reading forever.

Reading. Record ids are looked up a chunk at a time (sources.LOOKUP_CHUNK ids per
call of the source's vector lookup), then each record is parsed and augmented in a
parallel map: one Python call per chunk, not per record. The record ids of the
local batch last returned are `stream.record_ids` (row order; a substitute's own id).

Exit. Records are read by Python (sources.python_lookup) inside tf.data's threads. A
tf.data iterator still running when the interpreter shuts down waits for those
threads, which can no longer take the GIL: the process hangs at exit (11 of 12 runs of
a minimal repro, TensorFlow 2.21). Every TrainStream therefore drops its iterator in an
`atexit` hook, while the interpreter is alive; `close()` does it earlier.
"""

from __future__ import annotations

import atexit
from typing import Callable, Iterator
import weakref

from absl import logging
import numpy as np
import tensorflow as tf

from input_pipeline import sources
from xception_jax import host

# How many following records a substitute search tries before giving up.
MAX_SUBSTITUTE_TRIES = 1000
_DECODE_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError)
# The default `clear_errors`: preprocessing.single_label's and multi_hot's messages
# (a label id out of range) start with it.
LABEL_ERROR = "Label id out of range"


def global_position(local_position, process_index: int, local_batch: int,
                    process_count: int):
  """Local position q of process p -> global position (TF or NumPy integers)."""
  return ((local_position // local_batch) * (local_batch * process_count)
          + process_index * local_batch + local_position % local_batch)


# The constant `tf.random.experimental.index_shuffle` puts before a [2] seed to make
# its kernel's [3] seed. That wrapper pads the wrong axis of an [n, 2] seed, so the
# vector form below builds the [n, 3] seeds itself (bit-equal, per element, to the
# scalar form: tests/test_input_pipeline_train_stream.py).
_INDEX_SHUFFLE_PAD = 498247692


def permutation(rank, epoch, num_examples: int, seed: int,
                shuffle: bool) -> tf.Tensor:
  """permutation_epoch(rank): the record id at `rank` of an epoch. `rank` and
  `epoch` are int64 scalars or vectors of one length (one epoch per rank)."""
  rank = tf.cast(rank, tf.int64)
  if not shuffle or num_examples == 1:
    return rank
  epoch = tf.cast(epoch, tf.int64) + tf.zeros_like(rank)
  seeds = tf.stack([tf.fill(tf.shape(epoch), tf.constant(_INDEX_SHUFFLE_PAD, tf.int64)),
                    tf.fill(tf.shape(epoch), tf.constant(seed, tf.int64)), epoch], -1)
  return tf.raw_ops.RandomIndexShuffle(
      index=rank, seed=seeds, max_index=tf.constant(num_examples - 1, tf.int64),
      rounds=4)


def record_id(position: tf.Tensor, offset: tf.Tensor, num_examples: int,
              seed: int, shuffle: bool) -> tf.Tensor:
  """The record shown at global position g (a scalar or a vector), or `offset`
  ranks after it in the same epoch (wrapping around)."""
  position = tf.cast(position, tf.int64)
  epoch = position // num_examples
  rank = (position % num_examples + tf.cast(offset, tf.int64)) % num_examples
  return permutation(rank, epoch, num_examples, seed, shuffle)


class TrainStream:
  """Infinite iterator of this process's train batches (dicts of NumPy arrays).

  Args:
    lookup, parse: the source's record access (sources.Source).
    num_examples: N, the train split's size.
    augment: (parsed example dict, seed int64 [2]) -> augmented example dict;
      runs before the undecodable-record filter (a decode failure in it is
      skipped and substituted).
    label_fn: example dict -> example dict with the model's `label`.
    process_index, process_count, local_batch: p, P and b = B // P.
    start_step: the first step yielded.
    seed, shuffle: config fields.
    options: tf.data options.
    prefetch: batches prefetched by tf.data.
    on_skip: called with each undecodable position's global position.
    clear_errors: substrings of error messages that are raised (as a one-line
      ValueError from the first of them on), not skipped.
  """

  def __init__(self, *, lookup: Callable, parse: Callable, num_examples: int,
               augment: Callable[[dict, tf.Tensor], dict], label_fn: Callable,
               process_index: int, process_count: int, local_batch: int,
               start_step: int, seed: int, shuffle: bool,
               options: tf.data.Options, prefetch: int,
               on_skip: Callable[[int], None],
               clear_errors: tuple[str, ...] = (LABEL_ERROR,)):
    self._lookup, self._parse, self._label_fn = lookup, parse, label_fn
    self._augment = augment
    self._n = int(num_examples)
    self._p, self._count, self._b = process_index, process_count, local_batch
    self._seed, self._shuffle = int(seed), bool(shuffle)
    self._clear_errors = tuple(clear_errors)
    self._options, self._prefetch = options, int(prefetch)
    self._on_skip = on_skip
    self._next = int(start_step) * local_batch  # Next local position.
    # The records of the local batch last returned, row by row (substitutes for
    # undecodable records included): what tests compare across process counts.
    self.record_ids: np.ndarray | None = None
    self._iterator: Iterator | None = None
    self._eager_example = None
    _OPEN_STREAMS.add(self)

  def close(self) -> None:
    """Stops the reader threads (the next `next()` starts them again)."""
    self._iterator = None

  # -- The example at a position (one graph function for both paths).

  def example(self, position: tf.Tensor, offset: tf.Tensor) -> dict:
    """Parsed, augmented example for global position g from record `offset`
    ranks after its own (0: its own record)."""
    rid = record_id(position, offset, self._n, self._seed, self._shuffle)
    return dict(self._decode(position, sources.lookup_one(self._lookup, rid)),
                _record_id=rid)

  def _decode(self, position: tf.Tensor, record) -> dict:
    """The parsed example of `record`, augmented with the seed of position g."""
    example = dict(self._parse(record))
    seed = tf.stack([tf.constant(self._seed, tf.int64),
                     tf.cast(position, tf.int64)])
    return dict(self._augment(example, seed))

  def _dataset(self, start: int) -> tf.data.Dataset:
    p, b, count = self._p, self._b, self._count

    def ids(q):
      g = global_position(q, p, b, count)
      return record_id(g, tf.zeros_like(g), self._n, self._seed, self._shuffle)

    def read(qs):
      rids = ids(qs)
      return qs, rids, self._lookup(rids)

    def at(q, rid, record):
      example = self._decode(global_position(q, p, b, count), record)
      return dict(example, _position=q, _record_id=rid)

    def reading_near(chunk):  # Ends a stalled stream: see _reading_near.
      near = tf.numpy_function(self._reading_near, [chunk[0]], tf.bool)
      near.set_shape([])
      return near

    # Local positions -> their record ids -> records, read a chunk at a time
    # (sources.LOOKUP_CHUNK) -> each decoded and augmented in parallel.
    positions = tf.data.Dataset.range(start, np.iinfo(np.int64).max)
    ds = positions.batch(sources.LOOKUP_CHUNK).take_while(reading_near).map(
        read, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).unbatch()
    ds = ds.map(at, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.ignore_errors()  # Undecodable: a missing position, filled below.
    ds = ds.map(self._label_fn, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    ds = ds.batch(b, drop_remainder=True).prefetch(self._prefetch)
    return ds.with_options(self._options)

  # -- Iteration.

  def __iter__(self):
    return self

  def _reading_near(self, first: np.int64) -> np.bool_:
    """Whether a chunk starting at local position `first` is within the read-ahead
    of the next position to deliver. tf.data buffers at most a few batches and a
    chunk or element per input thread ahead of it; the limit is 4x that, plus
    MAX_SUBSTITUTE_TRIES. Reading further means the records since then (nearly) all
    failed: no batch could be filled."""
    return np.bool_(first - self._next < self._read_ahead_limit())

  def _read_ahead_limit(self) -> int:
    threads = self._options.threading.private_threadpool_size or host.available_cpus()
    return MAX_SUBSTITUTE_TRIES + 4 * (self._prefetch + 2 + threads) * (
        self._b + sources.LOOKUP_CHUNK)

  def __next__(self) -> dict[str, np.ndarray]:
    if self._iterator is None:
      self._iterator = self._dataset(self._next).as_numpy_iterator()
    try:
      batch = _next_or_clear_error(self._iterator, self._clear_errors)
    except StopIteration:  # Only the read-ahead guard ends the infinite stream.
      self._iterator = None
      g = int(global_position(self._next, self._p, self._b, self._count))
      raise RuntimeError(
          f"Train input: {self._read_ahead_limit()} positions read from global "
          f"position {g} on without filling a batch of {self._b}: (nearly) every "
          "record failed to parse or decode; is the dataset in the format "
          "config.dataset says?") from None
    positions, record_ids = batch.pop("_position"), batch.pop("_record_id")
    first, end = self._next, self._next + self._b
    self._next = end
    if positions[0] == first and positions[-1] == end - 1:
      self.record_ids = record_ids
      return batch  # Positions are increasing: all b of them are here.
    # Some position failed: keep this step's rows, fill the gaps, and restart
    # the tf.data pipeline at the next step (its batches are now misaligned).
    self._iterator = None
    rows = {int(q): k for k, q in enumerate(positions) if q < end}
    out = {key: [] for key in batch}
    ids = []
    for q in range(first, end):
      if q in rows:
        example = {key: value[rows[q]] for key, value in batch.items()}
        ids.append(record_ids[rows[q]])
      else:
        example = self._substitute(q)
        ids.append(example.pop("_record_id"))
      for key in out:
        out[key].append(example[key])
    self.record_ids = np.asarray(ids, np.int64)
    return {key: np.stack(values) for key, values in out.items()}

  def _substitute(self, q: int) -> dict[str, np.ndarray]:
    """The example for local position q whose own record did not decode."""
    if self._eager_example is None:
      self._eager_example = tf.function(
          lambda g, j: self._label_fn(self.example(g, j)))
    g = int(global_position(q, self._p, self._b, self._count))
    tries = min(self._n, MAX_SUBSTITUTE_TRIES + 1)
    for offset in range(tries):
      try:
        example = self._eager_example(tf.constant(g, tf.int64),
                                      tf.constant(offset, tf.int64))
      except _DECODE_ERRORS as e:
        raise_if_clear(e, self._clear_errors)
        if offset == 0:
          self._on_skip(g)  # Its own record is undecodable (counted once).
        continue
      if offset == 0:
        # Decodes when run alone: the pipeline's failure was transient.
        logging.warning("Train input: position %d failed once in tf.data but "
                        "decodes on a second read.", g)
      return {key: np.asarray(value) for key, value in example.items()}
    raise RuntimeError(
        f"Train input: no decodable image among {tries} records from global "
        f"position {g} on; is the dataset readable?")


# Streams whose tf.data iterators must stop before the interpreter shuts down.
_OPEN_STREAMS: "weakref.WeakSet[TrainStream]" = weakref.WeakSet()


@atexit.register
def _close_open_streams() -> None:
  for stream in list(_OPEN_STREAMS):
    stream.close()


def raise_if_clear(e: tf.errors.OpError, markers: tuple[str, ...]) -> None:
  """Raises ValueError(the message's line from the first marker on), if any."""
  message = str(e)
  for marker in markers:
    start = message.find(marker)
    if start >= 0:
      raise ValueError(message[start:].splitlines()[0]) from e


def _next_or_clear_error(iterator, markers: tuple[str, ...]):
  try:
    return next(iterator)
  except tf.errors.InvalidArgumentError as e:
    raise_if_clear(e, markers)
    raise


def augment_image(preprocess: Callable, **kwargs) -> Callable[[dict, tf.Tensor], dict]:
  """An `augment` that applies preprocess(image, seed, **kwargs) to the image alone
  (the classification stream: preprocessing.preprocess_train)."""

  def augment(example: dict, seed: tf.Tensor) -> dict:
    example = dict(example)
    example["image"] = preprocess(example.pop("image"), seed, **kwargs)
    return example

  return augment


def log_skip(counters) -> Callable[[int], None]:
  """An on_skip callback that counts and logs into pipeline counters."""

  def on_skip(position: int) -> None:
    counters.train += 1
    logging.warning(
        "Train input: undecodable image at global stream position %d replaced "
        "by the next decodable record of its epoch (%d so far in this run).",
        position, counters.train)

  return on_skip
