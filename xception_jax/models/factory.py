"""Models from a plain mapping of fields (configs, checkpoints' model.json) and back.

The field `architecture` picks the model family ('xception', the default, or
'inception_v3'); the other fields are that module's own.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from xception_jax.models.inception_v3 import InceptionV3
from xception_jax.models.xception import Xception

ARCHITECTURES: dict[str, type[nn.Module]] = {"xception": Xception, "inception_v3": InceptionV3}
DEFAULT_ARCHITECTURE = "xception"

_DTYPE_FIELDS = ("dtype", "param_dtype")
_NOT_FIELDS = ("parent", "name")


def _module_class(architecture: str) -> type[nn.Module]:
  if architecture not in ARCHITECTURES:
    raise ValueError(f"Unknown model architecture {architecture!r}; known: "
                     f"{sorted(ARCHITECTURES)} (config.model.architecture).")
  return ARCHITECTURES[architecture]


def model_fields(architecture: str = DEFAULT_ARCHITECTURE) -> tuple[str, ...]:
  return tuple(f.name for f in dataclasses.fields(_module_class(architecture))
               if f.name not in _NOT_FIELDS)


def create_model(fields: Mapping[str, Any], **overrides: Any) -> nn.Module:
  """Builds the model `fields` describe (dtype names as strings allowed); unknown
  names are refused."""
  merged = {**dict(fields), **overrides}
  architecture = merged.pop("architecture", None) or DEFAULT_ARCHITECTURE
  cls = _module_class(architecture)
  valid = model_fields(architecture)
  unknown = sorted(set(merged) - set(valid))
  if unknown:
    raise ValueError(f"Unknown {cls.__name__} field(s) {unknown}; valid fields: "
                     f"{['architecture', *valid]}.")
  for name in _DTYPE_FIELDS:
    if isinstance(merged.get(name), str):
      merged[name] = jnp.dtype(merged[name])
  if "fc_layers" in merged:
    merged["fc_layers"] = tuple(merged["fc_layers"])
  return cls(**merged)


def model_to_fields(model: nn.Module) -> dict[str, Any]:
  """The JSON-serialisable fields that `create_model` turns back into `model`."""
  architecture = next(name for name, cls in ARCHITECTURES.items() if type(model) is cls)
  fields = {"architecture": architecture,
            **{name: getattr(model, name) for name in model_fields(architecture)}}
  for name in _DTYPE_FIELDS:
    fields[name] = jnp.dtype(fields[name]).name
  fields["fc_layers"] = list(fields["fc_layers"])
  return fields
