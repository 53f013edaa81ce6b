"""Input pipelines: ImageNet-style single-label and JFT-style multi-label data.

  import input_pipeline
  bundle = input_pipeline.create_datasets(
      config, process_index=jax.process_index(),
      process_count=jax.process_count(), start_step=0)

See pipeline.py for the streams' contract, sources.py for the accepted
datasets, defaults.py for the config fields and docs/DATA.md for an overview.

Importing the package imports no TensorFlow: the configs read their data fields from
defaults.py and segmentation_defaults.py (`from input_pipeline.defaults import ...`),
and a run that reads no data (the benchmark, on an accelerator image without
TensorFlow) must not need it. The TensorFlow side loads on first use of any other name
of the package (`input_pipeline.create_datasets`, `from input_pipeline import
sources`, ...): TensorFlow is kept off the accelerators and its threads modest
(`configure_tensorflow`), and the locally generated tfds builders are registered
("embedded_shapes", "embedded_shapes_segmentation", "voc_segmentation"), as importing
the package did before.
"""
from __future__ import annotations

import importlib
from typing import Any

# Names of the package's API and the module each comes from.
_TF_FREE = {
    "default_data_config": "input_pipeline.defaults",
    "segmentation_data_config": "input_pipeline.segmentation_defaults",
}
_WITH_TF = {
    "configure_tensorflow": "input_pipeline.pipeline",
    "create_datasets": "input_pipeline.pipeline",
    "DataBundle": "input_pipeline.pipeline",
    "create_segmentation_datasets": "input_pipeline.segmentation_pipeline",
    "DatasetNotPreparedError": "input_pipeline.sources",
}
_state = {"loaded": False, "loading": False}


def load() -> None:
  """Loads the TensorFlow side (idempotent): configures TensorFlow, then imports the
  modules that register the tfds builders."""
  if _state["loaded"] or _state["loading"]:
    return
  _state["loading"] = True
  try:
    from input_pipeline import pipeline  # pylint: disable=import-outside-toplevel
    pipeline.configure_tensorflow()
    # Register "embedded_shapes", "embedded_shapes_segmentation", "voc_segmentation".
    from input_pipeline import embedded_shapes, segmentation_pipeline  # pylint: disable=import-outside-toplevel,unused-import
    _state["loaded"] = True
  finally:
    _state["loading"] = False


def __getattr__(name: str) -> Any:
  """The package's API and submodules, imported on first use (PEP 562)."""
  if name in _TF_FREE:
    return getattr(importlib.import_module(_TF_FREE[name]), name)
  # While loading (a submodule's `from input_pipeline import x`), or for dunder names,
  # the import system imports submodules itself.
  if name.startswith("__") or _state["loading"]:
    raise AttributeError(f"module 'input_pipeline' has no attribute {name!r}")
  load()
  if name in _WITH_TF:
    return getattr(importlib.import_module(_WITH_TF[name]), name)
  try:
    return importlib.import_module(f"input_pipeline.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"input_pipeline.{name}":
      raise
    raise AttributeError(f"module 'input_pipeline' has no attribute {name!r}") from None


__all__ = [
    "create_datasets", "DataBundle", "default_data_config",
    "DatasetNotPreparedError", "embedded_shapes", "configure_tensorflow",
    "create_segmentation_datasets", "segmentation_data_config", "load",
]
