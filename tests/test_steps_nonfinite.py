"""steps.train_step with skip_nonfinite: a NaN/inf loss or gradient leaves the state as it
was (bitwise) and is counted; finite steps are exactly the plain step's.

A tiny BatchNorm + Dense model stands in for Xception (train_step only needs `apply`
with a batch_stats collection), so this compiles in about a second.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import optax

from xception_jax import steps
from xception_jax.tasks import single_label


class _Tiny(nn.Module):
  num_classes: int = 3

  @nn.compact
  def __call__(self, x, train=False):
    x = jnp.mean(x, axis=(1, 2))
    x = nn.BatchNorm(use_running_average=not train)(x)
    return nn.Dense(self.num_classes, name="head")(x)


def _setup():
  model, tx = _Tiny(), optax.sgd(0.1, momentum=0.9)
  state = steps.create_train_state(model, tx, jax.random.key(0), image_size=4)
  step = lambda skip: jax.jit(functools.partial(
      steps.train_step, model=model, tx=tx, schedule=lambda s: 0.1,
      objective=single_label.objective(ml_collections.ConfigDict()),
      skip_nonfinite=skip))
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(4, 4, 4, 3)).astype(np.float32),
           "label": np.array([0, 1, 2, 0])}
  bad = {**batch, "image": batch["image"].copy()}
  bad["image"][1, 0, 0, 0] = np.nan
  return state, step(True), step(False), batch, bad


def test_a_nonfinite_step_keeps_the_state_and_is_counted():
  state, skipping, plain, batch, bad = _setup()
  rng = jax.random.key(1)
  kept, metrics = skipping(state, bad, rng)
  assert int(metrics.compute()["skipped_updates"]) == 1
  assert int(kept.step) == int(state.step) + 1  # the data moved on
  for name in ("params", "batch_stats", "opt_state"):
    jax.tree.map(np.testing.assert_array_equal, getattr(kept, name), getattr(state, name))
  poisoned, _ = plain(state, bad, rng)  # without skipping, NaN reaches the parameters
  assert not np.all(np.isfinite(np.asarray(poisoned.params["head"]["kernel"])))


def test_finite_steps_equal_the_plain_step_and_count_zero():
  state, skipping, plain, batch, _ = _setup()
  rng = jax.random.key(1)
  a, metrics_a = skipping(state, batch, rng)
  b, metrics_b = plain(state, batch, rng)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert int(metrics_a.compute()["skipped_updates"]) == 0
  np.testing.assert_array_equal(metrics_a.compute()["loss"], metrics_b.compute()["loss"])
  merged = metrics_a.merge(skipping(a, _setup()[4], rng)[1])
  assert int(merged.compute()["skipped_updates"]) == 1  # counts add up over steps
