"""Flax modules: Xception, DeepLab v3+'s aligned Xception and DeepLab v3+ itself, the
Inception V3 baseline, and their building blocks."""
from xception_jax.models.aligned_xception import (AlignedXception, BlockConfig, xception41,
                                                  xception65, xception71)
from xception_jax.models.deeplab import DeepLabV3Plus
from xception_jax.models.factory import (architectures, create_model, model_fields,
                                         model_to_fields, register_architecture)
from xception_jax.models.inception_v3 import InceptionV3
from xception_jax.models.layers import PointwiseConv, SeparableConv, SpatialConv
from xception_jax.models.xception import MIN_IMAGE_SIZE, Xception, scaled_width

__all__ = ["MIN_IMAGE_SIZE", "AlignedXception", "BlockConfig", "DeepLabV3Plus", "InceptionV3",
           "PointwiseConv", "SeparableConv", "SpatialConv", "Xception", "architectures",
           "create_model", "model_fields", "model_to_fields", "register_architecture",
           "scaled_width", "xception41", "xception65", "xception71"]
