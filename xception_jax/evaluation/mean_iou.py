"""Mean intersection-over-union (mIoU), DeepLab's segmentation metric.

Definition (the one implemented here, exactly)
----------------------------------------------
Inputs: predicted class maps ``P`` and ground-truth class maps ``G`` of the
same shape (any shape, e.g. ``[B, H, W]``), integer class ids, ``C`` classes
and an ``ignore_label`` (default 255, VOC's object borders and padding).
Pixels with ``G == ignore_label`` are left out; every other ground-truth value
must lie in ``[0, C)`` and every prediction (at the pixels kept) too.

The confusion matrix ``M`` (``[C, C]``, int64, rows = ground truth, columns =
prediction, scikit-learn's convention) counts the kept pixels:
``M[g, p] = #{pixels with G = g and P = p}``. Then, per class c::

    IoU_c = M[c, c] / (sum_p M[c, p] + sum_g M[g, c] - M[c, c])
          = TP_c / (TP_c + FN_c + FP_c)

which is NaN for a class absent from both the ground truth and the
predictions (0 / 0); such classes leave the mean, as in DeepLab's evaluation
(``tf.metrics.mean_iou`` divides by the number of classes with a nonzero
denominator)::

    mIoU           = mean of IoU_c over the classes with a nonzero denominator
    pixel_accuracy = trace(M) / sum(M)

A class predicted somewhere but absent from the ground truth has IoU 0 and
counts (it pulls the mean down), again as in DeepLab.

Exactness: the confusion matrix is an exact integer count, so any batching,
any order of batches, any split between processes merged at the end gives the
same matrix and therefore the same floats (computed in float64 from it by one
function). `StreamingMeanIoU` is bit-for-bit `mean_iou` on the whole set.

Multi-host use (as `StreamingMapAtK`): each process updates its own
evaluator, ``state_arrays()`` gives fixed-shape NumPy arrays to all-gather
(``jax.experimental.multihost_utils.process_allgather``), and
``from_state_arrays`` + `merge` combine them::

  local = StreamingMeanIoU(num_classes)
  for batch in local_batches:
    local.update(predictions, batch["label"], mask=batch["mask"])
  gathered = process_allgather(local.state_arrays())
  total = StreamingMeanIoU(num_classes)
  for p in range(jax.process_count()):
    total.merge(StreamingMeanIoU.from_state_arrays(
        {name: a[p] for name, a in gathered.items()}, num_classes))
  metrics = total.result()

`confusion_matrix_jax` computes one batch's matrix under ``jit`` (int32, exact
up to 2**31 - 1 pixels per batch) for a trainer that keeps the class maps on
the device; `StreamingMeanIoU.add_confusion_matrix` accumulates it in int64.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

IGNORE_LABEL = 255


def _check_settings(num_classes: Any, ignore_label: Any) -> None:
  if (isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral)
      or num_classes < 1):
    raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}.")
  if isinstance(ignore_label, bool) or not isinstance(ignore_label, numbers.Integral):
    raise ValueError(f"ignore_label must be an integer, got {ignore_label!r}.")
  if 0 <= ignore_label < num_classes:
    raise ValueError(f"ignore_label={ignore_label} is a class id (num_classes="
                     f"{num_classes}); it must lie outside [0, num_classes).")


def _check_maps(predictions: Any, labels: Any, num_classes: int, ignore_label: int,
                mask: Any = None) -> tuple[np.ndarray, np.ndarray]:
  """Validates one batch; returns flat int64 (ground truth, prediction) of the kept
  pixels."""
  predictions, labels = np.asarray(predictions), np.asarray(labels)
  for name, x in (("predictions", predictions), ("labels", labels)):
    if not np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
      raise ValueError(f"{name} must be integer class maps, got dtype {x.dtype} "
                       "(take the argmax of the logits first).")
  if predictions.shape != labels.shape:
    raise ValueError(f"predictions and labels must have the same shape, got "
                     f"{predictions.shape} and {labels.shape}.")
  keep = labels != ignore_label
  if mask is not None:
    mask = np.asarray(mask)
    if predictions.ndim < 1 or mask.shape != predictions.shape[:1]:
      raise ValueError(f"mask must have shape ({predictions.shape[0] if predictions.ndim else 0},)"
                       f" (one entry per example), got {mask.shape}.")
    if not np.isin(mask, (0, 1)).all():
      raise ValueError("mask must hold only 0 (padding row) and 1 (real row).")
    keep &= mask.astype(bool).reshape((-1,) + (1,) * (labels.ndim - 1))
  g, p = labels[keep].astype(np.int64), predictions[keep].astype(np.int64)
  if g.size:
    if g.min() < 0 or g.max() >= num_classes:
      bad = g[(g < 0) | (g >= num_classes)][0]
      raise ValueError(f"labels hold {bad}, outside [0, {num_classes}) and not the "
                       f"ignore_label {ignore_label}: wrong num_classes or ignore_label?")
    if p.min() < 0 or p.max() >= num_classes:
      bad = p[(p < 0) | (p >= num_classes)][0]
      raise ValueError(f"predictions hold {bad}, outside [0, {num_classes}).")
  return g, p


def confusion_matrix(predictions: Any, labels: Any, num_classes: int,
                     ignore_label: int = IGNORE_LABEL, mask: Any = None) -> np.ndarray:
  """int64 ``[C, C]``: ``M[g, p]`` = kept pixels with ground truth g, prediction p.

  Args:
    predictions, labels: integer class maps of one shape (e.g. ``[B, H, W]``).
    num_classes: C.
    ignore_label: ground-truth value of pixels left out (outside [0, C)).
    mask: optional ``[B]``: examples (rows of the first axis) where it is 0 are
      left out altogether (padding rows of an eval batch).
  """
  _check_settings(num_classes, ignore_label)
  g, p = _check_maps(predictions, labels, num_classes, ignore_label, mask)
  counts = np.bincount(g * num_classes + p, minlength=num_classes * num_classes)
  return counts.astype(np.int64).reshape(num_classes, num_classes)


def confusion_matrix_jax(predictions: jax.Array, labels: jax.Array, num_classes: int,
                         ignore_label: int = IGNORE_LABEL,
                         mask: jax.Array | None = None) -> jax.Array:
  """`confusion_matrix` as a jit-able function (int32, no value checks).

  Pixels whose label or prediction lies outside [0, C) are left out (not
  reported: check with `confusion_matrix` where that matters).
  """
  predictions, labels = jnp.asarray(predictions), jnp.asarray(labels)
  keep = ((labels != ignore_label) & (labels >= 0) & (labels < num_classes)
          & (predictions >= 0) & (predictions < num_classes))
  if mask is not None:
    keep &= jnp.asarray(mask).astype(jnp.bool_).reshape(
        (-1,) + (1,) * (labels.ndim - 1))
  flat = jnp.where(keep, labels * num_classes + predictions, num_classes * num_classes)
  counts = jnp.bincount(flat.reshape(-1).astype(jnp.int32),
                        length=num_classes * num_classes + 1)
  return counts[:-1].astype(jnp.int32).reshape(num_classes, num_classes)


def iou_from_confusion_matrix(matrix: Any) -> dict[str, Any]:
  """The metrics of a confusion matrix (rows ground truth, columns prediction).

  Returns ``{"mean_iou": float, "per_class_iou": float64 [C] (NaN for classes
  absent from ground truth and predictions), "pixel_accuracy": float}``.
  Raises ValueError when the matrix counts no pixel.
  """
  matrix = np.asarray(matrix, np.int64)
  total = int(matrix.sum())
  if total == 0:
    raise ValueError("No labelled pixels were counted (all ignored or masked): "
                     "mIoU is undefined.")
  tp = np.diag(matrix).astype(np.float64)
  union = matrix.sum(0).astype(np.float64) + matrix.sum(1).astype(np.float64) - tp
  with np.errstate(invalid="ignore", divide="ignore"):
    per_class = np.where(union > 0, tp / union, np.nan)
  present = union > 0
  return {
      "mean_iou": float(per_class[present].sum() / present.sum()),
      "per_class_iou": per_class,
      "pixel_accuracy": float(tp.sum() / total),
  }


def mean_iou(predictions: Any, labels: Any, num_classes: int,
             ignore_label: int = IGNORE_LABEL) -> dict[str, Any]:
  """mIoU, per-class IoU and pixel accuracy of integer class maps (module docstring)."""
  return iou_from_confusion_matrix(
      confusion_matrix(predictions, labels, num_classes, ignore_label))


class StreamingMeanIoU:
  """Accumulates an int64 confusion matrix batch by batch; mergeable across hosts."""

  def __init__(self, num_classes: int, ignore_label: int = IGNORE_LABEL):
    _check_settings(num_classes, ignore_label)
    self.num_classes = int(num_classes)
    self.ignore_label = int(ignore_label)
    self.confusion = np.zeros((self.num_classes, self.num_classes), np.int64)
    self.num_images = 0

  def update(self, predictions: Any, labels: Any, mask: Any = None) -> None:
    """Adds a batch: class maps ``[B, ...]`` and an optional row mask ``[B]``."""
    self.confusion += confusion_matrix(predictions, labels, self.num_classes,
                                       self.ignore_label, mask)
    rows = np.asarray(labels).shape[0] if np.ndim(labels) else 1
    self.num_images += int(rows if mask is None else np.count_nonzero(mask))

  def add_confusion_matrix(self, matrix: Any, num_images: int = 0) -> None:
    """Adds a precomputed batch matrix (e.g. `confusion_matrix_jax`'s)."""
    matrix = np.asarray(matrix)
    if matrix.shape != self.confusion.shape:
      raise ValueError(f"confusion matrix must have shape {self.confusion.shape}, got "
                       f"{matrix.shape}.")
    if not np.issubdtype(matrix.dtype, np.integer) or (matrix.size and matrix.min() < 0):
      raise ValueError("confusion matrix must hold non-negative integer counts.")
    self.confusion += matrix.astype(np.int64)
    self.num_images += int(num_images)

  def merge(self, other: "StreamingMeanIoU") -> "StreamingMeanIoU":
    """Adds another evaluator's pixels to this one (in place); returns self."""
    if not isinstance(other, StreamingMeanIoU):
      raise TypeError(f"Can only merge a StreamingMeanIoU, got {type(other).__name__}.")
    if (other.num_classes, other.ignore_label) != (self.num_classes, self.ignore_label):
      raise ValueError(
          "Cannot merge evaluators with different settings: (num_classes, ignore_label) "
          f"= {(self.num_classes, self.ignore_label)} vs "
          f"{(other.num_classes, other.ignore_label)}.")
    self.confusion += other.confusion
    self.num_images += other.num_images
    return self

  def state_arrays(self) -> dict[str, np.ndarray]:
    """The state as fixed-shape NumPy arrays (for all-gathers and checkpoints)."""
    return {"confusion_matrix": self.confusion.copy(),
            "num_images": np.asarray(self.num_images, np.int64)}

  @classmethod
  def from_state_arrays(cls, arrays: dict[str, Any], num_classes: int,
                        ignore_label: int = IGNORE_LABEL) -> "StreamingMeanIoU":
    """Rebuilds an evaluator from `state_arrays` output (settings must match)."""
    self = cls(num_classes, ignore_label)
    if set(arrays) != {"confusion_matrix", "num_images"}:
      raise ValueError("State arrays must have keys ['confusion_matrix', 'num_images'], "
                       f"got {sorted(arrays)}.")
    matrix = np.asarray(arrays["confusion_matrix"])
    if matrix.shape != (self.num_classes, self.num_classes):
      raise ValueError(f"confusion_matrix must have shape {(self.num_classes,) * 2}, got "
                       f"{matrix.shape}: wrong num_classes?")
    self.add_confusion_matrix(matrix, int(np.asarray(arrays["num_images"])))
    return self

  def result(self) -> dict[str, Any]:
    """The metrics of everything added so far (same numbers as `mean_iou`)."""
    return iou_from_confusion_matrix(self.confusion)
