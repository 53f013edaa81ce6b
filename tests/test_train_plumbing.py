"""Config fields reach the trainer's compiled steps: each checked by value, against a
computation made here without the trainer.

The trainer (`train.Trainer`) is built from a config exactly as `train_and_evaluate`
builds it, and its jitted `train_step` / `eval_step` run on hand-made global batches:
- the multi-label (sigmoid) loss inside `train_step`, against NumPy's formula;
- `label_smoothing`, against NumPy's smoothed cross-entropy;
- `grad_clip_norm`, by the size of the first SGD update;
- `head_bias_init`, in the initial state;
- `shard_head=True`: the head is really split over the devices, and a training step and an
  evaluation step give what the replicated trainer gives;
- a mesh of 2 slices (`num_slices=2`, the head split within each slice): the same.
"""
import functools
import types

import jax
import numpy as np
import pytest

from configs import demo
from xception_jax import partitioning, train

SIZE, BATCH, CLASSES = 71, 8, 8
LR = 0.5
# One optimiser for every trainer here, so that they share compiled programs where their
# configs agree: SGD's first step moves the parameters by exactly lr * gradient.
SGD = dict(optimizer="sgd", learning_rate=LR, weight_decay=0.0, momentum=0.9)


def _config(**overrides):
  config = demo.get_config()
  config.image_size = SIZE
  config.batch_size = BATCH
  config.model.num_middle_blocks = 1
  config.model.head_bias_init = 0.0
  config.update_from_flattened_dict({**SGD, **overrides})
  return config


@functools.cache
def _trainer(task="multi_label", num_devices=4, num_slices=1, **overrides):
  config = _config(**overrides)
  mesh = partitioning.create_mesh(num_devices if num_slices == 1 else -1, num_slices)
  data = types.SimpleNamespace(task=task, num_classes=CLASSES, num_train_examples=1000)
  trainer = train.Trainer(config, mesh, data)
  return trainer, trainer.init(jax.random.key(config.seed))


def _batch(task, seed=0):
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype(np.float32)
  if task == "multi_label":
    labels = (rng.random((BATCH, CLASSES)) < 0.3).astype(np.float32)
  else:
    labels = rng.integers(0, CLASSES, BATCH).astype(np.int32)
  return {"image": images, "label": labels, "mask": np.ones(BATCH, np.float32)}


def _train_mode_logits(trainer, state, batch):
  """The logits the training step sees (BN in training mode, no dropout in the demo)."""
  logits, _ = trainer.model.apply(state.variables, batch["image"], train=True,
                                  mutable=["batch_stats"])
  return np.asarray(logits, np.float64)


def _step(trainer, state, batch):
  global_batch = partitioning.make_global_batch(batch, trainer.data_sharding)
  # The step donates its input state: run it on a copy.
  state = jax.tree.map(lambda x: x.copy(), state)
  return trainer.train_step(state, global_batch, jax.random.key(1))


def test_multi_label_loss_inside_train_step_is_sigmoid_cross_entropy():
  trainer, state = _trainer("multi_label")
  batch = _batch("multi_label")
  logits = _train_mode_logits(trainer, state, batch)
  y = batch["label"]
  # -y log sigmoid(x) - (1 - y) log(1 - sigmoid(x)), summed over classes, mean over images.
  per_class = np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits)))
  want = per_class.sum(axis=1).mean()
  _, metrics = _step(trainer, state, batch)
  np.testing.assert_allclose(float(metrics.compute()["loss"]), want, rtol=1e-5)


def test_label_smoothing_reaches_the_loss():
  smoothing = 0.1
  trainer, state = _trainer("single_label", label_smoothing=smoothing)
  batch = _batch("single_label", seed=1)
  logits = _train_mode_logits(trainer, state, batch)
  targets = np.full((BATCH, CLASSES), smoothing / CLASSES)
  targets[np.arange(BATCH), batch["label"]] += 1 - smoothing
  shifted = logits - logits.max(axis=1, keepdims=True)
  log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
  want = -(targets * log_softmax).sum(axis=1).mean()
  _, metrics = _step(trainer, state, batch)
  np.testing.assert_allclose(float(metrics.compute()["loss"]), want, rtol=1e-5)


def test_grad_clip_norm_bounds_the_first_update():
  """SGD's first step moves the parameters by lr * g (momentum starts at 0); with
  clipping by global norm c the move has norm lr * c exactly."""
  clip = 1e-3
  batch = _batch("multi_label", seed=2)
  moves = {}
  for name, overrides in (("clipped", dict(grad_clip_norm=clip)), ("unclipped", {})):
    trainer, state = _trainer(**overrides)
    new_state, metrics = _step(trainer, state, batch)
    deltas = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b),
                          new_state.params, state.params)
    moves[name] = np.sqrt(sum(np.sum(d ** 2) for d in jax.tree.leaves(deltas)))
    grad_norm = float(metrics.compute()["grad_norm"])
  assert grad_norm > 100 * clip                       # the clip is active
  np.testing.assert_allclose(moves["clipped"], LR * clip, rtol=1e-3)
  np.testing.assert_allclose(moves["unclipped"], LR * grad_norm, rtol=1e-3)


def test_head_bias_init_is_the_initial_logit_bias():
  _, state = _trainer(**{"model.head_bias_init": -2.5})
  np.testing.assert_array_equal(np.asarray(state.params["head"]["bias"]),
                                np.full(CLASSES, -2.5, np.float32))


@pytest.mark.parametrize("num_slices", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_shard_head_splits_the_head_and_computes_the_same_steps(num_slices):
  sharded, state_s = _trainer(shard_head=True, num_slices=num_slices)
  replicated, state_r = _trainer()
  kernel = state_s.params["head"]["kernel"]
  assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, partitioning.DATA)
  per_slice = 4 // num_slices
  assert {s.data.shape for s in kernel.addressable_shards} == {
      (kernel.shape[0], CLASSES // per_slice)}
  assert sharded.data_sharding.spec == jax.sharding.PartitionSpec(
      partitioning.batch_axes(sharded.mesh))
  assert len(sharded.mesh.axis_names) == num_slices
  assert replicated.state_sharding.params["head"]["kernel"].spec == jax.sharding.PartitionSpec()
  jax.tree.map(np.testing.assert_array_equal, state_s.params, state_r.params)

  batch = _batch("multi_label", seed=3)
  (new_s, metrics_s), (new_r, metrics_r) = (_step(sharded, state_s, batch),
                                            _step(replicated, state_r, batch))
  assert new_s.params["head"]["kernel"].sharding.spec == kernel.sharding.spec
  np.testing.assert_allclose(float(metrics_s.compute()["loss"]),
                             float(metrics_r.compute()["loss"]), rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               new_s.params, new_r.params)
  global_batch = partitioning.make_global_batch(batch, sharded.data_sharding)
  (eval_s, scores_s), (eval_r, scores_r) = (sharded.eval_step(new_s, global_batch),
                                            replicated.eval_step(new_r, global_batch))
  np.testing.assert_allclose(np.asarray(scores_s), np.asarray(scores_r), rtol=1e-5,
                             atol=1e-7)
  np.testing.assert_allclose(float(eval_s.compute()["loss"]),
                             float(eval_r.compute()["loss"]), rtol=1e-6)
