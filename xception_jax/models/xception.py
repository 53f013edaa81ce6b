"""Xception (Chollet, "Xception: Deep Learning with Depthwise Separable Convolutions",
CVPR 2017), exactly the network of the paper's Figure 5, in Flax linen.

    entry flow   conv 3x3/2 32 'valid', conv 3x3 64 'valid', then three modules of
                 two separable convs (128, 256, 728), max-pool 3x3/2 'same' and a
                 1x1/2 convolution shortcut
    middle flow  8 modules of three separable convs of 728 with identity shortcuts
    exit flow    a module 728 -> 1024 with max-pool and shortcut, then separable 1536
                 and 2048 each followed by ReLU, global average pooling, optional
                 fully-connected layers, dropout, logistic regression

Every convolution and separable convolution is followed by batch normalization and
none has a bias. `keras.applications.Xception` is the public reference for every
detail (BN epsilon 1e-3, momentum 0.99; ReLU placement; glorot-uniform kernels);
with `num_classes=1000` the model has 22,855,952 trainable parameters.

Usage (the style of Flax's examples and big_vision):

    model = Xception(num_classes=1000)
    variables = model.init(rng, images, train=False)   # {'params', 'batch_stats'}
    logits = model.apply(variables, images, train=False)
    logits, updates = model.apply(variables, images, train=True,
                                  mutable=['batch_stats'], rngs={'dropout': rng})

Images are NHWC floats scaled to [-1, 1]; logits are float32 whatever the compute dtype.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from xception_jax.models import batch_norm, classifier, layers, pooling, remat

ModuleDef = Callable[..., nn.Module]
Dtype = Any

MIN_IMAGE_SIZE = 71  # Smallest input for which every stride-2 stage has >= 1 pixel left.

ENTRY_FEATURES = (128, 256, 728)
MIDDLE_FEATURES = 728
EXIT_FEATURES = (728, 1024)
EXIT_SEPARABLE_FEATURES = (1536, 2048)


class XceptionModule(nn.Module):
  """One module of Figure 5: ReLU -> separable conv -> BN, repeated, then an optional
  max-pool, plus a residual connection (a strided 1x1 conv + BN where the shape changes).

  The first ReLU is skipped in the first entry-flow module, whose input is already
  activated. The shortcut taps the module's input before that ReLU, as in Keras.
  """
  features: Sequence[int]
  strides: int
  start_with_relu: bool
  residual: bool
  separable_conv: ModuleDef
  pointwise_conv: ModuleDef
  norm: ModuleDef
  max_pool_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = x
    for i, features in enumerate(self.features):
      if i > 0 or self.start_with_relu:
        y = nn.relu(y)
      y = self.separable_conv(features, name=f"sepconv{i + 1}")(y)
      y = self.norm(name=f"sepconv{i + 1}_bn")(y)
    if self.strides > 1:
      y = pooling.max_pool(y, (3, 3), (self.strides, self.strides), "SAME",
                           self.max_pool_impl)
    if not self.residual:
      return y
    shortcut = x
    if self.strides > 1 or x.shape[-1] != y.shape[-1]:
      shortcut = self.pointwise_conv(y.shape[-1], self.strides, name="shortcut")(x)
      shortcut = self.norm(name="shortcut_bn")(shortcut)
    return y + shortcut


class EntryFlow(nn.Module):
  """Two regular 3x3 convolutions and three downsampling modules (128, 256, 728)."""
  widths: Sequence[int]          # (32, 64, 128, 256, 728) after the width multiplier
  residual: bool
  conv: ModuleDef
  module: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv1, conv2, *module_widths = self.widths
    x = nn.relu(self.norm(name="conv1_bn")(self.conv(conv1, strides=(2, 2), name="conv1")(x)))
    x = nn.relu(self.norm(name="conv2_bn")(self.conv(conv2, name="conv2")(x)))
    for i, width in enumerate(module_widths):
      x = self.module((width, width), strides=2, start_with_relu=i > 0,
                      name=f"module{i + 1}")(x)
    return x


class MiddleFlow(nn.Module):
  """`num_modules` modules of three separable convolutions with identity shortcuts."""
  width: int
  num_modules: int
  module: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.num_modules):
      x = self.module((self.width,) * 3, strides=1, start_with_relu=True,
                      name=f"module{i + 1}")(x)
    return x


class ExitFlow(nn.Module):
  """A downsampling module (728 -> 1024), then separable 1536 and 2048 with ReLU."""
  widths: Sequence[int]          # (728, 1024, 1536, 2048) after the width multiplier
  module: ModuleDef
  separable_conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    first, second, *separable_widths = self.widths
    x = self.module((first, second), strides=2, start_with_relu=True, name="module1")(x)
    for i, width in enumerate(separable_widths):
      x = self.separable_conv(width, name=f"sepconv{i + 1}")(x)
      x = nn.relu(self.norm(name=f"sepconv{i + 1}_bn")(x))
    return x


def scaled_width(channels: int, width_multiplier: float) -> int:
  """Channels after the width multiplier: exact at 1.0, else rounded to a multiple of 8
  (at least 8), so that the spectrum's segment counts 2, 4, 8 stay valid."""
  if width_multiplier == 1.0:
    return channels
  return max(8, int(channels * width_multiplier + 4) // 8 * 8)


class Xception(classifier.Classifier):
  """The Xception network with the switches of the paper's experiments.

  Attributes (besides `Classifier`'s: num_classes, include_top, fc_layers,
  dropout_rate, width_multiplier, bn_momentum, bn_epsilon, head_bias_init, remat
  (rematerialisation of each module: remat.py), dtype, param_dtype):
    residual: residual connections on (paper default) or off (Figure 9's ablation).
    intermediate_activation: None (default), 'relu' or 'elu' between the depthwise
      and pointwise operations (Figure 10).
    segments: channel segments of every separable conv's spatial convolution: None is
      one segment per channel (depthwise, Xception), 1 a regular convolution, any
      divisor in between the paper's "discrete spectrum" (sections 2 and 6).
    order: 'depthwise_pointwise' (Xception) or 'pointwise_depthwise' (Figure 4).
    depthwise_impl: 'feature_group' (reference, accelerators), 'shift' (fast on CPU),
      or 'auto'; all compute the same function.
    bn_impl: 'flax' (flax.linen.BatchNorm), 'fused' (same variables and forward, a
      closed-form training gradient in two passes; fast on CPU) or 'auto' (fused on
      CPU, flax elsewhere). See batch_norm.py.
    max_pool_impl: 'xla' (nn.max_pool, select-and-scatter gradient), 'shift'
      (strided slices and a scatter-free gradient; fast on CPU) or 'auto'. See
      pooling.py.
    pointwise_impl: the 1x1 convolutions' products: 'xla' (XLA's dot), 'blas' (a CBLAS
      sgemm through the native library; CPU, float32) or 'auto' (blas on CPU when it
      loads, else xla). See pointwise.py.
    num_middle_blocks: modules in the middle flow (8 in the paper).
  """
  residual: bool = True
  intermediate_activation: Optional[str] = None
  segments: Optional[int] = None
  order: str = "depthwise_pointwise"
  depthwise_impl: str = "feature_group"
  bn_impl: str = "auto"
  max_pool_impl: str = "auto"
  pointwise_impl: str = "auto"
  num_middle_blocks: int = 8

  def _check_input(self, x: jax.Array) -> None:
    self._check_classifier_input("Xception", x, MIN_IMAGE_SIZE)
    layers.activation_fn(self.intermediate_activation)
    if self.order not in layers.ORDERS:
      raise ValueError(f"order must be one of {layers.ORDERS}; got {self.order!r}.")

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self._check_input(x)
    width = functools.partial(scaled_width, width_multiplier=self.width_multiplier)
    dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(batch_norm.batch_norm_class(self.bn_impl),
                             use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=self.bn_epsilon, **dtypes)
    conv = functools.partial(nn.Conv, kernel_size=(3, 3), padding="VALID", use_bias=False,
                             kernel_init=layers.default_kernel_init, **dtypes)
    separable_conv = functools.partial(
        layers.SeparableConv, segments=self.segments, order=self.order,
        intermediate_activation=self.intermediate_activation,
        depthwise_impl=self.depthwise_impl, pointwise_impl=self.pointwise_impl, **dtypes)
    pointwise_conv = functools.partial(layers.PointwiseConv,
                                       pointwise_impl=self.pointwise_impl, **dtypes)
    module = functools.partial(remat.remat_block(XceptionModule, self.remat),
                               residual=self.residual,
                               max_pool_impl=pooling.resolve_max_pool_impl(self.max_pool_impl),
                               separable_conv=separable_conv,
                               pointwise_conv=pointwise_conv, norm=norm)

    x = jnp.asarray(x, self.dtype)
    x = EntryFlow(tuple(width(c) for c in (32, 64) + ENTRY_FEATURES), self.residual,
                  conv, module, norm, name="entry_flow")(x)
    x = MiddleFlow(width(MIDDLE_FEATURES), self.num_middle_blocks, module,
                   name="middle_flow")(x)
    x = ExitFlow(tuple(width(c) for c in EXIT_FEATURES + EXIT_SEPARABLE_FEATURES),
                 module, separable_conv, norm, name="exit_flow")(x)
    return self._classifier_top(x, train)
