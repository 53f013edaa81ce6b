"""What the two classification tasks share: their data and their eval step's shape.

single_label.py and multi_label.py differ in the loss, the scores and the top-k figure;
both read images and labels through `input_pipeline.create_datasets` and evaluate the
same way: per-example averages over the real rows, and the scores (one row per
example, sharded like the batch) for the task's evaluator.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import ml_collections

from xception_jax import metrics


def create_datasets(config: ml_collections.ConfigDict, *, process_index: int,
                    process_count: int, start_step: int):
  """This process's classification data (input_pipeline/pipeline.py)."""
  import input_pipeline  # pylint: disable=import-outside-toplevel  (TensorFlow: data only)
  return input_pipeline.create_datasets(config, process_index=process_index,
                                        process_count=process_count,
                                        start_step=start_step)


def eval_step(model: nn.Module,
              per_example_loss: Callable[[jax.Array, jax.Array], jax.Array],
              scores: Callable[[jax.Array], jax.Array],
              top_k: Callable[[jax.Array, jax.Array, int], jax.Array],
              names: tuple[str, str, str]):
  """(state, batch) -> (averages of `names` = loss, top-1 figure, top-5 figure over the
  real rows, the scores the evaluator ranks); the top-5 figure uses k = min(5, C)."""
  collection = metrics.masked_averages(names)

  def step(state, batch: dict):
    logits = model.apply(state.variables, batch["image"], train=False)
    labels = batch["label"]
    k = min(5, logits.shape[-1])
    values = (per_example_loss(logits, labels), top_k(logits, labels, 1),
              top_k(logits, labels, k))
    return (collection.single_from_model_output(**dict(zip(names, values)),
                                                mask=batch["mask"]),
            scores(logits))

  return step
