"""The aligned Xception: published sizes, output stride, feature levels, switches.

Numerical parity with timm is in tests/test_convert_timm.py; here the structure:
parameter counts of the three depths (timm's figures), feature-map sizes and strides at
output stride 32/16/8, and the switches carried over from Xception, on tiny widths.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reference import conv_torch_style
from xception_jax.models import aligned_xception, factory, layers
from xception_jax.models import xception41, xception65, xception71

# timm 1.0.31's counts (shared/reference/README.md), BN statistics separate.
PUBLISHED = {
    "xception41": (26_969_560, 115_312),
    "xception65": (39_916_312, 185_200),
    "xception71": (42_338_736, 198_976),
}
TINY = dict(width_multiplier=0.125)
# xception41's blocks with one middle-flow block: the same stages, a faster compile.
SHORT = aligned_xception.ARCHITECTURES["xception41"][:4] + \
    aligned_xception.ARCHITECTURES["xception41"][-2:]
SIZE = 65  # odd: every stride-2 stage rounds up (symmetric padding, ceil(H / 2))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("name,constructor",
                         [("xception41", xception41), ("xception65", xception65),
                          ("xception71", xception71)])
def test_parameter_counts_are_timms(name, constructor):
  model = constructor()
  assert model == factory.create_model({"architecture": name})
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), train=False))
  assert (_count(shapes["params"]), _count(shapes["batch_stats"])) == PUBLISHED[name]
  assert set(shapes) == {"params", "batch_stats"}


def _random_variables(model, seed=0):
  """Random variables of the model's shapes (model.init compiles slowly on 2 cores)."""
  return _random_variables_of(model, jnp.zeros((1, 33, 33, 3)), seed)


def _random_variables_of(module, x, seed):
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), x))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      return rng.normal(0, np.sqrt(2.0 / np.prod(leaf.shape[:-1])), leaf.shape)
    if "'var'" in name:
      return rng.uniform(0.5, 1.5, leaf.shape)
    if "'scale'" in name:  # small: residual sums over 12 blocks stay O(1)
      return rng.uniform(0.2, 0.4, leaf.shape)
    return rng.normal(0, 0.1, leaf.shape)

  return jax.tree_util.tree_map_with_path(
      lambda p, leaf: jnp.asarray(draw(p, leaf), jnp.float32), shapes)


@pytest.fixture(scope="module")
def tiny41():
  model = aligned_xception.AlignedXception(SHORT, **TINY)
  variables = _random_variables(model, 1)
  images = jax.random.uniform(jax.random.key(2), (2, SIZE, SIZE, 3), minval=-1, maxval=1)
  return model, variables, images


def _spatial(stride):
  size = SIZE
  while stride > 1:
    size, stride = -(-size // 2), stride // 2
  return size


@pytest.mark.parametrize("output_stride,strides", [
    (32, (2, 4, 8, 16, 32)), (16, (2, 4, 8, 16, 16)), (8, (2, 4, 8, 8, 8))])
def test_output_stride_gives_the_promised_feature_maps(tiny41, output_stride, strides):
  model, variables, images = tiny41
  model = model.clone(output_stride=output_stride)
  info = model.feature_info()
  assert [i.name for i in info] == ["level1", "level2", "level3", "level4", "level5"]
  assert tuple(i.stride for i in info) == strides
  assert [i.channels for i in info] == [16, 32, 88, 128, 256]  # 128..2048 at width 1/8
  features, pooled = jax.jit(lambda v, x: (
      model.apply(v, x, return_features=True),
      model.clone(include_top=False).apply(v, x)))(variables, images)
  assert sorted(features) == [i.name for i in info]
  for i in info:
    size = _spatial(i.stride)
    assert features[i.name].shape == (2, size, size, i.channels), i
  np.testing.assert_allclose(np.asarray(pooled), np.asarray(features["level5"].mean((1, 2))),
                             rtol=1e-5, atol=1e-5)


def test_output_stride_dilates_instead_of_striding():
  """The per-block schedule follows timm's rule (xception65, by hand from its code)."""
  blocks = aligned_xception.ARCHITECTURES["xception65"]
  assert len(blocks) == 21
  os32 = aligned_xception.schedule(blocks, 32)
  assert os32.strides == (2, 2, 2) + (1,) * 16 + (2, 1) and set(os32.dilations) == {1}
  os16 = aligned_xception.schedule(blocks, 16)
  assert os16.strides == (2, 2, 2) + (1,) * 18
  assert os16.dilations == (1,) * 20 + (2,)
  os8 = aligned_xception.schedule(blocks, 8)
  assert os8.strides == (2, 2) + (1,) * 19
  assert os8.dilations == (1, 1, 1) + (2,) * 17 + (4,)
  x71 = aligned_xception.schedule(aligned_xception.ARCHITECTURES["xception71"], 32)
  assert [f.block for f in x71.features] == [
      "entry_flow_block1", "entry_flow_block3", "entry_flow_block5", "exit_flow_block1",
      "exit_flow_block2"]


def test_depthwise_implementations_agree_with_strides_and_dilation(tiny41):
  model, variables, images = tiny41
  outputs = jax.jit(lambda v, x: [
      model.clone(output_stride=8, depthwise_impl=impl).apply(v, x)
      for impl in ("feature_group", "shift")] + [model.apply(v, x)])(variables, images)
  dilated, shifted, os32 = map(np.asarray, outputs)
  np.testing.assert_allclose(shifted, dilated, rtol=1e-4, atol=1e-5)
  assert np.abs(os32 - dilated).max() > 1e-3  # dilation changes the function


@pytest.mark.slow
def test_training_mode_updates_batch_statistics(tiny41):
  model, variables, images = tiny41
  logits, updates = jax.jit(lambda v, x: model.clone(dropout_rate=0.5).apply(
      v, x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)}))(
          variables, images)
  assert logits.shape == (2, 1000) and logits.dtype == jnp.float32
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), updates["batch_stats"],
                       variables["batch_stats"])
  assert min(jax.tree.leaves(moved)) > 0


def test_segments_switch_gives_grouped_spatial_kernels():
  grouped = xception41(segments=2, **TINY)
  shapes = jax.eval_shape(lambda: grouped.init(jax.random.key(0), jnp.zeros((1, 33, 33, 3))))
  kernel = shapes["params"]["middle_flow_block1"]["sepconv1"]["depthwise"]["kernel"]
  assert kernel.shape == (3, 3, 44, 88)  # 728 channels at width 1/8: 88, in 2 segments


@pytest.mark.parametrize("depthwise_activation,pointwise_activation",
                         [(None, None), ("elu", None), ("relu", "relu")])
def test_separable_conv_is_depthwise_bn_activation_pointwise_bn(depthwise_activation,
                                                                pointwise_activation):
  """One separable conv against NumPy: BN (eval) after both convolutions, activations
  where the block asks for them (none, the intermediate_activation switch, the last
  block's ReLUs), the depthwise stride and dilation PyTorch's."""
  norm = functools.partial(nn.BatchNorm, use_running_average=True, epsilon=1e-3)
  module = aligned_xception.AlignedSeparableConv(
      6, 2, 2, depthwise_activation, pointwise_activation, layers.SpatialConv,
      layers.PointwiseConv, norm)
  x = jax.random.normal(jax.random.key(5), (2, 9, 8, 4))
  variables = _random_variables_of(module, x, seed=6)
  p, s = variables["params"], variables["batch_stats"]

  def bn(v, name):
    return ((v - np.asarray(s[name]["mean"])) / np.sqrt(np.asarray(s[name]["var"]) + 1e-3)
            * np.asarray(p[name]["scale"]) + np.asarray(p[name]["bias"]))

  acts = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0),
          "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0)))}
  y = conv_torch_style(x, p["depthwise"]["kernel"], 4, 2, 2)
  y = acts[depthwise_activation](bn(y, "depthwise_bn"))
  y = acts[pointwise_activation](bn(y @ np.asarray(p["pointwise"]["kernel"][0, 0]),
                                    "pointwise_bn"))
  np.testing.assert_allclose(np.asarray(module.apply(variables, x)), y, rtol=1e-4, atol=1e-4)


def test_fields_round_trip_through_the_factory():
  model = xception65(output_stride=16, width_multiplier=0.25, dtype=jnp.bfloat16)
  fields = factory.model_to_fields(model)
  assert fields["architecture"] == "xception65" and fields["dtype"] == "bfloat16"
  assert "blocks" not in fields
  assert factory.create_model(fields) == model
  old = factory.model_to_fields(factory.create_model({"num_middle_blocks": 2}))
  assert old["architecture"] == "xception"
  old.pop("architecture")  # a checkpoint from before the field means Xception
  assert type(factory.create_model(old)).__name__ == "Xception"


def test_bad_fields_are_refused_in_one_line():
  with pytest.raises(ValueError, match=r"output_stride must be one of \(8, 16, 32\)"):
    xception41(output_stride=12, **TINY).init(jax.random.key(0), jnp.zeros((1, 33, 33, 3)))
  with pytest.raises(ValueError, match=r"Unknown model architecture 'xception99'; valid: "
                                       r"\['xception', 'xception41'"):
    factory.create_model({"architecture": "xception99"})
  with pytest.raises(ValueError, match=r"Unknown AlignedXception field\(s\) \['residual'\] for "
                                       r"architecture 'xception41'; valid fields: .*output_"):
    factory.create_model({"architecture": "xception41", "residual": False})
