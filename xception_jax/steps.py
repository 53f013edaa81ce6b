"""The training step: a pure function of (state, batch, rng), jitted by train.py.

What the step optimises is the task's (xception_jax/tasks/): its objective maps the
model's output and the batch to the loss and the figures logged beside it; evaluation
steps are the tasks' too.

Under `jax.jit` with the batch sharded over the mesh's data axis, every reduction in
these functions (the loss mean, BatchNorm's batch statistics, the metrics) is over the
GLOBAL batch: XLA inserts the cross-device all-reduces. BatchNorm is therefore
synchronised across devices (the statistics of the whole global batch), unlike the
per-replica statistics of the paper's TensorFlow runs; a run's numbers do not depend
on how many devices share the batch.
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from xception_jax import metrics


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


def train_step(state: TrainState, batch: dict, rng: jax.Array, *, model: nn.Module,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               objective: Callable[[jax.Array, dict], tuple[jax.Array, dict]],
               skip_nonfinite: bool = False) -> tuple[TrainState, Any]:
  """One synchronous SGD/RMSprop step on the global batch.

  objective: the task's (`tasks.get(config.task).objective(config)`): (logits, batch)
  -> (loss, {figure: value}); the figures are logged beside the loss
  (`metrics.train_metrics`).

  skip_nonfinite: when the loss or the gradient norm is not finite, keep the old
  params, BN statistics and optimiser state (the step counter still advances, as the
  data does) and count the step in the metrics' `skipped_updates`.
  """
  dropout_rng = jax.random.fold_in(rng, state.step)

  def loss_fn(params):
    logits, updates = model.apply(
        {"params": params, "batch_stats": state.batch_stats}, batch["image"], train=True,
        mutable=["batch_stats"], rngs={"dropout": dropout_rng})
    loss, figures = objective(logits, batch)
    return loss, (figures, updates["batch_stats"])

  (loss, (figures, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                            batch_stats=batch_stats, opt_state=opt_state)
  grad_norm = optax.tree.norm(grads)
  outputs = dict(loss=loss, **figures, grad_norm=grad_norm,
                 learning_rate=schedule(state.step))
  collection = metrics.train_metrics(tuple(figures), skip_nonfinite)
  if not skip_nonfinite:
    return new_state, collection.single_from_model_output(**outputs)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  keep_old = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
  new_state = new_state.replace(params=keep_old(new_state.params, state.params),
                                batch_stats=keep_old(new_state.batch_stats, state.batch_stats),
                                opt_state=keep_old(new_state.opt_state, state.opt_state))
  return new_state, collection.single_from_model_output(
      **outputs, skipped_updates=(~finite).astype(jnp.int32))

