"""timm aligned Xception weights (safetensors) -> Flax `AlignedXception` variables.

    python -m xception_jax.convert --timm=model.safetensors --arch=xception65 \\
        [--output_stride=16] --out=/ckpt/xception65_timm

    model, variables = from_timm("model.safetensors", "xception65")   # library use
    logits = model.apply(variables, images, train=False)               # = timm's logits

The file is a timm state dict of `xception41`, `xception65` or `xception71` saved as
safetensors, the format of timm's published weights (`model.safetensors` of
`timm/xception65.tf_in1k` and its kin). It is read with `safetensors.numpy`: no torch
import, nothing unpickled. `num_batches_tracked` entries are ignored.

Names map one to one (timm -> Flax, `<block>` = entry_flow_block1, ...):

    stem.{0,1}.conv.weight                  params/conv{1,2}/kernel
    stem.{0,1}.bn.{weight,bias}             params/conv{1,2}_bn/{scale,bias}
    stem.{0,1}.bn.running_{mean,var}        batch_stats/conv{1,2}_bn/{mean,var}
    blocks.i.shortcut.{conv,bn}             <block>/shortcut, <block>/shortcut_bn
    blocks.i.stack.convJ.conv_dw / bn_dw    <block>/sepconvJ/depthwise / depthwise_bn
    blocks.i.stack.convJ.conv_pw / bn_pw    <block>/sepconvJ/pointwise / pointwise_bn
    head.fc.{weight,bias}                   params/head/{kernel,bias}

Layouts: PyTorch convolution weights (out, in / groups, kh, kw) become Flax's HWIO
(kh, kw, in / groups, out), the depthwise ones (C, 1, 3, 3) -> (3, 3, 1, C); the linear
weight (out, in) becomes (in, out). BatchNorm epsilon is 1e-3 in both; PyTorch's
momentum 0.1 is Flax's 0.9 (only training uses it).

The head's size is read from `head.fc.weight` (a file without it converts to
`include_top=False`). Every entry is checked against the Flax model's shapes in timm's
order before anything is returned; a file of another depth, a truncated state dict or
an unknown key raises `TimmFileError` naming the first such key and its shape.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np

from xception_jax import paths, xla_cpu

from xception_jax.models import factory
from xception_jax.models.aligned_xception import AlignedXception, block_names

IGNORED_SUFFIX = "num_batches_tracked"
HEAD_WEIGHT, HEAD_BIAS = "head.fc.weight", "head.fc.bias"


class TimmFileError(ValueError):
  """A timm state dict that cannot be read, or does not match the architecture."""


def read_timm_file(path: str) -> dict[str, np.ndarray]:
  """The state dict of a safetensors file as NumPy arrays, `num_batches_tracked` dropped."""
  from safetensors import SafetensorError
  from safetensors.numpy import load

  path = os.fspath(path)
  if not paths.isfile(path):
    raise FileNotFoundError(f"No timm weights file at {path!r}.")
  try:
    tensors = load(paths.read_bytes(path))  # local or gs://
  except (SafetensorError, ValueError, TypeError) as e:
    raise TimmFileError(
        f"{path!r} is not a readable safetensors state dict ({e}). Save timm weights with "
        "safetensors.torch.save_file(model.state_dict(), FILE) or download "
        "model.safetensors.") from None
  return {key: value for key, value in tensors.items() if not key.endswith(IGNORED_SUFFIX)}


def _entries(variables: Mapping[str, Any], model: AlignedXception
             ) -> list[tuple[str, str, tuple[str, ...]]]:
  """(timm key, Flax collection, Flax path) for every array, in timm's state-dict order."""
  entries: list[tuple[str, str, tuple[str, ...]]] = []

  def conv(key: str, path: tuple[str, ...]) -> None:
    entries.append((f"{key}.weight", "params", path + ("kernel",)))

  def norm(key: str, path: tuple[str, ...]) -> None:
    entries.extend([(f"{key}.weight", "params", path + ("scale",)),
                    (f"{key}.bias", "params", path + ("bias",)),
                    (f"{key}.running_mean", "batch_stats", path + ("mean",)),
                    (f"{key}.running_var", "batch_stats", path + ("var",))])

  for i in range(2):
    conv(f"stem.{i}.conv", (f"conv{i + 1}",))
    norm(f"stem.{i}.bn", (f"conv{i + 1}_bn",))
  for i, name in enumerate(block_names(tuple(model.blocks))):
    if "shortcut" in variables["params"][name]:
      conv(f"blocks.{i}.shortcut.conv", (name, "shortcut"))
      norm(f"blocks.{i}.shortcut.bn", (name, "shortcut_bn"))
    for j in range(1, 4):
      key, path = f"blocks.{i}.stack.conv{j}", (name, f"sepconv{j}")
      conv(f"{key}.conv_dw", path + ("depthwise",))
      norm(f"{key}.bn_dw", path + ("depthwise_bn",))
      conv(f"{key}.conv_pw", path + ("pointwise",))
      norm(f"{key}.bn_pw", path + ("pointwise_bn",))
  if model.include_top:
    entries.append((HEAD_WEIGHT, "params", ("head", "kernel")))
    entries.append((HEAD_BIAS, "params", ("head", "bias")))
  return entries


def _to_flax(array: np.ndarray) -> np.ndarray:
  """PyTorch layout -> Flax layout: OIHW -> HWIO, (out, in) -> (in, out), vectors as is."""
  if array.ndim == 4:
    return array.transpose(2, 3, 1, 0)
  if array.ndim == 2:
    return array.T
  return array


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  if len(flax_shape) == 4:
    kh, kw, cin, cout = flax_shape
    return (cout, cin, kh, kw)
  if len(flax_shape) == 2:
    return tuple(reversed(flax_shape))
  return tuple(flax_shape)


def _abstract_variables(model: AlignedXception) -> dict:
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.float32)))


def expected_keys(model: AlignedXception) -> list[tuple[str, tuple[int, ...]]]:
  """The timm state-dict entries (name, PyTorch shape) of `model`, in timm's order."""
  abstract = _abstract_variables(model)
  return [(key, _torch_shape(tuple(_lookup(abstract[collection], path).shape)))
          for key, collection, path in _entries(abstract, model)]


def _lookup(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for part in path:
    tree = tree[part]
  return tree


def convert_state_dict(state: Mapping[str, np.ndarray], arch: str, description: str = "",
                       include_top: Optional[bool] = None,
                       **overrides: Any) -> tuple[AlignedXception, dict]:
  """A timm state dict (NumPy arrays by name) -> (model, {'params', 'batch_stats'})."""
  if arch not in factory.architectures() or arch == factory.DEFAULT_ARCHITECTURE:
    valid = [a for a in factory.architectures() if a != factory.DEFAULT_ARCHITECTURE]
    raise ValueError(f"arch must be one of {valid} (timm's aligned Xceptions); got {arch!r}.")
  xla_cpu.warn_if_float64(overrides.get("dtype"))
  where = f" in {description}" if description else ""
  if include_top is None:
    include_top = HEAD_WEIGHT in state
  fields: dict[str, Any] = dict(architecture=arch, include_top=include_top)
  if include_top:
    if HEAD_WEIGHT not in state:
      raise TimmFileError(f"missing key {HEAD_WEIGHT!r}{where}: the file has no classifier; "
                          "convert with include_top=False for the features only.")
    fields["num_classes"] = int(state[HEAD_WEIGHT].shape[0])
  model = factory.create_model(fields, **overrides)
  abstract = _abstract_variables(model)
  variables: dict[str, dict] = {"params": {}, "batch_stats": {}}
  expected = _entries(abstract, model)
  for key, collection, path in expected:
    want = tuple(_lookup(abstract[collection], path).shape)
    if key not in state:
      raise TimmFileError(
          f"missing key {key!r} (expected shape {_torch_shape(want)}){where}: not a timm "
          f"{arch} state dict of this width (another depth, or a truncated file?).")
    array = np.asarray(state[key])
    if tuple(array.shape) != _torch_shape(want):
      raise TimmFileError(
          f"key {key!r} has shape {tuple(array.shape)}{where}, expected "
          f"{_torch_shape(want)} for {arch} (another depth or width?).")
    node = variables[collection]
    for part in path[:-1]:
      node = node.setdefault(part, {})
    dtype = _lookup(abstract[collection], path).dtype
    node[path[-1]] = _to_flax(array).astype(dtype)
  known = {key for key, _, _ in expected}
  dropped = {HEAD_WEIGHT, HEAD_BIAS} if not include_top else set()
  for key in state:
    if key not in known and key not in dropped:
      raise TimmFileError(
          f"unexpected key {key!r} of shape {tuple(state[key].shape)}{where}: not a timm "
          f"{arch} state dict (another depth?).")
  return model, variables


def from_timm(path: str, arch: str, *, include_top: Optional[bool] = None,
              **overrides: Any) -> tuple[AlignedXception, dict]:
  """Reads a timm aligned Xception state dict (safetensors) into Flax.

  Args:
    path: a safetensors file of timm's `xception41`, `xception65` or `xception71`.
    arch: 'xception41', 'xception65' or 'xception71' (the model the file must match).
    include_top: None detects `head.fc.weight`; False drops the classifier.
    **overrides: AlignedXception fields that do not change the parameters
      (`output_stride=16`, `depthwise_impl='auto'`, `dtype`, ...), or
      `width_multiplier` for a file of a scaled-down model.
  Returns:
    (model, {'params', 'batch_stats'}): `model.apply(variables, images, train=False)`
    gives timm's eval-mode logits for NHWC images (timm's input is NCHW).
  Raises:
    FileNotFoundError: no file at `path`.
    TimmFileError: unreadable file, or one that does not match `arch` (names the
      first missing, mis-shaped or unexpected key and its shape).
  """
  state = read_timm_file(path)
  return convert_state_dict(state, arch, repr(os.fspath(path)), include_top, **overrides)
