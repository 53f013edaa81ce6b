"""Semantic segmentation (DeepLab v3+): per-pixel softmax cross-entropy, mean IoU.

Training: the mean softmax cross-entropy over the labelled pixels of the global batch
(label 255 is ignored) and their pixel accuracy (train_pixel_accuracy).
Evaluation (segmentation_steps.py: multi-scale and flipped inference with
`config.eval_scales` / `config.eval_flip`, in the model's resizing geometry; with
`config.eval_output_stride` the same parameters evaluated at another output stride,
e.g. trained at 16, evaluated at 8, DeepLab's best row): the loss per labelled pixel of
the real rows, and the confusion matrix of the global batch, the same on every process, which
the evaluator adds up in int64. Results: eval_mean_iou, eval_pixel_accuracy,
eval_iou/class_c, and the chance level eval_mean_iou_majority_class, the mean IoU of
predicting the most frequent ground-truth class everywhere.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xception_jax import losses, segmentation_steps
from xception_jax.evaluation.mean_iou import IGNORE_LABEL, StreamingMeanIoU
from xception_jax.tasks import base

NAME = "segmentation"
EVAL_OUTPUT_SHARDED = False  # one confusion matrix for the global batch, replicated


def create_datasets(config: ml_collections.ConfigDict, *, process_index: int,
                    process_count: int, start_step: int):
  """This process's segmentation data (input_pipeline/segmentation_pipeline.py)."""
  import input_pipeline  # pylint: disable=import-outside-toplevel  (TensorFlow: data only)
  return input_pipeline.create_segmentation_datasets(
      config, process_index=process_index, process_count=process_count,
      start_step=start_step)


def objective(config: ml_collections.ConfigDict) -> base.Objective:
  del config

  def fn(logits: jax.Array, batch: dict):
    labels = batch["label"]
    per_pixel, valid = losses.pixel_softmax_cross_entropy(logits, labels)
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return (losses.mean_over_valid(per_pixel, valid),
            {"pixel_accuracy": losses.mean_over_valid(hits, valid)})

  return fn


def eval_model(config: ml_collections.ConfigDict, model):
  """The model evaluation applies: the trained one at `eval_output_stride` if set."""
  stride = config.get("eval_output_stride")
  if stride is None or stride == getattr(model, "output_stride", None):
    return model
  if not hasattr(model, "at_output_stride"):
    raise ValueError(f"config.eval_output_stride={stride}: model "
                     f"{type(model).__name__} has no output stride to change; unset it.")
  return model.at_output_stride(stride)


def eval_step(config: ml_collections.ConfigDict, data, model) -> base.EvalStep:
  model = eval_model(config, model)
  return functools.partial(segmentation_steps.eval_step, model=model,
                           num_classes=data.num_classes,
                           ignore_label=getattr(data, "ignore_label", IGNORE_LABEL),
                           scales=tuple(config.get("eval_scales", (1.0,))),
                           flip=config.get("eval_flip", False))


class IoUEvaluator:
  """Adds the eval step's global confusion matrices (every process sees the same)."""

  def __init__(self, data):
    self.iou = StreamingMeanIoU(data.num_classes,
                                ignore_label=getattr(data, "ignore_label", IGNORE_LABEL))

  def update(self, batch: dict[str, np.ndarray], confusion: jax.Array) -> None:
    del batch
    self.iou.add_confusion_matrix(np.asarray(jax.device_get(confusion)))

  def result(self) -> dict[str, float]:
    iou = self.iou.result()
    results = {"mean_iou": float(iou["mean_iou"]),
               "pixel_accuracy": float(iou["pixel_accuracy"]),
               "mean_iou_majority_class": majority_class_mean_iou(self.iou.confusion)}
    for c, value in enumerate(iou["per_class_iou"]):
      results[f"iou/class_{c}"] = float(value)
    return results


def evaluator(config: ml_collections.ConfigDict, data) -> base.Evaluator:
  del config
  return IoUEvaluator(data)


def majority_class_mean_iou(confusion: np.ndarray) -> float:
  """The mean IoU of predicting the most frequent ground-truth class at every pixel:
  that class scores its pixel share, every other class present scores 0."""
  pixels = confusion.sum(axis=1)
  return float(pixels.max() / pixels.sum() / np.count_nonzero(pixels))


def synthetic_batch(config: ml_collections.ConfigDict, rng: np.random.Generator
                    ) -> dict[str, np.ndarray]:
  batch = base.synthetic_images(config, rng)
  s = config.image_size
  batch["label"] = rng.integers(0, config.num_classes,
                                (config.batch_size, s, s)).astype(np.int32)
  return batch
