"""input_pipeline/pipeline.py: create_datasets end to end."""

import collections
import itertools

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import input_pipeline
from input_pipeline import embedded_shapes
from input_pipeline import tfrecord_format
from test_input_pipeline_sources import fixed_records

EMB = dict(num_train=64, num_eval=32, image_size=48, num_classes=12,
           max_objects=3, seed=2)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds"))
  embedded_shapes.prepare(d, **EMB)
  return d


def _config(data_dir=None, **kw):
  c = input_pipeline.default_data_config()
  c.data_dir = data_dir
  c.embedded.update(EMB)
  c.update(dict(image_size=32, batch_size=8, eval_batch_size=10,
                seed=5))
  c.update(kw)
  return c


def _stored(data_dir, split):
  """The embedded split in stored order (eval `index` order)."""
  source = embedded_shapes.builder(data_dir, **EMB).as_data_source(split)
  return [source[i] for i in range(len(source))]


def _multi_hot(labels, n=12):
  out = np.zeros(n, np.float32)
  out[labels] = 1
  return out


def _rows(batches, key="label"):
  return collections.Counter(tuple(r) for b in batches for r in b[key])


def _take(it, n):
  return list(itertools.islice(it, n))


def test_embedded_train_batches(data_dir):
  bundle = input_pipeline.create_datasets(_config(data_dir), process_index=0,
                                          process_count=1)
  assert (bundle.num_train_examples, bundle.num_eval_examples) == (64, 32)
  assert bundle.num_classes == 12 and bundle.task == "multi_label"
  batch = next(bundle.train)
  assert set(batch) == {"image", "label"}
  assert batch["image"].shape == (8, 32, 32, 3)
  assert batch["image"].dtype == np.float32
  assert -1.0 <= batch["image"].min() < -0.3 and 0.3 < batch["image"].max() <= 1.0
  assert batch["label"].shape == (8, 12) and batch["label"].dtype == np.float32
  assert set(np.unique(batch["label"])) <= {0.0, 1.0}
  assert (batch["label"].sum(1) >= 1).all()  # Every image has an object.
  # One epoch (64 / 8 steps) holds every train example once.
  epoch0 = [batch] + _take(bundle.train, 7)
  epoch1 = _take(bundle.train, 8)
  expected = collections.Counter(
      tuple(_multi_hot(ex["labels"])) for ex in _stored(data_dir, "train"))
  assert _rows(epoch0) == expected and _rows(epoch1) == expected
  order0 = np.concatenate([b["label"] for b in epoch0])
  order1 = np.concatenate([b["label"] for b in epoch1])
  assert not np.array_equal(order0, order1)  # Reshuffled each epoch.
  weights = bundle.class_weights
  assert weights.shape == (12,)
  counts = sum(e for e in expected.elements() for e in [np.array(e)])
  np.testing.assert_allclose(weights, counts / counts.sum(), rtol=1e-6)


def test_embedded_eval_batches(data_dir):
  bundle = input_pipeline.create_datasets(_config(data_dir), process_index=0,
                                          process_count=1)
  batches = list(bundle.eval_batches())
  assert len(batches) == bundle.num_eval_batches == 4  # ceil(32 / 10).
  stored = _stored(data_dir, "validation")
  for b in batches:
    assert b["image"].shape == (10, 32, 32, 3) and b["index"].dtype == np.int64
    assert b["mask"].dtype == np.float32 and b["label"].dtype == np.float32
  index = np.concatenate([b["index"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  np.testing.assert_array_equal(index, list(range(32)) + [-1] * 8)
  np.testing.assert_array_equal(mask, [1] * 32 + [0] * 8)
  images = np.concatenate([b["image"] for b in batches])
  labels = np.concatenate([b["label"] for b in batches])
  for k in range(32):
    np.testing.assert_array_equal(labels[k], _multi_hot(stored[k]["labels"]))
    raw = tf.constant(stored[k]["image"])
    ref = tf.image.resize(tf.image.central_crop(raw, 0.875), [32, 32])
    np.testing.assert_allclose(images[k], ref.numpy() / 127.5 - 1, atol=1e-5)
  assert not images[32:].any() and not labels[32:].any()
  # A second pass is identical.
  again = list(bundle.eval_batches())
  for a, b in zip(batches, again, strict=True):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert bundle.skipped_images() == {"train": 0, "eval_last_pass": 0,
                                     "eval_total": 0}


def test_train_is_deterministic_for_a_seed(data_dir):
  def first(seed):
    b = input_pipeline.create_datasets(_config(data_dir, seed=seed), 0, 1)
    return _take(b.train, 3)

  a, b, c = first(5), first(5), first(6)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])
  assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_order_ignores_tensorflows_global_seed(data_dir):
  """Keras utilities set TensorFlow's global seed; the stream depends on config.seed only
  (and building it must not fail on the per-epoch shuffle seeds)."""
  want = _take(input_pipeline.create_datasets(_config(data_dir, seed=5), 0, 1).train, 2)
  tf.random.set_seed(1234)
  try:
    got = _take(input_pipeline.create_datasets(_config(data_dir, seed=5), 0, 1).train, 2)
  finally:
    tf.random.set_seed(None)
  for x, y in zip(got, want):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])


@pytest.mark.parametrize("process_index,process_count", [(0, 1), (1, 2)])
def test_resume_equals_skipping(data_dir, process_index, process_count):
  cfg = _config(data_dir, image_size=16)
  full = _take(input_pipeline.create_datasets(
      cfg, process_index, process_count).train, 24)
  # Steps inside the first epoch, at an epoch boundary and in a later epoch.
  steps_per_epoch = 64 // process_count // (8 // process_count)
  for start in (3, steps_per_epoch, 21):
    resumed = _take(input_pipeline.create_datasets(
        cfg, process_index, process_count, start_step=start).train, 3)
    for k, batch in enumerate(resumed):
      np.testing.assert_array_equal(batch["image"], full[start + k]["image"])
      np.testing.assert_array_equal(batch["label"], full[start + k]["label"])


def test_resume_skips_records_without_decoding(data_dir, monkeypatch):
  from input_pipeline import preprocessing  # pylint: disable=g-import-not-at-top
  calls = []
  original = preprocessing.preprocess_train

  def counting(image_bytes, seed, **kw):
    return original(tf.py_function(lambda x: calls.append(1) or x,
                                   [image_bytes], tf.string), seed, **kw)

  monkeypatch.setattr(preprocessing, "preprocess_train", counting)
  cfg = _config(data_dir, prefetch_batches=1)
  train = input_pipeline.create_datasets(cfg, 0, 1, start_step=13).train
  next(train)
  # 13 steps = 104 positions were skipped; only what the batch and the
  # prefetch/autotune pipeline need was decoded, far fewer than 104.
  assert 8 <= len(calls) < 60, len(calls)


def test_multi_process_shares(data_dir):
  single = list(input_pipeline.create_datasets(
      _config(data_dir, eval_batch_size=9), 0, 1).eval_batches())
  single_images = np.concatenate([b["image"] for b in single])
  count = 3
  per_process = [list(input_pipeline.create_datasets(
      _config(data_dir, batch_size=9, eval_batch_size=9), p, count)
                      .eval_batches()) for p in range(count)]
  # Shares of 11, 11, 10 in batches of 3: 4 batches everywhere.
  assert [len(b) for b in per_process] == [4, 4, 4]
  indices = []
  for p, batches in enumerate(per_process):
    index = np.concatenate([b["index"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    real = index[mask == 1]
    assert (index[mask == 0] == -1).all() and mask.sum() == (11 if p < 2 else 10)
    np.testing.assert_array_equal(real, np.arange(len(real)) + [0, 11, 22][p])
    images = np.concatenate([b["image"] for b in batches])
    np.testing.assert_array_equal(images[mask == 1], single_images[real])
    indices.extend(real.tolist())
  assert sorted(indices) == list(range(32))
  # Train: over one epoch each, the two processes see the whole split once.
  stored = _stored(data_dir, "train")
  expected = collections.Counter(tuple(_multi_hot(ex["labels"]))
                                 for ex in stored)
  seen = collections.Counter()
  for p in range(2):
    b = input_pipeline.create_datasets(_config(data_dir), p, 2)
    seen += _rows(_take(b.train, 8))  # 32 examples in batches of 4.
  assert seen == expected


def test_cache_gives_the_same_batches(data_dir):
  plain = input_pipeline.create_datasets(_config(data_dir), 0, 1)
  cached = input_pipeline.create_datasets(_config(data_dir, cache=True), 0, 1)
  for a, b in zip(_take(plain.train, 10), _take(cached.train, 10)):
    np.testing.assert_array_equal(a["image"], b["image"])
  for _ in range(2):  # The second pass reads the cache.
    for a, b in zip(plain.eval_batches(), cached.eval_batches(), strict=True):
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["index"], b["index"])


def test_indivisible_batch_fails_before_opening_anything():
  cfg = _config(dataset="no_such_dataset_anywhere", batch_size=10)
  with pytest.raises(ValueError, match=r"config.batch_size = 10 is not "
                     r"divisible by the process count 3"):
    input_pipeline.create_datasets(cfg, process_index=0, process_count=3)
  cfg = _config(dataset="no_such_dataset_anywhere", batch_size=12,
                eval_batch_size=10)
  with pytest.raises(ValueError, match=r"config.eval_batch_size = 10 .*"
                     r"process count 4"):
    input_pipeline.create_datasets(cfg, process_index=0, process_count=4)
  with pytest.raises(ValueError, match="Unknown dataset 'no_such_dataset"):
    input_pipeline.create_datasets(_config(dataset="no_such_dataset_anywhere"),
                                   0, 1)


def test_class_weights_and_num_classes_checks(data_dir, tmp_path):
  path = tmp_path / "weights.txt"
  path.write_text("".join(f"{w}\n" for w in np.linspace(1, 2, 12)))
  bundle = input_pipeline.create_datasets(
      _config(data_dir, class_weights_file=str(path)), 0, 1)
  np.testing.assert_allclose(bundle.class_weights, np.linspace(1, 2, 12),
                             rtol=1e-6)
  path.write_text("1\n2\n")
  with pytest.raises(ValueError, match=r"weights.txt: expected 12 weights .*found 2"):
    input_pipeline.create_datasets(
        _config(data_dir, class_weights_file=str(path)), 0, 1)
  with pytest.raises(ValueError, match="config.num_classes = 10"):
    input_pipeline.create_datasets(_config(data_dir, num_classes=10), 0, 1)


def test_mock_imagenet_single_label():
  with tfds.testing.mock_data(num_examples=5):
    cfg = _config(dataset="imagenet2012", task="single_label", batch_size=4,
                  eval_batch_size=4, image_size=24)
    bundle = input_pipeline.create_datasets(cfg, 0, 1)
    assert bundle.num_classes == 1000 and bundle.class_weights is None
    train = _take(bundle.train, 5)  # 20 positions: four epochs of 5.
    evals = list(bundle.eval_batches())
    raw = _mock_reference("imagenet2012", "validation")
    raw_train = _mock_reference("imagenet2012", "train")
  for b in train:
    assert b["image"].shape == (4, 24, 24, 3) and b["image"].dtype == np.float32
    assert b["image"].min() >= -1 and b["image"].max() <= 1
    assert b["label"].dtype == np.int32 and b["label"].shape == (4,)
  labels = [int(ex["label"]) for ex in raw]
  train_labels = [int(ex["label"]) for ex in raw_train]
  assert collections.Counter(np.concatenate([b["label"] for b in train])) == (
      collections.Counter(train_labels * 4))
  assert len(evals) == 2
  np.testing.assert_array_equal(evals[0]["index"], [0, 1, 2, 3])
  np.testing.assert_array_equal(evals[1]["index"], [4, -1, -1, -1])
  np.testing.assert_array_equal(evals[1]["mask"], [1, 0, 0, 0])
  np.testing.assert_array_equal(
      np.concatenate([b["label"] for b in evals])[:5], labels)
  assert evals[1]["label"].dtype == np.int32 and (evals[1]["label"][1:] == 0).all()
  # Images of random sizes were resized; the JPEG path decodes them.
  ref = tf.image.resize(tf.image.central_crop(
      tf.io.decode_jpeg(raw[0]["image"], channels=3), 0.875), [24, 24])
  # decode_and_crop_jpeg upsamples chroma near the window's edge from the
  # window alone, so a few pixels there differ by several levels.
  diff = np.abs(evals[0]["image"][0] - (ref.numpy() / 127.5 - 1))
  assert diff.mean() < 1.5 / 127.5 and np.percentile(diff, 95) < 4 / 127.5


def _mock_reference(name, split):
  """The mocked split as tfds' data source decodes it (image bytes kept)."""
  source = tfds.builder(name).as_data_source(
      split, decoders={"image": tfds.decode.SkipDecoding()})
  return [source[i] for i in range(len(source))]


def test_mock_voc_multi_label():
  rng = np.random.default_rng(0)
  raw = [{"image": rng.integers(0, 256, (9, 7, 3), dtype=np.uint8),
          "labels": sorted({int(i), int(j)})}
         for i, j in rng.integers(0, 20, (3, 2))]
  with tfds.testing.mock_data(as_data_source_fn=fixed_records(raw)):
    cfg = _config(dataset="voc/2012", task="multi_label", batch_size=3,
                  eval_batch_size=3, eval_split="validation")
    bundle = input_pipeline.create_datasets(cfg, 0, 1)
    evals = list(bundle.eval_batches())
    train = next(bundle.train)
  assert collections.Counter(map(tuple, train["label"])) == collections.Counter(
      tuple(_multi_hot(ex["labels"], 20)) for ex in raw)
  assert bundle.num_classes == 20 and len(evals) == 1
  for row, ex in zip(evals[0]["label"], raw, strict=True):
    np.testing.assert_array_equal(row, _multi_hot(ex["labels"], 20))


def _corrupt_corpus(tmp_path, bad_label=False):
  rng = np.random.default_rng(0)
  records = []
  for i in range(12):
    img = rng.integers(0, 256, size=(20, 16, 3), dtype=np.uint8)
    image = tf.io.encode_jpeg(img).numpy()
    if i == 5:  # A JPEG header followed by garbage.
      image = image[:20] + b"\x00garbage" * 10
    if i == 9:
      image = b"not an image at all"
    labels = [i] if not (bad_label and i == 7) else [12]
    records.append(tfrecord_format.serialize_example(image, labels))
  path = tmp_path / "c-00000-of-00001.tfrecord"
  tfrecord_format.write_raw_records(str(path), records)
  return _config(dataset=f"tfrecord_multilabel:{tmp_path}/c-*.tfrecord",
                 eval_files=f"{tmp_path}/c-*.tfrecord", num_classes=12,
                 batch_size=4, eval_batch_size=4, shuffle=False,
                 image_size=16)


def test_corrupt_images_are_skipped_and_counted(tmp_path):
  bundle = input_pipeline.create_datasets(_corrupt_corpus(tmp_path), 0, 1)
  train = _take(bundle.train, 5)
  ids = [int(np.argmax(r)) for b in train for r in b["label"]]
  good = [i for i in range(12) if i not in (5, 9)]
  # Stored order; a bad record's position shows the next record instead.
  epoch = [0, 1, 2, 3, 4, 6, 6, 7, 8, 10, 10, 11]
  assert ids == epoch + epoch[:8]
  assert bundle.skipped_images()["train"] == 3
  evals = list(bundle.eval_batches())
  assert len(evals) == 3  # ceil(12 / 4), padded.
  index = np.concatenate([b["index"] for b in evals])
  mask = np.concatenate([b["mask"] for b in evals])
  np.testing.assert_array_equal(index[mask == 1], good)
  assert mask.sum() == 10 and (index[mask == 0] == -1).all()
  assert bundle.skipped_images() == {"train": 3, "eval_last_pass": 2,
                                     "eval_total": 2}
  list(bundle.eval_batches())
  assert bundle.skipped_images()["eval_total"] == 4


def test_label_out_of_range_is_a_clear_error(tmp_path):
  bundle = input_pipeline.create_datasets(
      _corrupt_corpus(tmp_path, bad_label=True), 0, 1)
  with pytest.raises(ValueError, match=r"Label id out of range \[0, 12\)"):
    _take(bundle.train, 3)
  with pytest.raises(ValueError, match=r"Label id out of range \[0, 12\)"):
    list(bundle.eval_batches())


def test_no_eval_split(data_dir, tmp_path):
  bundle = input_pipeline.create_datasets(_config(data_dir, eval_split=None),
                                          0, 1)
  assert bundle.num_eval_examples == 0 and list(bundle.eval_batches()) == []
  assert next(bundle.train)["image"].shape == (8, 32, 32, 3)
  cfg = _corrupt_corpus(tmp_path)
  cfg.eval_files = None
  bundle = input_pipeline.create_datasets(cfg, 0, 1)
  assert bundle.num_train_examples == 12 and bundle.num_eval_examples == 0
  assert list(bundle.eval_batches()) == []


def test_interleaved_shards_are_deterministic_and_resumable(tmp_path):
  rng = np.random.default_rng(1)
  examples = [{"image": rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8),
               "labels": [i % 10, (i * 7) % 10]} for i in range(40)]
  tfrecord_format.write_examples(str(tmp_path / "s-*.tfrecord"), examples,
                                 num_shards=5)
  cfg = _config(dataset=f"tfrecord_multilabel:{tmp_path}/s-*.tfrecord",
                num_classes=10, batch_size=6, image_size=16)
  full = _take(input_pipeline.create_datasets(cfg, 1, 2).train, 12)
  again = _take(input_pipeline.create_datasets(cfg, 1, 2).train, 12)
  resumed = _take(input_pipeline.create_datasets(cfg, 1, 2,
                                                 start_step=8).train, 4)
  for a, b in zip(full, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  for k, b in enumerate(resumed):
    np.testing.assert_array_equal(b["image"], full[8 + k]["image"])
    np.testing.assert_array_equal(b["label"], full[8 + k]["label"])


@pytest.mark.parametrize("name,classes", [("mnist", 10), ("cifar10", 10)])
def test_mock_other_classification_datasets(name, classes):
  with tfds.testing.mock_data(num_examples=6):
    cfg = _config(dataset=name, task="single_label", batch_size=6,
                  eval_batch_size=6, eval_split="test", image_size=20)
    bundle = input_pipeline.create_datasets(cfg, 0, 1)
    batch = next(bundle.train)
    evals = list(bundle.eval_batches())
    raw = _mock_reference(name, "test")
    raw_train = _mock_reference(name, "train")
  assert bundle.num_classes == classes
  assert batch["image"].shape == (6, 20, 20, 3)
  assert -1 <= batch["image"].min() and batch["image"].max() <= 1
  assert sorted(batch["label"].tolist()) == sorted(
      int(r["label"]) for r in raw_train)
  np.testing.assert_array_equal(evals[0]["label"], [r["label"] for r in raw])
  if name == "mnist":  # Grey PNGs come out as equal RGB channels.
    np.testing.assert_array_equal(evals[0]["image"][..., 0],
                                  evals[0]["image"][..., 2])


def test_folder_end_to_end(tmp_path):
  for c, name in enumerate(["a", "b"]):
    for split in ("train", "val"):
      (tmp_path / split / name).mkdir(parents=True)
      for k in range(3):
        img = np.full((9, 9, 3), 200 * c, np.uint8)
        tf.io.write_file(str(tmp_path / split / name / f"{k}.png"),
                         tf.io.encode_png(img))
  cfg = _config(dataset=f"folder:{tmp_path}", task="single_label",
                eval_split="val", batch_size=6, eval_batch_size=4,
                image_size=8)
  bundle = input_pipeline.create_datasets(cfg, 0, 1)
  batch = next(bundle.train)
  # Class b images are bright (200 -> 0.57), class a black (-1).
  np.testing.assert_allclose(batch["image"].mean(axis=(1, 2, 3)),
                             np.where(batch["label"] == 1, 200 / 127.5 - 1, -1),
                             atol=1e-5)
  assert sorted(batch["label"].tolist()) == [0, 0, 0, 1, 1, 1]
  evals = list(bundle.eval_batches())
  assert [b["mask"].sum() for b in evals] == [4, 2]
