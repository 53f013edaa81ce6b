"""What both Keras converters share (keras.py's Xception, keras_inception_v3.py's
InceptionV3): the head's Keras name, the Flax variable tree's get/set, and the checks
that place one Keras array on its Flax variable and that every variable was filled.

Both converters import this module and neither imports the other's matching code, so
the package's imports form a tree: keras.py (which recognises the network and hands an
InceptionV3 file on) -> keras_inception_v3.py -> keras_common.py / keras_file.py.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax

from xception_jax.convert.keras_file import KerasFileError
from xception_jax.models import factory

KERAS_HEAD = "predictions"


def _get(tree: Mapping, path: Sequence[str]) -> Any:
  for p in path:
    tree = tree[p]
  return tree


def _set(tree: dict, path: Sequence[str], value: Any) -> None:
  for p in path[:-1]:
    tree = tree.setdefault(p, {})
  tree[path[-1]] = value


def _target(abstract: Any, full_path: Sequence[str], model: Any, keras_name: str) -> Any:
  """The abstract Flax variable at `full_path`; a one-line error when the model has none."""
  try:
    return _get(abstract, full_path)
  except KeyError:
    raise KerasFileError(
        f"Flax model {factory.model_to_fields(model)} has no variable "
        f"{'/'.join(full_path)} for Keras layer {keras_name!r}.") from None


def _check_filled(abstract: Any, variables: Any) -> None:
  """Every Flax variable of the model's structure must have been filled, no more, no less."""
  expected_paths = {jax.tree_util.keystr(k) for k, _ in
                    jax.tree_util.tree_leaves_with_path(abstract)}
  filled_paths = {jax.tree_util.keystr(k) for k, _ in
                  jax.tree_util.tree_leaves_with_path(variables)}
  if expected_paths != filled_paths:
    raise KerasFileError(
        f"conversion left Flax variables unfilled {sorted(expected_paths - filled_paths)[:5]}"
        f" or filled unknown ones {sorted(filled_paths - expected_paths)[:5]}.")
