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
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from xception_jax.models import factory


def num_classes(config: dict[str, Any], workdir: Optional[str] = None) -> int:
  """The run's class count: config.num_classes, else the embedded dataset's (the
  segmentation one with its background class), else the class count stored with the
  model in the run's latest checkpoint (a tfds dataset's own count)."""
  if config.get("num_classes"):
    return int(config["num_classes"])
  if config.get("dataset") == "embedded_shapes" and config.get("embedded"):
    return int(config["embedded"]["num_classes"])
  if (config.get("dataset") == "embedded_shapes_segmentation"
      and config.get("embedded_segmentation")):
    return int(config["embedded_segmentation"]["num_classes"]) + 1  # + background
  stored = _checkpoint_num_classes(workdir) if workdir else None
  if stored:
    return stored
  raise ValueError(f"{workdir or 'the run'}: config.json has no num_classes (the dataset's "
                   "own count) and no checkpoint under checkpoints/ stores it; the report "
                   "cannot rebuild the model's head.")


def _checkpoint_num_classes(workdir: str) -> Optional[int]:
  """num_classes of the model JSON of the latest step in WORKDIR/checkpoints, if any."""
  root = os.path.join(workdir, "checkpoints")
  steps = sorted((int(n) for n in os.listdir(root) if n.isdigit()), reverse=True) \
      if os.path.isdir(root) else []
  for step in steps:
    try:
      with open(os.path.join(root, str(step), "model", "metadata")) as f:
        return int(json.load(f)["num_classes"])
    except (OSError, ValueError, KeyError, TypeError):
      continue
  return None


def model_fields(config: dict[str, Any], workdir: Optional[str] = None) -> dict[str, Any]:
  """config.model as the factory's fields, in float32 and XLA's own depthwise and
  pointwise operations (XLA's cost analysis does not count custom calls)."""
  fields = dict(config["model"], num_classes=num_classes(config, workdir), dtype="float32")
  valid = factory.model_fields(fields.get("architecture") or "xception")
  for field, reference in (("depthwise_impl", "feature_group"), ("pointwise_impl", "xla")):
    if field in valid:
      fields[field] = reference
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


def model_cost(config: dict[str, Any], workdir: Optional[str] = None) -> tuple[int, float]:
  """(trainable parameters, forward FLOPs per image) of the run's model."""
  fields = json.dumps(model_fields(config, workdir), sort_keys=True)
  return _cost(fields, int(config["image_size"]))
