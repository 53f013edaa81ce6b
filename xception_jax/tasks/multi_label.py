"""Multi-label classification (the paper's JFT regime): sigmoid cross-entropy, MAP@K.

Training: the mean over images of the summed per-class sigmoid cross-entropies and the
precision@1 of the batch (train_precision_at_1). Evaluation: loss, precision@1 and
precision@5 over the real rows (eval_loss, eval_precision_at_1, eval_precision_at_5),
and the weighted MAP@K of the sigmoid scores (`config.map_k`, the dataset's class
weights; the paper's FastEval14k MAP@100) beside its chance level, the MAP@K of
uniformly random scores on the same images (eval_map_at_K, eval_map_at_K_random_scores).
Each process ranks its own rows; the evaluators' states are all-gathered and merged
at the end of the pass (evaluation/streaming.py), so the result is the whole split's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from xception_jax import losses, partitioning
from xception_jax.evaluation.precision import precision_at_k
from xception_jax.evaluation.streaming import StreamingMapAtK
from xception_jax.tasks import base, classification

NAME = "multi_label"
EVAL_OUTPUT_SHARDED = True  # sigmoid probabilities, one row per example

create_datasets = classification.create_datasets


def objective(config: ml_collections.ConfigDict) -> base.Objective:
  del config

  def fn(logits: jax.Array, batch: dict):
    labels = batch["label"]
    loss = jnp.mean(losses.sigmoid_cross_entropy(logits, labels))
    return loss, {"precision_at_1": jnp.mean(precision_at_k(logits, labels, 1))}

  return fn


def eval_step(config: ml_collections.ConfigDict, data, model) -> base.EvalStep:
  del config, data
  return classification.eval_step(model, losses.sigmoid_cross_entropy, jax.nn.sigmoid,
                                  precision_at_k,
                                  ("loss", "precision_at_1", "precision_at_5"))


class MapEvaluator:
  """MAP@K of the model's scores and of random scores, over every process's rows."""

  def __init__(self, config: ml_collections.ConfigDict, data):
    self.k = config.map_k
    self.model = StreamingMapAtK(data.num_classes, k=self.k, class_weights=data.class_weights)
    self.random = StreamingMapAtK(data.num_classes, k=self.k,
                                  class_weights=data.class_weights)
    self.rng = np.random.default_rng([config.seed, jax.process_index()])

  def update(self, batch: dict[str, np.ndarray], scores: jax.Array) -> None:
    rows = partitioning.local_rows(scores)
    self.model.update(rows, batch["label"], indices=batch["index"], mask=batch["mask"])
    self.random.update(self.rng.random(rows.shape, np.float32), batch["label"],
                       indices=batch["index"], mask=batch["mask"])

  def result(self) -> dict[str, float]:
    return {f"map_at_{self.k}": merged_result(self.model),
            f"map_at_{self.k}_random_scores": merged_result(self.random)}


def evaluator(config: ml_collections.ConfigDict, data) -> base.Evaluator:
  return MapEvaluator(config, data)


def merged_result(evaluator: StreamingMapAtK) -> float:
  """Combines every process's evaluator state (all-gather) and computes MAP@K."""
  if jax.process_count() == 1:
    return evaluator.result()
  gathered = multihost_utils.process_allgather(evaluator.state_arrays())
  total = StreamingMapAtK(evaluator.num_classes, k=evaluator.k,
                          class_weights=evaluator.class_weights)
  for p in range(jax.process_count()):
    total.merge(StreamingMapAtK.from_state_arrays(
        {name: array[p] for name, array in gathered.items()}, evaluator.num_classes,
        k=evaluator.k, class_weights=evaluator.class_weights))
  return total.result()


def synthetic_batch(config: ml_collections.ConfigDict, rng: np.random.Generator
                    ) -> dict[str, np.ndarray]:
  batch = base.synthetic_images(config, rng)
  batch["label"] = (rng.uniform(size=(config.batch_size, config.num_classes))
                    < 0.1).astype(np.float32)
  return batch
