"""Models from a plain mapping of fields (configs, checkpoints' model.json) and back.

The field `architecture` picks the network from a small registry: a name maps to a
module class and the constructor arguments the name fixes (e.g. an aligned Xception's
block list); every other field is one of that module's dataclass fields. A mapping
without `architecture` (checkpoints written before it existed) means 'xception'.
Later families register the same way (`register_architecture`): 'deeplabv3plus'
(DeepLabV3Plus, segmentation) names its aligned-Xception depth in the field `backbone`;
'inception_v3' is the paper's baseline (InceptionV3).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax.numpy as jnp

from xception_jax.models.aligned_xception import ARCHITECTURES as ALIGNED_BLOCKS
from xception_jax.models.aligned_xception import AlignedXception
from xception_jax.models.deeplab import DeepLabV3Plus
from xception_jax.models.inception_v3 import InceptionV3
from xception_jax.models.xception import Xception

DEFAULT_ARCHITECTURE = "xception"
DEEPLAB_ARCHITECTURE = "deeplabv3plus"
ARCHITECTURE = "architecture"
_DTYPE_FIELDS = ("dtype", "param_dtype")
_NOT_FIELDS = ("parent", "name")


@dataclasses.dataclass(frozen=True)
class Architecture:
  module: type[nn.Module]
  fixed: Mapping[str, Any]    # constructor arguments the name decides (not model fields)


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(name: str, module: type[nn.Module], **fixed: Any) -> None:
  """Makes `architecture=name` build `module(**fixed, **fields)`."""
  if name in _REGISTRY:
    raise ValueError(f"architecture {name!r} is already registered.")
  _REGISTRY[name] = Architecture(module, dict(fixed))


register_architecture(DEFAULT_ARCHITECTURE, Xception)
for _name, _blocks in ALIGNED_BLOCKS.items():
  register_architecture(_name, AlignedXception, blocks=_blocks)
register_architecture(DEEPLAB_ARCHITECTURE, DeepLabV3Plus)  # field `backbone`: its depth
register_architecture("inception_v3", InceptionV3)


def architectures() -> tuple[str, ...]:
  return tuple(_REGISTRY)


def _architecture(name: Any) -> Architecture:
  if name not in _REGISTRY:
    raise ValueError(f"Unknown model architecture {name!r}; valid: {list(_REGISTRY)}.")
  return _REGISTRY[name]


def model_fields(architecture: str = DEFAULT_ARCHITECTURE) -> tuple[str, ...]:
  """The fields a model of `architecture` is built from, 'architecture' first."""
  arch = _architecture(architecture)
  return (ARCHITECTURE,) + tuple(
      f.name for f in dataclasses.fields(arch.module)
      if f.name not in _NOT_FIELDS and f.name not in arch.fixed)


def create_model(fields: Mapping[str, Any], **overrides: Any) -> nn.Module:
  """Builds the model `fields` describe (dtype names as strings allowed); fields the
  architecture does not have are refused, naming the valid ones."""
  merged = {**dict(fields), **overrides}
  name = merged.pop(ARCHITECTURE, None) or DEFAULT_ARCHITECTURE
  arch = _architecture(name)
  valid = model_fields(name)
  unknown = sorted(set(merged) - set(valid))
  if unknown:
    raise ValueError(f"Unknown {arch.module.__name__} field(s) {unknown} for architecture "
                     f"{name!r}; valid fields: {list(valid)}.")
  for field in _DTYPE_FIELDS:
    if isinstance(merged.get(field), str):
      merged[field] = jnp.dtype(merged[field])
  for field, value in merged.items():
    if isinstance(value, list):  # JSON has no tuples
      merged[field] = tuple(value)
  return arch.module(**arch.fixed, **merged)


def architecture_of(model: nn.Module) -> str:
  """The registered name whose module class and fixed arguments `model` has."""
  for name, arch in _REGISTRY.items():
    if type(model) is arch.module and all(
        getattr(model, key) == value for key, value in arch.fixed.items()):
      return name
  raise ValueError(f"{type(model).__name__} with these blocks is no registered "
                   f"architecture ({list(_REGISTRY)}); register it first.")


def model_to_fields(model: nn.Module) -> dict[str, Any]:
  """The JSON-serialisable fields that `create_model` turns back into `model`."""
  name = architecture_of(model)
  fields = {ARCHITECTURE: name}
  fields.update({field: getattr(model, field) for field in model_fields(name)[1:]})
  for field in _DTYPE_FIELDS:
    fields[field] = jnp.dtype(fields[field]).name
  for field, value in fields.items():
    if isinstance(value, tuple):
      fields[field] = list(value)
  return fields
