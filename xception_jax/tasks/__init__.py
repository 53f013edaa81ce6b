"""Tasks: what is optimised and how it is evaluated, one module per task.

  from xception_jax import tasks
  task = tasks.get(config.task)          # single_label, multi_label, segmentation, ...
  data = task.create_datasets(config, process_index=0, process_count=1, start_step=0)
  step_objective = task.objective(config)

The protocol a task module follows is in base.py; docs/TASKS.md shows how to add one.
A new task registers itself with `tasks.register(module_or_object)`; the built-in ones
are imported on first use (so that reading the registry imports no TensorFlow).
"""
from __future__ import annotations

import importlib
from typing import Any

from xception_jax.tasks.base import REQUIRED, Evaluator, NoEvaluator, Task

_BUILT_IN = {
    "single_label": "xception_jax.tasks.single_label",
    "multi_label": "xception_jax.tasks.multi_label",
    "segmentation": "xception_jax.tasks.segmentation",
}
_REGISTERED: dict[str, Any] = {}


class UnknownTaskError(ValueError):
  """config.task names no registered task."""


def names() -> tuple[str, ...]:
  """Every task config.task may name: the built-in ones, then registered ones."""
  return tuple(_BUILT_IN) + tuple(n for n in _REGISTERED if n not in _BUILT_IN)


def register(task: Any) -> Any:
  """Makes `task` (a module or object with the attributes of base.Task) available as
  config.task = task.NAME; returns it. Registering a NAME again replaces it."""
  missing = [name for name in REQUIRED if not hasattr(task, name)]
  if missing:
    raise TypeError(f"{task!r} is not a task: it lacks {', '.join(missing)} "
                    "(xception_jax/tasks/base.py lists what a task defines).")
  _REGISTERED[task.NAME] = task
  return task


def unregister(name: str) -> None:
  """Removes a task registered with `register` (built-in tasks stay)."""
  _REGISTERED.pop(name, None)


def get(name: str) -> Task:
  """The task module config.task names; an unknown name raises UnknownTaskError."""
  if isinstance(name, str) and name in _REGISTERED:
    return _REGISTERED[name]
  if isinstance(name, str) and name in _BUILT_IN:
    return importlib.import_module(_BUILT_IN[name])
  raise UnknownTaskError(f"config.task = {name!r}: not a known task; known tasks: "
                         f"{', '.join(names())} (a new one registers itself with "
                         "xception_jax.tasks.register, docs/TASKS.md).")


__all__ = ["Evaluator", "NoEvaluator", "Task", "UnknownTaskError", "get", "names",
           "register", "unregister"]
