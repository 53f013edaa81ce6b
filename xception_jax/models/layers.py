"""Building blocks of Xception: pointwise and separable convolutions.

The separable convolution carries the paper's "discrete spectrum" (sections 2 and 6):
the spatial convolution works on `segments` channel groups, from 1 (a regular
convolution) to one per channel (a depthwise convolution, Xception's choice), and
the two operations come in either order: depthwise-then-pointwise (TensorFlow's
separable convolution, used by Xception) or pointwise-then-spatial (the "extreme"
Inception module of Figure 4).

Pointwise (1x1) convolutions are written as matrix products over the channel axis:
on XLA:CPU that runs ~3x faster than a 1x1 `conv_general_dilated` and it is the same
computation everywhere (pointwise.py: XLA's dot, or a BLAS sgemm on CPU). Their kernels
keep the conventional (1, 1, in, out) shape.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from xception_jax.models import depthwise, pointwise
from xception_jax.models.pointwise import pointwise_product  # pylint: disable=unused-import

Dtype = Any
Initializer = Callable[..., jax.Array]

# Keras' default for every convolution and dense layer of keras.applications.Xception.
default_kernel_init = nn.initializers.glorot_uniform()

ORDERS = ("depthwise_pointwise", "pointwise_depthwise")
ACTIVATIONS = {None: None, "none": None, "relu": nn.relu, "elu": nn.elu}


def activation_fn(name: Optional[str]) -> Optional[Callable[[jax.Array], jax.Array]]:
  """The intermediate activation between the spatial and pointwise operations."""
  if name not in ACTIVATIONS:
    raise ValueError(
        f"intermediate_activation must be one of None, 'relu', 'elu'; got {name!r}.")
  return ACTIVATIONS[name]


def check_segments(segments: Optional[int], channels: int, where: str = "") -> int:
  """Returns the number of channel segments, validating that it divides `channels`."""
  if segments is None:
    return channels
  if not isinstance(segments, int) or segments < 1 or channels % segments:
    raise ValueError(
        f"segments={segments!r} must be a positive divisor of the {channels} channels "
        f"the spatial convolution sees{' in ' + where if where else ''} (1 = regular "
        f"convolution, None = one segment per channel = depthwise).")
  return segments


class PointwiseConv(nn.Module):
  """A 1x1 convolution (optionally strided) computed as a matrix product by
  `pointwise_impl` ('xla', 'blas' or 'auto': pointwise.py)."""
  features: int
  strides: int = 1
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init
  pointwise_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (1, 1, x.shape[-1], self.features),
                        self.param_dtype)
    if self.strides > 1:
      # A strided 1x1 'SAME' convolution reads positions 0, s, 2s, ...
      x = x[:, ::self.strides, ::self.strides, :]
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    impl = pointwise.resolve_pointwise_impl(self.pointwise_impl)
    return pointwise.pointwise_product(x, kernel[0, 0], impl)


class SpatialConv(nn.Module):
  """A kxk 'SAME' convolution from C channels to C channels over `segments` groups.

  segments=None (or C) is a depthwise convolution; segments=1 a regular convolution.
  The kernel has Flax's grouped layout (k, k, C / segments, C).

  `dilation` spaces the taps (atrous convolution) and `strides` keeps every s-th
  output position; both pad symmetrically by dilation * (k // 2), PyTorch's (and
  timm's) padding for odd kernels, so a strided output is exactly the stride-1 output
  at positions 0, s, 2s, ... The shift-and-multiply and native depthwise forms
  compute it that way; the others pass the stride to `lax.conv_general_dilated`.
  """
  kernel_size: int = 3
  segments: Optional[int] = None
  depthwise_impl: str = "feature_group"
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init
  strides: int = 1
  dilation: int = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    segments = check_segments(self.segments, channels, self.name or "")
    k, s, d = self.kernel_size, self.strides, self.dilation
    if s < 1 or d < 1 or (max(s, d) > 1 and k % 2 == 0):
      raise ValueError(f"SpatialConv {self.name or ''}: strides={s} and dilation={d} must be "
                       f">= 1, and need an odd kernel_size (got {k}) when above 1.")
    kernel = self.param("kernel", self.kernel_init,
                        (k, k, channels // segments, channels), self.param_dtype)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    if segments == channels:
      impl = depthwise.resolve_depthwise_impl(self.depthwise_impl)
      if s == 1 or impl in ("shift", "native"):
        y = depthwise.DEPTHWISE_IMPLEMENTATIONS[impl](x, kernel, d)
        return y[:, ::s, ::s, :] if s > 1 else y
    padding = "SAME" if s == d == 1 else depthwise.same_padding((k, k), d)
    return lax.conv_general_dilated(
        x, kernel, window_strides=(s, s), padding=padding, rhs_dilation=(d, d),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=segments)


class SeparableConv(nn.Module):
  """Xception's separable convolution and the spectrum around it.

  Attributes:
    features: output channels of the pointwise operation.
    kernel_size: spatial kernel size (3 in Xception).
    segments: channel segments of the spatial convolution; None = one per channel.
    order: 'depthwise_pointwise' (Xception, TensorFlow) or 'pointwise_depthwise'
      (the "extreme" Inception module, paper Figure 4).
    intermediate_activation: None (the paper's best), 'relu' or 'elu' between the
      two operations (paper Figure 10).
    depthwise_impl: 'feature_group' (reference; GPU/TPU), 'shift' (fast on CPU) or
      'auto' (shift on the CPU backend, feature_group elsewhere).
    strides, dilation: of the spatial convolution (see SpatialConv).
    pointwise_impl: the pointwise product's engine ('xla', 'blas', 'auto'; pointwise.py).
  """
  features: int
  kernel_size: int = 3
  segments: Optional[int] = None
  order: str = "depthwise_pointwise"
  intermediate_activation: Optional[str] = None
  depthwise_impl: str = "feature_group"
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init
  strides: int = 1
  dilation: int = 1
  pointwise_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.order not in ORDERS:
      raise ValueError(f"order must be one of {ORDERS}; got {self.order!r}.")
    act = activation_fn(self.intermediate_activation)
    spatial = SpatialConv(self.kernel_size, self.segments, self.depthwise_impl, self.dtype,
                          self.param_dtype, self.kernel_init, self.strides, self.dilation,
                          name="depthwise")
    pointwise = PointwiseConv(self.features, 1, self.dtype, self.param_dtype,
                              self.kernel_init, self.pointwise_impl, name="pointwise")
    first, second = (spatial, pointwise) if self.order == ORDERS[0] else (pointwise, spatial)
    x = first(x)
    if act is not None:
      x = act(x)
    return second(x)


def classifier_head(x: jax.Array, *, num_classes: int, include_top: bool,
                    dropout_rate: float, head_bias_init: float, train: bool,
                    fc_layers: tuple[int, ...] = (), **dtypes: Any) -> jax.Array:
  """The classifiers' top: global average pooling, optional fully-connected ReLU layers
  (`fc1`, `fc2`, ...: the paper's JFT variant), dropout and the logits layer `head`.

  Called inside a parent's `nn.compact` method, so its layers are the parent's
  (`fc1`, `head` at the top of the parameter tree, where checkpoints and converters
  expect them). Returns float32 logits, or the pooled features without a top.
  """
  x = jnp.mean(x, axis=(1, 2))  # global average pooling
  for i, features in enumerate(fc_layers):
    x = nn.relu(nn.Dense(features, kernel_init=default_kernel_init, name=f"fc{i + 1}",
                         **dtypes)(x))
  if not include_top:
    return x.astype(jnp.float32)
  x = nn.Dropout(dropout_rate, deterministic=not train)(x)
  x = nn.Dense(num_classes, kernel_init=default_kernel_init,
               bias_init=nn.initializers.constant(head_bias_init), name="head",
               **dtypes)(x)
  return x.astype(jnp.float32)


def check_classifier_input(name: str, x: jax.Array, *, dropout_rate: float,
                           width_multiplier: float, min_size: Optional[int] = None) -> None:
  """The checks the classification networks share: NHWC images (at least
  min_size x min_size), dropout in [0, 1), a positive width multiplier."""
  if x.ndim != 4:
    raise ValueError(f"{name} expects NHWC images [N, H, W, C]; got shape {x.shape}.")
  if min_size is not None and min(x.shape[1], x.shape[2]) < min_size:
    raise ValueError(
        f"{name} needs images of at least {min_size}x{min_size}; got "
        f"{x.shape[1]}x{x.shape[2]}. Raise image_size.")
  if not 0.0 <= dropout_rate < 1.0:
    raise ValueError(f"dropout_rate must be in [0, 1); got {dropout_rate}.")
  if width_multiplier <= 0:
    raise ValueError(f"width_multiplier must be positive; got {width_multiplier}.")
