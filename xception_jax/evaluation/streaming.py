"""Streaming MAP@K: evaluate batch by batch, merge across hosts.

`StreamingMapAtK` gives exactly (bit for bit) the number `map_at_k` gives on
the whole ``[N, C]`` matrix, whatever the batching, the order of the batches,
the padding rows, or how the images were split between evaluators that are
merged at the end. Rows are identified by their global image index (``indices``
in `update`), which is what ties are broken by.

State kept (memory independent of N in per-class mode):

* ``mode="per_class"``: for every class, the running top K by (score
  descending, image index ascending): scores ``[C, K]`` float32, image indices
  ``[C, K]`` int32 and labels ``[C, K]`` int8 (empty slots hold score -inf and
  index ``EMPTY_INDEX``), plus the positives per class ``[C]``. A batch's rows
  are put in image-index order (so that ``lax.top_k``'s ties, lower position
  first, are ties by lower index). When the batch's indices all follow the
  ones seen so far (the usual case: sequential indices or the default
  counter), one ``top_k`` over [running list | batch] per class does the
  merge, batch entries below the list's K-th score masked out first;
  otherwise the batch's own top K is merged with a two-key ``lax.sort`` on
  (score, index). Since (score, index) is a total order, the final lists are
  the whole matrix's top K per class, in the same order. Batches are padded to
  a power of two rows (as masked rows), so a stream of batches of varying
  size compiles a handful of times.
* ``mode="per_image"``: each image is complete within its batch, so its
  ranked hits (top K labels, bit-packed: ceil(K / 8) bytes) and label count
  are computed at once and kept with its index (~K / 8 + 12 bytes per image).

`result` sorts nothing it does not have to and reduces the ranked labels with
the same jitted function as `map_at_k`, hence identical numbers. The jitted kernels
that merge a batch into the per-class lists are streaming_top_k.py's; this file
holds the evaluator: its checks, state, merge and result.

Multi-host use: each process evaluates its own share with global ``indices``,
then ``state_arrays(pad_to=...)`` gives fixed-shape NumPy arrays to all-gather
(e.g. ``jax.experimental.multihost_utils.process_allgather``), and
``from_state_arrays`` + `merge` combine them::

  local = StreamingMapAtK(num_classes, k=100, class_weights=w)
  for batch in local_batches:
    local.update(batch["scores"], batch["labels"], indices=batch["index"],
                 mask=batch["mask"])
  gathered = process_allgather(local.state_arrays())  # per_class: fixed shapes.
  total = StreamingMapAtK(num_classes, k=100, class_weights=w)
  for p in range(jax.process_count()):
    total.merge(StreamingMapAtK.from_state_arrays(
        {name: a[p] for name, a in gathered.items()}, num_classes, k=100,
        class_weights=w))
  value = total.result()

Merging requires explicit ``indices``: two evaluators that both numbered their
rows automatically (0, 1, 2, ...) refer to different images by the same index,
so `merge` refuses them.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

# Names, not the module: the package re-exports the function `map_at_k`, which
# shadows the submodule of the same name as a package attribute.
from xception_jax.evaluation.map_at_k import finish_per_class
from xception_jax.evaluation.map_at_k import finish_per_image
from xception_jax.evaluation.map_at_k import rank_per_image_jit
from xception_jax.evaluation.map_at_k_checks import check_class_weights
from xception_jax.evaluation.map_at_k_checks import check_k_and_mode
from xception_jax.evaluation.map_at_k_checks import check_numeric
from xception_jax.evaluation.map_at_k_checks import labels_not_binary
from xception_jax.evaluation.map_at_k_checks import scores_have_nan
from xception_jax.evaluation.streaming_top_k import EMPTY_INDEX
from xception_jax.evaluation.streaming_top_k import bucket_rows
from xception_jax.evaluation.streaming_top_k import empty_top_k
from xception_jax.evaluation.streaming_top_k import merge_top_k
from xception_jax.evaluation.streaming_top_k import update_per_class

class StreamingMapAtK:
  """Accumulates MAP@K over batches; see the module docstring.

  Args:
    num_classes: C, the width of the score and label batches.
    k: the cut-off K >= 1.
    class_weights: optional ``[C]`` weights >= 0 (``mode="per_class"`` only).
    mode: ``"per_class"`` or ``"per_image"`` (see `map_at_k`).
  """

  def __init__(self, num_classes: int, k: int = 100, class_weights: Any = None,
               mode: str = "per_class"):
    check_k_and_mode(k, mode)
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
        or num_classes < 1:
      raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}.")
    self.num_classes, self.k, self.mode = int(num_classes), int(k), mode
    self.class_weights = None if class_weights is None else check_class_weights(
        class_weights, self.num_classes, mode)
    self.num_images = 0  # Real (unmasked) rows seen.
    self.next_index = 0  # Automatic index of the next row.
    self.auto_indexed = False  # Whether any row was numbered automatically.
    if mode == "per_class":
      self._top = empty_top_k(self.num_classes, self.k)
      # On the device like the lists: no wait for the device after each batch.
      self._positives = jnp.zeros(self.num_classes, jnp.int32)
    else:
      self._image_indices: list[np.ndarray] = []
      self._image_hits: list[np.ndarray] = []  # Bit-packed ranked labels.
      self._image_positives: list[np.ndarray] = []

  # -------------------------------------------------------------------------
  # Accumulation.
  # -------------------------------------------------------------------------

  def update(self, scores: Any, labels: Any, indices: Any = None, mask: Any = None) -> None:
    """Adds a batch.

    Args:
      scores: ``[B, C]`` scores.
      labels: ``[B, C]`` labels in {0, 1}.
      indices: ``[B]`` global image index of each row (integers in
        ``[0, 2**31 - 1)``, unique over the whole evaluation); they break ties
        and order the final reduction. Default: a running counter continuing
        after the largest index seen so far.
      mask: ``[B]`` 1 for real rows, 0 for padding rows, which are ignored
        entirely (their scores and labels are not checked).
    """
    previous_next_index, previous_images = self.next_index, self.num_images
    scores, labels, indices, mask = self._check_batch(scores, labels, indices, mask)
    num_real = int(mask.sum())
    if num_real == 0:
      return
    self.num_images += num_real
    # Rows in index order, padding last (a stable argsort, skipped when already so).
    keys = np.where(mask, indices, EMPTY_INDEX)
    if (np.diff(keys) < 0).any():
      order = np.argsort(keys, kind="stable")
      scores, labels, indices, mask = scores[order], labels[order], indices[order], mask[order]
    # Pad to a power of two: one compilation per bucket, not per batch size.
    pad = bucket_rows(len(mask)) - len(mask)
    if pad:
      scores = np.pad(scores, ((0, pad), (0, 0)))
      labels = np.pad(labels, ((0, pad), (0, 0)))
      indices, mask = np.pad(indices, (0, pad)), np.pad(mask, (0, pad))
    if self.mode == "per_class":
      real_indices = indices[mask]
      # All indices so far are < previous_next_index; empty slots (score -inf)
      # remain only while fewer than k images were added.
      in_order = real_indices.min() >= previous_next_index and (
          previous_images >= self.k
          or np.min(scores, where=mask[:, None], initial=np.inf) > -np.inf)
      *self._top, self._positives = update_per_class(
          *self._top, self._positives, scores, labels, indices.astype(np.int32), mask,
          k=self.k, in_order=bool(in_order))
      return
    ranked, positives = rank_per_image_jit(
        np.where(mask[:, None], scores, 0), np.where(mask[:, None], labels, 0), k=self.k)
    self._image_indices.append(indices[mask].astype(np.int64))
    self._image_hits.append(np.packbits(np.asarray(ranked)[mask].astype(bool), axis=1))
    self._image_positives.append(np.asarray(positives)[mask])

  def _check_batch(self, scores, labels, indices, mask):
    """Validates one batch; returns NumPy arrays with the defaults filled in."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    check_numeric("scores", scores)
    check_numeric("labels", labels)
    if scores.ndim != 2 or scores.shape[1] != self.num_classes:
      raise ValueError(f"scores must have shape [batch, {self.num_classes}], got shape "
                       f"{scores.shape}.")
    if labels.shape != scores.shape:
      raise ValueError(f"labels must have the shape of scores {scores.shape}, got shape "
                       f"{labels.shape}.")
    batch = scores.shape[0]
    if mask is None:
      mask = np.ones(batch, bool)
    else:
      mask = np.asarray(mask)
      if mask.shape != (batch,):
        raise ValueError(f"mask must have shape ({batch},), got shape {mask.shape}.")
      if not np.isin(mask, (0, 1)).all():
        raise ValueError("mask must hold only 0 (padding) and 1 (real row).")
      mask = mask.astype(bool)
    automatic = indices is None
    if automatic:
      indices = self.next_index + np.cumsum(mask) - 1  # Padding rows take no number.
      if mask.any() and indices[-1] >= EMPTY_INDEX:
        raise ValueError(f"Automatic indices reached {EMPTY_INDEX}; pass indices=.")
    else:
      indices = np.asarray(indices)
      if indices.shape != (batch,):
        raise ValueError(f"indices must have shape ({batch},), got shape {indices.shape}.")
      if indices.dtype == bool or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must be integers, got dtype {indices.dtype}.")
      real = indices[mask]
      if real.size and (real.min() < 0 or real.max() >= EMPTY_INDEX):
        raise ValueError(f"indices must lie in [0, {EMPTY_INDEX}), got values in "
                         f"[{real.min()}, {real.max()}].")
      if np.unique(real).size != real.size:
        raise ValueError("indices must be unique: the batch repeats an image index.")
    indices = np.where(mask, indices, 0).astype(np.int64)
    if mask.any():
      real_scores, real_labels = (scores, labels) if mask.all() else (scores[mask], labels[mask])
      if scores_have_nan(real_scores):
        raise ValueError("scores contain NaN.")
      if labels_not_binary(real_labels):
        raise ValueError("labels must be 0 or 1 (or booleans); found other values.")
      # Valid: only now does the state change.
      self.next_index = max(self.next_index, int(indices[mask].max()) + 1)
      self.auto_indexed = self.auto_indexed or automatic
    # As the device will see them (and map_at_k does): float32 scores (which
    # may round to ties or to -inf) and boolean labels (smaller to transfer).
    with np.errstate(over="ignore"):
      scores = scores.astype(np.float32, copy=False)
    labels = labels if labels.dtype == bool else labels != 0
    return scores, labels, indices, mask

  def merge(self, other: "StreamingMapAtK") -> "StreamingMapAtK":
    """Adds another evaluator's images to this one (in place); returns self."""
    if not isinstance(other, StreamingMapAtK):
      raise TypeError(f"Can only merge a StreamingMapAtK, got {type(other).__name__}.")
    if (other.num_classes, other.k, other.mode) != (self.num_classes, self.k, self.mode):
      raise ValueError(
          f"Cannot merge evaluators with different settings: (num_classes, k, mode) = "
          f"{(self.num_classes, self.k, self.mode)} vs "
          f"{(other.num_classes, other.k, other.mode)}.")
    if self.num_images and other.num_images and (self.auto_indexed or other.auto_indexed):
      raise ValueError("Cannot merge evaluators whose rows were numbered automatically: "
                       "pass global image indices to update(indices=...).")
    if self.mode == "per_class":
      self._top = list(merge_top_k(*self._top, *other._top, k=self.k))
      self._positives = self._positives + other._positives
    else:
      self._image_indices += other._image_indices
      self._image_hits += other._image_hits
      self._image_positives += other._image_positives
    self.num_images += other.num_images
    self.next_index = max(self.next_index, other.next_index)
    self.auto_indexed = self.auto_indexed or other.auto_indexed
    return self

  # -------------------------------------------------------------------------
  # State as arrays (for all-gathers and checkpoints).
  # -------------------------------------------------------------------------

  def state_arrays(self, pad_to: int | None = None) -> dict[str, np.ndarray]:
    """The state as a dict of NumPy arrays (see `from_state_arrays`).

    Args:
      pad_to: per_image mode only: pad the per-image arrays to this many rows
        (padding rows have index -1) so every host has the same shapes for an
        all-gather. Per-class arrays always have fixed shapes.
    """
    state = {
        "num_images": np.asarray(self.num_images, np.int64),
        "next_index": np.asarray(self.next_index, np.int64),
        "auto_indexed": np.asarray(self.auto_indexed, bool),
    }
    if self.mode == "per_class":
      if pad_to is not None:
        raise ValueError("pad_to only applies to mode='per_image'.")
      top_scores, top_indices, top_labels = (np.asarray(a) for a in self._top)
      return state | {"top_scores": top_scores, "top_indices": top_indices,
                      "top_labels": top_labels,
                      "positives": np.asarray(self._positives).astype(np.int64)}
    indices, hits, positives = self._per_image_arrays()
    if pad_to is not None:
      if pad_to < indices.size:
        raise ValueError(f"pad_to={pad_to} is less than the {indices.size} images held.")
      extra = pad_to - indices.size
      indices = np.concatenate([indices, np.full(extra, -1, np.int64)])
      hits = np.concatenate([hits, np.zeros((extra, hits.shape[1]), np.uint8)])
      positives = np.concatenate([positives, np.zeros(extra, np.int32)])
    return state | {"image_indices": indices, "image_hits": hits,
                    "image_positives": positives}

  @classmethod
  def from_state_arrays(cls, arrays: dict[str, Any], num_classes: int, k: int = 100,
                        class_weights: Any = None,
                        mode: str = "per_class") -> "StreamingMapAtK":
    """Rebuilds an evaluator from `state_arrays` output (settings must match)."""
    self = cls(num_classes, k, class_weights, mode)
    arrays = {name: np.asarray(a) for name, a in arrays.items()}
    expected = ({"top_scores", "top_indices", "top_labels", "positives"}
                if mode == "per_class" else
                {"image_indices", "image_hits", "image_positives"})
    expected |= {"num_images", "next_index", "auto_indexed"}
    if set(arrays) != expected:
      raise ValueError(f"State arrays for mode={mode!r} must have keys {sorted(expected)}, "
                       f"got {sorted(arrays)}.")
    self.num_images = int(arrays["num_images"])
    self.next_index = int(arrays["next_index"])
    self.auto_indexed = bool(arrays["auto_indexed"])
    if mode == "per_class":
      for name in ("top_scores", "top_indices", "top_labels"):
        if arrays[name].shape != (self.num_classes, self.k):
          raise ValueError(f"{name} must have shape {(self.num_classes, self.k)}, got "
                           f"{arrays[name].shape}: wrong num_classes or k?")
      if arrays["positives"].shape != (self.num_classes,):
        raise ValueError(f"positives must have shape ({self.num_classes},), got "
                         f"{arrays['positives'].shape}.")
      self._top = [jnp.asarray(arrays["top_scores"], jnp.float32),
                   jnp.asarray(arrays["top_indices"], jnp.int32),
                   jnp.asarray(arrays["top_labels"], jnp.int8)]
      positives = arrays["positives"]
      if positives.size and (positives.min() < 0 or positives.max() > np.iinfo(np.int32).max):
        raise ValueError("positives must lie in [0, 2**31 - 1].")
      self._positives = jnp.asarray(positives, jnp.int32)
      return self
    real = arrays["image_indices"] >= 0
    if arrays["image_hits"].shape[1:] != ((self.k + 7) // 8,):
      raise ValueError(f"image_hits must have {(self.k + 7) // 8} bytes per image for "
                       f"k={self.k}, got shape {arrays['image_hits'].shape}.")
    self._image_indices = [arrays["image_indices"][real].astype(np.int64)]
    self._image_hits = [arrays["image_hits"][real].astype(np.uint8)]
    self._image_positives = [arrays["image_positives"][real].astype(np.int32)]
    return self

  def _per_image_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not self._image_indices:
      return (np.zeros(0, np.int64), np.zeros((0, (self.k + 7) // 8), np.uint8),
              np.zeros(0, np.int32))
    return (np.concatenate(self._image_indices), np.concatenate(self._image_hits),
            np.concatenate(self._image_positives))

  # -------------------------------------------------------------------------
  # Result.
  # -------------------------------------------------------------------------

  def result(self) -> float:
    """MAP@K of everything added so far (same number as `map_at_k`)."""
    if self.num_images == 0:
      raise ValueError("No images were added: MAP@K is undefined.")
    if self.mode == "per_class":
      weights = self.class_weights
      if weights is None:
        weights = np.ones(self.num_classes, np.float32)
      positives = jnp.minimum(self._positives, self.k)
      return finish_per_class(self._top[2], positives, weights)
    indices, hits, positives = self._per_image_arrays()
    order = np.argsort(indices, kind="stable")
    indices = indices[order]
    if (indices[1:] == indices[:-1]).any():
      raise ValueError(f"Image index {indices[1:][indices[1:] == indices[:-1]][0]} was "
                       "added more than once.")
    ranked = np.unpackbits(hits[order], axis=1, count=self.k).astype(np.int8)
    return finish_per_image(ranked, positives[order])
