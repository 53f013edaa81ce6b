"""input_pipeline/sources.py: datasets, label features and process shares."""

import os

from hypothesis import given, settings, strategies as st
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import input_pipeline
from input_pipeline import embedded_shapes
from input_pipeline import sources
from input_pipeline import tfrecord_format

SMALL = dict(num_train=23, num_eval=9, image_size=40, num_classes=8,
             max_objects=3, seed=1)


def _config(**kw):
  c = input_pipeline.default_data_config()
  c.update(kw)
  return c


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds"))
  embedded_shapes.prepare(d, **SMALL)
  return d


def _embedded_source(data_dir):
  c = _config(data_dir=data_dir)
  c.embedded.update(SMALL)
  return sources.open_source(c)


def _images(ds):
  return [ex["image"] if isinstance(ex, dict) else ex
          for ex in tfds.as_numpy(ds)]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 64))
def test_share_bounds_partition_the_split(n, count):
  bounds = [sources.share_bounds(n, i, count) for i in range(count)]
  assert bounds[0][0] == 0 and bounds[-1][1] == n
  assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
  sizes = [e - s for s, e in bounds]
  assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_tfds_shares_are_contiguous_runs_of_the_split(embedded_dir, count):
  source = _embedded_source(embedded_dir)
  assert source.num_examples("train") == 23 and source.num_classes == 8
  full, n = source.records("train", 0, 1, ordered=True)
  full = _images(full)
  assert n == 23 and len(set(full)) == 23
  for i in range(count):
    ordered, n_i = source.records("train", i, count, ordered=True)
    start, end = sources.share_bounds(23, i, count)
    assert n_i == end - start
    # Exactly tfds.even_splits' shares, which the eval index relies on.
    assert _images(ordered) == full[start:end]
    fast, _ = source.records("train", i, count, ordered=False)
    assert sorted(_images(fast)) == sorted(full[start:end])


def test_tfds_parse_gives_labels(embedded_dir):
  source = _embedded_source(embedded_dir)
  ds, _ = source.records("eval", 0, 1, ordered=True)
  builder = embedded_shapes.builder(embedded_dir, **SMALL)
  stored = builder.as_data_source("validation")
  raw = [stored[i] for i in range(len(stored))]
  parsed = list(tfds.as_numpy(ds.map(source.parse)))
  assert len(parsed) == len(raw) == 9
  for p, r in zip(parsed, raw):
    assert set(p) == {"image", "labels"}
    np.testing.assert_array_equal(p["labels"], r["labels"])
    np.testing.assert_array_equal(tf.io.decode_png(p["image"]).numpy(),
                                  r["image"])
  np.testing.assert_allclose(source.class_weights().sum(), 1.0, rtol=1e-6)


@pytest.mark.parametrize("count", [1, 2, 4])
def test_tfrecord_shares(tmp_path, count):
  examples = [{"image": np.full((4, 4, 3), i, np.uint8), "labels": [i % 7]}
              for i in range(30)]
  tfrecord_format.write_examples(str(tmp_path / "tr-*.tfrecord"), examples,
                                 num_shards=7, image_format="png")
  source = sources.open_source(_config(
      dataset=f"tfrecord_multilabel:{tmp_path}/tr-*.tfrecord", num_classes=7,
      eval_files=f"{tmp_path}/tr-*.tfrecord"))
  assert source.num_examples("train") == 30
  seen = []
  for i in range(count):
    start, end = sources.share_bounds(30, i, count)
    ordered, n = source.records("eval", i, count, ordered=True)
    values = [tf.io.decode_png(source.parse(r)["image"]).numpy()[0, 0, 0]
              for r in ordered]
    assert n == end - start and values == list(range(start, end))
    fast, _ = source.records("train", i, count, ordered=False)
    fast_values = [int(tf.io.decode_png(source.parse(r)["image"])[0, 0, 0])
                   for r in fast]
    assert sorted(fast_values) == list(range(start, end))
    seen += fast_values
  assert sorted(seen) == list(range(30))


def test_folder_source(tmp_path):
  classes = ["cat", "ant", "bee"]  # Labels follow the sorted names.
  for split, n in (("train", 4), ("val", 2)):
    for c, name in enumerate(classes):
      os.makedirs(tmp_path / split / name)
      for k in range(n):
        img = np.full((5 + k, 6, 3), 10 * c + k, np.uint8)
        ext, data = ((".png", tf.io.encode_png(img)) if k % 2 else
                     (".jpg", tf.io.encode_jpeg(img, quality=100)))
        tf.io.write_file(str(tmp_path / split / name / f"{k}{ext}"), data)
  source = sources.open_source(_config(
      dataset=f"folder:{tmp_path}", task="single_label", eval_split="val"))
  assert source.num_classes == 3 and source.num_examples("train") == 12
  assert source.num_examples("eval") == 6
  got = []
  for i in range(2):
    ds, n = source.records("train", i, 2, ordered=True)
    assert n == 6
    for r in ds:
      ex = source.parse(r)
      value = int(tf.io.decode_image(ex["image"])[0, 0, 0])
      # Pixel value 10 * c + k encodes the class directory the file was in.
      assert ["ant", "bee", "cat"][int(ex["label"])] == classes[value // 10]
      got.append(value)
  assert sorted(got) == sorted(10 * c + k for c in range(3) for k in range(4))
  with pytest.raises(ValueError, match="split 'test' not found"):
    sources.open_source(_config(dataset=f"folder:{tmp_path}",
                                task="single_label", eval_split="test"))


def test_unknown_dataset_is_a_clear_error():
  with pytest.raises(ValueError, match=r"Unknown dataset 'imagenet2013'.*"
                     r"did you mean.*imagenet2012"):
    sources.open_source(_config(dataset="imagenet2013", task="single_label"))
  with pytest.raises(ValueError, match="config.task must be one of"):
    sources.open_source(_config(task="multilabel"))


def test_missing_manual_download_names_the_dir_and_command(tmp_path):
  with pytest.raises(sources.DatasetNotPreparedError) as info:
    sources.open_source(_config(dataset="imagenet2012", task="single_label",
                                data_dir=str(tmp_path)))
  manual = os.path.join(str(tmp_path), "downloads", "manual")
  message = str(info.value)
  assert f"put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in {manual}" in message
  assert (f"tfds build imagenet2012 --data_dir={tmp_path} "
          f"--file_format=array_record --manual_dir={manual}") in message
  # With the archives there, it only asks for the build.
  os.makedirs(manual)
  for f in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"):
    open(os.path.join(manual, f), "w").close()
  with pytest.raises(sources.DatasetNotPreparedError,
                     match="The archives are in"):
    sources.open_source(_config(dataset="imagenet2012", task="single_label",
                                data_dir=str(tmp_path)))


def test_task_mismatches_are_clear_errors():
  with pytest.raises(ValueError, match="Unknown multi-label dataset 'mnist'"):
    sources.open_source(_config(dataset="mnist", task="multi_label"))
  with pytest.raises(ValueError, match="not a single-label"):
    sources.open_source(_config(dataset="voc/2012", task="single_label"))
  with pytest.raises(ValueError, match="config.num_classes must be set"):
    sources.open_source(_config(dataset="tfrecord_multilabel:/x/*.tfrecord",
                                num_classes=None))


def _parsed_mock(name, task, num_examples=4, **mock_kw):
  with tfds.testing.mock_data(num_examples=num_examples, **mock_kw):
    source = sources.open_source(_config(dataset=name, task=task))
    ds, n = source.records("train", 0, 1, ordered=True)
    return source, n, list(tfds.as_numpy(ds.map(source.parse)))


def _structure(example):
  return {k: _structure(v) if isinstance(v, dict) else True
          for k, v in example.items()}


def fixed_records(examples):
  """An `as_data_source_fn` for tfds.testing.mock_data: these examples,
  serialised with the builder's own features (the keys they hold), as the raw
  records a tfds ArrayRecord data source returns. (tfds' default random mock of
  data sources fails on sequences of dicts, e.g. voc's and coco's objects.)"""

  def as_data_source(self, split, **kwargs):
    del split, kwargs
    features = tfds.decode.PartialDecoding(
        _structure(examples[0])).extract_features(self.info.features)
    return [features.serialize_example(ex) for ex in examples]

  return as_data_source


def test_mock_voc_and_coco_labels():
  rng = np.random.default_rng(0)
  img = lambda: rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
  for name, example, expected in (
      ("voc/2012", lambda i: {"image": img(), "labels": [i, 19 - i]},
       lambda i: [i, 19 - i]),
      ("coco/2017", lambda i: {"image": img(), "objects": {"label": [i, i, 79]}},
       lambda i: [i, i, 79])):
    examples = [example(i) for i in range(4)]
    source, n, parsed = _parsed_mock(name, "multi_label",
                                     as_data_source_fn=fixed_records(examples))
    assert n == 4 and len(parsed) == 4
    for i, p in enumerate(parsed):
      np.testing.assert_array_equal(p["labels"], expected(i))
      assert p["image"][:3] in (b"\xff\xd8\xff", b"\x89PN")
      decoded = tf.io.decode_image(p["image"]).numpy()
      if p["image"][:3] == b"\x89PN":  # Lossless: the very pixels.
        np.testing.assert_array_equal(decoded, examples[i]["image"])


def test_voc_and_coco_read_the_tabled_feature():
  img = np.zeros((8, 8, 3), np.uint8)
  voc = fixed_records(
      [{"image": img, "labels": [3, 14], "objects": {"label": [3, 3, 14, 0]}}])
  _, _, parsed = _parsed_mock("voc/2012", "multi_label", as_data_source_fn=voc)
  assert [p["labels"].tolist() for p in parsed] == [[3, 14]]
  coco = fixed_records(
      [{"image": img, "objects": {"label": [7, 7, 2], "area": [1, 2, 3]}}])
  _, _, parsed = _parsed_mock("coco/2017", "multi_label",
                              as_data_source_fn=coco)
  assert [p["labels"].tolist() for p in parsed] == [[7, 7, 2]]


def test_open_images_keeps_confident_labels_only():
  img = np.zeros((8, 8, 3), np.uint8)
  as_data_source = fixed_records(
      [{"image": img, "objects": {"label": [5, 7, 9], "confidence": [10, 0, 6]}},
       {"image": img, "objects": {"label": [1], "confidence": [4]}}])
  source, _, parsed = _parsed_mock("open_images_v4", "multi_label",
                                   as_data_source_fn=as_data_source)
  assert source.num_classes == 19995
  assert [p["labels"].tolist() for p in parsed] == [[5, 9], []]


class _FlakyReader:
  """Records b"r<i>"; record 3 cannot be read."""

  def __len__(self):
    return 6

  def __getitem__(self, i):
    if not 0 <= i < 6:
      raise IndexError(i)
    if i == 3:
      raise OSError("Input/output error")
    return b"r%d" % i


def test_python_lookup_reads_a_chunk_and_empties_an_unreadable_record():
  lookup = sources.python_lookup(_FlakyReader())
  got = lookup(tf.constant([5, 3, 0, 5], tf.int64)).numpy().tolist()
  assert got == [b"r5", b"", b"r0", b"r5"]
  assert sources.lookup_one(lookup, tf.constant(2, tf.int64)).numpy() == b"r2"
  pairs = list(sources.chunked_lookup(tf.data.Dataset.range(6),
                                      lookup).as_numpy_iterator())
  assert pairs == [(i, b"" if i == 3 else b"r%d" % i) for i in range(6)]
  with pytest.raises((IndexError, tf.errors.OpError)):  # Out of range: a bug.
    lookup(tf.constant([6], tf.int64))
