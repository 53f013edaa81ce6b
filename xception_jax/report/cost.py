"""A run's model size and cost: trainable parameters, and FLOPs per image of the
forward pass at the run's image size from XLA's cost analysis.

The model is rebuilt from the run's config.json (config.model with the run's class
count). FLOPs are those of the HLO that `jax.jit(...).lower(...)` produces for one
image, before XLA's optimisations (a multiply-add counts 2); depthwise convolutions
are counted in their reference form (`feature_group_count`), whatever implementation
the run trained with, so that the count is the network's and not the kernel's.
"""
from __future__ import annotations

import functools
import json
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from xception_jax.models import factory


def num_classes(config: dict[str, Any]) -> int:
  """The run's class count: config.num_classes, or the embedded dataset's."""
  if config.get("num_classes"):
    return int(config["num_classes"])
  if config.get("dataset") == "embedded_shapes" and config.get("embedded"):
    return int(config["embedded"]["num_classes"])
  raise ValueError("config.json has no num_classes (a tfds dataset's own count): "
                   "the report cannot rebuild the model's head.")


def model_fields(config: dict[str, Any]) -> dict[str, Any]:
  """config.model as the factory's fields, in float32 and the reference depthwise."""
  fields = dict(config["model"], num_classes=num_classes(config), dtype="float32")
  if "depthwise_impl" in factory.model_fields(fields.get("architecture") or "xception"):
    fields["depthwise_impl"] = "feature_group"
  return fields


@functools.lru_cache(maxsize=None)
def _cost(fields_json: str, image_size: int) -> tuple[int, float]:
  model = factory.create_model(json.loads(fields_json))
  image = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), image)
  params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  analysis = forward.lower(variables, image).cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
    analysis = analysis[0]
  return params, float(analysis["flops"])


def model_cost(config: dict[str, Any]) -> tuple[int, float]:
  """(trainable parameters, forward FLOPs per image) of the run's model."""
  fields = json.dumps(model_fields(config), sort_keys=True)
  return _cost(fields, int(config["image_size"]))
