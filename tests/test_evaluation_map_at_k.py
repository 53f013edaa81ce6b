"""MAP@K against a brute-force reference of its definition (many ties), sklearn, hand-worked cases."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.metrics import average_precision_score

from xception_jax.evaluation import map_at_k, map_at_k_jax, mean_average_precision
from xception_jax.evaluation import map_at_k_checks, top_k

# The package re-exports the function map_at_k, which shadows the submodule's name.
map_lib = importlib.import_module("xception_jax.evaluation.map_at_k")


def reference_map_at_k(scores, labels, k=100, class_weights=None, mode="per_class"):
  """Plain loops over the definition in map_at_k.py's docstring (float64 sums)."""
  scores = np.asarray(scores, np.float32).astype(np.float64)  # Compared as float32.
  labels = np.asarray(labels)
  if mode == "per_image":
    scores, labels, class_weights = scores.T, labels.T, None
  num_items, num_groups = scores.shape
  total, total_weight = 0.0, 0.0
  for c in range(num_groups):
    positives = sum(int(labels[i, c]) for i in range(num_items))
    if positives == 0:
      continue
    ranking = sorted(range(num_items), key=lambda i: (-scores[i, c], i))  # Ties: lower i.
    hits, ap = 0, 0.0
    for rank, i in enumerate(ranking[:k], start=1):
      if labels[i, c]:
        hits += 1
        ap += hits / rank
    ap /= min(k, positives)
    weight = 1.0 if class_weights is None else float(class_weights[c])
    total += weight * ap
    total_weight += weight
  return total / total_weight


def tied_problem(seed, n, c, levels=3, density=0.3):
  """Scores from a few discrete values (many ties) and random 0/1 labels."""
  rng = np.random.default_rng(seed)
  scores = rng.integers(0, levels, (n, c)).astype(np.float32) / 2
  labels = (rng.random((n, c)) < density).astype(np.int32)
  labels[rng.integers(0, n), :] = 1  # Every class has a positive.
  return scores, labels


# ----------------------------------------------------------------------------
# Hand-worked cases.
# ----------------------------------------------------------------------------


def test_hand_worked_single_class():
  scores = np.array([[0.9], [0.8], [0.7], [0.6], [0.5]])
  labels = np.array([[1], [0], [1], [0], [1]])
  # Hits at ranks 1, 3, 5: precisions 1/1, 2/3, 3/5; n = 3 -> (1 + 2/3 + 3/5) / 3 = 34/45.
  assert map_at_k(scores, labels) == pytest.approx(34 / 45, rel=1e-6)
  # K = 2: only rank 1 hits -> 1/1, divided by min(K, n) = 2 -> 0.5.
  assert map_at_k(scores, labels, k=2) == pytest.approx(0.5, rel=1e-6)


def test_hand_worked_ties_go_to_lower_index():
  scores = np.array([[1.0], [1.0], [1.0], [0.0]])
  labels = np.array([[0], [0], [1], [1]])
  # Ranking 0, 1, 2, 3 (ties: lower index first): hits at ranks 3 and 4 ->
  # (1/3 + 2/4) / 2 = 5/12. (Higher index first would give (1 + 2/4) / 2 = 0.75.)
  assert map_at_k(scores, labels, k=4) == pytest.approx(5 / 12, rel=1e-6)


def test_hand_worked_class_weights():
  scores = np.array([[3, 1, 5], [2, 2, 5], [1, 3, 5]], np.float32)
  labels = np.array([[0, 1, 0], [1, 0, 0], [1, 0, 0]])
  # Class 0: ranking 0, 1, 2, hits at 2, 3 -> (1/2 + 2/3) / 2 = 7/12.
  # Class 1: ranking 2, 1, 0, hit at 3 -> (1/3) / 1 = 1/3.
  # Class 2 has no positive: left out whatever its weight.
  # Weights (3, 1): (3 * 7/12 + 1/3) / 4 = 25/48.
  assert map_at_k(scores, labels, class_weights=[3, 1, 100]) == pytest.approx(25 / 48, rel=1e-6)
  assert map_at_k(scores, labels) == pytest.approx((7 / 12 + 1 / 3) / 2, rel=1e-6)


def test_hand_worked_per_image():
  scores = np.array([[0.1, 0.5, 0.3], [0.2, 0.2, 0.9], [0.0, 0.0, 0.0]])
  labels = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]])
  # Image 0: classes ranked 1, 2, 0; K = 2 keeps 1 (miss), 2 (hit at rank 2): (1/2) / 2 = 1/4.
  # Image 1: no label, left out. Image 2: all tied, ranked 0, 1, 2: hit at rank 2 -> 1/2.
  assert map_at_k(scores, labels, k=2, mode="per_image") == pytest.approx(3 / 8, rel=1e-6)


def test_perfect_and_worst_rankings():
  labels = np.eye(4, dtype=bool)
  assert map_at_k(labels.astype(np.float32), labels) == 1.0
  assert map_at_k(-labels.astype(np.float32), labels, k=3) == 0.0  # Positive ranked 4th.


# ----------------------------------------------------------------------------
# Brute force, many ties.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["per_class", "per_image"])
@pytest.mark.parametrize("k", [1, 3, 7, 100])
def test_matches_reference_with_ties(mode, k):
  scores, labels = tied_problem(seed=k, n=23, c=9)
  weights = None
  if mode == "per_class":
    weights = np.random.default_rng(k).random(9) * (np.arange(9) != 4)  # One weight 0.
  got = map_at_k(scores, labels, k=k, class_weights=weights, mode=mode)
  assert got == pytest.approx(reference_map_at_k(scores, labels, k, weights, mode), rel=1e-5)


# Shapes from small sets: each new shape is a compilation.
@settings(max_examples=40, deadline=None)
@given(data=st.data(), n=st.sampled_from([1, 6, 12]), c=st.sampled_from([1, 5]),
       k=st.sampled_from([1, 4, 13]), levels=st.integers(1, 4),
       mode=st.sampled_from(["per_class", "per_image"]))
def test_matches_reference_property(data, n, c, k, levels, mode):
  seed = data.draw(st.integers(0, 2**31))
  rng = np.random.default_rng(seed)
  scores = rng.integers(-levels, levels, (n, c)).astype(np.float32) * 0.5
  scores[rng.random((n, c)) < 0.1] = -0.0  # -0.0 ties with 0.0.
  labels = rng.random((n, c)) < 0.4
  labels[0, 0] = True
  weights = None
  if mode == "per_class" and data.draw(st.booleans()):
    weights = rng.random(c)
    weights[0] = 1.0
  got = map_at_k(scores, labels, k=k, class_weights=weights, mode=mode)
  assert got == pytest.approx(reference_map_at_k(scores, labels, k, weights, mode), rel=1e-5,
                              abs=1e-7)


def test_negative_zero_ties_with_zero():
  scores = np.array([[0.0], [-0.0], [0.0]], np.float32)
  labels = np.array([[0], [1], [0]])
  assert map_at_k(scores, labels) == pytest.approx(1 / 2, rel=1e-6)  # Ranking 0, 1, 2.


def test_infinite_scores():
  scores = np.array([[-np.inf, 1.0], [np.inf, -np.inf], [0.0, np.inf], [-np.inf, -np.inf]])
  labels = np.array([[1, 0], [0, 0], [0, 1], [1, 1]])
  expected = reference_map_at_k(scores, labels, k=3)
  # Class 0: ranking 1, 2, 0, 3 -> hit at 3 -> (1/3) / 2. Class 1: ranking 2, 0, 1, 3 -> 1/1 / 2.
  assert expected == pytest.approx((1 / 6 + 1 / 2) / 2)
  assert map_at_k(scores, labels, k=3) == pytest.approx(expected, rel=1e-6)


def test_fewer_items_than_k():
  scores, labels = tied_problem(seed=3, n=5, c=4)
  assert map_at_k(scores, labels, k=100) == pytest.approx(reference_map_at_k(scores, labels, 100))
  assert map_at_k(scores, labels, k=100, mode="per_image") == pytest.approx(
      reference_map_at_k(scores, labels, 100, mode="per_image"))


def test_lax_top_k_is_stable():
  """The implementation relies on it: equal values come out lower index first."""
  rng = np.random.default_rng(0)
  values = rng.integers(0, 3, (40, 500)).astype(np.float32)
  _, got = jax.lax.top_k(jnp.asarray(values), 60)
  positions = np.broadcast_to(np.arange(500), values.shape)
  expected = np.lexsort((positions, -values), axis=-1)[:, :60]
  np.testing.assert_array_equal(np.asarray(got), expected)


_top_k_indices = jax.jit(top_k.top_k_indices, static_argnames=("k", "axis", "block"))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.sampled_from([1, 17, 40]), k=st.sampled_from([1, 5]),
       block=st.sampled_from([2, 3, 7]), axis=st.sampled_from([0, 1]))
def test_blocked_top_k_is_exact_with_ties(seed, n, k, block, axis):
  """The two-stage (blocks, then their entries) top k equals a lexicographic sort."""
  rng = np.random.default_rng(seed)
  values = rng.integers(0, 3, (n, 4)).astype(np.float32) - 1
  values[rng.random((n, 4)) < 0.2] = -np.inf
  values[values == 0] = np.where(rng.random(int((values == 0).sum())) < 0.5, -0.0, 0.0)
  x = values if axis == 0 else values.T
  got = np.asarray(_top_k_indices(x, k=k, axis=axis, block=block))
  lanes = values.T + 0.0  # [4, n], -0.0 -> 0.0.
  expected = np.lexsort((np.broadcast_to(np.arange(n), lanes.shape), -lanes), axis=-1)[:, :k]
  np.testing.assert_array_equal(got, expected)


def test_blocked_path_is_used_for_long_axes():
  assert top_k.default_block(14_000, 100) == 8
  assert top_k.default_block(500, 100) == 1
  scores, labels = tied_problem(seed=11, n=700, c=3, levels=4, density=0.05)
  expected = reference_map_at_k(scores, labels, k=10)
  for block in (1, 4, 9, 64):
    ranked, positives = map_lib.rank_per_class_jit(scores, labels, k=10, block=block)
    assert map_lib.finish_per_class(ranked, positives, np.ones(3)) == pytest.approx(expected,
                                                                                     rel=1e-6)
  assert map_at_k(scores, labels, k=10) == pytest.approx(expected, rel=1e-6)  # Default: block 5.


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU lowering")
@pytest.mark.parametrize("axis", [0, 1])
def test_blocked_top_k_keeps_xla_cpu_fast_top_k(axis):
  """XLA:CPU turns top_k into a full sort when more than its [:k] outputs are read."""
  fn = jax.jit(lambda s: top_k.top_k_indices(s, 100, axis=axis))
  hlo = fn.lower(jax.ShapeDtypeStruct((14_000, 17_000), jnp.float32)).compile().as_text()
  entry = hlo[hlo.index("ENTRY"):].splitlines()
  assert sum('custom_call_target="TopK"' in line for line in entry) == 2
  sorts = [line for line in entry if " sort(" in line]
  assert len(sorts) == 1 and "[{},100]".format(17_000 if axis == 0 else 14_000) in sorts[0]


# ----------------------------------------------------------------------------
# Input types, jit, sklearn.
# ----------------------------------------------------------------------------


def test_label_and_score_dtypes_agree():
  scores, labels = tied_problem(seed=5, n=17, c=6)
  expected = reference_map_at_k(scores, labels, 5)
  for s, y in [(scores, labels), (scores.astype(np.float64), labels.astype(bool)),
               (scores.astype(np.int64) , labels.astype(np.float32)),
               (jnp.asarray(scores), jnp.asarray(labels)), (scores.tolist(), labels.tolist())]:
    ref = expected if np.asarray(s).dtype.kind == "f" else reference_map_at_k(
        np.asarray(s), labels, 5)
    assert map_at_k(s, y, k=5) == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize("mode", ["per_class", "per_image"])
def test_jax_function_inside_jit_matches(mode):
  scores, labels = tied_problem(seed=8, n=31, c=7)
  weights = np.linspace(0.5, 2, 7, dtype=np.float32) if mode == "per_class" else None
  fn = jax.jit(lambda s, y, w: map_at_k_jax(s, y, k=6, class_weights=w, mode=mode))
  got = float(fn(scores, labels, weights))
  assert got == pytest.approx(map_at_k(scores, labels, 6, weights, mode), rel=1e-6)
  assert got == pytest.approx(reference_map_at_k(scores, labels, 6, weights, mode), rel=1e-5)


def test_jax_function_gives_nan_when_undefined():
  scores = np.ones((3, 2), np.float32)
  assert np.isnan(float(map_at_k_jax(scores, np.zeros((3, 2)))))
  assert np.isnan(float(map_at_k_jax(scores, np.ones((3, 2)), class_weights=np.zeros(2))))


def test_mean_average_precision_matches_sklearn_without_ties():
  rng = np.random.default_rng(0)
  scores = rng.standard_normal((200, 12)).astype(np.float32)
  assert all(np.unique(scores[:, j]).size == 200 for j in range(12))
  labels = (rng.random((200, 12)) < np.linspace(0.02, 0.6, 12)).astype(int)
  labels[0] = 1
  expected = average_precision_score(labels, scores, average="macro")
  assert mean_average_precision(scores, labels) == pytest.approx(expected, rel=1e-5)
  assert mean_average_precision(scores, labels) == pytest.approx(
      reference_map_at_k(scores, labels, k=200), rel=1e-5)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.sampled_from([2, 9, 40]), c=st.sampled_from([1, 4]))
def test_mean_average_precision_matches_sklearn_property(seed, n, c):
  rng = np.random.default_rng(seed)
  scores = np.stack([rng.permutation(n) for _ in range(c)], axis=1).astype(np.float32)  # No ties.
  labels = (rng.random((n, c)) < 0.3).astype(int)
  labels[rng.integers(0, n, c), np.arange(c)] = 1
  assert mean_average_precision(scores, labels) == pytest.approx(
      average_precision_score(labels, scores, average="macro"), rel=1e-5)


# ----------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------

GOOD_S = np.array([[0.5, 0.1], [0.2, 0.3]], np.float32)
GOOD_Y = np.array([[1, 0], [0, 1]])


@pytest.mark.parametrize("kwargs, message", [
    (dict(labels=np.ones((2, 3))), "labels must have the shape of scores"),
    (dict(scores=np.ones(4), labels=np.ones(4)), "scores must have shape"),
    (dict(scores=np.ones((0, 2)), labels=np.ones((0, 2))), "at least one image"),
    (dict(class_weights=[1.0]), "class_weights must have shape \\(2,\\)"),
    (dict(class_weights=[1.0, -0.5]), "class_weights must be >= 0"),
    (dict(class_weights=[1.0, np.nan]), "class_weights contain NaN"),
    (dict(class_weights=[1.0, np.inf]), "class_weights contain infinite"),
    (dict(class_weights=["a", "b"]), "class_weights must be real numbers"),
    (dict(scores=np.array([[0.5, np.nan], [0.2, 0.3]])), "scores contain NaN"),
    (dict(scores=jnp.array([[0.5, np.nan], [0.2, 0.3]])), "scores contain NaN"),
    (dict(scores=np.array([["a", "b"], ["c", "d"]])), "scores must be a real numeric"),
    (dict(labels=np.array([[1, 0], [0, 2]])), "labels must be 0 or 1"),
    (dict(labels=np.array([[1, 0], [0, -1]])), "labels must be 0 or 1"),
    (dict(labels=np.array([[1, 0], [0, 0.5]])), "labels must be 0 or 1"),
    (dict(labels=np.array([[1, 0], [0, np.nan]])), "labels must be 0 or 1"),
    (dict(labels=jnp.array([[1, 0], [0, 0.5]])), "labels must be 0 or 1"),
    (dict(labels=jnp.array([[1, 0], [0, 3]])), "labels must be 0 or 1"),
    (dict(k=0), "k must be an integer >= 1"),
    (dict(k=2.5), "k must be an integer >= 1"),
    (dict(k=True), "k must be an integer >= 1"),
    (dict(mode="per_pixel"), "Unknown mode='per_pixel'"),
    (dict(mode="per_image", class_weights=[1.0, 1.0]), "only used with mode='per_class'"),
    (dict(labels=np.zeros((2, 2))), "No class has a positive label"),
    (dict(class_weights=[0.0, 0.0]), "All 2 classes with positive labels have class weight 0"),
    (dict(labels=np.zeros((2, 2)), mode="per_image"), "No image has a label"),
])
def test_bad_inputs_raise(kwargs, message):
  args = dict(scores=GOOD_S, labels=GOOD_Y) | kwargs
  with pytest.raises(ValueError, match=message):
    map_at_k(**args)


def test_valid_inputs_around_the_error_cases():
  # The baseline of the error table is itself valid, with a known value:
  # class 0 ranks 0, 1 (hit at 1); class 1 ranks 1, 0 (hit at 1) -> 1.0.
  assert map_at_k(GOOD_S, GOOD_Y) == 1.0
  assert map_at_k(GOOD_S, GOOD_Y, class_weights=[0.0, 2.0]) == 1.0
  assert map_at_k(GOOD_S, np.array([[0, 1], [1, 0]]), k=1) == 0.0


def test_shared_helpers():
  assert map_at_k_checks.scores_have_nan(np.array([1.0, np.nan])) is True
  assert map_at_k_checks.scores_have_nan(np.array([1, 2])) is False
  assert map_at_k_checks.labels_not_binary(np.array([True, False])) is False
  assert float(map_lib._tree_sum(jnp.arange(1.0, 101.0))) == 5050.0
