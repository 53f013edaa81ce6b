"""DeepLab v3+'s modified ("aligned") Xception: Xception-41, -65 and -71, in Flax linen.

Chen et al., "Encoder-Decoder with Atrous Separable Convolution for Semantic Image
Segmentation" (ECCV 2018), section 3.3, change Xception three ways: a deeper network
(16 middle-flow modules in Xception-65/71, more entry-flow modules in Xception-71),
every max-pooling replaced by a depthwise separable convolution with stride 2, and
batch normalization after every depthwise convolution. This module is layer for layer
timm's `xception41/65/71` (timm/models/xception_aligned.py), whose weights
`xception_jax.convert.from_timm` reads:

    stem        conv 3x3/2 32, BN, ReLU; conv 3x3 64, BN, ReLU (padding 1, PyTorch's)
    blocks      each: three separable convs (depthwise 3x3 -> BN -> pointwise -> BN),
                each preceded by ReLU; the third one strided in a downsampling block;
                a residual connection (a strided 1x1 conv + BN where the shape changes)
    last block  three separable convs with ReLU after both BNs, no residual
    head        global average pooling, dropout, logistic regression

A depth is a tuple of `BlockConfig`s fed to one `AlignedXception`, as timm does;
`xception41()`, `xception65()` and `xception71()` (or `ARCHITECTURES[name]`) build
the published ones. Trainable parameters with 1000 classes: 26,969,560 / 39,916,312 /
42,338,736 (BN statistics: 115,312 / 185,200 / 198,976).

`output_stride` 32 is the classification network; 16 or 8 is DeepLab's dense
prediction: once the running stride would pass it, a block's stride becomes 1 and the
dilation of every later block is multiplied by it (atrous separable convolutions).
`model.apply(variables, x, return_features=True)` returns the named intermediate maps
of `feature_info(model)` (level1..level5: the maps before each downsampling, timm's
feature_info, and the final one) instead of logits; docs/MODELS.md has the table.

Every convolution pads symmetrically by dilation * (k // 2) (PyTorch's convention,
not TensorFlow's asymmetric 'SAME' for stride 2), so outputs match timm exactly.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from xception_jax.models import batch_norm, layers, remat
from xception_jax.models.xception import scaled_width

ModuleDef = Callable[..., nn.Module]
Dtype = Any

OUTPUT_STRIDES = (8, 16, 32)
STEM_FEATURES = (32, 64)


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """One module: three separable convs of `features` channels, the last one strided.

  flow names the block (entry/middle/exit flow, the paper's words); residual=False and
  start_with_relu=False describe the last exit-flow block (ReLU after each BN instead).
  """
  flow: str
  features: tuple[int, int, int]
  strides: int = 1
  residual: bool = True
  start_with_relu: bool = True


def _blocks(entry: tuple[tuple[int, int], ...], num_middle: int) -> tuple[BlockConfig, ...]:
  """Entry-flow (width, stride) pairs, `num_middle` middle blocks, the two exit blocks."""
  return (
      *(BlockConfig("entry", (w, w, w), s) for w, s in entry),
      *(BlockConfig("middle", (728, 728, 728)) for _ in range(num_middle)),
      BlockConfig("exit", (728, 1024, 1024), 2),
      BlockConfig("exit", (1536, 1536, 2048), 1, residual=False, start_with_relu=False),
  )


ARCHITECTURES: dict[str, tuple[BlockConfig, ...]] = {
    "xception41": _blocks(((128, 2), (256, 2), (728, 2)), 8),
    "xception65": _blocks(((128, 2), (256, 2), (728, 2)), 16),
    "xception71": _blocks(((128, 2), (256, 1), (256, 2), (728, 1), (728, 2)), 16),
}


def block_names(blocks: tuple[BlockConfig, ...]) -> tuple[str, ...]:
  """'entry_flow_block1', ..., 'middle_flow_block16', 'exit_flow_block2'."""
  counts: dict[str, int] = {}
  names = []
  for block in blocks:
    counts[block.flow] = counts.get(block.flow, 0) + 1
    names.append(f"{block.flow}_flow_block{counts[block.flow]}")
  return tuple(names)


@dataclasses.dataclass(frozen=True)
class FeatureInfo:
  name: str          # 'level1' .. 'level5'
  block: str         # the block it is taken from
  stride: int        # input pixels per feature-map pixel (after output_stride)
  channels: int


@dataclasses.dataclass(frozen=True)
class _Schedule:
  strides: tuple[int, ...]       # per block, after output_stride
  dilations: tuple[int, ...]     # per block
  features: tuple[FeatureInfo, ...]


def check_output_stride(output_stride: int) -> None:
  if output_stride not in OUTPUT_STRIDES:
    raise ValueError(
        f"output_stride must be one of {OUTPUT_STRIDES} (32: classification; 16 or 8: "
        f"dense prediction); got {output_stride!r}.")


def schedule(blocks: tuple[BlockConfig, ...], output_stride: int,
             width: Callable[[int], int] = lambda c: c) -> _Schedule:
  """timm's rule: the stem leaves stride 2; a block whose stride would take the running
  stride past `output_stride` runs at stride 1 and multiplies the dilation of the blocks
  after it. Each downsampling block contributes the map before its strided conv."""
  check_output_stride(output_stride)
  names = block_names(blocks)
  stride, dilation = 2, 1
  strides, dilations, features = [], [], []
  for name, block in zip(names, blocks):
    block_stride = block.strides
    dilations.append(dilation)
    if block_stride > 1:
      features.append(FeatureInfo(f"level{len(features) + 1}", name, stride,
                                  width(block.features[1])))
      if stride * block_stride > output_stride:
        dilation *= block_stride
        block_stride = 1
      else:
        stride *= block_stride
    strides.append(block_stride)
  features.append(FeatureInfo(f"level{len(features) + 1}", names[-1], stride,
                              width(blocks[-1].features[-1])))
  return _Schedule(tuple(strides), tuple(dilations), tuple(features))


class AlignedSeparableConv(nn.Module):
  """Depthwise conv -> BN -> [activation] -> pointwise conv -> BN -> [activation]."""
  features: int
  strides: int
  dilation: int
  depthwise_activation: Optional[str]
  pointwise_activation: Optional[str]
  spatial_conv: ModuleDef
  pointwise_conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.spatial_conv(strides=self.strides, dilation=self.dilation, name="depthwise")(x)
    x = self.norm(name="depthwise_bn")(x)
    act = layers.activation_fn(self.depthwise_activation)
    if act is not None:
      x = act(x)
    x = self.pointwise_conv(self.features, name="pointwise")(x)
    x = self.norm(name="pointwise_bn")(x)
    act = layers.activation_fn(self.pointwise_activation)
    return x if act is None else act(x)


class AlignedXceptionModule(nn.Module):
  """Three separable convs (the third strided) plus a residual connection.

  With start_with_relu, ReLU precedes each separable conv (not in place for the first:
  the shortcut taps the block's input before it) and `intermediate_activation` sits
  between the depthwise BN and the pointwise conv (timm: none). Without it (the last
  block) ReLU follows both BNs of every separable conv. Returns the block's output, the
  map entering its third separable conv (timm's `stack.act3`, a feature level in
  downsampling blocks) and the same map before that ReLU (the second separable conv's
  pointwise BN output: TF DeepLab's `separable_conv2_pointwise` end point).
  """
  features: tuple[int, int, int]
  strides: int
  dilation: int
  residual: bool
  start_with_relu: bool
  intermediate_activation: Optional[str]
  separable_conv: ModuleDef
  pointwise_conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    activations = ((self.intermediate_activation, None) if self.start_with_relu
                   else ("relu", "relu"))
    y = tap = tap_before_relu = x
    for i, features in enumerate(self.features):
      tap_before_relu = y
      if self.start_with_relu:
        y = nn.relu(y)
      tap = y
      y = self.separable_conv(features, self.strides if i == 2 else 1, self.dilation,
                              *activations, name=f"sepconv{i + 1}")(y)
    if not self.residual:
      return y, tap, tap_before_relu
    shortcut = x
    if self.strides > 1 or x.shape[-1] != y.shape[-1]:
      shortcut = self.pointwise_conv(y.shape[-1], self.strides, name="shortcut")(x)
      shortcut = self.norm(name="shortcut_bn")(shortcut)
    return y + shortcut, tap, tap_before_relu


class AlignedXception(nn.Module):
  """The aligned Xception of DeepLab v3+, depth given by `blocks` (see ARCHITECTURES).

  Attributes:
    blocks: the block configurations (ARCHITECTURES['xception65'], ...).
    num_classes: size of the logistic regression layer.
    include_top: False returns the pooled 2048 features instead of logits.
    output_stride: 32 (classification), 16 or 8 (atrous; dense prediction).
    intermediate_activation: None (timm, DeepLab's ImageNet models), 'relu' or 'elu'
      after the depthwise BN of every block that starts with ReLU.
    segments: channel segments of every depthwise conv (None: depthwise; the spectrum).
    depthwise_impl: 'feature_group', 'shift' or 'auto'; all compute the same function.
    bn_impl: 'flax', 'fused' (closed-form training gradient, fast on CPU) or 'auto'
      (batch_norm.py); same variables and forward.
    pointwise_impl: the 1x1 convolutions' products: 'xla', 'blas' (CPU) or 'auto'
      (pointwise.py); all compute the same function.
    dropout_rate: dropout before the logits.
    width_multiplier: scales every width (tests and CPU demos).
    bn_momentum, bn_epsilon: BatchNorm (timm: PyTorch momentum 0.1 = Flax 0.9; 1e-3).
    head_bias_init: initial bias of the logits.
    remat: rematerialisation of each block in the backward pass: 'none', 'block',
      'block_save_convs' or 'block_save_products' (remat.py).
    dtype: compute dtype; params stay param_dtype; logits are float32.
  """
  blocks: tuple[BlockConfig, ...]
  num_classes: int = 1000
  include_top: bool = True
  output_stride: int = 32
  intermediate_activation: Optional[str] = None
  segments: Optional[int] = None
  depthwise_impl: str = "feature_group"
  bn_impl: str = "auto"
  pointwise_impl: str = "auto"
  dropout_rate: float = 0.0
  width_multiplier: float = 1.0
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-3
  head_bias_init: float = 0.0
  remat: str = "none"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _width(self, channels: int) -> int:
    return scaled_width(channels, self.width_multiplier)

  def feature_info(self) -> tuple[FeatureInfo, ...]:
    """The maps `return_features=True` gives: name, source block, stride, channels."""
    return schedule(tuple(self.blocks), self.output_stride, self._width).features

  def _check(self, x: jax.Array) -> None:
    layers.check_classifier_input(
        "AlignedXception", x, dropout_rate=self.dropout_rate,
        width_multiplier=self.width_multiplier)
    check_output_stride(self.output_stride)
    layers.activation_fn(self.intermediate_activation)
    remat.check_remat(self.remat)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               return_features: bool = False, features_before_relu: bool = False
               ) -> jax.Array | dict[str, jax.Array]:
    """Logits, or with `return_features` the maps of `feature_info()`; with
    `features_before_relu` too, level1..level4 are taken before the ReLU that opens the
    strided separable conv (the previous conv's BN output, TF DeepLab's end point)."""
    self._check(x)
    blocks = tuple(self.blocks)
    plan = schedule(blocks, self.output_stride, self._width)
    level_of = {info.block: info.name for info in plan.features[:-1]}
    dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(batch_norm.batch_norm_class(self.bn_impl),
                             use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=self.bn_epsilon, **dtypes)
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding=((1, 1), (1, 1)),
                             use_bias=False, kernel_init=layers.default_kernel_init, **dtypes)
    spatial_conv = functools.partial(layers.SpatialConv, segments=self.segments,
                                     depthwise_impl=self.depthwise_impl, **dtypes)
    pointwise_conv = functools.partial(layers.PointwiseConv,
                                       pointwise_impl=self.pointwise_impl, **dtypes)
    separable_conv = functools.partial(AlignedSeparableConv, spatial_conv=spatial_conv,
                                       pointwise_conv=pointwise_conv, norm=norm)

    x = jnp.asarray(x, self.dtype)
    for i, (features, strides) in enumerate(zip(STEM_FEATURES, (2, 1))):
      x = conv(self._width(features), strides=(strides, strides), name=f"conv{i + 1}")(x)
      x = nn.relu(norm(name=f"conv{i + 1}_bn")(x))
    levels = {}
    module = remat.remat_block(AlignedXceptionModule, self.remat)
    for name, block, strides, dilation in zip(block_names(blocks), blocks, plan.strides,
                                              plan.dilations):
      x, tap, tap_before_relu = module(
          tuple(self._width(c) for c in block.features), strides, dilation, block.residual,
          block.start_with_relu, self.intermediate_activation, separable_conv,
          pointwise_conv, norm, name=name)(x)
      if name in level_of:
        levels[level_of[name]] = tap_before_relu if features_before_relu else tap
    if return_features:
      levels[plan.features[-1].name] = x
      return levels
    return layers.classifier_head(
        x, num_classes=self.num_classes, include_top=self.include_top,
        dropout_rate=self.dropout_rate, head_bias_init=self.head_bias_init, train=train,
        **dtypes)


def xception41(**fields: Any) -> AlignedXception:
  """Aligned Xception-41: 8 middle-flow blocks (timm `xception41`)."""
  return AlignedXception(ARCHITECTURES["xception41"], **fields)


def xception65(**fields: Any) -> AlignedXception:
  """Aligned Xception-65: 16 middle-flow blocks, DeepLab v3+'s backbone."""
  return AlignedXception(ARCHITECTURES["xception65"], **fields)


def xception71(**fields: Any) -> AlignedXception:
  """Aligned Xception-71: five entry-flow blocks, 16 middle-flow blocks."""
  return AlignedXception(ARCHITECTURES["xception71"], **fields)
