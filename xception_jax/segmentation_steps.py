"""Semantic segmentation's evaluation step and DeepLab's multi-scale, flipped inference.

The segmentation task (tasks/segmentation.py) trains through `steps.train_step` with
its per-pixel objective and evaluates with `eval_step` here. Evaluation differs from
classification's: instead of scores for a ranking evaluator it returns the confusion
matrix of the global batch (rows ground truth, columns prediction; int32), computed
under jit across all devices, so every process receives the same global counts and the
host adds them in int64 (`evaluation.StreamingMeanIoU.add_confusion_matrix`). No
all-gather is needed: the sum over processes is part of the compiled step.

Inference as DeepLab reports its best numbers (`eval_scales`, `eval_flip`): the image is
resized by each scale (bilinear), the model's logits are resized back to the input size,
softmax probabilities are averaged over scales (and over the left-right flipped input,
flipped back), and the class is their argmax. With scales (1.0,) and no flip this is
the plain argmax of the logits. `align_corners` (None: the model's field, False for a
model without one) picks the resizing geometry, TF DeepLab's (corners aligned, a side of (size - 1) * scale + 1 as
its `_scale_dimension`) or half-pixel centres (a side of round(size * scale)).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from xception_jax import losses, metrics
from xception_jax.evaluation.mean_iou import confusion_matrix_jax
from xception_jax.models.resize import resize_bilinear, scaled_size


def predict_probabilities(model: nn.Module, variables: dict, images: jax.Array,
                          scales: Sequence[float] = (1.0,), flip: bool = False,
                          align_corners: Optional[bool] = None) -> jax.Array:
  """Class probabilities [B, H, W, C] averaged over scales and (optionally) flips."""
  height, width = images.shape[1], images.shape[2]
  if align_corners is None:
    align_corners = getattr(model, "align_corners", False)
  _resize = lambda x, h, w: resize_bilinear(x, h, w, align_corners)
  total, count = None, 0
  for scale in scales:
    scaled = images
    if scale != 1.0:
      scaled = _resize(images, scaled_size(height, scale, align_corners),
                       scaled_size(width, scale, align_corners))
    for flipped in ((False, True) if flip else (False,)):
      inputs = scaled[:, :, ::-1] if flipped else scaled
      logits = model.apply(variables, inputs, train=False)
      if flipped:
        logits = logits[:, :, ::-1]
      if logits.shape[1:3] != (height, width):
        logits = _resize(logits, height, width)
      probabilities = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
      total = probabilities if total is None else total + probabilities
      count += 1
  return total / count


def eval_step(state, batch: dict, *, model: nn.Module, num_classes: int,
              ignore_label: int = 255, scales: Sequence[float] = (1.0,),
              flip: bool = False, align_corners: Optional[bool] = None
              ) -> tuple[Any, jax.Array]:
  """The loss over labelled pixels of the real rows, and the batch's confusion matrix.

  With the default single scale the loss is the cross-entropy of the model's logits;
  with several scales or flips, of the averaged probabilities.
  """
  labels = batch["label"]
  if tuple(scales) == (1.0,) and not flip:
    logits = model.apply(state.variables, batch["image"], train=False)
    per_pixel, valid = losses.pixel_softmax_cross_entropy(logits, labels, ignore_label)
    predictions = jnp.argmax(logits, axis=-1)
  else:
    probabilities = predict_probabilities(model, state.variables, batch["image"], scales,
                                          flip, align_corners)
    valid = labels != ignore_label
    picked = jnp.take_along_axis(probabilities, jnp.where(valid, labels, 0)[..., None],
                                 axis=-1)[..., 0]
    per_pixel = -jnp.log(jnp.maximum(picked, 1e-12))
    predictions = jnp.argmax(probabilities, axis=-1)
  real = batch["mask"].astype(bool)[:, None, None]
  averages = metrics.masked_averages(("loss",)).single_from_model_output(
      loss=per_pixel, mask=valid & real)
  confusion = confusion_matrix_jax(predictions, labels, num_classes, ignore_label,
                                   mask=batch["mask"])
  return averages, confusion
