"""Input checks of MAP@K (map_at_k.py) and of the streaming evaluator (streaming.py).

Each raises ``ValueError`` naming the argument and what is wrong with it; the cheap ones
(k, mode, shapes, dtypes, class weights) come before the one pass over scores (NaN)
and labels (values in {0, 1}).
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("per_class", "per_image")


def check_k_and_mode(k: Any, mode: Any) -> None:
  """Raises ``ValueError`` unless ``k`` is an integer >= 1 and ``mode`` is known."""
  if (isinstance(k, bool) or not isinstance(k, numbers.Integral)) or k < 1:
    raise ValueError(f"k must be an integer >= 1, got k={k!r}.")
  if mode not in MODES:
    raise ValueError(f"Unknown mode={mode!r}; expected one of {MODES}.")


def check_class_weights(class_weights: Any, num_classes: int,
                        mode: str = "per_class") -> np.ndarray:
  """Validates class weights; returns them as a float32 ``[C]`` NumPy array."""
  if mode != "per_class":
    raise ValueError(f"class_weights are only used with mode='per_class' "
                     f"(got mode={mode!r}); per-image MAP is unweighted.")
  weights = np.asarray(class_weights)
  if weights.dtype == bool or not np.issubdtype(weights.dtype, np.number) \
      or np.issubdtype(weights.dtype, np.complexfloating):
    raise ValueError(f"class_weights must be real numbers, got dtype {weights.dtype}.")
  weights = weights.astype(np.float64)
  if weights.shape != (num_classes,):
    raise ValueError(f"class_weights must have shape ({num_classes},) (one weight per "
                     f"class of scores), got shape {weights.shape}.")
  if np.isnan(weights).any():
    raise ValueError(f"class_weights contain NaN at classes "
                     f"{np.flatnonzero(np.isnan(weights))[:10].tolist()}.")
  if np.isinf(weights).any():
    raise ValueError(f"class_weights contain infinite values at classes "
                     f"{np.flatnonzero(np.isinf(weights))[:10].tolist()}.")
  if (weights < 0).any():
    raise ValueError(f"class_weights must be >= 0; negative at classes "
                     f"{np.flatnonzero(weights < 0)[:10].tolist()}.")
  return weights.astype(np.float32)


def check_numeric(name: str, x: Any) -> None:
  """Raises ``ValueError`` unless ``x`` holds real numbers (or booleans)."""
  dtype = np.dtype(x.dtype)
  if dtype != bool and (not np.issubdtype(dtype, np.number)
                        or np.issubdtype(dtype, np.complexfloating)):
    raise ValueError(f"{name} must be a real numeric array, got dtype {dtype}.")


@jax.jit
def _scores_have_nan(scores):
  return jnp.isnan(jnp.max(scores))  # max propagates NaN, and is fast.


@jax.jit
def _labels_not_binary(labels):
  if jnp.issubdtype(labels.dtype, jnp.floating):
    return jnp.max(jnp.abs(labels * (1 - labels))) != 0  # NaN != 0 too.
  return (jnp.min(labels) < 0) | (jnp.max(labels) > 1)


def scores_have_nan(scores) -> bool:
  """Whether a NumPy or JAX array of scores holds a NaN (one fast pass)."""
  if not np.issubdtype(np.dtype(scores.dtype), np.floating) or scores.size == 0:
    return False
  if isinstance(scores, np.ndarray):
    return bool(np.isnan(np.max(scores)))
  return bool(_scores_have_nan(scores))


def labels_not_binary(labels) -> bool:
  """Whether a NumPy or JAX array of labels holds a value outside {0, 1}."""
  if labels.dtype == bool or labels.size == 0:
    return False
  if isinstance(labels, np.ndarray):
    if np.issubdtype(labels.dtype, np.floating):
      return not np.max(np.abs(labels * (1 - labels))) == 0
    return bool(labels.min() < 0 or labels.max() > 1)
  return bool(_labels_not_binary(labels))


def _as_array(x: Any) -> Any:
  """NumPy or JAX arrays pass through; anything else becomes NumPy."""
  return x if isinstance(x, (np.ndarray, jax.Array)) else np.asarray(x)


def validate_inputs(scores: Any, labels: Any, k: Any = 100, class_weights: Any = None,
                    mode: Any = "per_class") -> tuple[Any, Any, np.ndarray | None]:
  """Checks the inputs of `map_at_k`; raises ``ValueError`` naming the problem.

  Cheap checks (k, mode, shapes, dtypes, weights) come first, then one pass
  each over scores (NaN) and labels (values in {0, 1}).

  Returns:
    ``(scores, labels, class_weights)`` as arrays (weights float32 or None).
  """
  check_k_and_mode(k, mode)
  scores, labels = _as_array(scores), _as_array(labels)
  check_numeric("scores", scores)
  check_numeric("labels", labels)
  if scores.ndim != 2:
    raise ValueError(f"scores must have shape [num_images, num_classes], got shape "
                     f"{tuple(scores.shape)}.")
  if labels.shape != scores.shape:
    raise ValueError(f"labels must have the shape of scores {tuple(scores.shape)}, got "
                     f"shape {tuple(labels.shape)}.")
  if scores.shape[0] == 0 or scores.shape[1] == 0:
    raise ValueError(f"scores must hold at least one image and one class, got shape "
                     f"{tuple(scores.shape)}.")
  if class_weights is not None:
    class_weights = check_class_weights(class_weights, scores.shape[1], mode)
  if scores_have_nan(scores):
    raise ValueError("scores contain NaN.")
  if labels_not_binary(labels):
    raise ValueError("labels must be 0 or 1 (or booleans); found other values.")
  return scores, labels, class_weights
