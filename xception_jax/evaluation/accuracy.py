"""Single-label top-k accuracy as pure ``jnp`` functions (jit- and pmap-safe).

An example counts as correct in the top k when its label is among the k
highest logits, ties broken by the LOWER class index first (the order of
``jax.lax.top_k``, and the tie rule of `map_at_k`): the label's rank is the
number of classes with a strictly higher logit plus the number with an equal
logit and a lower index, and the example is correct when that rank is < k.
Computed by counting, without a sort. An example with any NaN logit (a
diverged model must not score by accident), or with a label outside
``[0, num_classes)`` (e.g. -1 on padding rows), counts as incorrect; use
``mask`` to leave rows out of the count altogether.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp


def _check(logits: jax.Array, labels: jax.Array, k: int) -> None:
  if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
    raise ValueError(f"k must be an integer >= 1, got k={k!r}.")
  if logits.ndim < 1 or labels.shape != logits.shape[:-1]:
    raise ValueError(f"labels must have shape logits.shape[:-1] = {logits.shape[:-1]}, "
                     f"got {labels.shape} (logits {logits.shape}).")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integer class ids, got dtype {labels.dtype}.")


def top_k_hits(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """Boolean ``[...]``: whether each example's label is in its top k logits.

  Args:
    logits: ``[..., num_classes]`` scores.
    labels: ``[...]`` integer class ids.
    k: static integer >= 1 (k >= num_classes makes every valid label a hit).
  """
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  _check(logits, labels, k)
  num_classes = logits.shape[-1]
  valid = (labels >= 0) & (labels < num_classes)
  safe_labels = jnp.where(valid, labels, 0)
  label_logit = jnp.take_along_axis(logits, safe_labels[..., None], axis=-1)
  classes = jnp.arange(num_classes)
  ahead = (logits > label_logit) | ((logits == label_logit) & (classes < safe_labels[..., None]))
  rank = jnp.sum(ahead, axis=-1, dtype=jnp.int32)
  return valid & (rank < k) & ~jnp.any(jnp.isnan(logits), axis=-1)


def top_k_correct(logits: jax.Array, labels: jax.Array, k: int,
                  mask: jax.Array | None = None) -> jax.Array:
  """Number (int32 scalar) of examples whose label is in the top k.

  Args:
    logits: ``[..., num_classes]`` scores.
    labels: ``[...]`` integer class ids.
    k: static integer >= 1.
    mask: optional ``[...]``; rows where it is 0 (padding) are not counted.
  """
  hits = top_k_hits(logits, labels, k)
  if mask is not None:
    mask = jnp.asarray(mask)
    if mask.shape != hits.shape:
      raise ValueError(f"mask must have shape {hits.shape}, got {mask.shape}.")
    hits = hits & mask.astype(jnp.bool_)
  return jnp.sum(hits, dtype=jnp.int32)


def top_k_accuracy(logits: jax.Array, labels: jax.Array, k: int,
                   mask: jax.Array | None = None) -> jax.Array:
  """Fraction (float32 scalar) of (unmasked) examples whose label is in the top k.

  NaN when the mask leaves no example.
  """
  correct = top_k_correct(logits, labels, k, mask)
  labels = jnp.asarray(labels)
  total = (jnp.asarray(labels.size, jnp.float32) if mask is None
           else jnp.sum(jnp.asarray(mask).astype(jnp.bool_), dtype=jnp.float32))
  return correct.astype(jnp.float32) / total
