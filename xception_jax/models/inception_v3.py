"""Inception V3 (Szegedy et al., "Rethinking the Inception Architecture for Computer
Vision", CVPR 2016), the Xception paper's baseline, as `keras.applications.InceptionV3`
builds it, in Flax linen.

    stem     conv 3x3/2 32 'valid', conv 3x3 32 'valid', conv 3x3 64, max-pool 3x3/2,
             conv 1x1 80 'valid', conv 3x3 192 'valid', max-pool 3x3/2
    mixed0-2   35x35 modules: 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | avg-pool -> 1x1
    mixed3     grid reduction to 17x17: 3x3/2 | 1x1 -> 3x3 -> 3x3/2 | max-pool 3x3/2
    mixed4-7   17x17 modules with factorised 7x7 (1x7 and 7x1) convolutions
    mixed8     grid reduction to 8x8: 1x1 -> 3x3/2 | 1x1 -> 1x7 -> 7x1 -> 3x3/2 | max-pool
    mixed9-10  8x8 modules with expanded filter banks (1x3 and 3x1 side by side)
    head     global average pooling, optional FC layers, dropout, logistic regression

Every convolution is followed by batch normalization WITHOUT scale (Keras'
`scale=False`: only the offset beta is learnt; the ReLU after it makes a scale
redundant) and ReLU; no convolution has a bias; BN epsilon 1e-3, momentum 0.99. No
auxiliary tower: the Xception paper trained Inception V3 without one. With
`num_classes=1000` the network has 23,817,352 trainable parameters, as Keras counts
(docs/EXPERIMENTS.md explains the paper's 23,626,728). Average pooling ignores the
padding ('same' pooling in TensorFlow divides by the number of real pixels).

Parameter layout (for converters): one `ConvBN` submodule per Keras `conv2d_bn` call,
named after the Keras variable it assigns (`branch1x1`, `branch5x5_1`, ...) inside a
submodule named after Keras' concatenation layer (`mixed0` ... `mixed10`); the stem's
are `stem/conv1` ... `stem/conv5`. Each `ConvBN` holds `conv/kernel` (kh, kw, in, out,
Keras' layout) and `bn/bias` with `bn` statistics `mean`/`var`. `KERAS_ORDER` lists
the 94 paths in the order Keras creates its `Conv2D`/`BatchNormalization` layers
(`conv2d`, `conv2d_1`, ... and `batch_normalization`, `batch_normalization_1`, ...);
the Dense `predictions` is `head`.

    model = InceptionV3(num_classes=1000)
    variables = model.init(rng, images, train=False)   # {'params', 'batch_stats'}
    logits = model.apply(variables, images, train=False)

Images are NHWC floats in [-1, 1], at least 75x75; logits are float32.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from xception_jax.models import classifier, layers, remat
from xception_jax.models.xception import scaled_width

Dtype = Any
ModuleDef = Callable[..., nn.Module]

MIN_IMAGE_SIZE = 75  # keras.applications.InceptionV3's minimum: mixed8 keeps 1x1.

# The modules in Keras' order: (name, kind, widths). Widths per kind:
#   'a' (35x35):  1x1, 5x5 reduce, 5x5, 3x3dbl reduce, 3x3dbl, pool projection
#   'b' (35->17): 3x3/2, 3x3dbl reduce, 3x3dbl
#   'c' (17x17):  1x1, 7x7 reduce (= inner width), 7x7 out, pool projection
#   'd' (17->8):  3x3 reduce, 3x3/2, 7x7x3 width
#   'e' (8x8):    1x1, 3x3, 3x3dbl reduce, pool projection
MODULES = (
    ("mixed0", "a", (64, 48, 64, 64, 96, 32)),
    ("mixed1", "a", (64, 48, 64, 64, 96, 64)),
    ("mixed2", "a", (64, 48, 64, 64, 96, 64)),
    ("mixed3", "b", (384, 64, 96)),
    ("mixed4", "c", (192, 128, 192, 192)),
    ("mixed5", "c", (192, 160, 192, 192)),
    ("mixed6", "c", (192, 160, 192, 192)),
    ("mixed7", "c", (192, 192, 192, 192)),
    ("mixed8", "d", (192, 320, 192)),
    ("mixed9", "e", (320, 384, 448, 192)),
    ("mixed10", "e", (320, 384, 448, 192)),
)
# The ConvBN names of each kind of module, in the order Keras creates them.
CONV_NAMES = {
    "a": ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2",
          "branch3x3dbl_3", "branch_pool"),
    "b": ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
    "c": ("branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3", "branch7x7dbl_1",
          "branch7x7dbl_2", "branch7x7dbl_3", "branch7x7dbl_4", "branch7x7dbl_5",
          "branch_pool"),
    "d": ("branch3x3_1", "branch3x3_2", "branch7x7x3_1", "branch7x7x3_2", "branch7x7x3_3",
          "branch7x7x3_4"),
    "e": ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1",
          "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"),
}
STEM_WIDTHS = (32, 32, 64, 80, 192)
STEM_NAMES = ("conv1", "conv2", "conv3", "conv4", "conv5")
KERAS_ORDER = tuple([f"stem/{n}" for n in STEM_NAMES]
                    + [f"{name}/{n}" for name, kind, _ in MODULES for n in CONV_NAMES[kind]])


class ConvBN(nn.Module):
  """Keras' `conv2d_bn`: convolution without bias, BatchNorm without scale, ReLU."""
  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: str = "SAME"
  norm: ModuleDef = nn.BatchNorm
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = nn.Conv(self.features, self.kernel_size, strides=(self.strides, self.strides),
                padding=self.padding, use_bias=False, kernel_init=layers.default_kernel_init,
                dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)
    return nn.relu(self.norm(name="bn")(x))


def _avg_pool_same(x: jax.Array) -> jax.Array:
  return nn.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)


def _max_pool_valid(x: jax.Array) -> jax.Array:
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionModule(nn.Module):
  """One of Keras' `mixedN` blocks; `kind` and `widths` as in MODULES."""
  kind: str
  widths: Sequence[int]
  conv: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    names = iter(CONV_NAMES[self.kind])

    def conv(y, features, kernel, strides=1, padding="SAME"):
      return self.conv(features, kernel, strides=strides, padding=padding,
                       name=next(names))(y)

    w = self.widths
    if self.kind == "a":
      b1 = conv(x, w[0], (1, 1))
      b5 = conv(conv(x, w[1], (1, 1)), w[2], (5, 5))
      b3 = conv(conv(conv(x, w[3], (1, 1)), w[4], (3, 3)), w[4], (3, 3))
      bp = conv(_avg_pool_same(x), w[5], (1, 1))
      return jnp.concatenate([b1, b5, b3, bp], axis=-1)
    if self.kind == "b":
      b3 = conv(x, w[0], (3, 3), 2, "VALID")
      bd = conv(conv(conv(x, w[1], (1, 1)), w[2], (3, 3)), w[2], (3, 3), 2, "VALID")
      return jnp.concatenate([b3, bd, _max_pool_valid(x)], axis=-1)
    if self.kind == "c":
      b1 = conv(x, w[0], (1, 1))
      b7 = conv(conv(conv(x, w[1], (1, 1)), w[1], (1, 7)), w[2], (7, 1))
      bd = conv(x, w[1], (1, 1))
      for features, kernel in ((w[1], (7, 1)), (w[1], (1, 7)), (w[1], (7, 1)),
                               (w[2], (1, 7))):
        bd = conv(bd, features, kernel)
      bp = conv(_avg_pool_same(x), w[3], (1, 1))
      return jnp.concatenate([b1, b7, bd, bp], axis=-1)
    if self.kind == "d":
      b3 = conv(conv(x, w[0], (1, 1)), w[1], (3, 3), 2, "VALID")
      b7 = conv(conv(conv(x, w[2], (1, 1)), w[2], (1, 7)), w[2], (7, 1))
      b7 = conv(b7, w[2], (3, 3), 2, "VALID")
      return jnp.concatenate([b3, b7, _max_pool_valid(x)], axis=-1)
    if self.kind == "e":
      b1 = conv(x, w[0], (1, 1))
      b3 = conv(x, w[1], (1, 1))
      b3 = jnp.concatenate([conv(b3, w[1], (1, 3)), conv(b3, w[1], (3, 1))], axis=-1)
      bd = conv(conv(x, w[2], (1, 1)), w[1], (3, 3))
      bd = jnp.concatenate([conv(bd, w[1], (1, 3)), conv(bd, w[1], (3, 1))], axis=-1)
      bp = conv(_avg_pool_same(x), w[3], (1, 1))
      return jnp.concatenate([b1, b3, bd, bp], axis=-1)
    raise ValueError(f"Unknown Inception module kind {self.kind!r}.")


class Stem(nn.Module):
  """Five ConvBN layers and two max-pools: 299x299x3 -> 35x35x192."""
  widths: Sequence[int]          # STEM_WIDTHS after the width multiplier
  conv: ModuleDef

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w1, w2, w3, w4, w5 = self.widths
    x = self.conv(w1, (3, 3), strides=2, padding="VALID", name="conv1")(x)
    x = self.conv(w2, (3, 3), padding="VALID", name="conv2")(x)
    x = _max_pool_valid(self.conv(w3, (3, 3), name="conv3")(x))
    x = self.conv(w4, (1, 1), padding="VALID", name="conv4")(x)
    return _max_pool_valid(self.conv(w5, (3, 3), padding="VALID", name="conv5")(x))


class InceptionV3(classifier.Classifier):
  """keras.applications.InceptionV3 without the auxiliary tower.

  Its fields are `Classifier`'s (num_classes, include_top, fc_layers, dropout_rate,
  width_multiplier: multiples of 8, bn_momentum and bn_epsilon: Keras' 0.99 and 1e-3,
  head_bias_init, remat: rematerialisation of each mixedN module (remat.py), dtype,
  param_dtype).
  """

  def _check_input(self, x: jax.Array) -> None:
    self._check_classifier_input("InceptionV3", x, MIN_IMAGE_SIZE)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    self._check_input(x)
    width = functools.partial(scaled_width, width_multiplier=self.width_multiplier)
    dtypes = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, use_scale=False,
                             momentum=self.bn_momentum, epsilon=self.bn_epsilon, **dtypes)
    conv_bn = functools.partial(ConvBN, norm=norm, **dtypes)
    x = jnp.asarray(x, self.dtype)
    x = Stem(tuple(width(w) for w in STEM_WIDTHS), conv_bn, name="stem")(x)
    module = remat.remat_block(InceptionModule, self.remat)
    for name, kind, widths in MODULES:
      x = module(kind, tuple(width(w) for w in widths), conv_bn, name=name)(x)
    return self._classifier_top(x, train)
