"""The paper's switches change the network's function as they should, not only its size.

For each switch (residual connections, the intermediate activation, the order of the two
operations, the spectrum's segments) a module of the built Xception is recomputed by hand
in float64 NumPy from the model's own parameters and BN statistics (the brute-force grouped
convolution of tests/reference.py, a max-pool loop, BN by its formula) and compared with
what the model computed for that module (Flax's `capture_intermediates`). A switch that
never reached the modules, or reached them wrongly, makes the hand forward disagree.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reference import grouped_conv_same
from xception_jax.models import Xception

EPS = 1e-3  # Keras' and the model's BN epsilon
SIZE = 71
TINY = dict(width_multiplier=0.125, num_middle_blocks=1, num_classes=5,
            depthwise_impl="shift")
ACTIVATIONS = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0.0),
               "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0.0)))}


@functools.cache
def _run(**fields):
  """The tiny model's variables (random BN statistics) and its captured module outputs."""
  model = Xception(**{**TINY, **fields})
  images = jax.random.uniform(jax.random.key(1), (2, SIZE, SIZE, 3), minval=-1, maxval=1)
  variables = model.init(jax.random.key(0), images, train=False)
  rng = np.random.default_rng(0)
  # Non-trivial statistics, scales and offsets, so that BN is not the identity.
  variables = {
      "params": jax.tree_util.tree_map_with_path(
          lambda p, v: (v * rng.uniform(0.5, 1.5, v.shape) if "scale" in str(p) else
                        v + rng.normal(0, 0.1, v.shape) if "bias" in str(p) else v),
          variables["params"]),
      "batch_stats": jax.tree_util.tree_map_with_path(
          lambda p, v: (rng.normal(0, 0.1, v.shape) if "mean" in str(p) else
                        rng.uniform(0.5, 2.0, v.shape)), variables["batch_stats"]),
  }
  _, state = jax.jit(lambda v, x: model.apply(v, x, train=False, capture_intermediates=True,
                                              mutable=["intermediates"]))(variables, images)
  captured = jax.tree.map(lambda a: np.asarray(a, np.float64), state["intermediates"])
  return model, jax.tree.map(lambda a: np.asarray(a, np.float64), variables), captured


def _bn(x, params, stats):
  return (x - stats["mean"]) / np.sqrt(stats["var"] + EPS) * params["scale"] + params["bias"]


def _separable(x, params, model):
  """The separable convolution by hand, in the model's order, segments and activation."""
  groups = lambda channels: channels if model.segments is None else model.segments
  spatial = np.asarray(params["depthwise"]["kernel"])
  pointwise = np.asarray(params["pointwise"]["kernel"])[0, 0]
  act = ACTIVATIONS[model.intermediate_activation]
  if model.order == "depthwise_pointwise":
    return act(grouped_conv_same(x, spatial, groups(x.shape[-1]))) @ pointwise
  y = act(x @ pointwise)
  return grouped_conv_same(y, spatial, groups(y.shape[-1]))


def _max_pool_3x3_stride2_same(x):
  n, h, w, c = x.shape
  oh, ow = -(-h // 2), -(-w // 2)
  pad_h, pad_w = max((oh - 1) * 2 + 3 - h, 0), max((ow - 1) * 2 + 3 - w, 0)
  xp = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                  (0, 0)), constant_values=-np.inf)
  out = np.full((n, oh, ow, c), -np.inf)
  for i in range(oh):
    for j in range(ow):
      out[:, i, j] = xp[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
  return out


def _module_by_hand(x, params, stats, model, num_convs, strides, start_with_relu):
  """Figure 5's module: [ReLU ->] sepconv -> BN, repeated, max-pool if strided, + shortcut."""
  y = x
  for i in range(1, num_convs + 1):
    if i > 1 or start_with_relu:
      y = np.maximum(y, 0.0)
    y = _bn(_separable(y, params[f"sepconv{i}"], model), params[f"sepconv{i}_bn"],
            stats[f"sepconv{i}_bn"])
  if strides > 1:
    y = _max_pool_3x3_stride2_same(y)
  if not model.residual:
    return y
  if "shortcut" not in params:
    return y + x
  shortcut = x[:, ::strides, ::strides] @ np.asarray(params["shortcut"]["kernel"])[0, 0]
  return y + _bn(shortcut, params["shortcut_bn"], stats["shortcut_bn"])


SWITCHES = [
    dict(),
    dict(residual=False),
    dict(intermediate_activation="relu"),
    dict(intermediate_activation="elu"),
    dict(order="pointwise_depthwise"),
    dict(segments=4),
]


@pytest.mark.parametrize("fields", SWITCHES, ids=lambda f: ",".join(
    f"{k}={v}" for k, v in f.items()) or "paper")
def test_middle_flow_module_equals_a_hand_built_forward(fields):
  model, variables, captured = _run(**fields)
  x = captured["entry_flow"]["__call__"][0]          # the middle flow's input
  want = _module_by_hand(x, variables["params"]["middle_flow"]["module1"],
                         variables["batch_stats"]["middle_flow"]["module1"], model,
                         num_convs=3, strides=1, start_with_relu=True)
  got = captured["middle_flow"]["module1"]["__call__"][0]
  assert np.max(np.abs(want)) > 0.1                  # not a vacuous comparison
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.max(np.abs(want)))


@pytest.mark.parametrize("fields", SWITCHES, ids=lambda f: ",".join(
    f"{k}={v}" for k, v in f.items()) or "paper")
def test_strided_entry_module_equals_a_hand_built_forward(fields):
  """entry_flow/module2: ReLU first, two separable convs, max-pool, 1x1/2 conv shortcut."""
  model, variables, captured = _run(**fields)
  x = captured["entry_flow"]["module1"]["__call__"][0]
  want = _module_by_hand(x, variables["params"]["entry_flow"]["module2"],
                         variables["batch_stats"]["entry_flow"]["module2"], model,
                         num_convs=2, strides=2, start_with_relu=True)
  got = captured["entry_flow"]["module2"]["__call__"][0]
  assert np.max(np.abs(want)) > 0.1
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.max(np.abs(want)))
