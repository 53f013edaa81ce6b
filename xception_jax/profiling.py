"""A profiler trace of a few training steps, for TensorBoard's profile plugin.

`config.profile_steps = (first, last)` traces the train steps that take the state from
step `first` to step `last` (the steps `jax.profiler.StepTraceAnnotation` numbers
first .. last - 1): the trace starts before step `first` runs and stops once step
`last` is reached and its work has finished on the devices. `jax.profiler.start_trace`
writes it to WORKDIR/plugins/profile/<date_time>/<host>.xplane.pb (with a
trace.json.gz), which `tensorboard --logdir=WORKDIR` shows in its Profile tab (the
`tensorboard-plugin-profile` package). Process 0 traces alone, unless
`config.profile_all_processes`: then process i > 0 writes under WORKDIR/process_<i>
(a run of its own in TensorBoard; processes on one host would otherwise write the same
file). A run resumed inside the window traces from where it resumed; a run that ends or
is preempted inside it stops the trace there.
"""
from __future__ import annotations

import os
from typing import Any

import jax
from absl import logging


class StepProfiler:
  """Called at the top of each loop iteration with the current step and state; a
  context manager, so that a trace never outlives the loop."""

  def __init__(self, profile_steps: Any, workdir: str, process_index: int = 0,
               all_processes: bool = False):
    self.window = tuple(int(s) for s in profile_steps) if profile_steps else None
    self.enabled = self.window is not None and (process_index == 0 or all_processes)
    self.log_dir = (workdir if process_index == 0
                    else os.path.join(workdir, f"process_{process_index}"))
    self.active = False
    self.done = False

  @classmethod
  def from_config(cls, config, workdir: str) -> "StepProfiler":
    return cls(config.get("profile_steps"), workdir, jax.process_index(),
               bool(config.get("profile_all_processes", False)))

  def __call__(self, step: int, state: Any) -> None:
    if not self.enabled or self.done:
      return
    first, last = self.window
    if self.active and step >= last:
      jax.block_until_ready(state)  # the traced steps' device work, inside the trace
      self._stop()
    elif not self.active and first <= step < last:
      logging.info("Profiling train steps %d to %d into %s/plugins/profile.", step, last,
                   self.log_dir)
      jax.profiler.start_trace(self.log_dir)
      self.active = True

  def _stop(self) -> None:
    jax.profiler.stop_trace()
    self.active, self.done = False, True
    logging.info("Profile written to %s/plugins/profile.", self.log_dir)

  def __enter__(self) -> "StepProfiler":
    return self

  def __exit__(self, *exc) -> None:
    if self.active:
      self._stop()
