"""Class weights for MAP@K: files and the paper's "how common a class is" rule.

The paper weights each class's AP in FastEval14k's MAP@100 by how common the
class is. Weights are read from one of three simple formats:

* **Plain text** (any extension other than .json/.csv, e.g. ``weights.txt``):
  one weight per line, line ``i`` (counting non-blank, non-comment lines) is
  class ``i``; exactly ``num_classes`` weights. This is what
  `save_class_weights` writes.
* **JSON** (``.json``, or a file whose content starts with ``[`` or ``{``):
  either a list of ``num_classes`` numbers, or an object mapping class ids
  (decimal strings, e.g. ``"17"``) to weights.
* **CSV** (``.csv``, or a plain file whose first data line has a comma):
  rows ``class_id,weight``; an optional header row (a first row whose class id
  is not an integer, e.g. ``class_id,weight``) is skipped.

In all formats blank lines and lines starting with ``#`` are ignored (not in
JSON). In the two mapping forms (JSON object, CSV) a class that is absent gets
weight 0, i.e. it is left out of the evaluation; a class listed twice is an
error. Weights must be finite and >= 0. Every error names the file and the
problem (with the line number where there is one).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

from xception_jax import paths


def _parse_weight(text: str, where: str) -> float:
  try:
    weight = float(text)
  except ValueError:
    raise ValueError(f"{where}: cannot parse weight {text!r} as a number.") from None
  _check_weight(weight, where)
  return weight


def _check_weight(weight: float, where: str) -> None:
  if math.isnan(weight):
    raise ValueError(f"{where}: weight is NaN.")
  if math.isinf(weight):
    raise ValueError(f"{where}: weight is infinite.")
  if weight < 0:
    raise ValueError(f"{where}: weight {weight} is negative; weights must be >= 0.")


def _parse_class_id(text: str, num_classes: int, where: str) -> int:
  try:
    class_id = int(text)
  except ValueError:
    raise ValueError(f"{where}: cannot parse class id {text!r} as an integer.") from None
  if not 0 <= class_id < num_classes:
    raise ValueError(f"{where}: class id {class_id} is out of range [0, {num_classes}).")
  return class_id


def _data_lines(text: str) -> list[tuple[int, str]]:
  """(1-based line number, stripped line) of non-blank, non-comment lines."""
  lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1)]
  return [(number, line) for number, line in lines if line and not line.startswith("#")]


def _from_plain(path: str, text: str, num_classes: int) -> np.ndarray:
  lines = _data_lines(text)
  if len(lines) != num_classes:
    raise ValueError(f"{path}: expected {num_classes} weights (one per line, one per "
                     f"class), found {len(lines)}.")
  return np.array([_parse_weight(line, f"{path}, line {number}") for number, line in lines])


def _from_csv(path: str, text: str, num_classes: int) -> np.ndarray:
  weights = np.zeros(num_classes)
  seen: dict[int, int] = {}
  for position, (number, line) in enumerate(_data_lines(text)):
    where = f"{path}, line {number}"
    fields = [field.strip() for field in line.split(",")]
    if len(fields) != 2:
      raise ValueError(f"{where}: expected 2 comma-separated fields class_id,weight, got "
                       f"{len(fields)}: {line!r}.")
    if position == 0:
      try:
        int(fields[0])
      except ValueError:
        continue  # A header row.
    class_id = _parse_class_id(fields[0], num_classes, where)
    if class_id in seen:
      raise ValueError(f"{where}: class id {class_id} is listed again (first on line "
                       f"{seen[class_id]}).")
    seen[class_id] = number
    weights[class_id] = _parse_weight(fields[1], where)
  return weights


def _json_weight(value: Any, where: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f"{where}: weight must be a number, got {value!r}.")
  _check_weight(float(value), where)
  return float(value)


def _from_json(path: str, text: str, num_classes: int) -> np.ndarray:
  def no_duplicates(pairs):
    seen = set()
    for key, _ in pairs:
      if key in seen:
        raise ValueError(f"{path}: class id {key!r} is listed more than once.")
      seen.add(key)
    return dict(pairs)

  try:
    data = json.loads(text, object_pairs_hook=no_duplicates)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno}: "
                     f"{e.msg}.") from None
  if isinstance(data, list):
    if len(data) != num_classes:
      raise ValueError(f"{path}: expected a list of {num_classes} weights (one per class), "
                       f"found {len(data)}.")
    return np.array([_json_weight(value, f"{path}, class {i}")
                     for i, value in enumerate(data)])
  if isinstance(data, dict):
    weights = np.zeros(num_classes)
    seen: set[int] = set()
    for key, value in data.items():
      where = f"{path}, key {key!r}"
      class_id = _parse_class_id(key, num_classes, where)
      if class_id in seen:
        raise ValueError(f"{where}: class id {class_id} is listed more than once.")
      seen.add(class_id)
      weights[class_id] = _json_weight(value, where)
    return weights
  raise ValueError(f"{path}: JSON must be a list of weights or an object of class id -> "
                   f"weight, got {type(data).__name__}.")


def load_class_weights(path: str | os.PathLike, num_classes: int) -> np.ndarray:
  """Reads ``[num_classes]`` float64 class weights from ``path`` (see module doc)."""
  path = os.fspath(path)
  if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
      or num_classes < 1:
    raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}.")
  text = paths.read_bytes(path).decode("utf-8")
  extension = os.path.splitext(path)[1].lower()
  lines = _data_lines(text)
  if extension == ".json" or text.lstrip().startswith(("[", "{")):
    return _from_json(path, text, num_classes)
  if extension == ".csv" or (lines and "," in lines[0][1]):
    return _from_csv(path, text, num_classes)
  return _from_plain(path, text, num_classes)


def save_class_weights(path: str | os.PathLike, weights: Any) -> None:
  """Writes weights in the plain-text format (one per line, exact round trip)."""
  weights = np.asarray(weights, np.float64)
  if weights.ndim != 1 or weights.size == 0:
    raise ValueError(f"weights must be a non-empty 1-D array, got shape {weights.shape}.")
  for class_id, weight in enumerate(weights):
    _check_weight(float(weight), f"weights[{class_id}]")
  paths.write_text(path, "".join(f"{float(weight)!r}\n" for weight in weights))


def class_weights_from_frequency(labels_or_counts: Any) -> np.ndarray:
  """Weights proportional to how common each class is, summing to 1.

  Args:
    labels_or_counts: ``[N, C]`` 0/1 labels (counted per class) or ``[C]``
      per-class counts (e.g. from the training set, as the paper does with JFT).

  Returns:
    ``[C]`` float64 weights ``count_c / sum(counts)``.
  """
  array = np.asarray(labels_or_counts)
  if array.dtype == bool:
    array = array.astype(np.int64)
  if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype,
                                                                np.complexfloating):
    raise ValueError(f"labels_or_counts must be numeric, got dtype {array.dtype}.")
  if array.ndim == 2:
    if not np.isin(array, (0, 1)).all():
      raise ValueError("labels_or_counts: a 2-D array is read as [N, C] labels, which "
                       "must be 0 or 1.")
    counts = array.sum(axis=0, dtype=np.float64)
  elif array.ndim == 1:
    counts = array.astype(np.float64)
    if not np.isfinite(counts).all() or (counts < 0).any():
      raise ValueError("labels_or_counts: counts must be finite and >= 0.")
  else:
    raise ValueError(f"labels_or_counts must be [N, C] labels or [C] counts, got shape "
                     f"{array.shape}.")
  total = counts.sum()
  if total == 0:
    raise ValueError("labels_or_counts: every class has count 0; no weights to derive.")
  return counts / total
