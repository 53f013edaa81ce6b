"""Flax modules: Xception, its building blocks, and the Inception V3 baseline."""
from xception_jax.models.factory import create_model, model_fields, model_to_fields
from xception_jax.models.inception_v3 import InceptionV3
from xception_jax.models.layers import PointwiseConv, SeparableConv, SpatialConv
from xception_jax.models.xception import MIN_IMAGE_SIZE, Xception, scaled_width

__all__ = ["MIN_IMAGE_SIZE", "InceptionV3", "PointwiseConv", "SeparableConv", "SpatialConv",
           "Xception",
           "create_model", "model_fields", "model_to_fields", "scaled_width"]
