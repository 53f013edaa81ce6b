"""mIoU against a brute-force loop over pixels, sklearn, and the streaming evaluator."""

import jax
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from sklearn.metrics import jaccard_score

from xception_jax.evaluation import StreamingMeanIoU
from xception_jax.evaluation import confusion_matrix
from xception_jax.evaluation import mean_iou
from xception_jax.evaluation.mean_iou import confusion_matrix_jax


def brute_force(predictions, labels, num_classes, ignore_label=255, mask=None):
  """The definition, pixel by pixel, in plain Python."""
  tp = [0] * num_classes
  fp = [0] * num_classes
  fn = [0] * num_classes
  correct = total = 0
  for b in range(labels.shape[0]):
    if mask is not None and not mask[b]:
      continue
    for g, p in zip(labels[b].ravel().tolist(), predictions[b].ravel().tolist()):
      if g == ignore_label:
        continue
      total += 1
      if g == p:
        tp[g] += 1
        correct += 1
      else:
        fn[g] += 1
        fp[p] += 1
  ious = []
  per_class = []
  for c in range(num_classes):
    union = tp[c] + fp[c] + fn[c]
    per_class.append(tp[c] / union if union else float("nan"))
    if union:
      ious.append(tp[c] / union)
  return sum(ious) / len(ious), per_class, correct / total


def random_maps(rng, shape, num_classes, absent=(), ignore_fraction=0.2, ignore_label=255,
                agreement=0.5):
  """Ground truth without the `absent` classes, predictions that agree in part."""
  allowed = np.setdiff1d(np.arange(num_classes), absent)
  labels = rng.choice(allowed, size=shape)
  predictions = np.where(rng.random(shape) < agreement, labels,
                         rng.choice(allowed, size=shape))
  labels = np.where(rng.random(shape) < ignore_fraction, ignore_label, labels)
  return predictions.astype(np.int32), labels.astype(np.int32)


@pytest.mark.parametrize("seed", range(4))
def test_mean_iou_matches_brute_force(seed):
  rng = np.random.default_rng(seed)
  c = 7
  predictions, labels = random_maps(rng, (3, 9, 11), c, absent=(2, 5))
  # Class 6 is predicted somewhere but absent from the ground truth: IoU 0, counted.
  labels[labels == 6] = 0
  expected_mean, expected_per_class, expected_acc = brute_force(predictions, labels, c)
  got = mean_iou(predictions, labels, c)
  assert set(got) == {"mean_iou", "per_class_iou", "pixel_accuracy"}
  np.testing.assert_allclose(got["per_class_iou"], expected_per_class, rtol=1e-12)
  assert np.isnan(got["per_class_iou"][[2, 5]]).all()  # Absent from both: left out.
  assert got["per_class_iou"][6] == 0.0
  assert got["mean_iou"] == pytest.approx(expected_mean, rel=1e-12)
  assert got["pixel_accuracy"] == pytest.approx(expected_acc, rel=1e-12)


def test_hand_worked_example():
  # GT:   0 0 1 | 255    Pred: 0 1 1 | 2
  # Class 0: TP 1, FN 1 -> 1/2; class 1: TP 1, FP 1 -> 1/2; class 2: absent -> NaN.
  labels = np.array([[0, 0, 1, 255]])
  predictions = np.array([[0, 1, 1, 2]])
  got = mean_iou(predictions, labels, 3)
  np.testing.assert_array_equal(got["per_class_iou"], [0.5, 0.5, np.nan])
  assert got["mean_iou"] == 0.5 and got["pixel_accuracy"] == 2 / 3


@pytest.mark.parametrize("seed", range(3))
def test_confusion_matrix_and_iou_match_sklearn(seed):
  rng = np.random.default_rng(seed)
  c = 6
  predictions, labels = random_maps(rng, (4, 16, 16), c, absent=(3,))
  matrix = confusion_matrix(predictions, labels, c)
  keep = labels != 255
  g, p = labels[keep], predictions[keep]
  np.testing.assert_array_equal(matrix, sk_confusion_matrix(g, p, labels=range(c)))
  present = np.unique(np.concatenate([g, p]))
  got = mean_iou(predictions, labels, c)
  np.testing.assert_allclose(got["per_class_iou"][present],
                             jaccard_score(g, p, labels=present, average=None), rtol=1e-12)
  assert got["mean_iou"] == pytest.approx(
      jaccard_score(g, p, labels=present, average="macro"), rel=1e-12)


def test_streaming_is_bit_for_bit_the_whole_set_with_padding_and_merge():
  rng = np.random.default_rng(7)
  c = 9
  predictions, labels = random_maps(rng, (13, 10, 12), c, absent=(0, 8))
  whole = mean_iou(predictions, labels, c)
  expected = brute_force(predictions, labels, c)
  # Two "processes", uneven batches, each padded to 4 rows with garbage rows (mask 0).
  parts = []
  for rows in (np.arange(0, 6), np.arange(6, 13)):
    evaluator = StreamingMeanIoU(c)
    for start in range(0, len(rows), 4):
      batch = rows[start:start + 4]
      pad = 4 - len(batch)
      p = np.concatenate([predictions[batch], rng.integers(0, c, (pad, 10, 12))])
      g = np.concatenate([labels[batch], rng.integers(0, c, (pad, 10, 12))])
      evaluator.update(p, g, mask=np.r_[np.ones(len(batch)), np.zeros(pad)])
    parts.append(evaluator)
  # The all-gather path: state arrays stacked, then rebuilt and merged.
  stacked = {k: np.stack([e.state_arrays()[k] for e in parts]) for k in
             parts[0].state_arrays()}
  total = StreamingMeanIoU(c)
  for i in range(2):
    total.merge(StreamingMeanIoU.from_state_arrays(
        {k: v[i] for k, v in stacked.items()}, c))
  assert total.num_images == 13
  got = total.result()
  assert got["mean_iou"] == whole["mean_iou"]  # Bit for bit.
  assert got["pixel_accuracy"] == whole["pixel_accuracy"]
  np.testing.assert_array_equal(got["per_class_iou"], whole["per_class_iou"])
  assert got["mean_iou"] == pytest.approx(expected[0], rel=1e-12)
  direct = StreamingMeanIoU(c).merge(parts[1]).merge(parts[0])  # Any order.
  assert direct.result()["mean_iou"] == whole["mean_iou"]


def test_confusion_matrix_is_int64_beyond_int32():
  evaluator = StreamingMeanIoU(2)
  evaluator.add_confusion_matrix(np.array([[2**31 - 1, 0], [0, 1]], np.int32))
  evaluator.add_confusion_matrix(np.array([[2**31 - 1, 0], [0, 1]], np.int32))
  assert evaluator.confusion.dtype == np.int64
  assert evaluator.confusion[0, 0] == 2 * (2**31 - 1)


def test_jit_confusion_matrix_matches_numpy():
  rng = np.random.default_rng(3)
  c = 5
  predictions, labels = random_maps(rng, (4, 8, 8), c, absent=(1,))
  mask = np.array([1, 0, 1, 1])
  fn = jax.jit(confusion_matrix_jax, static_argnums=(2, 3))
  np.testing.assert_array_equal(fn(predictions, labels, c, 255, mask),
                                confusion_matrix(predictions, labels, c, mask=mask))


def test_bad_inputs_are_clear_errors():
  good = np.zeros((2, 4, 4), np.int32)
  with pytest.raises(ValueError, match="same shape"):
    mean_iou(good, np.zeros((2, 4, 5), np.int32), 3)
  with pytest.raises(ValueError, match="labels hold 3, outside"):
    mean_iou(good, np.full((2, 4, 4), 3), 3)
  with pytest.raises(ValueError, match="labels hold -1"):
    mean_iou(good, np.full((2, 4, 4), -1), 3)
  with pytest.raises(ValueError, match="predictions hold 7"):
    mean_iou(np.full((2, 4, 4), 7), good, 3)
  with pytest.raises(ValueError, match="integer class maps"):
    mean_iou(good.astype(np.float32), good, 3)
  with pytest.raises(ValueError, match="ignore_label=1 is a class id"):
    mean_iou(good, good, 3, ignore_label=1)
  with pytest.raises(ValueError, match="No labelled pixels"):
    mean_iou(good, np.full((2, 4, 4), 255), 3)
  # A prediction out of range on an ignored pixel does not matter.
  assert mean_iou(np.array([[9, 0]]), np.array([[255, 0]]), 3)["mean_iou"] == 1.0
  evaluator = StreamingMeanIoU(3)
  with pytest.raises(ValueError, match="mask must have shape"):
    evaluator.update(good, good, mask=np.ones(3))
  with pytest.raises(ValueError, match="different settings"):
    evaluator.merge(StreamingMeanIoU(4))
  with pytest.raises(ValueError, match="wrong num_classes"):
    StreamingMeanIoU.from_state_arrays(StreamingMeanIoU(4).state_arrays(), 3)
  assert evaluator.num_images == 0 and not evaluator.confusion.any()  # Unchanged.
