"""DeepLab v3+ (Chen et al., ECCV 2018): the aligned Xception encoder, ASPP, a decoder.

    backbone  aligned Xception (xception41/65/71) at output_stride 16 or 8 (atrous
              last stages); `return_features=True` gives level2 (stride 4, the
              entry flow's 256-channel map) and level5 (the final 2048-channel map);
              level2 is taken before the ReLU that opens entry_flow_block2's strided
              separable conv, the BN output TF's decoder reads
              (`entry_flow/block2/unit_1/xception_module/separable_conv2_pointwise`;
              `decoder_features_before_relu=False`: after it, timm's act3)
    aspp      on level5, five branches of `aspp_depth` (256) channels, each ending in
              BN + ReLU:
                aspp0          1x1 conv
                aspp1..3       atrous separable 3x3 at `atrous_rates` (6, 12, 18 at
                               output stride 16; 12, 24, 36 at 8)
                image_pooling  global average, 1x1 conv, spread over the map
              concatenation, concat_projection 1x1 conv to aspp_depth + BN + ReLU,
              dropout (`dropout_rate` 0.1, training only)
    decoder   feature_projection: level2 -> 1x1 conv to `decoder_projection_depth`
              (48) + BN + ReLU; the ASPP output upsampled bilinearly to stride 4 and
              concatenated; decoder_conv0/1: two separable 3x3 convs of
              `decoder_depth` (256); logits: a 1x1 conv with bias to num_classes
    output    bilinear upsampling of the logits to the input size: [N, H, W, C] float32

Every separable convolution of the head is DeepLab's `split_separable_conv2d`:
depthwise -> BN -> ReLU -> pointwise -> BN -> ReLU (`AlignedSeparableConv` with both
activations). Every other convolution is followed by BN + ReLU, as in DeepLab's
model.py; none has a bias except the logits.

As TF's DeepLab (model.py), by default: bilinear resizing with `align_corners=True`
geometry (models/resize.py; `align_corners=False`: half-pixel centres), the head's BNs
with epsilon `head_bn_epsilon` 1e-5 (the backbone keeps `bn_epsilon` 1e-3), and
`head_init='deeplab'`: truncated normal kernels (cut at 2 stddev, not rescaled, as
tf.truncated_normal_initializer) of stddev 0.33 for the head's depthwise convs, 0.06
for its pointwise ones and 0.01 for the logits; the 1x1 convs (aspp0, image_pooling,
concat_projection, feature_projection) keep slim's Glorot uniform
(`head_init='glorot_uniform'`: Glorot uniform everywhere, this model's former init).

Parameter layout: {'backbone': the classification AlignedXception's own top-level
names (conv1, conv1_bn, entry_flow_block1, ...) without its 'head', 'head': {'aspp',
'decoder'}}. So a classification checkpoint of the same backbone is this model's
'backbone' (the trainer's init_from nests it there), and everything DeepLab adds sits
under 'head', which init_from initialises afresh (as for a classifier's new head).

Widths: `width_multiplier` scales the backbone (as in AlignedXception) and the head's
256 and 48 channels alike (`scaled_width`: multiples of 8, at least 8), so tiny test
models stay balanced. Switches carried to the backbone: intermediate_activation,
segments, depthwise_impl (also the head's depthwise convs), pointwise_impl (also the
head's 1x1 convs), remat, bn_momentum,
bn_epsilon (all BNs), dtype. `num_middle_blocks` (None: the backbone's 8 or 16)
shortens the middle flow for CPU demos.

Padding is as TF's: symmetric, dilation * (k // 2) on each side, as in TF's DeepLab
(core/xception.py's `fixed_padding` before every strided 'VALID' convolution; 'SAME'
at stride 1) and PyTorch's, so TF's and timm's weights fit.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from xception_jax.models import layers
from xception_jax.models.resize import resize_bilinear
from xception_jax.models.aligned_xception import (ARCHITECTURES, AlignedSeparableConv,
                                                  AlignedXception, BlockConfig)
from xception_jax.models.xception import scaled_width

Dtype = Any

BACKBONES = tuple(ARCHITECTURES)            # 'xception41', 'xception65', 'xception71'
OUTPUT_STRIDES = (8, 16)
# DeepLab v3+'s ASPP rates at output stride 16; doubled at 8.
ATROUS_RATES_AT_16 = (6, 12, 18)
DECODER_LEVEL = "level2"                     # stride 4, entry flow
ENCODER_LEVEL = "level5"                     # the final map
HEAD_INITS = ("deeplab", "glorot_uniform")
# TF DeepLab's truncated-normal stddevs (model.py: split_separable_conv2d, logits).
DEPTHWISE_STDDEV, POINTWISE_STDDEV, LOGITS_STDDEV = 0.33, 0.06, 0.01


def default_atrous_rates(output_stride: int) -> tuple[int, int, int]:
  """(6, 12, 18) at output stride 16, (12, 24, 36) at 8."""
  if output_stride not in OUTPUT_STRIDES:
    raise ValueError(f"DeepLabV3Plus: output_stride must be one of {OUTPUT_STRIDES}; "
                     f"got {output_stride!r}.")
  return tuple(r * 16 // output_stride for r in ATROUS_RATES_AT_16)


def backbone_blocks(backbone: str, num_middle_blocks: Optional[int] = None
                    ) -> tuple[BlockConfig, ...]:
  """The block list of an aligned Xception, the middle flow cut to `num_middle_blocks`."""
  if backbone not in ARCHITECTURES:
    raise ValueError(f"DeepLabV3Plus: backbone must be one of {list(BACKBONES)}; got "
                     f"{backbone!r}.")
  blocks = ARCHITECTURES[backbone]
  if num_middle_blocks is None:
    return blocks
  if not isinstance(num_middle_blocks, int) or num_middle_blocks < 0:
    raise ValueError(f"DeepLabV3Plus: num_middle_blocks must be None or an integer >= 0; "
                     f"got {num_middle_blocks!r}.")
  middle = [b for b in blocks if b.flow == "middle"]
  entry = [b for b in blocks if b.flow == "entry"]
  exit_ = [b for b in blocks if b.flow == "exit"]
  return (*entry, *middle[:1] * num_middle_blocks, *exit_)


def head_initializers(head_init: str) -> dict[str, Any]:
  """Kernel initialisers of the head's depthwise, separable-pointwise and logits convs."""
  if head_init == "glorot_uniform":
    init = layers.default_kernel_init
    return dict(depthwise=init, pointwise=init, logits=init)
  if head_init != "deeplab":
    raise ValueError(f"DeepLabV3Plus: head_init must be one of {HEAD_INITS}; got "
                     f"{head_init!r}.")
  normal = nn.initializers.truncated_normal
  return dict(depthwise=normal(DEPTHWISE_STDDEV), pointwise=normal(POINTWISE_STDDEV),
              logits=normal(LOGITS_STDDEV))


class ASPP(nn.Module):
  """Atrous spatial pyramid pooling with separable atrous branches and image pooling."""
  depth: int
  atrous_rates: tuple[int, ...]
  dropout_rate: float
  norm: Any
  spatial_conv: Any
  pointwise_conv: Any
  separable_pointwise_conv: Any

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    height, width = x.shape[1], x.shape[2]

    def conv_bn_relu(y, name):
      y = self.pointwise_conv(self.depth, name=name)(y)
      return nn.relu(self.norm(name=f"{name}_bn")(y))

    branches = [conv_bn_relu(x, "aspp0")]
    for i, rate in enumerate(self.atrous_rates, 1):
      branches.append(AlignedSeparableConv(
          self.depth, 1, rate, "relu", "relu", self.spatial_conv,
          self.separable_pointwise_conv, self.norm, name=f"aspp{i}")(x))
    pooled = jnp.mean(x, axis=(1, 2), keepdims=True)
    pooled = conv_bn_relu(pooled, "image_pooling")
    # Resizing a 1 x 1 map bilinearly (either geometry) spreads it over the map.
    branches.append(jnp.broadcast_to(pooled, (*pooled.shape[:1], height, width,
                                              pooled.shape[-1])))
    y = conv_bn_relu(jnp.concatenate(branches, axis=-1), "concat_projection")
    return nn.Dropout(self.dropout_rate, deterministic=not train)(y)


class Decoder(nn.Module):
  """Stride-4 features projected to a few channels, joined with the upsampled ASPP
  output, refined by two separable convs, classified by a 1x1 conv with bias."""
  num_classes: int
  projection_depth: int
  depth: int
  norm: Any
  spatial_conv: Any
  pointwise_conv: Any
  separable_pointwise_conv: Any
  logits_init: Any
  align_corners: bool
  dtype: Dtype
  param_dtype: Dtype

  @nn.compact
  def __call__(self, encoder: jax.Array, low_level: jax.Array) -> jax.Array:
    low = self.pointwise_conv(self.projection_depth, name="feature_projection")(low_level)
    low = nn.relu(self.norm(name="feature_projection_bn")(low))
    up = resize_bilinear(encoder, low.shape[1], low.shape[2], self.align_corners)
    y = jnp.concatenate([up, low], axis=-1)
    for i in range(2):
      y = AlignedSeparableConv(self.depth, 1, 1, "relu", "relu", self.spatial_conv,
                               self.separable_pointwise_conv, self.norm,
                               name=f"decoder_conv{i}")(y)
    return nn.Dense(self.num_classes, kernel_init=self.logits_init,
                    dtype=self.dtype, param_dtype=self.param_dtype, name="logits")(y)


class DeepLabHead(nn.Module):
  """ASPP on the encoder's final map, then the decoder (the parameters under 'head')."""
  num_classes: int
  atrous_rates: tuple[int, ...]
  aspp_depth: int
  decoder_projection_depth: int
  decoder_depth: int
  dropout_rate: float
  norm: Any
  spatial_conv: Any
  pointwise_conv: Any
  separable_pointwise_conv: Any
  logits_init: Any
  align_corners: bool
  dtype: Dtype
  param_dtype: Dtype

  @nn.compact
  def __call__(self, encoder: jax.Array, low_level: jax.Array, train: bool) -> jax.Array:
    modules = dict(norm=self.norm, spatial_conv=self.spatial_conv,
                   pointwise_conv=self.pointwise_conv,
                   separable_pointwise_conv=self.separable_pointwise_conv)
    y = ASPP(self.aspp_depth, self.atrous_rates, self.dropout_rate, **modules,
             name="aspp")(encoder, train)
    return Decoder(self.num_classes, self.decoder_projection_depth, self.decoder_depth,
                   **modules, logits_init=self.logits_init,
                   align_corners=self.align_corners, dtype=self.dtype,
                   param_dtype=self.param_dtype, name="decoder")(y, low_level)


class DeepLabV3Plus(nn.Module):
  """DeepLab v3+ on an aligned Xception: images [N, H, W, 3] -> logits [N, H, W, C].

  Attributes:
    num_classes: classes of the per-pixel classifier (VOC: 21).
    backbone: 'xception41', 'xception65' (DeepLab's) or 'xception71'.
    num_middle_blocks: None (the backbone's) or fewer middle-flow blocks (CPU demos).
    output_stride: 16 (DeepLab's training) or 8 (denser, slower).
    atrous_rates: the three ASPP rates; None: (6, 12, 18) at 16, (12, 24, 36) at 8.
    aspp_depth: channels of every ASPP branch and of its projection (256).
    decoder_projection_depth: channels of the projected stride-4 features (48).
    decoder_depth: channels of the decoder's two separable convs (256).
    dropout_rate: after the ASPP projection, training only (DeepLab: keep 0.9).
    intermediate_activation, segments: the backbone's switches (AlignedXception).
    depthwise_impl: 'feature_group', 'shift' or 'auto', for every depthwise conv.
    pointwise_impl: 'xla', 'blas' (CPU) or 'auto', for every 1x1 conv (pointwise.py).
    remat: rematerialisation of each backbone block (AlignedXception; remat.py).
    width_multiplier: scales the backbone and the head's widths (tiny tests).
    bn_momentum: every BatchNorm (DeepLab: decay 0.9997).
    bn_epsilon: the backbone's BatchNorms (1e-3, as its ImageNet checkpoint).
    head_bn_epsilon: the BatchNorms of ASPP and the decoder (TF DeepLab: 1e-5).
    head_init: 'deeplab' (TF's truncated normals, above) or 'glorot_uniform'.
    align_corners: bilinear resizing geometry (True: TF's; False: half-pixel centres).
    decoder_features_before_relu: the decoder reads the stride-4 map before the ReLU
      (TF's BN output; True) or after it (timm's act3 feature; False).
    dtype: compute dtype; params stay param_dtype; logits are float32.
  """
  num_classes: int = 21
  backbone: str = "xception65"
  num_middle_blocks: Optional[int] = None
  output_stride: int = 16
  atrous_rates: Optional[Sequence[int]] = None
  aspp_depth: int = 256
  decoder_projection_depth: int = 48
  decoder_depth: int = 256
  dropout_rate: float = 0.1
  intermediate_activation: Optional[str] = None
  segments: Optional[int] = None
  depthwise_impl: str = "feature_group"
  pointwise_impl: str = "auto"
  remat: str = "none"
  width_multiplier: float = 1.0
  bn_momentum: float = 0.9997
  bn_epsilon: float = 1e-3
  head_bn_epsilon: float = 1e-5
  head_init: str = "deeplab"
  align_corners: bool = True
  decoder_features_before_relu: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def rates(self) -> tuple[int, ...]:
    """The ASPP rates in use (the field, or the output stride's default)."""
    default = default_atrous_rates(self.output_stride)
    if self.atrous_rates is None:
      return default
    rates = tuple(self.atrous_rates)
    if len(rates) != 3 or not all(isinstance(r, int) and r >= 1 for r in rates):
      raise ValueError(f"DeepLabV3Plus: atrous_rates must be None or three integers >= 1 "
                       f"(DeepLab: {default} at output stride {self.output_stride}); got "
                       f"{self.atrous_rates!r}.")
    return rates

  def at_output_stride(self, output_stride: int) -> "DeepLabV3Plus":
    """This model at another output stride (evaluation at 8 of a model trained at 16):
    the same parameters; explicit atrous rates scale by old / new stride."""
    if output_stride == self.output_stride:
      return self
    default_atrous_rates(output_stride)
    rates = self.atrous_rates
    if rates is not None:
      scaled = tuple(r * self.output_stride / output_stride for r in self.rates())
      if not all(float(r).is_integer() and r >= 1 for r in scaled):
        raise ValueError(f"DeepLabV3Plus: atrous_rates {tuple(rates)} at output stride "
                         f"{self.output_stride} do not scale to integers at "
                         f"{output_stride}; got {scaled}.")
      rates = tuple(int(r) for r in scaled)
    return self.clone(output_stride=output_stride, atrous_rates=rates)

  def head_widths(self) -> dict[str, int]:
    """ASPP, projection and decoder channels after the width multiplier."""
    width = functools.partial(scaled_width, width_multiplier=self.width_multiplier)
    return dict(aspp_depth=width(self.aspp_depth),
                decoder_projection_depth=width(self.decoder_projection_depth),
                decoder_depth=width(self.decoder_depth))

  def encoder(self, name: Optional[str] = None) -> AlignedXception:
    """The backbone module, as a classification model would build it (no top)."""
    return AlignedXception(
        backbone_blocks(self.backbone, self.num_middle_blocks), include_top=False,
        output_stride=self.output_stride,
        intermediate_activation=self.intermediate_activation, segments=self.segments,
        depthwise_impl=self.depthwise_impl, pointwise_impl=self.pointwise_impl,
        remat=self.remat,
        width_multiplier=self.width_multiplier, bn_momentum=self.bn_momentum,
        bn_epsilon=self.bn_epsilon, dtype=self.dtype, param_dtype=self.param_dtype,
        name=name)

  def _check(self, x: jax.Array) -> None:
    if x.ndim != 4:
      raise ValueError(f"DeepLabV3Plus expects NHWC images [N, H, W, C]; got {x.shape}.")
    self.rates()
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"DeepLabV3Plus: dropout_rate must be in [0, 1); got "
                       f"{self.dropout_rate}.")
    if not self.head_bn_epsilon > 0:
      raise ValueError(f"DeepLabV3Plus: head_bn_epsilon must be > 0; got "
                       f"{self.head_bn_epsilon!r}.")
    head_initializers(self.head_init)
    for field in ("aspp_depth", "decoder_projection_depth", "decoder_depth", "num_classes"):
      value = getattr(self, field)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"DeepLabV3Plus: {field} must be an integer >= 1; got {value!r}.")

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self._check(x)
    height, width = x.shape[1], x.shape[2]
    features = self.encoder(name="backbone")(
        x, train=train, return_features=True,
        features_before_relu=self.decoder_features_before_relu)
    dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    inits = head_initializers(self.head_init)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=self.head_bn_epsilon,
                             **dtypes)
    spatial_conv = functools.partial(layers.SpatialConv, depthwise_impl=self.depthwise_impl,
                                     kernel_init=inits["depthwise"], **dtypes)
    pointwise_conv = functools.partial(layers.PointwiseConv,
                                       pointwise_impl=self.pointwise_impl, **dtypes)
    separable_pointwise_conv = functools.partial(
        layers.PointwiseConv, kernel_init=inits["pointwise"],
        pointwise_impl=self.pointwise_impl, **dtypes)
    logits = DeepLabHead(self.num_classes, self.rates(), **self.head_widths(),
                         dropout_rate=self.dropout_rate, norm=norm,
                         spatial_conv=spatial_conv, pointwise_conv=pointwise_conv,
                         separable_pointwise_conv=separable_pointwise_conv,
                         logits_init=inits["logits"], align_corners=self.align_corners,
                         **dtypes, name="head")(
                             features[ENCODER_LEVEL], features[DECODER_LEVEL], train)
    return resize_bilinear(logits.astype(jnp.float32), height, width, self.align_corners)
