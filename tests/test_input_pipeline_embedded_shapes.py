"""input_pipeline/embedded_shapes.py: the generated multi-label dataset."""

import os

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
import tensorflow_datasets as tfds

import input_pipeline  # noqa: F401
from input_pipeline import embedded_shapes as es

SMALL = dict(num_train=64, num_eval=32, image_size=64, num_classes=16,
             max_objects=4, seed=3)
PALETTE = np.array(list(es.COLOURS.values()), np.float64)


@pytest.fixture(scope="module")
def small_builder(tmp_path_factory):
  return es.prepare(str(tmp_path_factory.mktemp("tfds")), **SMALL)


def _params(**kw):
  return dict(es.DEFAULT_PARAMS, **kw)


def _read_split(builder, split):
  """The split in stored order (prepared as ArrayRecord: random access)."""
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def test_plans_and_images_are_deterministic_per_seed():
  p = _params(image_size=48)
  a = es.render(es.plan_example(p, "train", 5))
  b = es.render(es.plan_example(p, "train", 5))
  np.testing.assert_array_equal(a, b)
  other_seed = es.render(es.plan_example(_params(image_size=48, seed=1),
                                         "train", 5))
  other_split = es.render(es.plan_example(p, "validation", 5))
  assert np.abs(a.astype(int) - other_seed).mean() > 5
  assert np.abs(a.astype(int) - other_split).mean() > 5


def _colour_of_pixels(img):
  """Index of the palette colour each pixel is close to, or -1."""
  d = np.linalg.norm(img[:, :, None, :].astype(np.float64) - PALETTE, axis=-1)
  idx = d.argmin(-1)
  return np.where(d.min(-1) < 60, idx, -1)


def test_labels_match_the_drawn_objects():
  p = _params(image_size=96)
  colour_names = list(es.COLOURS)
  checked = 0
  for i in range(40):
    plan = es.plan_example(p, "train", i)
    img = es.render(plan)
    np.testing.assert_array_equal(es.image_labels(plan),
                                  np.unique(plan["classes"]))
    pixel_colour = _colour_of_pixels(img)
    yy, xx = np.mgrid[0:96, 0:96].astype(np.float64) + 0.5
    visible = es.visible_masks(plan)
    for cls, (cy, cx), r, vis in zip(plan["classes"], plan["centres"],
                                     plan["half_sizes"], visible):
      colour, shape = es.class_colour_shape(int(cls))
      assert vis.sum() > 0.5 * es.shape_mask(shape, yy, xx, cy, cx, r).sum()
      # The visible pixels have the labelled colour...
      assert (pixel_colour[vis] == colour_names.index(colour)).mean() > 0.97
      # ... and the labelled shape fits that colour's pixels best (IoU) when
      # the object is alone in its neighbourhood.
      if (vis == es.shape_mask(shape, yy, xx, cy, cx, r)).all():
        box = ((yy > cy - r - 2) & (yy < cy + r + 2) & (xx > cx - r - 2) &
               (xx < cx + r + 2))
        drawn = (pixel_colour == colour_names.index(colour)) & box
        ious = {}
        for s in es.SHAPES:
          m = es.shape_mask(s, yy, xx, cy, cx, r)
          ious[s] = (drawn & m).sum() / (drawn | m).sum()
        if ious[shape] > 0.9:
          checked += 1
        assert max(ious, key=ious.get) == shape, ious
  assert checked >= 40


def test_label_frequency_is_long_tailed():
  p = _params(num_classes=20)
  plans = [es.plan_example(p, "train", i) for i in range(2000)]
  counts = np.zeros(20)
  for plan in plans:
    counts[es.image_labels(plan)] += 1
  assert counts[0] > 8 * counts.min() > 0
  # Frequency falls with the class rank (Spearman correlation).
  ranks = np.argsort(np.argsort(-counts))
  assert np.corrcoef(ranks, np.arange(20))[0, 1] > 0.9
  sizes = [len(es.image_labels(plan)) for plan in plans]
  assert 1 <= min(sizes) and max(sizes) <= 4 and 1.8 < np.mean(sizes) < 3.0
  weights = es.class_weights_from_plans(plans, 20)
  np.testing.assert_allclose(weights, counts / counts.sum())


def test_builder_stores_what_was_drawn(small_builder):
  assert small_builder.is_prepared()
  info = small_builder.info
  assert info.splits["train"].num_examples == 64
  assert info.splits["validation"].num_examples == 32
  assert info.features["labels"].feature.names == list(es.CLASS_NAMES[:16])
  params = dict(es.DEFAULT_PARAMS, **SMALL)
  for split in ("train", "validation"):
    examples = _read_split(small_builder, split)
    assert sorted(int(ex["id"]) for ex in examples) == list(
        range(SMALL["num_train" if split == "train" else "num_eval"]))
    for ex in examples[:10]:
      plan = es.plan_example(params, split, int(ex["id"]))
      np.testing.assert_array_equal(ex["image"], es.render(plan))
      np.testing.assert_array_equal(ex["labels"], es.image_labels(plan))
      np.testing.assert_array_equal(ex["objects"]["label"], plan["classes"])
      np.testing.assert_allclose(ex["objects"]["bbox"],
                                 np.clip(plan["boxes"] / 64, 0, 1), atol=1e-6)


def test_class_weights_file_is_the_train_label_frequency(small_builder):
  path = es.class_weights_path(small_builder)
  assert os.path.dirname(path) == os.fspath(small_builder.data_path)
  with open(path) as f:
    lines = f.read().splitlines()
  assert len(lines) == 16
  weights = np.array([float(l) for l in lines])
  counts = np.zeros(16)
  for ex in _read_split(small_builder, "train"):
    counts[ex["labels"]] += 1
  np.testing.assert_allclose(weights, counts / counts.sum(), rtol=1e-12)


def test_prepare_reuses_the_generated_data(small_builder, tmp_path):
  data_dir = os.fspath(small_builder.data_dir_root)
  stamp = os.path.getmtime(es.class_weights_path(small_builder))
  again = es.prepare(data_dir, **SMALL)
  assert again.data_path == small_builder.data_path
  assert os.path.getmtime(es.class_weights_path(again)) == stamp


def test_config_validation_and_names():
  assert es.make_builder_config() is es.make_builder_config(num_train=4000)
  a = es.make_builder_config(num_train=10)
  assert a.name != es.make_builder_config(num_train=11).name
  with pytest.raises(ValueError, match="num_classes"):
    es.make_builder_config(num_classes=25)
  with pytest.raises(ValueError, match="Unknown embedded dataset field"):
    es.make_builder_config(num_objects=3)


def test_colours_are_learnable_from_pixels():
  """A linear model on colour histograms finds each colour's presence."""
  p = _params(image_size=48, num_classes=16)
  images, present = [], []
  for i in range(500):
    plan = es.plan_example(p, "train", i)
    images.append(es.render(plan))
    colours = {int(c) % 4 for c in plan["classes"]}
    present.append([k in colours for k in range(4)])
  q = (np.stack(images) // 64).reshape(len(images), -1, 3)
  codes = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
  hist = np.stack([np.bincount(c, minlength=64) for c in codes]) / codes.shape[1]
  present = np.array(present)
  for k in range(4):
    model = LogisticRegression(C=100.0, max_iter=2000).fit(
        hist[:350], present[:350, k])
    auc = roc_auc_score(present[350:, k], model.decision_function(hist[350:]))
    assert auc > 0.95, (k, auc)
