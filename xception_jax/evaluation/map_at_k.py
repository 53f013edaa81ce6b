"""MAP@K, the paper's FastEval14k metric, as pure JAX functions over arrays.

Definition (the one implemented here, exactly)
----------------------------------------------
Inputs: scores ``S`` of shape ``[N, C]`` (N images, C classes), labels ``Y`` in
{0, 1} of the same shape, class weights ``w >= 0`` of shape ``[C]`` (default:
all ones) and a cut-off ``K >= 1`` (default 100).

``mode="per_class"`` (the default; the paper's FastEval14k MAP@100):
  For each class ``c`` with ``n_c = sum_i Y[i, c] > 0``, rank the images by
  ``S[:, c]`` in descending order, ties broken by the LOWER image index first.
  With ``r_k = Y[image at rank k, c]`` for ``k = 1 .. min(K, N)``::

      AP@K_c = 1 / min(K, n_c) * sum_k r_k * (r_1 + ... + r_k) / k

  and::

      MAP@K = sum_c w_c * AP@K_c / sum_c w_c   over the classes with n_c > 0.

  Classes without positives are left out (they have no AP). If every class
  with positives has weight 0 the metric is undefined: `map_at_k` raises
  ``ValueError`` (`map_at_k_jax` returns NaN).

``mode="per_image"``:
  The same with the roles swapped: for each image, rank the classes by
  ``S[i, :]`` (ties by the lower class index first), compute ``AP@K_i`` with
  ``n_i = sum_c Y[i, c]``, and take the unweighted mean over the images with
  at least one label. Class weights are not used (passing them is an error).

Notes:
* Scores are compared as float32 (JAX's default precision), ``-0.0`` equals
  ``0.0`` and ``+-inf`` are allowed; NaN scores are rejected.
* The paper weights each class by how common it is (in JFT); see
  `class_weights.py` for reading such weights from a file.
* `mean_average_precision` is the full-ranking special case (K = N, unweighted,
  per class). Without tied scores it equals scikit-learn's macro
  ``average_precision_score`` over the classes that have positives.

Implementation: ``jax.lax.top_k`` selects the top K per class (it is stable:
equal values come out lower index first, which is the tie rule above; a test
checks it). For long axes it runs twice (`top_k_indices`, in top_k.py): over the
maxima of blocks of ~8 images, then over the images of the K best blocks; this is
exact, and 2-3x faster on CPU than one top_k over the transposed matrix. The labels
at those ranks are gathered and AP comes from an integer cumulative sum. All
sums of floats are fixed-order pairwise sums (`_tree_sum`), and the final
reductions are jitted functions shared with the streaming evaluator
(`streaming.py`), which therefore gives bit-identical results. The input checks
are map_at_k_checks.py's.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xception_jax.evaluation.map_at_k_checks import check_k_and_mode
from xception_jax.evaluation.map_at_k_checks import validate_inputs
from xception_jax.evaluation.top_k import top_k_indices


# ---------------------------------------------------------------------------
# Building blocks (pure, jit-able). Shared with streaming.py.
# ---------------------------------------------------------------------------


def _tree_sum(x: jax.Array) -> jax.Array:
  """Sums the last axis pairwise in a fixed order (same bits in any context).

  A plain ``jnp.sum`` leaves the order of additions to the compiler, which may
  differ between programs; this makes results reproducible across the
  whole-matrix and streaming paths.
  """
  n = x.shape[-1]
  if n == 0:
    return jnp.zeros(x.shape[:-1], x.dtype)
  width = 1 << (n - 1).bit_length()
  x = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - n)])
  while x.shape[-1] > 1:
    half = x.shape[-1] // 2
    x = x[..., :half] + x[..., half:]
  return x[..., 0]


def _pad_last(x: jax.Array, width: int) -> jax.Array:
  """Pads the last axis with zeros up to ``width``."""
  return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])])


def average_precision_from_ranked(ranked_labels: jax.Array,
                                  num_positives: jax.Array) -> jax.Array:
  """AP@K of each row from its ranked labels.

  Args:
    ranked_labels: ``[M, K]`` 0/1 labels in rank order (rank 1 first), zero
      padded past the end of the ranking.
    num_positives: ``[M]`` number of positives of each row (``n``); only
      ``min(n, K)`` matters, so callers may pass it clipped to K.

  Returns:
    ``[M]`` float32 AP@K, 0 for rows without positives.
  """
  k = ranked_labels.shape[-1]
  hits = ranked_labels.astype(jnp.int32)
  hits_so_far = jnp.cumsum(hits, axis=-1)  # Integer: exact.
  ranks = jnp.arange(1, k + 1, dtype=jnp.float32)
  precision_at_hits = jnp.where(hits > 0, hits_so_far.astype(jnp.float32) / ranks, 0.0)
  denominator = jnp.minimum(num_positives, k).astype(jnp.float32)
  return jnp.where(num_positives > 0,
                   _tree_sum(precision_at_hits) / jnp.maximum(denominator, 1.0), 0.0)


def per_class_reduce(ranked_labels: jax.Array, num_positives: jax.Array,
                     class_weights: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Weighted MAP@K over the classes from their ranked labels.

  Args:
    ranked_labels: ``[C, K]`` labels of each class's top K images, in rank order.
    num_positives: ``[C]`` positives per class (may be clipped to K).
    class_weights: ``[C]`` weights.

  Returns:
    ``(map, total_weight, num_classes_with_positives)``; ``map`` is NaN when
    ``total_weight`` is 0.
  """
  ap = average_precision_from_ranked(ranked_labels, num_positives)
  has_positives = num_positives > 0
  weights = jnp.where(has_positives, jnp.asarray(class_weights, jnp.float32), 0.0)
  total_weight = _tree_sum(weights)
  return (_tree_sum(weights * ap) / total_weight, total_weight,
          jnp.sum(has_positives.astype(jnp.int32)))


def per_image_reduce(ranked_labels: jax.Array,
                     num_positives: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Unweighted mean AP@K over the images (rows) that have labels.

  Returns:
    ``(map, num_images_with_labels)``; ``map`` is NaN when no image has labels.
  """
  ap = average_precision_from_ranked(ranked_labels, num_positives)
  has_labels = num_positives > 0
  count = jnp.sum(has_labels.astype(jnp.int32))
  return _tree_sum(jnp.where(has_labels, ap, 0.0)) / count.astype(jnp.float32), count


def rank_per_class(scores: jax.Array, labels: jax.Array, k: int,
                   block: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Ranked labels of each class's top K images, and positives per class.

  Args:
    scores: ``[N, C]`` scores.
    labels: ``[N, C]`` 0/1 labels.
    k: the cut-off K (static).
    block: see `top_k_indices` (static; default: by size).

  Returns:
    ``ranked`` ``[C, K]`` int8 (zero padded when N < K) and ``num_positives``
    ``[C]`` int32 clipped to K.
  """
  top_images = top_k_indices(scores, k, axis=0, block=block)  # [C, min(K, N)]
  labels = labels.astype(jnp.bool_)
  ranked = labels[top_images, jnp.arange(scores.shape[1])[:, None]].astype(jnp.int8)
  num_positives = jnp.sum(labels, axis=0, dtype=jnp.int32)
  return _pad_last(ranked, k), jnp.minimum(num_positives, k)


def rank_per_image(scores: jax.Array, labels: jax.Array, k: int,
                   block: int | None = None) -> tuple[jax.Array, jax.Array]:
  """Ranked labels of each image's top K classes, and labels per image.

  Returns:
    ``ranked`` ``[N, K]`` int8 (zero padded when C < K) and ``num_positives``
    ``[N]`` int32 clipped to K.
  """
  top_classes = top_k_indices(scores, k, axis=1, block=block)  # [N, min(K, C)]
  labels = labels.astype(jnp.bool_)
  ranked = jnp.take_along_axis(labels, top_classes, axis=1).astype(jnp.int8)
  num_positives = jnp.sum(labels, axis=1, dtype=jnp.int32)
  return _pad_last(ranked, k), jnp.minimum(num_positives, k)


def map_at_k_jax(scores: jax.Array, labels: jax.Array, k: int = 100,
                 class_weights: jax.Array | None = None,
                 mode: str = "per_class") -> jax.Array:
  """MAP@K as a traceable JAX computation (use inside ``jax.jit``).

  Same definition and arguments as `map_at_k`, but ``k`` and ``mode`` must be
  static Python values and the inputs are not validated (no NaN or label
  checks); returns a float32 scalar that is NaN where `map_at_k` would raise
  (no class with positives / all of them weighted 0 / no image with labels).
  """
  check_k_and_mode(k, mode)
  if mode == "per_class":
    ranked, num_positives = rank_per_class(scores, labels, k)
    if class_weights is None:
      class_weights = jnp.ones(scores.shape[1], jnp.float32)
    return per_class_reduce(ranked, num_positives, class_weights)[0]
  if class_weights is not None:
    raise ValueError("class_weights are only used with mode='per_class'.")
  ranked, num_positives = rank_per_image(scores, labels, k)
  return per_image_reduce(ranked, num_positives)[0]


# Jitted stages of the host-level function. streaming.py calls the same reduce
# functions, so both give bit-identical numbers from identical ranked labels.
rank_per_class_jit = jax.jit(rank_per_class, static_argnames=("k", "block"))
rank_per_image_jit = jax.jit(rank_per_image, static_argnames=("k", "block"))
per_class_reduce_jit = jax.jit(per_class_reduce)
per_image_reduce_jit = jax.jit(per_image_reduce)


# ---------------------------------------------------------------------------
# Host-level API.
# ---------------------------------------------------------------------------


def map_at_k(scores: Any, labels: Any, k: int = 100, class_weights: Any = None,
             mode: str = "per_class") -> float:
  """MAP@K of ``scores`` against ``labels`` (see the module docstring).

  Args:
    scores: ``[N, C]`` NumPy or JAX array of scores (higher ranks first).
    labels: ``[N, C]`` labels in {0, 1} (bool, integer or float).
    k: the cut-off K >= 1.
    class_weights: optional ``[C]`` weights >= 0 (``mode="per_class"`` only);
      default all ones.
    mode: ``"per_class"`` (rank images for each class, weighted mean over
      classes) or ``"per_image"`` (rank classes for each image, mean over
      images).

  Returns:
    MAP@K as a Python float in [0, 1].

  Raises:
    ValueError: invalid inputs, or nothing to average (no class with
      positives, all such classes weighted 0, no image with labels).
  """
  scores, labels, class_weights = validate_inputs(scores, labels, k, class_weights, mode)
  if isinstance(labels, np.ndarray) and labels.dtype != bool:
    labels = labels != 0  # Already checked to be 0/1; bool is 4x smaller than int32.
  if isinstance(scores, np.ndarray) and scores.dtype != np.float32:
    with np.errstate(over="ignore"):  # Compared as float32: beyond its range is +-inf.
      scores = scores.astype(np.float32)
  if mode == "per_class":
    ranked, num_positives = rank_per_class_jit(scores, labels, k=k)
    if class_weights is None:
      class_weights = np.ones(scores.shape[1], np.float32)
    return finish_per_class(ranked, num_positives, class_weights)
  ranked, num_positives = rank_per_image_jit(scores, labels, k=k)
  return finish_per_image(ranked, num_positives)


def finish_per_class(ranked, num_positives, class_weights) -> float:
  """Runs `per_class_reduce` and turns its degenerate cases into errors."""
  value, total_weight, num_with_positives = per_class_reduce_jit(
      ranked, num_positives, class_weights)
  if int(num_with_positives) == 0:
    raise ValueError("No class has a positive label: MAP@K is undefined.")
  if float(total_weight) == 0:
    raise ValueError(f"All {int(num_with_positives)} classes with positive labels have "
                     "class weight 0: MAP@K is undefined.")
  return float(value)


def finish_per_image(ranked, num_positives) -> float:
  """Runs `per_image_reduce` and turns its degenerate case into an error."""
  value, count = per_image_reduce_jit(ranked, num_positives)
  if int(count) == 0:
    raise ValueError("No image has a label: per-image MAP@K is undefined.")
  return float(value)


def mean_average_precision(scores: Any, labels: Any) -> float:
  """Full-ranking macro mean AP over classes (per-class MAP@K with K = N).

  Unweighted; classes without positives are left out. Without tied scores this
  equals ``sklearn.metrics.average_precision_score(labels, scores,
  average="macro")`` over the classes with positives (scikit-learn groups tied
  scores into one threshold, whereas this ranks them lower index first).
  """
  return map_at_k(scores, labels, k=int(np.shape(scores)[0]) or 1)
