"""Top-k accuracy against a brute-force ranking (ties: lower class index first) and lax.top_k."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from xception_jax.evaluation import top_k_accuracy, top_k_correct, top_k_hits


def reference_hits(logits, labels, k):
  """Label among the first k classes sorted by (logit descending, class index)."""
  hits = []
  for row, label in zip(np.asarray(logits, np.float64), labels):
    if not 0 <= label < len(row) or np.isnan(row).any():
      hits.append(False)
      continue
    ranking = sorted(range(len(row)), key=lambda c: (-row[c], c))
    hits.append(int(label) in ranking[:k])
  return np.array(hits)


def test_hand_worked():
  logits = np.array([[0.1, 0.9, 0.5, 0.3],   # Ranking 1, 2, 3, 0.
                     [2.0, 2.0, 2.0, 1.0],   # Ranking 0, 1, 2, 3 (ties: lower index).
                     [0.0, 0.0, 0.0, 0.0]])  # Ranking 0, 1, 2, 3.
  labels = np.array([2, 2, 0])
  # Top-1: only example 2 (label 0 ranked 1st). Top-2: + example 0 (label 2 ranked 2nd).
  # Example 1's label 2 is ranked 3rd (tied with 0 and 1, which have lower indices).
  assert int(top_k_correct(logits, labels, 1)) == 1
  assert int(top_k_correct(logits, labels, 2)) == 2
  assert int(top_k_correct(logits, labels, 3)) == 3
  assert float(top_k_accuracy(logits, labels, 2)) == pytest.approx(2 / 3)
  assert int(top_k_correct(logits, labels, 2, mask=np.array([1, 1, 0]))) == 1
  assert float(top_k_accuracy(logits, labels, 2, mask=np.array([1, 1, 0]))) == 0.5


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 20), c=st.integers(1, 8), k=st.integers(1, 9),
       levels=st.integers(1, 4))
def test_matches_reference_and_lax_top_k_with_ties(seed, n, c, k, levels):
  rng = np.random.default_rng(seed)
  logits = rng.integers(0, levels, (n, c)).astype(np.float32)
  labels = rng.integers(0, c, n)
  expected = reference_hits(logits, labels, k)
  np.testing.assert_array_equal(np.asarray(top_k_hits(logits, labels, k)), expected)
  _, top = jax.lax.top_k(jnp.asarray(logits), min(k, c))
  np.testing.assert_array_equal((np.asarray(top) == labels[:, None]).any(-1), expected)
  mask = rng.random(n) < 0.7
  assert int(top_k_correct(logits, labels, k, mask=mask)) == int((expected & mask).sum())


def test_jit_and_batch_dims():
  rng = np.random.default_rng(1)
  logits = rng.integers(0, 3, (2, 5, 10)).astype(np.float32)  # [devices, batch, classes]
  labels = rng.integers(0, 10, (2, 5))
  fn = jax.jit(lambda l, y, m: (top_k_correct(l, y, 1, m), top_k_correct(l, y, 5, m)))
  got = fn(logits, labels, np.ones((2, 5)))
  flat_l, flat_y = logits.reshape(10, 10), labels.reshape(10)
  assert int(got[0]) == int(reference_hits(flat_l, flat_y, 1).sum())
  assert int(got[1]) == int(reference_hits(flat_l, flat_y, 5).sum())
  assert got[0].dtype == jnp.int32


def test_out_of_range_labels_and_nan_are_incorrect():
  logits = np.array([[1.0, 2.0], [np.nan, 0.0], [0.0, 1.0]], np.float32)
  labels = np.array([-1, 0, 5])
  # Padding label -1, a NaN logit, label beyond the classes: all wrong, even at k=2.
  assert np.asarray(top_k_hits(logits, labels, 2)).tolist() == [False, False, False]
  # Label 1 is top-1 in rows 0 and 2; row 1 has a NaN logit (on another class): wrong.
  assert float(top_k_accuracy(logits, np.array([1, 1, 1]), 1)) == pytest.approx(2 / 3)
  assert np.asarray(top_k_hits(logits, np.array([1, 1, 1]), 1)).tolist() == [True, False, True]


def test_k_beyond_num_classes_and_empty_mask():
  logits = np.array([[0.3, 0.1, 0.2]])
  assert int(top_k_correct(logits, np.array([1]), 10)) == 1
  assert np.isnan(float(top_k_accuracy(logits, np.array([1]), 1, mask=np.zeros(1))))


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=0), "k must be an integer >= 1"),
    (dict(k=1.0), "k must be an integer >= 1"),
    (dict(labels=np.array([0, 1, 2])), "labels must have shape"),
    (dict(labels=np.array([0.0, 1.0])), "labels must be integer class ids"),
    (dict(mask=np.ones(3)), "mask must have shape"),
])
def test_bad_inputs_raise(kwargs, message):
  args = dict(logits=np.zeros((2, 4)), labels=np.array([0, 1]), k=1) | kwargs
  with pytest.raises(ValueError, match=message):
    top_k_correct(**args)
