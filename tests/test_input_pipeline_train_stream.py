"""input_pipeline/train_stream.py: a global stream that is a function of the config.

The batches of any number of processes, put side by side in process order, are the
one-process batches; resume at any step equals the uninterrupted stream, also after
an undecodable record, whose position shows the next decodable record of its epoch.
"""

import itertools
import os

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
import tensorflow as tf

import input_pipeline
from input_pipeline import convert_tfrecords
from input_pipeline import embedded_shapes
from input_pipeline import preprocessing
from input_pipeline import tfrecord_format
from input_pipeline import train_stream

EMB = dict(num_train=40, num_eval=8, image_size=32, num_classes=6,
           max_objects=2, seed=3)
BAD = (5, 9, 23)  # Undecodable records of the corrupt corpus.


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds"))
  embedded_shapes.prepare(d, **EMB)
  return d


def _config(**kw):
  c = input_pipeline.default_data_config()
  c.embedded.update(EMB)
  c.update(dict(image_size=16, batch_size=8, eval_batch_size=8, seed=7,
                prefetch_batches=1))
  c.update(kw)
  return c


def _take(config, p, count, steps, start_step=0):
  bundle = input_pipeline.create_datasets(config, p, count, start_step)
  return list(itertools.islice(bundle.train, steps)), bundle


def _record_ids(config, p, count, steps):
  """The stream's `record_ids` after each of `steps` batches: [steps, local batch]."""
  stream = input_pipeline.create_datasets(config, p, count, 0).train
  ids = []
  for _ in range(steps):
    next(stream)
    ids.append(stream.record_ids.copy())
  return np.stack(ids)


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert set(x) == set(y)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def _joined(per_process):
  """Side by side, in process order: the global batches."""
  return [{k: np.concatenate([b[k] for b in step]) for k in step[0]}
          for step in zip(*per_process)]


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3000), st.integers(0, 2**31 - 1), st.integers(0, 50))
def test_record_ids_permute_each_epoch(n, seed, epoch):
  ids = train_stream.permutation(tf.range(n), epoch, n, seed, True).numpy()
  assert sorted(ids.tolist()) == list(range(n))  # A bijection of the split.
  if n > 20:
    other = train_stream.permutation(tf.range(n), epoch + 1, n, seed, True)
    assert not np.array_equal(ids, other.numpy())  # A new order per epoch.
  np.testing.assert_array_equal(
      train_stream.permutation(tf.range(n), epoch, n, seed, False), range(n))
  for k in {0, n // 2, n - 1}:  # A position shows its rank; offsets go on.
    g = epoch * n + k
    assert train_stream.record_id(g, 0, n, seed, True) == ids[k]
    assert train_stream.record_id(g, 3, n, seed, True) == ids[(k + 3) % n]


@settings(max_examples=20, deadline=None)
@given(st.integers(2, 3000), st.integers(0, 2**31 - 1), st.integers(0, 50))
def test_vector_record_ids_equal_tf_index_shuffle(n, seed, epoch):
  # The stream looks ids up a chunk at a time, across epoch boundaries; the
  # reference is TensorFlow's public scalar index_shuffle, one position at a time.
  positions = np.arange(epoch * n + n - 5, epoch * n + n + 5, dtype=np.int64)
  got = train_stream.record_id(tf.constant(positions), tf.zeros([10], tf.int64),
                               n, seed, True).numpy()
  want = [int(tf.random.experimental.index_shuffle(
      tf.constant(g % n, tf.int64), tf.constant([seed, g // n], tf.int64),
      tf.constant(n - 1, tf.int64))) for g in positions]
  np.testing.assert_array_equal(got, want)


def test_global_position_of_local_rows():
  # Brute force: lay the global batches out and cut each into P row blocks.
  for count, local in ((1, 8), (2, 4), (4, 2)):
    for p in range(count):
      expected = [s * 8 + p * local + r for s in range(5) for r in range(local)]
      got = [train_stream.global_position(q, p, local, count)
             for q in range(5 * local)]
      assert got == expected


def test_processes_see_the_global_batches(data_dir):
  # 12 steps of 8 = 96 positions: two epoch boundaries (N = 40).
  config = _config(data_dir=data_dir)
  single, bundle = _take(config, 0, 1, 12)
  assert bundle.num_train_examples == 40
  for count in (2, 4):
    per_process = [_take(config, p, count, 12)[0] for p in range(count)]
    assert per_process[0][0]["image"].shape[0] == 8 // count
    _assert_batches_equal(_joined(per_process), single)
  # The record ids each stream reports: the permutation of each epoch, in position order.
  want = np.concatenate([train_stream.permutation(tf.range(40), e, 40, 7, True).numpy()
                         for e in range(3)])[:96].reshape(12, 8)
  np.testing.assert_array_equal(_record_ids(config, 0, 1, 12), want)
  np.testing.assert_array_equal(
      np.concatenate([_record_ids(config, p, 2, 12) for p in range(2)], axis=1), want)
  # Each epoch is the whole split once, in a new order per epoch.
  labels = np.concatenate([b["label"] for b in single])
  epochs = [labels[e * 40:(e + 1) * 40] for e in range(2)]
  key = lambda rows: sorted(map(tuple, rows))
  assert key(epochs[0]) == key(epochs[1])
  assert not np.array_equal(epochs[0], epochs[1])


def test_resume_anywhere_equals_the_stream(data_dir):
  config = _config(data_dir=data_dir)
  full, _ = _take(config, 1, 2, 14)
  for start in (3, 5, 11):  # Mid-epoch, across the boundary at 40, later.
    resumed, _ = _take(config, 1, 2, 3, start_step=start)
    _assert_batches_equal(resumed, full[start:start + 3])
  # Far away costs the same: nothing before the start is read.
  far, _ = _take(config, 0, 1, 1, start_step=10**9)
  assert far[0]["image"].shape == (8, 16, 16, 3)


def _corrupt_corpus(directory, n=30):
  rng = np.random.default_rng(0)
  records, raw = [], []
  for i in range(n):
    image = tf.io.encode_jpeg(rng.integers(0, 256, (20, 16, 3), np.uint8)).numpy()
    if i == BAD[0]:
      image = image[:20] + b"\x00garbage" * 10  # A JPEG header, then garbage.
    elif i in BAD:
      image = b"not an image at all"
    raw.append(image)
    records.append(tfrecord_format.serialize_example(image, [i % 12]))
  path = directory / "c-00000-of-00001.tfrecord"
  tfrecord_format.write_raw_records(str(path), records)
  return raw


def _corrupt_config(pattern, **kw):
  return _config(dataset=f"tfrecord_multilabel:{pattern}", num_classes=12,
                 batch_size=6, eval_batch_size=6, eval_split=None, **kw)


def test_undecodable_record_keeps_every_other_position(tmp_path):
  raw = _corrupt_corpus(tmp_path)
  config = _corrupt_config(f"{tmp_path}/c-*.tfrecord")
  full, bundle = _take(config, 0, 1, 12)  # 72 positions: 2.4 epochs.
  assert bundle.skipped_images()["train"] == 7  # 3 + 3 + (position 65 = 5).
  images = np.concatenate([b["image"] for b in full])
  record_ids = _record_ids(config, 0, 1, 12).reshape(-1)
  # Independent reference: each position's record through preprocessing,
  # a bad record replaced by the next good one in its epoch's permutation.
  n = 30
  for g in range(72):
    order = train_stream.permutation(tf.range(n), g // n, n, 7, True).numpy()
    k = g % n
    rid = order[k]
    while rid in BAD:
      k = (k + 1) % n
      rid = order[k]
    want = preprocessing.preprocess_train(
        tf.constant(raw[rid]), tf.constant([7, g], tf.int64), image_size=16)
    # (Eager and graph rounding of x / 127.5 - 1 may differ in the last bit.)
    np.testing.assert_allclose(images[g], want.numpy(), atol=1e-6,
                               err_msg=str(g))
    assert record_ids[g] == rid, g  # the substitute's id where the record is bad
  # Resume (also on another process count) after and across bad records.
  for count in (1, 3):
    per_process = [_take(config, p, count, 5, start_step=4)[0]
                   for p in range(count)]
    _assert_batches_equal(_joined(per_process), full[4:9])


def test_converted_array_records_give_the_same_stream(tmp_path):
  _corrupt_corpus(tmp_path)
  written = convert_tfrecords.convert(f"{tmp_path}/c-*.tfrecord",
                                      str(tmp_path / "ar"))
  assert [(p.endswith("c-00000-of-00001.array_record"), n)
          for p, n in written] == [(True, 30)]
  tfr, _ = _take(_corrupt_config(f"{tmp_path}/c-*.tfrecord"), 0, 1, 6)
  arr, bundle = _take(_corrupt_config(f"{tmp_path}/ar/c-*.array_record"), 0,
                      1, 6)
  _assert_batches_equal(arr, tfr)
  assert bundle.skipped_images()["train"] == 3



def test_a_conversion_split_over_tasks_gives_the_same_files_and_stream(tmp_path):
  """Three shards converted by two tasks (task 0: shards 0 and 2, task 1: shard 1)
  give the files, records and train stream of one conversion; a task index outside
  [0, num_tasks) is refused in one line."""
  rng = np.random.default_rng(1)
  records = [tfrecord_format.serialize_example(
      tf.io.encode_jpeg(rng.integers(0, 256, (20, 16, 3), np.uint8)).numpy(), [i % 12])
             for i in range(30)]
  for shard in range(3):
    tfrecord_format.write_raw_records(str(tmp_path / f"s-{shard:05d}-of-00003.tfrecord"),
                                      records[shard::3])
  pattern = f"{tmp_path}/s-*.tfrecord"
  whole = convert_tfrecords.convert(pattern, str(tmp_path / "one"))
  split = [convert_tfrecords.convert(pattern, str(tmp_path / "two"), task, 2)
           for task in (0, 1)]
  assert [os.path.basename(p) for p, _ in split[0]] == [
      "s-00000-of-00003.array_record", "s-00002-of-00003.array_record"]
  assert sorted((os.path.basename(p), n) for p, n in split[0] + split[1]) == [
      (os.path.basename(p), n) for p, n in whole]
  one, _ = _take(_corrupt_config(f"{tmp_path}/one/s-*.array_record"), 0, 1, 6)
  two, _ = _take(_corrupt_config(f"{tmp_path}/two/s-*.array_record"), 0, 1, 6)
  _assert_batches_equal(two, one)
  with pytest.raises(ValueError, match=r"--task_index=2 --num_tasks=2"):
    convert_tfrecords.convert(pattern, str(tmp_path / "bad"), 2, 2)


def test_exit_hook_stops_readers_and_the_stream_continues(data_dir):
  # At interpreter exit, train_stream's atexit hook drops every open stream's tf.data
  # iterator while Python is alive (a running iterator destroyed during shutdown can
  # wait forever on reader threads that need the GIL). Dropping it must not change the
  # stream: the next batch restarts the pipeline at the right position.
  config = _config(data_dir=data_dir)
  full, _ = _take(config, 0, 1, 6)
  bundle = input_pipeline.create_datasets(config, 0, 1, 0)
  seen = list(itertools.islice(bundle.train, 3))
  stream = bundle.train
  assert stream in train_stream._OPEN_STREAMS
  assert stream._iterator is not None
  train_stream._close_open_streams()
  assert stream._iterator is None
  seen += list(itertools.islice(bundle.train, 3))
  _assert_batches_equal(seen, full)


def test_a_split_where_nothing_decodes_raises(tmp_path):
  records = [tfrecord_format.serialize_example(b"not an image %d" % i, [i % 12])
             for i in range(40)]
  tfrecord_format.write_raw_records(str(tmp_path / "bad-00000-of-00001.tfrecord"),
                                    records)
  bundle = input_pipeline.create_datasets(
      _corrupt_config(f"{tmp_path}/bad-*.tfrecord"), 0, 1)
  with pytest.raises(RuntimeError, match=r"positions read from global position 0 "
                     r"on without filling a batch of 6: \(nearly\) every record"):
    next(bundle.train)
