"""Schedules and optimisers against the paper's numbers and NumPy re-implementations
of TensorFlow's MomentumOptimizer and RMSPropOptimizer."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import imagenet, multilabel
from xception_jax import optim


@pytest.mark.parametrize("batch_size", [256, 1024])
def test_imagenet_schedule_decays_by_094_every_two_epochs(batch_size):
  config = imagenet.get_config()
  config.batch_size = batch_size
  schedule = optim.learning_rate_schedule(config)
  steps_per_two_epochs = 2 * 1_281_167 / batch_size
  for epochs in [0, 1.9, 2.1, 3.9, 4.1, 10.5, 60.3]:
    step = int(epochs * 1_281_167 / batch_size)
    want = 0.045 * 0.94 ** math.floor(step / steps_per_two_epochs)
    np.testing.assert_allclose(schedule(step), want, rtol=1e-6, err_msg=f"epoch {epochs}")
  np.testing.assert_allclose(schedule(int(40 * 1_281_167 / batch_size) + 1),
                             0.045 * 0.94 ** 20, rtol=1e-6)


def test_multilabel_schedule_decays_by_09_every_3m_samples():
  config = multilabel.get_config()
  schedule = optim.learning_rate_schedule(config)
  per_decay = 3_000_000 / config.batch_size           # 2929.7 steps at batch 1024
  assert float(schedule(0)) == pytest.approx(0.001)
  assert float(schedule(2929)) == pytest.approx(0.001)
  assert float(schedule(2930)) == pytest.approx(0.0009)
  samples = 350_000_000                                # one pass over JFT
  step = samples // config.batch_size
  assert float(schedule(step)) == pytest.approx(0.001 * 0.9 ** math.floor(step / per_decay),
                                                rel=1e-5)


def test_warmup_and_batch_scaling():
  config = imagenet.get_config()
  config.batch_size = 2048
  config.lr_base_batch_size = 256
  config.warmup_steps = 100
  schedule = optim.learning_rate_schedule(config)
  peak = 0.045 * 2048 / 256
  assert float(schedule(0)) == 0.0
  assert float(schedule(50)) == pytest.approx(peak / 2)
  assert float(schedule(100)) == pytest.approx(peak)
  decay_steps = 2 * 1_281_167 / 2048
  step = int(3 * decay_steps) + 1
  assert float(schedule(step)) == pytest.approx(peak * 0.94 ** 3, rel=1e-6)


def _toy_params(seed=0):
  k = jax.random.split(jax.random.key(seed), 3)
  return {"conv": {"kernel": jax.random.normal(k[0], (3, 3, 2, 4))},
          "bn": {"scale": jax.random.normal(k[1], (4,)), "bias": jnp.zeros(4)},
          "head": {"kernel": jax.random.normal(k[2], (4, 5)), "bias": jnp.ones(5)}}


def _grads(step):
  return jax.tree.map(lambda p: jnp.sin(p * (step + 1)) + 0.1 * step, _toy_params(1))


def _run(config, steps=6):
  tx = optim.create_optimizer(config)
  params = _toy_params()
  state = tx.init(params)
  for t in range(steps):
    updates, state = tx.update(_grads(t), state, params)
    params = optax.apply_updates(params, updates)
  return params


def _is_kernel(path):
  return path[-1].key == "kernel"


def _reference(config, update_fn, steps=6):
  """Applies a per-leaf NumPy rule; weight decay (L2) adds wd * w to kernels' grads."""
  schedule = optim.learning_rate_schedule(config)
  params = jax.tree.map(lambda x: np.asarray(x, np.float64), _toy_params())
  slots = jax.tree.map(lambda x: {}, params)
  for t in range(steps):
    lr = float(schedule(t))
    def leaf(path, w, g, slot):
      g = np.asarray(g, np.float64) + (config.weight_decay * w if _is_kernel(path) else 0)
      return w - update_fn(g, slot, lr)
    params = jax.tree_util.tree_map_with_path(leaf, params, _grads(t), slots,
                                              is_leaf=lambda x: isinstance(x, dict) and not x)
  return params


def _small_config(optimizer):
  config = imagenet.get_config() if optimizer == "sgd" else multilabel.get_config()
  config.batch_size = 1
  config.lr_decay_every_examples = 2      # decays at step 2 and 4
  config.learning_rate = 0.1
  config.weight_decay = 0.01
  return config


def test_sgd_matches_tensorflow_momentum_optimizer():
  config = _small_config("sgd")
  def momentum(g, slot, lr):            # accum = m * accum + g; w -= lr * accum
    slot["accum"] = 0.9 * slot.get("accum", 0.0) + g
    return lr * slot["accum"]
  want = _reference(config, momentum)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               _run(config), want)


def test_rmsprop_matches_tensorflow_rmsprop_optimizer():
  config = _small_config("rmsprop")
  def rmsprop(g, slot, lr):             # ms starts at 1; mom = m * mom + lr * g / sqrt(ms + eps)
    slot["ms"] = 0.9 * slot.get("ms", 1.0) + 0.1 * g * g
    slot["mom"] = 0.9 * slot.get("mom", 0.0) + lr * g / np.sqrt(slot["ms"] + 1.0)
    return slot["mom"]
  want = _reference(config, rmsprop)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               _run(config), want)


def test_weight_decay_only_on_kernels():
  mask = optim.decay_mask(_toy_params())
  assert mask == {"conv": {"kernel": True}, "bn": {"scale": False, "bias": False},
                  "head": {"kernel": True, "bias": False}}


def test_steps_from_epochs_and_errors():
  config = imagenet.get_config()
  config.num_train_steps = -1
  config.num_epochs = 2.0
  assert optim.steps_for(config, 1_281_167) == math.ceil(2 * 1_281_167 / 1024)
  config.num_train_steps = 7
  assert optim.steps_for(config, 1_281_167) == 7
  config.optimizer = "adam"
  with pytest.raises(ValueError, match="config.optimizer must be 'sgd' or 'rmsprop'"):
    optim.create_optimizer(config)


def test_deeplab_decays_every_kernel_but_the_depthwise_ones():
  """TF DeepLab's regularize_depthwise=False: the excluded leaves are exactly the kernels
  shaped like a depthwise conv's (k, k, 1, C) (recognised by shape here, not by name),
  in the backbone and the head alike; the base config keeps decaying them."""
  from configs import deeplab_voc  # pylint: disable=import-outside-toplevel
  from xception_jax.models.deeplab import DeepLabV3Plus  # pylint: disable=import-outside-toplevel
  model = DeepLabV3Plus(num_classes=3, backbone="xception41", num_middle_blocks=0,
                        width_multiplier=0.125)
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 33, 33, 3))))
  params = params["params"]
  leaves = jax.tree_util.tree_leaves_with_path(params)
  kernels = {jax.tree_util.keystr(p) for p, _ in leaves if p[-1].key == "kernel"}
  depthwise = {jax.tree_util.keystr(p) for p, x in leaves
               if p[-1].key == "kernel" and x.ndim == 4 and x.shape[0] == 3 and x.shape[2] == 1}
  assert len(depthwise) == 3 * 3 + 2 * 3 + 3 + 2   # entry, exit blocks; ASPP, decoder
  decayed = lambda mask: {jax.tree_util.keystr(p) for p, m in
                          jax.tree_util.tree_leaves_with_path(mask) if m}
  assert decayed(optim.decay_mask(params, depthwise=False)) == kernels - depthwise
  assert decayed(optim.decay_mask(params)) == kernels
  # Through the optimizer the config builds: zero gradients, one SGD step.
  config = deeplab_voc.get_config()
  assert config.weight_decay_depthwise is False
  config.learning_rate, config.weight_decay = 1.0, 0.5
  toy = {"block": {"depthwise": {"kernel": jnp.ones((3, 3, 1, 4))},
                   "pointwise": {"kernel": jnp.ones((1, 1, 4, 4))}}}
  tx = optim.create_optimizer(config, total_steps=10)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, toy), tx.init(toy), toy)
  np.testing.assert_array_equal(updates["block"]["depthwise"]["kernel"], 0.0)
  np.testing.assert_allclose(updates["block"]["pointwise"]["kernel"], -0.5)
  config.weight_decay_depthwise = True
  tx = optim.create_optimizer(config, total_steps=10)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, toy), tx.init(toy), toy)
  np.testing.assert_allclose(updates["block"]["depthwise"]["kernel"], -0.5)
