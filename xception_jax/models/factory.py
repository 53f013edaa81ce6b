"""Xception from a plain mapping of fields (configs, checkpoints' model.json) and back."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from xception_jax.models.xception import Xception

_DTYPE_FIELDS = ("dtype", "param_dtype")
_NOT_FIELDS = ("parent", "name")


def model_fields() -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(Xception) if f.name not in _NOT_FIELDS)


def create_model(fields: Mapping[str, Any], **overrides: Any) -> Xception:
  """Builds Xception from `fields` (dtype names as strings allowed), unknown names refused."""
  merged = {**dict(fields), **overrides}
  unknown = sorted(set(merged) - set(model_fields()))
  if unknown:
    raise ValueError(f"Unknown Xception field(s) {unknown}; valid fields: {list(model_fields())}.")
  for name in _DTYPE_FIELDS:
    if isinstance(merged.get(name), str):
      merged[name] = jnp.dtype(merged[name])
  if "fc_layers" in merged:
    merged["fc_layers"] = tuple(merged["fc_layers"])
  return Xception(**merged)


def model_to_fields(model: Xception) -> dict[str, Any]:
  """The JSON-serialisable fields that `create_model` turns back into `model`."""
  fields = {name: getattr(model, name) for name in model_fields()}
  for name in _DTYPE_FIELDS:
    fields[name] = jnp.dtype(fields[name]).name
  fields["fc_layers"] = list(fields["fc_layers"])
  return fields
