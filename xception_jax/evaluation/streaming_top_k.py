"""The streaming evaluator's per-class top-K kernels (jitted, pure): the running lists'
empty state, one batch merged into them, two lists merged, and the row bucket a batch
is padded to. `StreamingMapAtK` (streaming.py) holds the state and calls these; its
module docstring says why the merge is exact.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from xception_jax.evaluation.top_k import canonical_scores
from xception_jax.evaluation.top_k import top_k_indices

EMPTY_INDEX = np.iinfo(np.int32).max  # Index of empty slots; real indices are below.


@functools.partial(jax.jit, static_argnames="k")
def merge_top_k(top_scores, top_indices, top_labels, scores, indices, labels, *, k):
  """Top K of two candidate sets per class, by (score desc, index asc)."""
  negated, indices, labels = jax.lax.sort(
      (-jnp.concatenate([top_scores, scores], axis=1),
       jnp.concatenate([top_indices, indices], axis=1),
       jnp.concatenate([top_labels, labels], axis=1)),
      dimension=1, num_keys=2)
  return -negated[:, :k], indices[:, :k], labels[:, :k]


@functools.partial(jax.jit, static_argnames=("k", "in_order"))
def update_per_class(top_scores, top_indices, top_labels, positives, scores, labels, indices,
                      mask, *, k, in_order):
  """Merges one batch ``[B, C]`` into the running per-class top K and positives.

  The batch's rows come sorted by image index, padding rows (mask 0) last, so
  that top_k's ties (lower position first) follow the global tie rule (lower
  image index first). ``in_order``: every real index of the batch exceeds
  every index in the running lists, and no empty slot can tie with a real
  entry; then positions in [running lists | batch] are in index order among
  equal scores and one top_k does the merge. Otherwise the batch's own top K
  is merged with a two-key sort.
  """
  num_classes = scores.shape[1]
  mask = mask.astype(jnp.bool_)
  scores = jnp.where(mask[:, None], canonical_scores(scores), -jnp.inf)
  labels = labels.astype(jnp.bool_) & mask[:, None]
  indices = jnp.where(mask, indices, EMPTY_INDEX)
  positives = positives + jnp.sum(labels, axis=0, dtype=jnp.int32)
  if in_order:
    # Batch entries below a class's k-th best so far cannot enter its list: as
    # -inf they cost top_k nothing (while slots are empty, the k-th is -inf).
    batch_scores = jnp.where(scores.T >= top_scores[:, -1:], scores.T, -jnp.inf)
    candidates = jnp.concatenate([top_scores, batch_scores], axis=1)  # [C, K + B]
    _, best = jax.lax.top_k(candidates, k)  # Positions in [lists | batch].
    from_batch = best >= k
    rows = jnp.maximum(best - k, 0)  # Batch row, where from_batch.
    slots = jnp.minimum(best, k - 1)  # List slot, elsewhere.

    def pick(listed, batched):
      return jnp.where(from_batch, batched, jnp.take_along_axis(listed, slots, axis=1))

    batch_labels = labels[rows, jnp.arange(num_classes)[:, None]].astype(jnp.int8)
    return (jnp.take_along_axis(candidates, best, axis=1), pick(top_indices, indices[rows]),
            pick(top_labels, batch_labels), positives)
  rows = top_k_indices(scores, k, axis=0)  # [C, min(k, B)]
  lanes = jnp.arange(num_classes)[:, None]
  merged = merge_top_k(top_scores, top_indices, top_labels, scores[rows, lanes], indices[rows],
                        labels[rows, lanes].astype(jnp.int8), k=k)
  return merged + (positives,)


def bucket_rows(batch: int) -> int:
  """Rows a batch is padded to: the next power of two (bounds recompilations)."""
  return 1 << max(batch - 1, 0).bit_length()


def empty_top_k(num_classes: int, k: int):
  return (jnp.full((num_classes, k), -jnp.inf, jnp.float32),
          jnp.full((num_classes, k), EMPTY_INDEX, jnp.int32),
          jnp.zeros((num_classes, k), jnp.int8))
