"""Keras Xception or InceptionV3 weights -> Flax variables (the CLI is in __main__.py).

    python -m xception_jax.convert --keras=xception_weights_tf_dim_ordering_tf_kernels.h5 \\
        --out=/ckpt/xception_keras
    python -m xception_jax.convert --keras=inception_v3.keras --out=/ckpt/inception_v3_keras

    model, variables = from_keras("model.keras")            # library use
    logits = model.apply(variables, images, train=False)      # = Keras' pre-softmax logits

Accepted files (the format is detected from the contents, not the name):
  - legacy HDF5 weights, the layout of Keras' published
    `xception_weights_tf_dim_ordering_tf_kernels.h5` and `..._notop.h5` (root attribute
    `layer_names`, one group per layer with a `weight_names` attribute), and a legacy
    whole-model `.h5` (the same under `model_weights`);
  - Keras 3 `.weights.h5` (`model.save_weights`): groups `layers/<class>[_k]/vars/<i>`;
  - Keras 3 `.keras` archives (`model.save`): the `model.weights.h5` inside the zip
    (keras_file.py reads them all).
All are read with h5py (and zipfile) as plain arrays: nothing is unpickled, no Keras
config is deserialised, no code from the file runs, and neither Keras nor TensorFlow is
imported.

The network is recognised from the file itself (`detect_architecture`): separable
convolutions or a `block1_conv1` layer mean `keras.applications.Xception` (matched
here); BatchNormalization layers without scale (beta, moving mean, moving variance) and
no separable convolution mean `keras.applications.InceptionV3` (matched in
keras_inception_v3.py, which explains its layer order); anything else is refused in one
line naming both. The returned model's fields (`factory.model_to_fields`) carry the
architecture's name, so a converted checkpoint is read back as the right network.

Xception's layers are matched by Keras' layer names (`block1_conv1`, `block2_sepconv1_bn`, ...,
`predictions`). The four shortcut convolutions and their batch normalizations have no
name in `keras.applications.Xception` (Keras numbers them `conv2d`, `conv2d_1`, ... or
`conv2d_1`, ... depending on version and on how many models a session built), so they
are taken in the file's model order. A Keras 3 file written without the `name`
attribute on each layer's `vars` group (older Keras 3) is matched by Keras' own rule:
the k-th layer of a class in `model.layers` order.

The top (`predictions`, 2048 -> N) is detected: present -> `Xception(num_classes=N)`
giving Keras' logits; absent -> `Xception(include_top=False)` giving the globally
average-pooled 2048 features (Keras' `include_top=False, pooling='avg'`). Every array
is checked against the Flax model's shapes before anything is returned or written; a
file that does not match raises `KerasFileError` naming the first mismatching layer in
network order.

The only layout change: Keras' depthwise kernels are (3, 3, C, 1), Flax's (3, 3, 1, C).
Regular and pointwise kernels are HWIO in both; BN gamma/beta/moving_mean/
moving_variance become params scale/bias and batch_stats mean/var (epsilon 1e-3 in
both); the dense kernel is (in, out) in both.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from xception_jax import xla_cpu
from xception_jax.convert import keras_inception_v3
from xception_jax.convert.keras_common import KERAS_HEAD, _check_filled, _set, _target
from xception_jax.convert.keras_file import (_KERAS3_CLASS_KIND, KerasFileError,
                                             _FileLayer, _natural_key, read_keras_file)
from xception_jax.models import factory
from xception_jax.models.xception import Xception

NUM_MIDDLE_BLOCKS = 8


XCEPTION = "xception"
INCEPTION_V3 = keras_inception_v3.ARCHITECTURE


@dataclasses.dataclass(frozen=True)
class _Spec:
  """One weighted Keras layer of `keras.applications.Xception`, in `model.layers` order."""
  keras_name: str            # Keras' name; for the unnamed shortcut layers a description
  kind: str                  # 'conv', 'separable', 'bn' or 'dense'
  flax_path: tuple[str, ...]
  named: bool = True         # False: Keras auto-names it (conv2d_k / batch_normalization_k)


_KIND_WEIGHTS = {
    "conv": ("kernel",),
    "separable": ("depthwise_kernel", "pointwise_kernel"),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
    "dense": ("kernel", "bias"),
}


def keras_layer_specs(include_top: bool = True) -> list[_Spec]:
  """Xception's weighted layers in Keras' `model.layers` order, with their Flax paths."""
  specs = [_Spec("block1_conv1", "conv", ("entry_flow", "conv1")),
           _Spec("block1_conv1_bn", "bn", ("entry_flow", "conv1_bn")),
           _Spec("block1_conv2", "conv", ("entry_flow", "conv2")),
           _Spec("block1_conv2_bn", "bn", ("entry_flow", "conv2_bn"))]

  def module(block: int, path: tuple[str, ...], num_sepconvs: int, shortcut: bool):
    for j in range(1, num_sepconvs + 1):
      specs.append(_Spec(f"block{block}_sepconv{j}", "separable", path + (f"sepconv{j}",)))
      specs.append(_Spec(f"block{block}_sepconv{j}_bn", "bn", path + (f"sepconv{j}_bn",)))
    if shortcut:
      specs.append(_Spec(f"shortcut Conv2D of block{block} (unnamed in Keras)", "conv",
                         path + ("shortcut",), named=False))
      specs.append(_Spec(f"shortcut BatchNormalization of block{block} (unnamed in Keras)",
                         "bn", path + ("shortcut_bn",), named=False))

  for i, block in enumerate((2, 3, 4)):
    module(block, ("entry_flow", f"module{i + 1}"), 2, True)
  for i in range(NUM_MIDDLE_BLOCKS):
    module(5 + i, ("middle_flow", f"module{i + 1}"), 3, False)
  module(5 + NUM_MIDDLE_BLOCKS, ("exit_flow", "module1"), 2, True)
  for j in (1, 2):
    block = 6 + NUM_MIDDLE_BLOCKS
    specs.append(_Spec(f"block{block}_sepconv{j}", "separable", ("exit_flow", f"sepconv{j}")))
    specs.append(_Spec(f"block{block}_sepconv{j}_bn", "bn", ("exit_flow", f"sepconv{j}_bn")))
  if include_top:
    specs.append(_Spec(KERAS_HEAD, "dense", ("head",)))
  return specs


def _name_unnamed_xception_layers(layers: list[_FileLayer]) -> list[_FileLayer]:
  """Keras' rule for a Keras 3 file without names: the k-th layer of a class in
  Xception's `model.layers` order (the shortcut layers keep their group keys)."""
  by_class: dict[str, list[_Spec]] = {}
  for spec in keras_layer_specs(True):
    klass = {v: k for k, v in _KERAS3_CLASS_KIND.items()}[spec.kind]
    by_class.setdefault(klass, []).append(spec)
  named = []
  for layer in layers:
    if not layer.named:
      specs = by_class.get(layer.klass, [])
      k = layer.position
      if k < len(specs) and specs[k].named:
        layer = dataclasses.replace(layer, name=specs[k].keras_name)
    named.append(layer)
  return named


# ----------------------------------------------------------------------------- matching


def _keras_shape(kind: str, index: int, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  if kind == "separable" and index == 0:       # Flax (3, 3, 1, C) <- Keras (3, 3, C, 1)
    return flax_shape[:2] + (flax_shape[3], flax_shape[2])
  return tuple(flax_shape)


def _flax_leaves(kind: str) -> list[tuple[str, ...]]:
  """(collection, *path) of each Keras weight, in Keras' weight order."""
  return {
      "conv": [("params", "kernel")],
      "separable": [("params", "depthwise", "kernel"), ("params", "pointwise", "kernel")],
      "bn": [("params", "scale"), ("params", "bias"),
             ("batch_stats", "mean"), ("batch_stats", "var")],
      "dense": [("params", "kernel"), ("params", "bias")],
  }[kind]


def _match(layers: list[_FileLayer], include_top: Optional[bool],
           description: str) -> tuple[dict[str, _FileLayer], bool, int]:
  """Assigns file layers to Xception's Keras layers; returns (by keras_name, top, classes)."""
  by_name = {}
  for layer in layers:
    if layer.name in by_name:
      raise KerasFileError(f"{description} holds two layers named {layer.name!r}.")
    by_name[layer.name] = layer
  has_top = KERAS_HEAD in by_name
  if include_top is None:
    include_top = has_top
  elif include_top and not has_top:
    raise KerasFileError(
        f"include_top=True, but {description} has no {KERAS_HEAD!r} layer (a 'notop' "
        "file); convert it with include_top=False (or None to detect).")
  specs = keras_layer_specs(include_top)
  named = {s.keras_name for s in keras_layer_specs(True) if s.named}
  unnamed = {kind: sorted((l for l in layers if l.name not in named and l.kind == kind),
                          key=lambda l: (l.position, _natural_key(l.name)))
             for kind in ("conv", "bn")}
  matched: dict[str, _FileLayer] = {}
  for spec in specs:
    if spec.named:
      layer = by_name.get(spec.keras_name)
    else:
      layer = unnamed[spec.kind].pop(0) if unnamed[spec.kind] else None
    if layer is None:
      held = [l.name for l in layers]
      raise KerasFileError(
          f"{description} does not match Keras' Xception: missing layer "
          f"{spec.keras_name!r} (Flax {'/'.join(spec.flax_path)}). The file holds "
          f"{len(held)} weighted layers: {held[:8]}{' ...' if len(held) > 8 else ''}.")
    if layer.kind != spec.kind or len(layer.arrays) != len(_KIND_WEIGHTS[spec.kind]):
      raise KerasFileError(
          f"{description} does not match Keras' Xception: layer {spec.keras_name!r} "
          f"(file layer {layer.source!r}) holds {len(layer.arrays)} arrays of shapes "
          f"{[a.shape for a in layer.arrays]}, expected a {spec.kind} layer with "
          f"{_KIND_WEIGHTS[spec.kind]}.")
    matched[spec.keras_name] = layer
  used = {id(l) for l in matched.values()}
  extra = [l.name for l in layers if id(l) not in used
           and not (l.name == KERAS_HEAD and not include_top)]
  if extra:
    raise KerasFileError(
        f"{description} does not match Keras' Xception: unexpected weighted layer(s) "
        f"{extra[:8]} (Xception has {len(keras_layer_specs(True))} weighted layers with "
        "the top).")
  num_classes = 1000
  if include_top:
    kernel = matched[KERAS_HEAD].arrays[0]
    num_classes = int(kernel.shape[-1])
  return matched, include_top, num_classes


def detect_architecture(layers: Sequence[_FileLayer], description: str) -> str:
  """'xception' or 'inception_v3' from the file's layers alone; else a one-line error.

  Xception is the only one with separable convolutions (and names its first layer
  `block1_conv1`); InceptionV3 is the one whose BatchNormalization layers have no scale
  (3 arrays: beta, moving mean, moving variance)."""
  if any(l.kind == "separable" or l.name == "block1_conv1" for l in layers):
    return XCEPTION
  if any(l.kind == "bn" and len(l.arrays) == 3 for l in layers):
    return INCEPTION_V3
  held = [l.name for l in layers]
  raise KerasFileError(
      f"{description} does not match Keras' Xception: missing layer 'block1_conv1' and "
      "no separable convolution; nor Keras' InceptionV3: no BatchNormalization without "
      f"scale. The file holds {len(held)} weighted layers: "
      f"{held[:8]}{' ...' if len(held) > 8 else ''}.")


def from_keras(path: str, *, include_top: Optional[bool] = None,
               **model_overrides: Any) -> tuple[Any, dict]:
  """Reads a Keras Xception or InceptionV3 weights file into a Flax model and variables.

  Args:
    path: a Keras weights file (`.h5` legacy weights or model, `.weights.h5`) or a
      `.keras` archive of `keras.applications.Xception` or `.InceptionV3`; see the
      module docstring.
    include_top: None detects the `predictions` layer; True requires it; False drops
      it (the model then returns the 2048 pooled features).
    **model_overrides: model fields that do not change the parameters (e.g. Xception's
      `depthwise_impl='auto'`, `dtype`); anything else fails the shape check.
  Returns:
    (model, {'params', 'batch_stats'}): an `Xception` or `InceptionV3` (its
    architecture is `factory.architecture_of(model)`) with `model.apply(variables,
    images, train=False)` equal to Keras' logits (pre-softmax) or pooled features.
  Raises:
    FileNotFoundError: no file at `path`.
    KerasFileError: unreadable file, neither network, or one that does not match the
      network (names the first mismatching layer).
  """
  layers, _ = read_keras_file(path)
  return _convert(layers, repr(os.fspath(path)), include_top, model_overrides)


def _convert(layers: list[_FileLayer], description: str, include_top: Optional[bool],
             model_overrides: Mapping[str, Any]) -> tuple[Any, dict]:
  """Recognises the network of `layers` and converts them (used by the CLI)."""
  xla_cpu.warn_if_float64(model_overrides.get("dtype"))
  if detect_architecture(layers, description) == INCEPTION_V3:
    return keras_inception_v3.convert(layers, description, include_top, model_overrides)
  return _convert_xception(_name_unnamed_xception_layers(layers), description,
                           include_top, model_overrides)


def _convert_xception(layers: list[_FileLayer], description: str,
                      include_top: Optional[bool],
                      model_overrides: Mapping[str, Any]) -> tuple[Xception, dict]:
  matched, include_top, num_classes = _match(layers, include_top, description)
  model = factory.create_model(dict(num_classes=num_classes, include_top=include_top),
                               **model_overrides)
  abstract = jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((1, 299, 299, 3), jnp.float32),
                         train=False))
  variables: dict = {"params": {}, "batch_stats": {}}
  for spec in keras_layer_specs(include_top):
    layer = matched[spec.keras_name]
    for index, (leaf, array) in enumerate(zip(_flax_leaves(spec.kind), layer.arrays)):
      collection, *rest = leaf
      full_path = (collection,) + spec.flax_path + tuple(rest)
      target = _target(abstract, full_path, model, spec.keras_name)
      expected = _keras_shape(spec.kind, index, target.shape)
      if array.shape != expected:
        raise KerasFileError(
            f"{description} does not match Keras' Xception: layer {spec.keras_name!r} "
            f"(file layer {layer.source!r}) weight {_KIND_WEIGHTS[spec.kind][index]} has "
            f"shape {array.shape}, expected {expected} "
            f"(Flax {'/'.join(full_path)}).")
      if spec.kind == "separable" and index == 0:
        array = np.transpose(array, (0, 1, 3, 2))
      _set(variables, full_path, jnp.asarray(array, dtype=target.dtype))
  _check_filled(abstract, variables)
  return model, variables
