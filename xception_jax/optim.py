"""The paper's optimisers and learning-rate schedules, built from the config.

ImageNet (paper section 4.3): SGD, momentum 0.9, initial learning rate 0.045, decayed
by 0.94 every 2 epochs (staircase); weight decay 1e-5 on the weights.
JFT: RMSprop, momentum 0.9, initial learning rate 0.001, decayed by 0.9 every
3,000,000 samples (staircase); weight decay 1e-5.

Weight decay is the L2 regularisation of Keras/TensorFlow (`kernel_regularizer`): the
gradient of (weight_decay / 2) * ||w||^2 is added to the gradient of every kernel
(convolution and dense weights), not to BatchNorm scales/shifts or biases. With
`weight_decay_depthwise=False` (DeepLab's `regularize_depthwise=False`, its configs'
value) the depthwise kernels, the 'kernel' leaves of modules named 'depthwise' (every
separable conv's spatial half, in Xception, aligned Xception and DeepLab's head), are
not decayed either.

DeepLab v3+ (segmentation) uses the "poly" schedule instead:
lr = base * (1 - step / total_steps) ** 0.9 (`lr_schedule='poly'`, `lr_poly_power`).

RMSprop follows TensorFlow's `RMSPropOptimizer` that the paper's runs used: the second
moment starts at 1.0 (optax `initial_scale`), and epsilon (1.0 in the Inception
recipes) is added inside the square root.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax


SCHEDULES = ("exponential", "poly")


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           total_steps: int | None = None) -> optax.Schedule:
  """Staircase exponential decay (the paper's) or DeepLab's poly decay, optional linear
  warm-up, optional batch-size scaling.

  Fields: learning_rate, lr_base_batch_size (None: no scaling, else
  lr = learning_rate * batch_size / lr_base_batch_size), lr_schedule ('exponential' |
  'poly'); exponential: lr_decay_rate, lr_decay_every_examples (examples seen between
  decays, counted from step 0); poly: lr_poly_power (0.9), over `total_steps` (the
  run's length, required); warmup_steps (linear ramp from 0 over the first steps).
  """
  base = config.learning_rate
  if config.get("lr_base_batch_size"):
    base = base * config.batch_size / config.lr_base_batch_size
  kind = config.get("lr_schedule", "exponential")
  if kind not in SCHEDULES:
    raise ValueError(f"config.lr_schedule must be one of {SCHEDULES}; got {kind!r}.")
  if kind == "poly":
    if not total_steps or total_steps <= 0:
      raise ValueError("lr_schedule='poly' needs the run's length: total_steps > 0.")
    decay = optax.polynomial_schedule(base, 0.0, config.get("lr_poly_power", 0.9),
                                      transition_steps=total_steps)
  else:
    if config.lr_decay_every_examples <= 0:
      raise ValueError("config.lr_decay_every_examples must be positive "
                       f"(got {config.lr_decay_every_examples}).")
    decay_steps = config.lr_decay_every_examples / config.batch_size
    decay = optax.exponential_decay(base, transition_steps=decay_steps,
                                    decay_rate=config.lr_decay_rate, staircase=True)
  warmup = config.get("warmup_steps", 0)
  if not warmup:
    return decay
  # The decay counts examples from the start of training, warm-up included.
  return lambda step: jnp.where(step < warmup, base * step / warmup, decay(step))


DEPTHWISE_MODULE = "depthwise"   # layers.SeparableConv / AlignedSeparableConv's name


def decay_mask(params, depthwise: bool = True):
  """True for kernels (convolutions, dense weights): the leaves named 'kernel', except,
  with depthwise=False, those of a module named 'depthwise'."""
  def decayed(path, _):
    keys = [getattr(k, "key", None) for k in path]
    if keys[-1] != "kernel":
      return False
    return depthwise or len(keys) < 2 or keys[-2] != DEPTHWISE_MODULE
  return jax.tree_util.tree_map_with_path(decayed, params)


def create_optimizer(config: ml_collections.ConfigDict,
                     total_steps: int | None = None) -> optax.GradientTransformation:
  """SGD or RMSprop with momentum, L2 weight decay on kernels and optional clipping."""
  schedule = learning_rate_schedule(config, total_steps)
  parts = []
  if config.get("grad_clip_norm"):
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if config.weight_decay:
    depthwise = config.get("weight_decay_depthwise", True)
    parts.append(optax.add_decayed_weights(
        config.weight_decay, mask=lambda params: decay_mask(params, depthwise)))
  if config.optimizer == "sgd":
    parts.append(optax.sgd(schedule, momentum=config.momentum, nesterov=False))
  elif config.optimizer == "rmsprop":
    parts.append(optax.rmsprop(schedule, decay=config.rmsprop_decay,
                               eps=config.rmsprop_epsilon, momentum=config.momentum,
                               initial_scale=config.rmsprop_initial_scale))
  else:
    raise ValueError(f"config.optimizer must be 'sgd' or 'rmsprop'; got {config.optimizer!r}.")
  return optax.chain(*parts)


def steps_for(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  """num_train_steps, or num_epochs over the training set when it is -1."""
  if config.num_train_steps > 0:
    return int(config.num_train_steps)
  if not config.get("num_epochs"):
    raise ValueError("Set config.num_train_steps > 0 or config.num_epochs.")
  return int(math.ceil(config.num_epochs * num_train_examples / config.batch_size))
