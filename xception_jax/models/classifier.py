"""The fields and the top that the two classification networks of the paper share.

`Xception` (xception.py) and its baseline `InceptionV3` (inception_v3.py) both end in
global average pooling, optional fully-connected layers, dropout and the logits
(`layers.classifier_head`), check their images the same way, and take the same
BatchNorm, width and dtype fields; they inherit them from `Classifier`. (DeepLab's
aligned Xception keeps its own: timm's BatchNorm momentum, no FC layers.)
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from xception_jax.models import layers, remat

Dtype = Any


class Classifier(nn.Module):
  """Base of Xception and InceptionV3 (no layers of its own).

  Attributes:
    num_classes: size of the logistic regression layer.
    include_top: False returns the pooled (and FC) features instead of logits.
    fc_layers: widths of optional fully-connected ReLU layers before the logits (the
      JFT "with FC" runs use (4096, 4096)).
    dropout_rate: dropout before the logits (0.5 on ImageNet, 0 on JFT).
    width_multiplier: scales every width (tests and the CPU demo use tiny models).
    bn_momentum, bn_epsilon: BatchNorm's (Keras: 0.99, 1e-3).
    head_bias_init: initial bias of the logits (e.g. -log(num_classes) for sigmoid).
    remat: rematerialisation of each block in the backward pass: 'none', 'block',
      'block_save_convs' or 'block_save_products' (remat.py).
    dtype: compute dtype (float32, or bfloat16 on accelerators); param_dtype: the
      parameters' dtype.
  """
  num_classes: int = 1000
  include_top: bool = True
  fc_layers: Sequence[int] = ()
  dropout_rate: float = 0.0
  width_multiplier: float = 1.0
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  head_bias_init: float = 0.0
  remat: str = "none"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _check_classifier_input(self, name: str, x: jax.Array, min_size: int) -> None:
    layers.check_classifier_input(name, x, dropout_rate=self.dropout_rate,
                                  width_multiplier=self.width_multiplier,
                                  min_size=min_size)
    remat.check_remat(self.remat)

  def _classifier_top(self, x: jax.Array, train: bool) -> jax.Array:
    """Pooling, FC layers, dropout and logits (`fc1`..., `head` at the top level)."""
    return layers.classifier_head(
        x, num_classes=self.num_classes, include_top=self.include_top,
        dropout_rate=self.dropout_rate, head_bias_init=self.head_bias_init, train=train,
        fc_layers=tuple(self.fc_layers), dtype=self.dtype, param_dtype=self.param_dtype)
