"""The training and evaluation steps: pure functions of (state, batch), jitted by train.py.

Under `jax.jit` with the batch sharded over the mesh's data axis, every reduction in
these functions (the loss mean, BatchNorm's batch statistics, the metrics) is over the
GLOBAL batch: XLA inserts the cross-device all-reduces. BatchNorm is therefore
synchronised across devices (the statistics of the whole global batch), unlike the
per-replica statistics of the paper's TensorFlow runs; a run's numbers do not depend
on how many devices share the batch.
"""
from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from xception_jax import evaluation, losses
from xception_jax.metrics import EvalMetrics, SkippingTrainMetrics, TrainMetrics


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> dict:
    return {"params": self.params, "batch_stats": self.batch_stats}


def create_train_state(model: nn.Module, tx: optax.GradientTransformation, rng: jax.Array,
                       image_size: int) -> TrainState:
  """Initialises parameters, BN statistics and the optimiser state (jit this)."""
  variables = model.init(rng, jnp.zeros((1, image_size, image_size, 3), jnp.float32),
                         train=False)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def top_k_score(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """Per example: single-label (int labels), 1.0 if the label is among the k highest
  logits (top-k accuracy); multi-label (multi-hot labels), the fraction of the k
  highest that are labels (precision@k)."""
  if labels.ndim == 1:
    return evaluation.top_k_hits(logits, labels, k).astype(jnp.float32)
  _, top = jax.lax.top_k(logits, k)
  return jnp.mean(jnp.take_along_axis(labels, top, axis=-1), axis=-1)


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, model: nn.Module,
               tx: optax.GradientTransformation, schedule: optax.Schedule, task: str,
               label_smoothing: float = 0.0, skip_nonfinite: bool = False
               ) -> tuple[TrainState, TrainMetrics]:
  """One synchronous SGD/RMSprop step on the global batch.

  skip_nonfinite: when the loss or the gradient norm is not finite, keep the old
  params, BN statistics and optimiser state (the step counter still advances, as the
  data does) and count the step in the metrics' `skipped_updates`.
  """
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    logits, updates = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
        mutable=["batch_stats"], rngs={"dropout": dropout_rng})
    if task == "single_label":
      per_example = losses.softmax_cross_entropy(logits, batch["label"], label_smoothing)
    else:
      per_example = losses.sigmoid_cross_entropy(logits, batch["label"])
    return jnp.mean(per_example), (logits, updates["batch_stats"])

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            batch_stats=batch_stats, opt_state=opt_state)
  grad_norm = optax.tree.norm(grads)
  outputs = dict(loss=loss, top_1=jnp.mean(top_k_score(logits, batch["label"], 1)),
                 grad_norm=grad_norm, learning_rate=schedule(state.step))
  if not skip_nonfinite:
    return new_state, TrainMetrics.single_from_model_output(**outputs)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep_old = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = new_state.replace(params=keep_old(new_state.params, state.params),
                                batch_stats=keep_old(new_state.batch_stats, state.batch_stats),
                                opt_state=keep_old(new_state.opt_state, state.opt_state))
  return new_state, SkippingTrainMetrics.single_from_model_output(
      **outputs, skipped_updates=(~finite).astype(jnp.int32))


def eval_step(state: TrainState, batch: dict, *, model: nn.Module, task: str
              ) -> tuple[EvalMetrics, jax.Array]:
  """Metrics over the real rows of an eval batch, and the scores the evaluator ranks
  (softmax probabilities for single-label, sigmoid probabilities for multi-label)."""
  logits = model.apply(state.variables, batch["image"], train=False)
  if task == "single_label":
    per_example = losses.softmax_cross_entropy(logits, batch["label"])
    scores = jax.nn.softmax(logits)
  else:
    per_example = losses.sigmoid_cross_entropy(logits, batch["label"])
    scores = jax.nn.sigmoid(logits)
  k = min(5, logits.shape[-1])
  metrics = EvalMetrics.single_from_model_output(
      loss=per_example, top_1=top_k_score(logits, batch["label"], 1),
      top_5=top_k_score(logits, batch["label"], k), mask=batch["mask"])
  return metrics, scores

