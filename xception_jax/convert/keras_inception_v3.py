"""Keras `keras.applications.InceptionV3` weights -> Flax `InceptionV3` variables.

Called by `keras.from_keras` when the file is recognised as Inception V3 (its
BatchNormalization layers have no scale); the file reading is keras_file.py's, so every
format it accepts works here: legacy HDF5 weights (Keras 2 `save_weights`, the layout
of the published `inception_v3_weights_tf_dim_ordering_tf_kernels(_notop).h5`), a
legacy whole-model `.h5` (Keras 3 `model.save('x.h5')`), Keras 3 `.weights.h5` and
`.keras`. What it shares with keras.py's Xception matching is keras_common.py's: this
module never imports keras.py (keras.py imports it).

Keras names none of InceptionV3's 94 convolutions and batch normalizations: they are
`conv2d`, `conv2d_1`, ... and `batch_normalization`, `batch_normalization_1`, ...
numbered in the order `conv2d_bn` creates them, which is `models/inception_v3.py`'s
`KERAS_ORDER` (the i-th created Conv2D and BatchNormalization belong to
KERAS_ORDER[i]). The numbers start wherever the Keras session's counter stood (1 in
Keras 2 files, 0 in a fresh Keras 3 session, 94 for a second model), so the layers
are ordered by their number, never by their position in the file: `model.layers`
(the order of a legacy file's `layer_names` and of a Keras 3 file's groups) sorts the
graph by depth and is not the creation order. A Keras 3 file written without layer
names (older Keras 3) is read by Keras' own rule, the k-th Conv2D / BatchNormalization
in `model.layers` order, whose creation numbers `KERAS3_LAYERS_ORDER` lists.

Weights: Conv2D kernel (kh, kw, in, out) -> `conv/kernel` (same layout, no bias);
BatchNormalization beta / moving_mean / moving_variance -> params `bn/bias`,
batch_stats `bn/mean` / `bn/var` (no gamma: Keras' `scale=False`); Dense
`predictions` kernel (2048, N) and bias -> `head`. Every array is checked against the
Flax model's shapes (`jax.eval_shape`, no initialisation) before anything is returned.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp

from xception_jax.convert.keras_common import KERAS_HEAD, _check_filled, _set, _target
from xception_jax.convert.keras_file import KerasFileError, _FileLayer
from xception_jax.models import factory
from xception_jax.models.inception_v3 import KERAS_ORDER, MIN_IMAGE_SIZE, InceptionV3

ARCHITECTURE = "inception_v3"
NUM_CONV_BN = len(KERAS_ORDER)  # 94
# Creation number (index into KERAS_ORDER) of the k-th Conv2D (and the k-th
# BatchNormalization) in Keras' `model.layers` order; read from Keras 3.15.1's
# keras.applications.InceptionV3 and checked against it by
# tests/test_convert_inception_v3.py.
KERAS3_LAYERS_ORDER = (
    0, 1, 2, 3, 4, 8, 6, 9, 5, 7, 10, 11, 15, 13, 16, 12, 14, 17, 18, 22, 20, 23, 19, 21,
    24, 25, 27, 28, 26, 29, 34, 35, 31, 36, 32, 37, 30, 33, 38, 39, 44, 45, 41, 46, 42, 47,
    40, 43, 48, 49, 54, 55, 51, 56, 52, 57, 50, 53, 58, 59, 64, 65, 61, 66, 62, 67, 60, 63,
    68, 69, 72, 73, 70, 74, 71, 75, 80, 77, 81, 78, 79, 82, 83, 76, 84, 89, 86, 90, 87, 88,
    91, 92, 85, 93)
_KERAS_CLASS = {"conv": "Conv2D", "bn": "BatchNormalization"}
_WEIGHTS = {"conv": ("kernel",), "bn": ("beta", "moving_mean", "moving_variance"),
            "dense": ("kernel", "bias")}
_LEAVES = {"conv": (("params", "conv", "kernel"),),
           "bn": (("params", "bn", "bias"), ("batch_stats", "bn", "mean"),
                  ("batch_stats", "bn", "var")),
           "dense": (("params", "kernel"), ("params", "bias"))}


def _number(name: str) -> int:
  """conv2d -> 0, conv2d_12 -> 12 (Keras' counter of auto-named layers)."""
  suffix = re.fullmatch(r".*?(?:_(\d+))?", name).group(1)
  return int(suffix or 0)


def _in_creation_order(layers: list[_FileLayer], kind: str,
                       description: str) -> list[_FileLayer]:
  """The file's layers of `kind` sorted into Keras' creation order (see the docstring)."""
  if len(layers) != NUM_CONV_BN:
    raise KerasFileError(
        f"{description} does not match Keras' InceptionV3: it holds {len(layers)} "
        f"{_KERAS_CLASS[kind]} layers, InceptionV3 has {NUM_CONV_BN} "
        f"(first: {[l.name for l in layers[:4]]}).")
  if all(l.named for l in layers):
    order = sorted(layers, key=lambda l: _number(l.name))
    numbers = [_number(l.name) for l in order]
    if numbers != list(range(numbers[0], numbers[0] + NUM_CONV_BN)):
      raise KerasFileError(
          f"{description}: InceptionV3's {_KERAS_CLASS[kind]} layers must be Keras' "
          "auto-named ones numbered consecutively in creation order (conv2d, conv2d_1, "
          f"...); got numbers {numbers[:6]} ... {numbers[-3:]}.")
    return order
  by_position = {l.position: l for l in layers}
  if sorted(by_position) != list(range(NUM_CONV_BN)):
    raise KerasFileError(
        f"{description}: its unnamed {_KERAS_CLASS[kind]} groups are not numbered 0..."
        f"{NUM_CONV_BN - 1} (got {sorted(by_position)[:6]} ...).")
  order: list[Optional[_FileLayer]] = [None] * NUM_CONV_BN
  for k, created in enumerate(KERAS3_LAYERS_ORDER):
    order[created] = by_position[k]
  return order  # type: ignore[return-value]


def _split(layers: list[_FileLayer], include_top: Optional[bool],
           description: str) -> tuple[list[_FileLayer], list[_FileLayer],
                                      Optional[_FileLayer]]:
  convs, norms, heads, other = [], [], [], []
  for layer in layers:
    if layer.kind == "conv":
      convs.append(layer)
    elif layer.kind == "bn":
      norms.append(layer)
    elif layer.kind == "dense" and (layer.name == KERAS_HEAD or not layer.named):
      heads.append(layer)
    else:
      other.append(layer)
  if other or len(heads) > 1:
    extra = [l.name for l in other + heads[1:]]
    raise KerasFileError(
        f"{description} does not match Keras' InceptionV3: unexpected weighted layer(s) "
        f"{extra[:8]} (InceptionV3 has {NUM_CONV_BN} Conv2D, {NUM_CONV_BN} "
        f"BatchNormalization and the Dense {KERAS_HEAD!r}).")
  head = heads[0] if heads else None
  if include_top and head is None:
    raise KerasFileError(
        f"include_top=True, but {description} has no {KERAS_HEAD!r} layer (a 'notop' "
        "file); convert it with include_top=False (or None to detect).")
  if include_top is False:
    head = None
  return (_in_creation_order(convs, "conv", description),
          _in_creation_order(norms, "bn", description), head)


def convert(layers: list[_FileLayer], description: str, include_top: Optional[bool],
            model_overrides: Mapping[str, Any]) -> tuple[InceptionV3, dict]:
  """The file's layers -> (InceptionV3, {'params', 'batch_stats'}), shapes checked."""
  convs, norms, head = _split(layers, include_top, description)
  num_classes = int(head.arrays[0].shape[-1]) if head is not None else 1000
  model = factory.create_model(dict(architecture=ARCHITECTURE, num_classes=num_classes,
                                    include_top=head is not None), **model_overrides)
  size = MIN_IMAGE_SIZE
  abstract = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, size, size, 3), jnp.float32), train=False))
  entries = [(("head",), "dense", head)] if head is not None else []
  entries = [(tuple(path.split("/")), kind, layer)
             for path, conv, norm in zip(KERAS_ORDER, convs, norms)
             for kind, layer in (("conv", conv), ("bn", norm))] + entries
  variables: dict = {"params": {}, "batch_stats": {}}
  for module_path, kind, layer in entries:
    if len(layer.arrays) != len(_WEIGHTS[kind]):
      raise KerasFileError(
          f"{description} does not match Keras' InceptionV3: layer {layer.name!r} (file "
          f"layer {layer.source!r}, Flax {'/'.join(module_path)}) holds "
          f"{len(layer.arrays)} arrays of shapes {[a.shape for a in layer.arrays]}, "
          f"expected {_WEIGHTS[kind]}.")
    for leaf, weight, array in zip(_LEAVES[kind], _WEIGHTS[kind], layer.arrays):
      collection, *rest = leaf
      full_path = (collection,) + module_path + tuple(rest)
      target = _target(abstract, full_path, model, layer.name)
      expected = target.shape
      if array.shape != expected:
        raise KerasFileError(
            f"{description} does not match Keras' InceptionV3: layer {layer.name!r} "
            f"(file layer {layer.source!r}) weight {weight} has shape {array.shape}, "
            f"expected {expected} (Flax {'/'.join(full_path)}).")
      _set(variables, full_path, jnp.asarray(array, dtype=target.dtype))
  _check_filled(abstract, variables)
  return model, variables


__all__ = ["ARCHITECTURE", "KERAS3_LAYERS_ORDER", "NUM_CONV_BN", "convert"]
