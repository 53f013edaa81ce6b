"""Segmentation data: the embedded variant, oxford_iiit_pet (mocked), the streams."""

import io
import itertools

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import input_pipeline
from input_pipeline import embedded_shapes
from input_pipeline import embedded_shapes_segmentation as ess
from input_pipeline import segmentation_preprocessing
from input_pipeline import segmentation_sources
from input_pipeline import train_stream

EMB = dict(num_train=24, num_eval=10, image_size=40, num_classes=8, max_objects=3, seed=1,
           zipf_exponent=0.0)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("tfds_seg"))
  ess.prepare(d, **EMB)
  return d


def _config(data_dir, **kw):
  c = input_pipeline.segmentation_data_config()
  c.data_dir = data_dir
  c.embedded_segmentation.update(EMB)
  c.update(dict(image_size=32, eval_image_size=48, batch_size=4, eval_batch_size=4,
                seed=3, input_threads=2, input_autotune=False))
  c.update(kw)
  return c


def _stored(data_dir, split):
  b = ess.builder(data_dir, **EMB)
  return list(tfds.as_numpy(b.as_dataset(split=split, read_config=tfds.ReadConfig(
      interleave_cycle_length=1))))


def test_embedded_masks_are_the_drawn_objects(data_dir):
  stored = _stored(data_dir, "train")
  assert len(stored) == 24
  for ex in stored[:8]:
    plan = embedded_shapes.plan_example(EMB, "train", int(ex["id"]))
    # The classification dataset's drawing code, unchanged: the same pixels.
    np.testing.assert_array_equal(ex["image"], embedded_shapes.render(plan))
    mask = ex["segmentation_mask"][..., 0]
    assert set(np.unique(mask)) <= set(range(9))
    assert set(np.unique(mask)) - {0} == set(plan["classes"] + 1)
    # Independent check: an object pixel has its class's colour (+ jitter and noise).
    image = ex["image"].astype(np.float64)
    for k in np.unique(mask[mask > 0]):
      colour, _ = embedded_shapes.class_colour_shape(int(k) - 1)
      error = np.abs(image[mask == k] - embedded_shapes.COLOURS[colour]).max(-1)
      assert np.median(error) < 25, (k, np.median(error))
    # The visible pixels of each object (embedded_shapes.visible_masks) carry its class.
    for cls, visible in zip(plan["classes"], embedded_shapes.visible_masks(plan)):
      assert (mask[visible] == cls + 1).all()
  assert ess.class_names(8)[0] == "background" and len(ess.class_names(8)) == 9


def test_chance_levels_are_low():
  levels = ess.chance_levels(dict(EMB, num_eval=30))
  assert 0.6 < levels["background_fraction"] < 0.95
  assert levels["all_background"] == pytest.approx(levels["background_fraction"] / 9)
  assert levels["uniform_random"] < 0.06


def test_train_batches_are_a_function_of_config_and_step(data_dir):
  bundle = input_pipeline.create_segmentation_datasets(_config(data_dir), 0, 1)
  assert (bundle.num_train_examples, bundle.num_eval_examples, bundle.num_classes) == (24, 10, 9)
  assert bundle.task == "segmentation" and bundle.class_weights is None
  assert (bundle.ignore_label, bundle.image_size, bundle.eval_image_size) == (255, 32, 48)
  batches = list(itertools.islice(bundle.train, 8))  # Over an epoch boundary (6 steps).
  batch = batches[0]
  assert set(batch) == {"image", "label"}
  assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (4, 32, 32) and batch["label"].dtype == np.int32
  assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  labels = np.concatenate([b["label"] for b in batches])
  assert set(np.unique(labels)) <= set(range(9)) | {255} and 255 in labels
  # Aligned: where the mask says class k, the colour is k's (most such pixels).
  images = (np.concatenate([b["image"] for b in batches]) + 1) * 127.5
  for k in range(1, 9):
    colour, _ = embedded_shapes.class_colour_shape(k - 1)
    error = np.abs(images[labels == k] - embedded_shapes.COLOURS[colour]).max(-1)
    if error.size:
      assert np.median(error) < 30, k
  resumed = input_pipeline.create_segmentation_datasets(_config(data_dir), 0, 1,
                                                        start_step=5)
  for expected, got in zip(batches[5:], itertools.islice(resumed.train, 3)):
    np.testing.assert_array_equal(got["label"], expected["label"])
    np.testing.assert_array_equal(got["image"], expected["image"])
  other_seed = input_pipeline.create_segmentation_datasets(_config(data_dir, seed=4), 0, 1)
  assert not np.array_equal(next(other_seed.train)["label"], batch["label"])


def _take(config, p, count, steps, start_step=0):
  bundle = input_pipeline.create_segmentation_datasets(config, p, count, start_step)
  return list(itertools.islice(bundle.train, steps)), bundle


def _joined(per_process):
  """Side by side, in process order: the global batches."""
  return [{k: np.concatenate([b[k] for b in step]) for k in step[0]}
          for step in zip(*per_process)]


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert set(x) == set(y) == {"image", "label"}
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def _reference(stored, positions, seed, bad=(), n=None):
  """Independent of the pipeline's plumbing: the image and class map shown at each
  global position g (its epoch's permutation rank g % N, a bad record replaced by
  the next good rank), through DeepLab's augmentation seeded by (seed, g)."""
  n = n or len(stored)
  out = []
  for g in positions:
    order = train_stream.permutation(tf.range(n), g // n, n, seed, True).numpy()
    k = g % n
    while order[k] in bad:
      k = (k + 1) % n
    image, label = stored[order[k]]
    out.append(segmentation_preprocessing.preprocess_train(
        tf.constant(image), tf.constant(label), tf.constant([seed, g], tf.int64),
        crop_size=32))
  return out


def test_processes_see_the_global_batches_and_resume_anywhere(data_dir):
  # 8 steps of 4 = 32 positions: over the epoch boundary at N = 24.
  config = _config(data_dir)
  single, _ = _take(config, 0, 1, 8)
  per_count = {}
  for count in (2, 4):
    per_count[count] = [_take(config, p, count, 8)[0] for p in range(count)]
    assert per_count[count][0][0]["image"].shape == (4 // count, 32, 32, 3)
    _assert_batches_equal(_joined(per_count[count]), single)
  # The examples are the stored ones in each epoch's permutation of the whole split.
  stored = [(ex["image"], ex["segmentation_mask"][..., 0])
            for ex in _stored(data_dir, "train")]
  want = _reference(stored, range(32), seed=3)
  labels = np.concatenate([b["label"] for b in single])
  images = np.concatenate([b["image"] for b in single])
  for g, (image, label) in enumerate(want):
    np.testing.assert_array_equal(labels[g], label.numpy(), err_msg=str(g))
    np.testing.assert_allclose(images[g], image.numpy(), atol=1e-5, err_msg=str(g))
  # Resume mid-epoch (step 3) and across the boundary (step 5: positions 20..31),
  # also on a process count other than the one that ran before.
  for start, count in ((3, 1), (5, 2)):
    resumed = [_take(config, p, count, 3, start_step=start)[0] for p in range(count)]
    _assert_batches_equal(_joined(resumed), single[start:start + 3])


def test_eval_is_the_stored_masks_padded_across_processes(data_dir):
  stored = _stored(data_dir, "validation")
  seen = {}
  for p in range(2):
    bundle = input_pipeline.create_segmentation_datasets(
        _config(data_dir, batch_size=4, eval_batch_size=4), p, 2)
    batches = list(bundle.eval_batches())
    assert len(batches) == bundle.num_eval_batches == 3  # 5 rows per process, 2 per batch.
    for b in batches:
      assert b["image"].shape == (2, 48, 48, 3) and b["label"].shape == (2, 48, 48)
      for row in range(2):
        if not b["mask"][row]:
          assert b["index"][row] == -1 and (b["label"][row] == 255).all()
          continue
        seen[int(b["index"][row])] = (b["label"][row], b["image"][row], b["size"][row])
  assert sorted(seen) == list(range(10))
  for i, (label, image, size) in seen.items():
    assert size.tolist() == [40, 40]
    np.testing.assert_array_equal(label[:40, :40], stored[i]["segmentation_mask"][..., 0])
    assert (label[40:] == 255).all() and (label[:, 40:] == 255).all()
    np.testing.assert_allclose(image[:40, :40], stored[i]["image"] / 127.5 - 1, atol=1e-6)


def test_bad_configs_are_clear_errors(data_dir):
  with pytest.raises(ValueError, match="config.task must be 'segmentation'"):
    input_pipeline.create_segmentation_datasets(_config(data_dir, task="multi_label"), 0, 1)
  with pytest.raises(ValueError, match="not a segmentation dataset"):
    input_pipeline.create_segmentation_datasets(_config(data_dir, dataset="mnist"), 0, 1)
  with pytest.raises(ValueError, match="min_scale_factor"):
    input_pipeline.create_segmentation_datasets(_config(data_dir, min_scale_factor=3.0), 0, 1)
  with pytest.raises(ValueError, match="num_classes = 5 but"):
    input_pipeline.create_segmentation_datasets(_config(data_dir, num_classes=5), 0, 1)


# ---------------------------------------------------------------------------
# oxford_iiit_pet through tfds mock data.


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def _pet_examples(rng, n):
  examples = []
  for _ in range(n):
    h, w = rng.integers(20, 50, size=2)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    trimap = rng.choice(np.array([1, 2, 3], np.uint8), size=(h, w))
    examples.append({"image": tf.io.encode_jpeg(image).numpy(),
                     "segmentation_mask": _png(trimap)})
  return examples


def _fixed(examples):
  """An `as_data_source_fn` for tfds.testing.mock_data: these examples as the raw
  serialised records a tfds data source returns (the source's reader)."""

  def as_data_source(self, split, **kwargs):
    del split, kwargs
    features = tfds.decode.PartialDecoding(
        {"image": True, "segmentation_mask": True}).extract_features(self.info.features)
    return [features.serialize_example(ex) for ex in examples]
  return as_data_source


def test_oxford_pets_trimap_maps_to_background_pet_ignore():
  examples = _pet_examples(np.random.default_rng(0), 6)
  config = input_pipeline.segmentation_data_config()
  config.update(dict(dataset="oxford_iiit_pet", eval_split="test", image_size=24,
                     eval_image_size=64, batch_size=2, eval_batch_size=4))
  with tfds.testing.mock_data(num_examples=6, as_data_source_fn=_fixed(examples)):
    bundle = input_pipeline.create_segmentation_datasets(config, 0, 1)
    assert bundle.num_classes == 2
    batches = list(bundle.eval_batches())
    next(bundle.train)
  rows = [(b["label"][r], b["size"][r]) for b in batches for r in range(4) if b["mask"][r]]
  assert len(rows) == 6
  for (label, size), ex in zip(rows, examples):
    trimap = np.asarray(Image.open(io.BytesIO(ex["segmentation_mask"])))
    h, w = size
    expected = np.select([trimap == 1, trimap == 2], [1, 0], 255)
    np.testing.assert_array_equal(label[:h, :w], expected)


PETS = 14
BAD_IMAGES, BAD_MASKS = (2, 9), (6,)


def _pet_records(examples, bad_images=(), bad_masks=()):
  """An `as_data_source_fn`: the examples as serialised records, with the image
  (or mask) bytes of the given records replaced by bytes that do not decode."""

  def as_data_source(self, split, **kwargs):
    del self, split, kwargs
    records = []
    for i, ex in enumerate(examples):
      image = b"not an image" if i in bad_images else ex["image"]
      mask = ex["segmentation_mask"][:30] if i in bad_masks else ex["segmentation_mask"]
      records.append(tf.train.Example(features=tf.train.Features(feature={
          "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image])),
          "segmentation_mask": tf.train.Feature(
              bytes_list=tf.train.BytesList(value=[mask]))})).SerializeToString())
    return records
  return as_data_source


def _pet_config(**kw):
  config = input_pipeline.segmentation_data_config()
  config.update(dict(dataset="oxford_iiit_pet", eval_split="", image_size=32, batch_size=4,
                     seed=5, input_threads=2, input_autotune=False))
  config.update(kw)
  return config


def test_undecodable_image_or_mask_does_not_shift_the_stream():
  examples = _pet_examples(np.random.default_rng(1), PETS)
  bad = BAD_IMAGES + BAD_MASKS
  config = _pet_config()
  with tfds.testing.mock_data(num_examples=PETS, as_data_source_fn=_pet_records(
      examples, BAD_IMAGES, BAD_MASKS)):
    full, bundle = _take(config, 0, 1, 9)  # 36 positions: 2.6 epochs.
    # Resume after and across bad records, on 1 and 2 processes.
    resumed = {count: _joined([_take(config, p, count, 4, start_step=3)[0]
                               for p in range(count)]) for count in (1, 2)}
  # Each bad record once per epoch: ranks 0..13, 14..27 and 28..35 of the stream.
  counts = [sum(train_stream.permutation(k, g // PETS, PETS, 5, True).numpy() in bad
                for g, k in ((g, g % PETS) for g in range(lo, hi)))
            for lo, hi in ((0, 14), (14, 28), (28, 36))]
  assert counts[:2] == [3, 3]
  assert bundle.skipped_images()["train"] == sum(counts)
  table = {1: 1, 2: 0, 3: 255}
  stored = []
  for ex in examples:
    image = tf.io.decode_jpeg(ex["image"]).numpy()
    trimap = np.asarray(Image.open(io.BytesIO(ex["segmentation_mask"])))
    stored.append((image, np.vectorize(table.get)(trimap).astype(np.int32)))
  want = _reference(stored, range(36), seed=5, bad=bad)
  labels = np.concatenate([b["label"] for b in full])
  images = np.concatenate([b["image"] for b in full])
  for g, (image, label) in enumerate(want):
    np.testing.assert_array_equal(labels[g], label.numpy(), err_msg=str(g))
    np.testing.assert_allclose(images[g], image.numpy(), atol=1e-5, err_msg=str(g))
  for count in (1, 2):
    _assert_batches_equal(resumed[count], full[3:7])


def test_mask_of_another_size_is_a_clear_error():
  examples = _pet_examples(np.random.default_rng(2), 4)
  rng = np.random.default_rng(3)
  examples[1]["segmentation_mask"] = _png(rng.choice(np.array([1, 2, 3], np.uint8),
                                                     size=(7, 9)))
  with tfds.testing.mock_data(num_examples=4, as_data_source_fn=_pet_records(examples)):
    bundle = input_pipeline.create_segmentation_datasets(_pet_config(), 0, 1)
    with pytest.raises(ValueError, match="Image and mask sizes differ in oxford_iiit_pet"):
      next(bundle.train)
    bundle.train.close()


def test_unmapped_mask_values_are_a_clear_error():
  # Auto-mocked masks hold random bytes, not the trimap's 1, 2, 3.
  config = input_pipeline.segmentation_data_config()
  config.update(dict(dataset="oxford_iiit_pet", eval_split="", image_size=24, batch_size=2))
  with tfds.testing.mock_data(num_examples=4):
    bundle = input_pipeline.create_segmentation_datasets(config, 0, 1)
    with pytest.raises(ValueError, match="oxford_iiit_pet holds a mask value with no class"):
      next(bundle.train)
    bundle.train.close()  # Stops its readers (tfds' random mock fails on some records).


def test_value_tables():
  voc = segmentation_sources.value_table(
      segmentation_sources.SEGMENTATION_DATASETS["voc_segmentation"], 21)
  assert voc[:21].tolist() == list(range(21)) and voc[255] == 255 and voc[21] == -1
