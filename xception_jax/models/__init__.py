"""Flax modules: Xception and its building blocks."""
from xception_jax.models.factory import create_model, model_fields, model_to_fields
from xception_jax.models.layers import PointwiseConv, SeparableConv, SpatialConv
from xception_jax.models.xception import MIN_IMAGE_SIZE, Xception, scaled_width

__all__ = ["MIN_IMAGE_SIZE", "PointwiseConv", "SeparableConv", "SpatialConv", "Xception",
           "create_model", "model_fields", "model_to_fields", "scaled_width"]
