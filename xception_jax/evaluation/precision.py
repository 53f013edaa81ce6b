"""Multi-label precision@k as a pure ``jnp`` function (jit-safe).

Per example: the fraction of the k highest-scoring classes that are labels, the k
classes taken in the order of ``jax.lax.top_k`` (ties broken by the lower class
index first, as in `map_at_k`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def precision_at_k(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """``[...]`` float: precision@k of each example.

  Args:
    logits: ``[..., num_classes]`` scores.
    labels: ``[..., num_classes]`` multi-hot labels in {0, 1}.
    k: static integer in [1, num_classes].
  """
  _, top = jax.lax.top_k(logits, k)
  return jnp.mean(jnp.take_along_axis(labels, top, axis=-1), axis=-1)
