"""Reading a run back: its config.json and the scalars of its TensorBoard event files.

The trainer (xception_jax/train.py) writes both into the run's workdir: config.json
when the run starts, and event files with one scalar per tag and step (train_loss,
train_steps_per_sec, eval_map_at_100, eval_top_1, eval_top_5, ...). A resumed run
appends a new event file; a step logged twice keeps its latest value.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
from tensorboard.util import tensor_util

from xception_jax import event_writer, paths


@dataclasses.dataclass
class Run:
  """One training run: where it is, its config, and {tag: {step: value}}."""
  workdir: str
  label: str
  config: dict[str, Any]
  scalars: dict[str, dict[int, float]]

  def series(self, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one tag, sorted by step; empty arrays when never logged."""
    points = sorted(self.scalars.get(tag, {}).items())
    return (np.array([s for s, _ in points], np.int64),
            np.array([v for _, v in points], np.float64))

  def last(self, tag: str) -> float | None:
    """The value at the last step the tag was logged, or None."""
    points = self.scalars.get(tag)
    return points[max(points)] if points else None


def event_files(workdir: str) -> list[str]:
  """The event files under a workdir (recursively; local or gs://), oldest first
  (by modification time, then name: the parts of one remote writer in order)."""
  files = [f for f in paths.walk_files(workdir)
           if paths.basename(f).startswith(event_writer.PREFIX)]
  return sorted(files, key=lambda f: (paths.stat_key(f)[1], f))


def read_scalars(paths: list[str]) -> dict[str, dict[int, float]]:
  """{tag: {step: value}} of every scalar summary (tensor or simple_value) in `paths`."""
  scalars: dict[str, dict[int, float]] = {}
  for path in paths:
    for event in event_writer.read_events(path):
      if not event.HasField("summary"):
        continue
      for value in event.summary.value:
        kind = value.WhichOneof("value")
        if kind == "simple_value":
          number = float(value.simple_value)
        elif kind == "tensor" and not value.tensor.string_val:
          array = tensor_util.make_ndarray(value.tensor)
          if array.size != 1:
            continue
          number = float(array.reshape(()))
        else:
          continue
        scalars.setdefault(value.tag, {})[int(event.step)] = number
  return scalars


def read_run(workdir: str) -> Run:
  """The run in `workdir`; a one-line error when it is not a run's workdir."""
  path = paths.join(workdir, "config.json")
  if not paths.isfile(path):
    raise FileNotFoundError(
        f"{workdir}: no config.json; pass the --workdir of a run of main.py or the study.")
  config = json.loads(paths.read_text(path))
  files = event_files(workdir)
  if not files:
    raise FileNotFoundError(f"{workdir}: no TensorBoard event files (events.out.tfevents.*).")
  label = config.get("experiment") or paths.basename(workdir)
  return Run(workdir=workdir, label=label, config=config, scalars=read_scalars(files))
