"""Reading a Keras weights file into plain arrays: the weighted layers it holds.

Legacy HDF5 (Keras' published `.h5` weights, whole-model `.h5`), Keras 3
`.weights.h5` and `.keras` archives, read with h5py and zipfile only: nothing is
unpickled and neither Keras nor TensorFlow is imported. Which network the layers
make, and how they map to Flax, is keras.py's (Xception) and keras_inception_v3.py's.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import zipfile
from typing import Any, Optional

import h5py
import numpy as np

from xception_jax import paths


class KerasFileError(ValueError):
  """The file is not a readable Keras Xception / InceptionV3 weights file (or does not
  match)."""


# Keras 3 `.weights.h5` groups are keyed by the class name in snake case.
_KERAS3_CLASS_KIND = {"conv2d": "conv", "separable_conv2d": "separable",
                      "batch_normalization": "bn", "dense": "dense"}


@dataclasses.dataclass
class _FileLayer:
  name: str
  arrays: list[np.ndarray]
  position: int              # model order within the file (within its class for Keras 3)
  source: str                # where it is in the file, for messages
  klass: Optional[str] = None  # Keras 3 class key ('conv2d', ...), None for legacy files
  named: bool = True         # False: a Keras 3 file without the `name` attribute (name = key)

  @property
  def kind(self) -> str:
    if self.klass is not None:
      return _KERAS3_CLASS_KIND.get(self.klass, "other")
    ndims = tuple(a.ndim for a in self.arrays)
    return {(4,): "conv", (4, 4): "separable", (1, 1, 1, 1): "bn", (1, 1, 1): "bn",
            (2, 1): "dense"}.get(ndims, "other")


def _decode(value: Any) -> str:
  return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _natural_key(text: str) -> tuple:
  return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def _read_legacy(root: h5py.Group) -> list[_FileLayer]:
  """Keras 2 / legacy HDF5: attrs layer_names and, per layer, weight_names."""
  layers = []
  for position, raw in enumerate(root.attrs["layer_names"]):
    name = _decode(raw)
    if name not in root:
      raise KerasFileError(f"layer {name!r} is listed in layer_names but has no group.")
    group = root[name]
    weight_names = [_decode(w) for w in group.attrs.get("weight_names", [])]
    if not weight_names:
      continue
    try:
      arrays = [np.asarray(group[w]) for w in weight_names]
    except KeyError as e:
      raise KerasFileError(f"layer {name!r}: weight {e} listed but missing.") from None
    layers.append(_FileLayer(name, arrays, position, source=name))
  return layers


def _read_keras3(layers_group: h5py.Group) -> list[_FileLayer]:
  """Keras 3 `.weights.h5`: layers/<class>[_k]/vars/<i>, k counting in model.layers order.

  A layer's name is its `vars` group's `name` attribute; a file written without it
  (older Keras 3) keeps the group key as the name and `named=False`: the architecture's
  matcher then applies Keras' own loading rule (the k-th layer of a class in
  `model.layers` order)."""
  layers = []
  for key in layers_group:
    group = layers_group[key]
    if "vars" not in group or not len(group["vars"]):
      if "layers" in group:
        raise KerasFileError(
            f"layer {key!r} is a nested model; convert a plain keras.applications "
            "Xception or InceptionV3 (or save the nested base model on its own).")
      continue
    klass, k = re.fullmatch(r"(.*?)(?:_(\d+))?", key).groups()
    k = int(k or 0)
    vars_group = group["vars"]
    arrays = [np.asarray(vars_group[str(i)]) for i in range(len(vars_group))
              if str(i) in vars_group]
    name = vars_group.attrs.get("name")
    layers.append(_FileLayer(key if name is None else _decode(name), arrays, k,
                             source=f"layers/{key}", klass=klass, named=name is not None))
  return layers


def _read_h5(handle: h5py.File, description: str) -> tuple[list[_FileLayer], str]:
  if "layer_names" in handle.attrs:
    return _read_legacy(handle), "legacy HDF5 weights"
  if "model_weights" in handle and "layer_names" in handle["model_weights"].attrs:
    return _read_legacy(handle["model_weights"]), "legacy HDF5 model"
  if "layers" in handle and isinstance(handle["layers"], h5py.Group):
    return _read_keras3(handle["layers"]), "Keras 3 weights"
  raise KerasFileError(
      f"{description} is HDF5 but holds no Keras weights (no 'layer_names' attribute, "
      f"no 'model_weights' or 'layers' group; top-level keys: {sorted(handle)[:10]}).")


def read_keras_file(path: str) -> tuple[list[_FileLayer], str]:
  """Reads the weighted layers of a Keras file: (layers, format description)."""
  path = os.fspath(path)
  if not paths.isfile(path):
    raise FileNotFoundError(f"No Keras weights file at {path!r}.")
  try:
    raw = io.BytesIO(paths.read_bytes(path))  # local or gs://
    if zipfile.is_zipfile(raw):
      with zipfile.ZipFile(raw) as archive:
        names = archive.namelist()
        if "model.weights.h5" not in names:
          raise KerasFileError(
              f"{path!r} is a zip archive without model.weights.h5 (holds {names[:10]}); "
              "expected a Keras 3 .keras file saved unsharded.")
        data = archive.read("model.weights.h5")
      with h5py.File(io.BytesIO(data), "r") as handle:
        layers, fmt = _read_h5(handle, f"{path!r}:model.weights.h5")
      return layers, ".keras archive (" + fmt + ")"
    if raw.getvalue()[:8] != b"\x89HDF\r\n\x1a\n":  # HDF5's signature
      raise KerasFileError(
          f"{path!r} is neither an HDF5 file (.h5, .weights.h5) nor a .keras archive.")
    with h5py.File(raw, "r") as handle:
      return _read_h5(handle, repr(path))
  except KerasFileError:
    raise
  except (OSError, KeyError, ValueError, zipfile.BadZipFile, RuntimeError) as e:
    raise KerasFileError(
        f"Cannot read {path!r} as a Keras weights file (truncated or corrupted?): "
        f"{type(e).__name__}: {e}") from e
