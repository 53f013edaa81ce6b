"""Streaming MAP@K equals the whole-matrix number for any batching, order, padding or merge."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from test_evaluation_map_at_k import reference_map_at_k, tied_problem
from xception_jax.evaluation import StreamingMapAtK, map_at_k

MODES = ["per_class", "per_image"]


def _batches(rng, n):
  """Random split of range(n) into consecutive chunks, returned in random order."""
  cuts = np.sort(rng.choice(np.arange(1, n), size=rng.integers(0, n), replace=False)) if n > 1 \
      else np.array([], int)
  chunks = np.split(np.arange(n), cuts)
  return [chunks[i] for i in rng.permutation(len(chunks))]


def _padded(rng, scores, labels, rows, pad):
  """The rows plus `pad` garbage padding rows (NaN scores, label 7) at random places."""
  b, c = len(rows) + pad, scores.shape[1]
  real = np.zeros(b, bool)
  real[rng.choice(b, len(rows), replace=False)] = True
  s = np.full((b, c), np.nan, np.float32)
  y = np.full((b, c), 7, np.int32)
  idx = np.full(b, -5)
  s[real], y[real], idx[real] = scores[rows], labels[rows], rows
  return s, y, idx, real.astype(np.int32)


# Shapes from small sets: each new shape is a compilation (batches are padded to
# powers of two inside the evaluator).
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.sampled_from([1, 11]), c=st.sampled_from([1, 5]),
       k=st.sampled_from([2, 20]), mode=st.sampled_from(MODES),
       weighted=st.booleans())
def test_any_batching_order_and_padding_is_exact(seed, n, c, k, mode, weighted):
  rng = np.random.default_rng(seed)
  scores, labels = tied_problem(seed, n, c, levels=3)
  scores[rng.random((n, c)) < 0.15] = -np.inf  # Ties with empty slots of the top-K lists.
  weights = rng.random(c) + 0.1 if weighted and mode == "per_class" else None
  expected = map_at_k(scores, labels, k=k, class_weights=weights, mode=mode)
  evaluator = StreamingMapAtK(c, k=k, class_weights=weights, mode=mode)
  for rows in _batches(rng, n):
    pad = int(rng.integers(0, 3))
    s, y, idx, mask = _padded(rng, scores, labels, rows, pad)
    evaluator.update(s, y, indices=idx, mask=mask)
  assert evaluator.num_images == n
  assert evaluator.result() == expected  # Bit for bit.
  assert expected == pytest.approx(reference_map_at_k(scores, labels, k, weights, mode), rel=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_default_running_counter_in_order(mode):
  scores, labels = tied_problem(seed=1, n=50, c=8, levels=2)
  expected = map_at_k(scores, labels, k=10, mode=mode)
  evaluator = StreamingMapAtK(8, k=10, mode=mode)
  for start in range(0, 50, 16):  # Batches of 16, the last one of 2.
    evaluator.update(scores[start:start + 16], labels[start:start + 16])
  assert evaluator.result() == expected
  assert evaluator.next_index == 50


def test_padding_rows_take_no_running_number():
  scores, labels = tied_problem(seed=2, n=6, c=3, levels=2)
  evaluator = StreamingMapAtK(3, k=4)
  pad_s = np.vstack([scores[:3], np.full((2, 3), np.nan)])
  pad_y = np.vstack([labels[:3], np.full((2, 3), -1)])
  evaluator.update(pad_s, pad_y, mask=[1, 1, 1, 0, 0])
  evaluator.update(scores[3:], labels[3:])
  assert evaluator.next_index == 6 and evaluator.num_images == 6
  assert evaluator.result() == map_at_k(scores, labels, k=4)


@pytest.mark.parametrize("mode", MODES)
def test_shuffled_rows_with_indices_equal_original_order(mode):
  scores, labels = tied_problem(seed=4, n=40, c=5, levels=2)
  perm = np.random.default_rng(0).permutation(40)
  evaluator = StreamingMapAtK(5, k=7, mode=mode)
  for part in np.array_split(perm, 3):
    evaluator.update(scores[part], labels[part], indices=part)
  assert evaluator.result() == map_at_k(scores, labels, k=7, mode=mode)
  # Ties follow the given indices, not the arrival order: numbered in arrival
  # order, the rows tie-break differently, which per class changes the answer
  # on this tied data (per image, rows are independent).
  arrival = StreamingMapAtK(5, k=7, mode=mode)
  arrival.update(scores[perm], labels[perm])
  assert arrival.result() == map_at_k(scores[perm], labels[perm], k=7, mode=mode)
  assert (arrival.result() != evaluator.result()) == (mode == "per_class")


@pytest.mark.parametrize("mode", MODES)
def test_merge_of_two_streams_equals_one_stream(mode):
  scores, labels = tied_problem(seed=6, n=33, c=7, levels=3)
  weights = np.arange(1, 8, dtype=np.float32) if mode == "per_class" else None
  one = StreamingMapAtK(7, k=5, class_weights=weights, mode=mode)
  one.update(scores, labels)
  hosts = [StreamingMapAtK(7, k=5, class_weights=weights, mode=mode) for _ in range(2)]
  for host, rows in zip(hosts, [np.arange(0, 33, 2), np.arange(1, 33, 2)]):  # Interleaved.
    for part in np.array_split(rows, 2):
      host.update(scores[part], labels[part], indices=part)
  merged = hosts[1].merge(hosts[0])
  assert merged.num_images == 33
  assert merged.result() == one.result() == map_at_k(scores, labels, 5, weights, mode)


@pytest.mark.parametrize("mode", MODES)
def test_state_arrays_round_trip_and_all_gather(mode):
  scores, labels = tied_problem(seed=7, n=30, c=4, levels=2)
  parts = [np.arange(0, 12), np.arange(12, 30)]
  states = []
  for rows in parts:
    host = StreamingMapAtK(4, k=6, mode=mode)
    host.update(scores[rows], labels[rows], indices=rows)
    states.append(host.state_arrays(pad_to=20) if mode == "per_image" else host.state_arrays())
  # An all-gather stacks equal-shape arrays along a new leading axis.
  assert all(states[0][name].shape == states[1][name].shape for name in states[0])
  gathered = {name: np.stack([s[name] for s in states]) for name in states[0]}
  total = StreamingMapAtK(4, k=6, mode=mode)
  for p in range(2):
    total.merge(StreamingMapAtK.from_state_arrays(
        {name: a[p] for name, a in gathered.items()}, 4, k=6, mode=mode))
  assert total.num_images == 30
  assert total.result() == map_at_k(scores, labels, k=6, mode=mode)


def test_per_class_memory_is_independent_of_n():
  evaluator = StreamingMapAtK(3, k=4)
  shapes = []
  rng = np.random.default_rng(0)
  all_s, all_y = [], []
  for _ in range(5):
    s = rng.integers(0, 2, (8, 3)).astype(np.float32)
    y = rng.random((8, 3)) < 0.5
    evaluator.update(s, y)
    all_s.append(s)
    all_y.append(y)
    shapes.append({name: a.shape for name, a in evaluator.state_arrays().items()})
  assert all(shape == shapes[0] for shape in shapes)
  assert shapes[0]["top_scores"] == (3, 4)
  state = evaluator.state_arrays()
  assert state["positives"].tolist() == np.vstack(all_y).sum(0).tolist()
  assert evaluator.result() == map_at_k(np.vstack(all_s), np.vstack(all_y), k=4)


@pytest.mark.parametrize("mode", MODES)
def test_in_order_and_out_of_order_batches_agree_with_infinite_scores(mode):
  scores = np.array([[-np.inf, 1], [-np.inf, -np.inf], [2, -np.inf], [-np.inf, 0]], np.float32)
  labels = np.array([[0, 1], [1, 0], [0, 0], [1, 1]])
  expected = map_at_k(scores, labels, k=3, mode=mode)
  # Class 0 ranks 2, 0, 1 | 3: hit at 3 of n=2 -> (1/3) / 2. Class 1 ranks 0, 3, 1 | 2: hits at
  # 1, 2 -> (1 + 1) / 2 = 1. Per class: (1/6 + 1) / 2 = 7/12.
  if mode == "per_class":
    assert expected == pytest.approx(7 / 12, rel=1e-6)
  for batches in ([[0], [1], [2], [3]], [[3], [2], [1], [0]], [[1, 3], [0, 2]], [[0, 1, 2, 3]]):
    evaluator = StreamingMapAtK(2, k=3, mode=mode)
    for rows in batches:
      evaluator.update(scores[rows], labels[rows], indices=rows)
    assert evaluator.result() == expected


def test_float64_and_integer_scores_are_compared_as_float32():
  # 1 + 1e-9 and 1 are equal in float32 (a tie, lower index first); -1e300 is -inf there.
  scores = np.array([[1.0, -1e300], [1 + 1e-9, -1e300], [0.5, 3.0]])
  labels = np.array([[1, 0], [0, 1], [0, 0]])
  # Class 0 ranks 0, 1, 2: AP 1. Class 1 ranks 2, 0, 1 (0 and 1 tie at -inf): hit at 3 -> 1/3.
  expected = (1 + 1 / 3) / 2
  assert map_at_k(scores, labels, k=3) == pytest.approx(expected, rel=1e-6)
  for batches in ([[0, 1, 2]], [[1], [0], [2]], [[2], [0, 1]]):
    evaluator = StreamingMapAtK(2, k=3)
    for rows in batches:
      evaluator.update(scores[rows], labels[rows], indices=rows)
    assert evaluator.result() == pytest.approx(expected, rel=1e-6)
  evaluator = StreamingMapAtK(2, k=3)
  evaluator.update((scores[:, :1] * 2).astype(np.int64).repeat(2, 1), labels)  # [2, 2, 1] twice.
  # Both classes: ranks 0, 1, 2 -> class 0 AP 1; class 1 hit at 2 -> 1/2.
  assert evaluator.result() == pytest.approx(0.75, rel=1e-6)


def test_top_lists_hold_the_global_top_k():
  scores = np.array([[1.0], [3.0], [3.0], [2.0], [3.0]], np.float32)
  labels = np.array([[0], [1], [0], [1], [1]])
  evaluator = StreamingMapAtK(1, k=3)
  for rows in ([4, 3], [0, 2], [1]):  # Out of order.
    evaluator.update(scores[rows], labels[rows], indices=rows)
  state = evaluator.state_arrays()
  assert state["top_indices"].tolist() == [[1, 2, 4]]  # Score 3 ties, lower index first.
  assert state["top_labels"].tolist() == [[1, 0, 1]]
  # Hits at ranks 1 and 3: (1 + 2/3) / min(3, 3) = 5/9.
  assert evaluator.result() == pytest.approx(5 / 9, rel=1e-6)


def test_empty_batches_and_all_padding_batches_change_nothing():
  scores, labels = tied_problem(seed=9, n=10, c=3)
  evaluator = StreamingMapAtK(3, k=5)
  evaluator.update(np.zeros((0, 3)), np.zeros((0, 3)))
  evaluator.update(np.full((4, 3), np.nan), np.full((4, 3), 9), mask=np.zeros(4))
  evaluator.update(scores, labels)
  assert evaluator.num_images == 10
  assert evaluator.result() == map_at_k(scores, labels, k=5)


# ----------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_classes=0), "num_classes must be an integer >= 1"),
    (dict(k=0), "k must be an integer >= 1"),
    (dict(mode="macro"), "Unknown mode='macro'"),
    (dict(class_weights=[1.0, 2.0]), "class_weights must have shape \\(3,\\)"),
    (dict(class_weights=[1.0, -2.0, 0.0]), "class_weights must be >= 0"),
    (dict(class_weights=[1.0, np.nan, 0.0]), "class_weights contain NaN"),
    (dict(class_weights=[1.0, 1.0, 1.0], mode="per_image"), "only used with mode='per_class'"),
])
def test_bad_settings_raise(kwargs, message):
  args = dict(num_classes=3) | kwargs
  with pytest.raises(ValueError, match=message):
    StreamingMapAtK(**args)


S3 = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]], np.float32)
Y3 = np.array([[1, 0, 0], [0, 1, 1]])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kwargs, message", [
    (dict(scores=np.ones((2, 4)), labels=np.ones((2, 4))), "scores must have shape \\[batch, 3\\]"),
    (dict(labels=np.ones((2, 2))), "labels must have the shape of scores"),
    (dict(scores=np.array([[0.1, np.nan, 0.3], [0.3, 0.2, 0.1]])), "scores contain NaN"),
    (dict(labels=np.array([[1, 0, 0], [0, 2, 1]])), "labels must be 0 or 1"),
    (dict(labels=np.array([[1, 0, 0], [0, 0.5, 1]])), "labels must be 0 or 1"),
    (dict(mask=[1]), "mask must have shape \\(2,\\)"),
    (dict(mask=[1, 2]), "mask must hold only 0"),
    (dict(indices=[0]), "indices must have shape \\(2,\\)"),
    (dict(indices=[0.0, 1.0]), "indices must be integers"),
    (dict(indices=[-1, 0]), "indices must lie in"),
    (dict(indices=[0, 2**31 - 1]), "indices must lie in"),
    (dict(indices=[4, 4]), "indices must be unique"),
])
def test_bad_batches_raise(mode, kwargs, message):
  evaluator = StreamingMapAtK(3, k=2, mode=mode)
  args = dict(scores=S3, labels=Y3) | kwargs
  with pytest.raises(ValueError, match=message):
    evaluator.update(**args)
  assert evaluator.num_images == 0  # Nothing was added.
  evaluator.update(S3, Y3)  # Still usable; class/image 0 hits at rank 1 or 2.
  assert evaluator.result() == map_at_k(S3, Y3, k=2, mode=mode)


def test_bad_merges_and_states_raise():
  a = StreamingMapAtK(3, k=2)
  with pytest.raises(ValueError, match="different settings"):
    a.merge(StreamingMapAtK(3, k=3))
  with pytest.raises(ValueError, match="different settings"):
    a.merge(StreamingMapAtK(3, k=2, mode="per_image"))
  with pytest.raises(TypeError, match="Can only merge"):
    a.merge(object())
  a.update(S3, Y3)
  b = StreamingMapAtK(3, k=2)
  b.update(S3, Y3)
  with pytest.raises(ValueError, match="numbered automatically"):
    a.merge(b)
  a.merge(StreamingMapAtK(3, k=2))  # Merging an empty evaluator is fine.
  assert a.result() == map_at_k(S3, Y3, k=2)
  state = a.state_arrays()
  with pytest.raises(ValueError, match="wrong num_classes or k"):
    StreamingMapAtK.from_state_arrays(state, 3, k=4)
  with pytest.raises(ValueError, match="must have keys"):
    StreamingMapAtK.from_state_arrays(state, 3, k=2, mode="per_image")
  with pytest.raises(ValueError, match="pad_to only applies"):
    a.state_arrays(pad_to=10)
  c = StreamingMapAtK(3, k=2, mode="per_image")
  c.update(S3, Y3)
  with pytest.raises(ValueError, match="pad_to=1 is less than"):
    c.state_arrays(pad_to=1)


def test_duplicate_images_and_empty_results_raise():
  with pytest.raises(ValueError, match="No images were added"):
    StreamingMapAtK(3).result()
  evaluator = StreamingMapAtK(3, k=2, mode="per_image")
  evaluator.update(S3, Y3, indices=[0, 1])
  evaluator.update(S3, Y3, indices=[1, 2])
  with pytest.raises(ValueError, match="Image index 1 was added more than once"):
    evaluator.result()
  no_positives = StreamingMapAtK(3, k=2)
  no_positives.update(S3, np.zeros_like(Y3))
  with pytest.raises(ValueError, match="No class has a positive label"):
    no_positives.result()
  zero_weight = StreamingMapAtK(3, k=2, class_weights=[0.0, 0.0, 0.0])
  zero_weight.update(S3, Y3)
  with pytest.raises(ValueError, match="class weight 0"):
    zero_weight.result()
