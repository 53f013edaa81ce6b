"""Losses and the train/eval steps against NumPy formulas, on a tiny Xception."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import optax
import pytest

from xception_jax import losses, steps, tasks
from xception_jax.evaluation.precision import precision_at_k
from xception_jax.tasks import single_label
from xception_jax.models import Xception


def test_softmax_cross_entropy_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 5)).astype(np.float32) * 3
  labels = rng.integers(0, 5, size=6)
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  want = -log_probs[np.arange(6), labels]
  np.testing.assert_allclose(losses.softmax_cross_entropy(logits, labels), want, rtol=1e-5)
  smoothed = losses.softmax_cross_entropy(logits, labels, label_smoothing=0.1)
  targets = np.full((6, 5), 0.1 / 5)
  targets[np.arange(6), labels] += 0.9
  np.testing.assert_allclose(smoothed, -(targets * log_probs).sum(-1), rtol=1e-5)


def test_sigmoid_cross_entropy_matches_numpy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(4, 7)) * 20  # large logits: the stable form matters
  labels = (rng.random((4, 7)) < 0.3).astype(np.float64)
  p = 1 / (1 + np.exp(-logits))
  with np.errstate(divide="ignore"):
    naive = -(labels * np.log(p) + (1 - labels) * np.log1p(-p))
  stable = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
  finite = np.isfinite(naive)
  np.testing.assert_allclose(stable[finite], naive[finite], rtol=1e-6)
  np.testing.assert_allclose(losses.sigmoid_cross_entropy(logits.astype(np.float32),
                                                          labels.astype(np.float32)),
                             stable.sum(-1), rtol=1e-5)


def test_precision_at_k_is_the_label_share_of_the_k_highest_scores():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(10, 9)).astype(np.float32)
  labels = (rng.random((10, 9)) < 0.4).astype(np.float32)
  got = np.asarray(precision_at_k(jnp.asarray(logits), jnp.asarray(labels), 3))
  for i in range(10):
    top = np.argsort(-logits[i], kind="stable")[:3]
    assert got[i] == pytest.approx(labels[i, top].mean())


@functools.cache
def _tiny():
  model = Xception(num_classes=6, width_multiplier=0.125, num_middle_blocks=1,
                   depthwise_impl="shift")
  tx = optax.sgd(0.1, momentum=0.9)
  state = jax.jit(functools.partial(steps.create_train_state, model, tx, image_size=71))(
      jax.random.key(0))
  return model, tx, state


def _batch(n, multi, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1, 1, size=(n, 71, 71, 3)).astype(np.float32)
  labels = ((rng.random((n, 6)) < 0.3).astype(np.float32) if multi
            else rng.integers(0, 6, size=n).astype(np.int32))
  return {"image": images, "label": labels, "mask": np.ones(n, np.float32)}


@pytest.mark.parametrize("task", ["single_label", "multi_label"])
def test_eval_step_ignores_padding_rows(task):
  model, _, state = _tiny()
  eval_step = jax.jit(tasks.get(task).eval_step(ml_collections.ConfigDict(), None, model))
  real = _batch(4, task == "multi_label")
  padded = jax.tree.map(lambda x: np.concatenate([x, x[:2] * 0 + 7]), real)
  padded["mask"][4:] = 0
  full, scores = eval_step(state, real)
  masked, padded_scores = eval_step(state, padded)
  for name, value in full.compute().items():
    np.testing.assert_allclose(masked.compute()[name], value, rtol=1e-5, err_msg=name)
  np.testing.assert_allclose(padded_scores[:4], scores, rtol=1e-5, atol=1e-6)
  logits = jax.jit(model.apply)(state.variables, real["image"])
  want = jax.nn.softmax(logits) if task == "single_label" else jax.nn.sigmoid(logits)
  np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-6)


def test_train_step_applies_the_optimizer_to_the_loss_gradient():
  model, tx, state = _tiny()
  batch = _batch(4, multi=False, seed=3)
  train_step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx,
                                         schedule=lambda s: 0.1,
                                         objective=single_label.objective(
                                             ml_collections.ConfigDict())))
  new_state, metrics = train_step(state, batch, jax.random.key(0))

  def loss_fn(params):
    logits, _ = model.apply({"params": params, "batch_stats": state.batch_stats},
                            batch["image"], train=True, mutable=["batch_stats"])
    return jnp.mean(losses.softmax_cross_entropy(logits, batch["label"]))

  loss, grads = jax.jit(jax.value_and_grad(loss_fn))(state.params)
  want = jax.tree.map(lambda p, g: p - 0.1 * g, state.params, grads)  # first momentum step
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               new_state.params, want)
  values = metrics.compute()
  assert int(new_state.step) == 1
  np.testing.assert_allclose(values["loss"], loss, rtol=1e-5)
  np.testing.assert_allclose(values["grad_norm"], optax.tree.norm(grads), rtol=1e-4)
  assert float(values["learning_rate"]) == pytest.approx(0.1)
