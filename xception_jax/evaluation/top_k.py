"""Exact top-K selection along one axis of a score matrix, and its blocked acceleration.

Shared by the whole-matrix MAP@K (map_at_k.py) and the streaming evaluator
(streaming_top_k.py). Order: score descending, position ascending, scores compared as
`canonical_scores` (float32, ``-0.0`` equal to ``0.0``). ``jax.lax.top_k`` is stable
(equal values come out lower position first), which is that order; for long axes
`top_k_indices` runs it twice, over the maxima of blocks of ~8 entries and then over the
entries of the K best blocks: exact, and 2-3x faster on CPU than one top_k over the
transposed matrix (docs/EVALUATION.md, "How it is computed").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def canonical_scores(scores: jax.Array) -> jax.Array:
  """Scores as float32 with ``-0.0`` mapped to ``0.0`` (top_k orders them)."""
  scores = jnp.asarray(scores, jnp.float32)
  return jnp.where(scores == 0, jnp.zeros_like(scores), scores)


def default_block(n: int, k: int) -> int:
  """Block size for `top_k_indices`: ~sqrt(n / 2k) balances its two top_k calls."""
  block = int(np.sqrt(n / (2 * k)))
  return block if block >= 4 else 1


def top_k_indices(scores: jax.Array, k: int, axis: int,
                  block: int | None = None) -> jax.Array:
  """Positions of the top ``min(k, n)`` entries along ``axis`` of a 2-D array.

  Ordered by (score descending, position ascending), scores compared as
  `canonical_scores`. Returns ``[m, min(k, n)]`` int32 where ``m`` is the size
  of the other axis.

  With ``block > 1`` it is exact but faster for long axes: the axis is cut into
  blocks of ``block`` entries, the top k blocks by (block maximum descending,
  block position ascending) are selected, and the final top k is taken among
  their entries only. This is exact: an entry outside those blocks has k
  blocks ranked above its own, and each of their maxima ranks above it (a
  larger score, or an equal score at a lower position). Two ``lax.top_k``
  calls over ``n / block`` and ``k * block`` entries replace one over ``n``
  (and on CPU, the transpose of the whole matrix for ``axis=0``).
  """
  n, m = scores.shape[axis], scores.shape[1 - axis]
  kk = min(k, n)
  block = default_block(n, kk) if block is None else block
  num_blocks = -(-n // block)
  if block <= 1 or num_blocks <= kk:
    x = canonical_scores(scores)
    return jax.lax.top_k(x.T if axis == 0 else x, kk)[1]
  full = n // block
  body = jax.lax.slice_in_dim(scores, 0, full * block, axis=axis)
  if axis == 0:
    maxima = jnp.max(body.reshape(full, block, m), axis=1).T  # [m, full]
  else:
    maxima = jnp.max(body.reshape(m, full, block), axis=2)
  if full < num_blocks:  # A last, shorter block.
    tail = jnp.max(jax.lax.slice_in_dim(scores, full * block, n, axis=axis), axis=axis)
    maxima = jnp.concatenate([maxima, tail[:, None]], axis=1)
  maxima = canonical_scores(maxima)
  _, blocks = jax.lax.top_k(maxima, kk)
  blocks = jnp.sort(blocks, axis=1)  # Candidates in position order: top_k's ties.
  # Read nothing else from top_k's outputs (not its values, not its k-th
  # index): XLA:CPU then replaces its fast TopK call with a full sort.
  kth_maximum = jnp.min(jnp.take_along_axis(maxima, blocks, axis=1), axis=1, keepdims=True)
  candidates = (blocks[:, :, None] * block + jnp.arange(block)).reshape(m, kk * block)
  lanes = jnp.arange(m)[:, None]
  values = canonical_scores(scores[jnp.minimum(candidates, n - 1), lanes] if axis == 0
                            else scores[lanes, jnp.minimum(candidates, n - 1)])
  # Entries below the k-th best block maximum cannot make the top k (k maxima
  # rank above them): as -inf they cost top_k nothing. Entries past the end
  # of the last block must rank last; they come last in position too.
  keep = (candidates < n) & (values >= kth_maximum)
  values = jnp.where(keep, values, -jnp.inf)
  candidates = jnp.minimum(candidates, n - 1)
  _, best = jax.lax.top_k(values, kk)
  return jnp.take_along_axis(candidates, best, axis=1)
