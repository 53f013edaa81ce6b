"""Single-label classification (ImageNet): softmax cross-entropy, top-1/top-5 accuracy.

Training: the mean softmax cross-entropy over the global batch (optionally
label-smoothed, `config.label_smoothing`) and its top-1 accuracy (train_top_1).
Evaluation: loss, top_1 and top_5 accuracy over the real rows (eval_loss, eval_top_1,
eval_top_5); the averages (metrics.py) are already global, so there is no host evaluator.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from xception_jax import losses
from xception_jax.evaluation.accuracy import top_k_hits
from xception_jax.tasks import base, classification

NAME = "single_label"
EVAL_OUTPUT_SHARDED = True  # softmax probabilities, one row per example

create_datasets = classification.create_datasets


def _hits(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  return top_k_hits(logits, labels, k).astype(jnp.float32)


def objective(config: ml_collections.ConfigDict) -> base.Objective:
  smoothing = config.get("label_smoothing", 0.0)

  def fn(logits: jax.Array, batch: dict):
    labels = batch["label"]
    loss = jnp.mean(losses.softmax_cross_entropy(logits, labels, smoothing))
    return loss, {"top_1": jnp.mean(_hits(logits, labels, 1))}

  return fn


def eval_step(config: ml_collections.ConfigDict, data, model) -> base.EvalStep:
  del config, data
  return classification.eval_step(model, losses.softmax_cross_entropy, jax.nn.softmax,
                                  _hits, ("loss", "top_1", "top_5"))


def evaluator(config: ml_collections.ConfigDict, data) -> base.Evaluator:
  del config, data
  return base.NoEvaluator()


def synthetic_batch(config: ml_collections.ConfigDict, rng: np.random.Generator
                    ) -> dict[str, np.ndarray]:
  batch = base.synthetic_images(config, rng)
  batch["label"] = rng.integers(0, config.num_classes, config.batch_size).astype(np.int32)
  return batch
