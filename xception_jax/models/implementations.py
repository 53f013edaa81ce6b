"""Choosing a layer's implementation: 'auto' (the fast one for the backend) or a
name, validated (depthwise_impl, bn_impl, max_pool_impl)."""

from __future__ import annotations

from typing import Callable, Sequence


def resolve(field: str, name: str, choices: Sequence[str], auto: Callable[[], str]) -> str:
  """`auto()` for 'auto'; `name` when it is one of `choices`; else a one-line
  ValueError naming the field and the accepted values."""
  if name == "auto":
    return auto()
  if name not in choices:
    raise ValueError(f"{field} must be one of {list(choices) + ['auto']}; got {name!r}.")
  return name
