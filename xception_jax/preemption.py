"""Preemption: a SIGTERM (the scheduler's notice) stops training at an agreed step.

The training loop asks `Preemption.should_stop(step)` once per step (with the number
of steps done) and, when it answers True, saves a checkpoint at that step, waits for it
to be written, logs one line and returns; main.py then exits with status 0. A restart
on the same workdir continues from that step bitwise-exactly (the input pipeline is a
function of the step).

- One process: a handler for SIGTERM (and SIGINT, Ctrl-C) only sets a flag. A second
  SIGINT raises KeyboardInterrupt (the user insists). `interrupted()` lets a long
  evaluation stop between batches.
- Several processes (after `jax.distributed.initialize`): JAX's preemption service
  (its own SIGTERM notifier) agrees on a step for all processes:
  `multihost_utils.reached_preemption_sync_point(step)` is True on every process at
  the same step (one past the largest step any process had reached when the notice
  came). No Python handler is installed then: it would replace JAX's notifier. An
  evaluation in flight runs to its end (every process takes part in it).

Test hook (tests/test_preemption.py): the environment variable XCEPTION_JAX_TEST_FAULT
= "POINT@STEP:SIGNAL" makes the process send itself SIGNAL (SIGTERM, SIGKILL, ...) when
it passes the named point at that step: "train_step" (a step dispatched, its result not
yet read), "eval" (after the first evaluation batch) or "checkpoint_write" (an
asynchronous save started, not yet committed). Unset, `fault_point` does nothing.
"""
from __future__ import annotations

import os
import signal
import threading
from typing import Optional

import jax
from absl import logging
from jax.experimental import multihost_utils

FAULT_ENV = "XCEPTION_JAX_TEST_FAULT"


class Preemption:
  """Use as a context manager around the training loop (installs, then restores, the
  signal handlers)."""

  def __init__(self):
    self.multi_process = jax.process_count() > 1
    self.signal_name: Optional[str] = None
    self._previous = {}

  def __enter__(self) -> "Preemption":
    in_main_thread = threading.current_thread() is threading.main_thread()
    if not self.multi_process and in_main_thread:
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous = {}

  def _handle(self, signum, frame) -> None:
    del frame
    if signum == signal.SIGINT and self.signal_name is not None:
      raise KeyboardInterrupt  # a second Ctrl-C: stop now, no checkpoint
    if self.signal_name is None:
      self.signal_name = signal.Signals(signum).name

  def interrupted(self) -> bool:
    """Whether a single-process run got the notice (evaluation may stop early)."""
    return self.signal_name is not None

  def should_stop(self, step: int) -> bool:
    """Call once per step, with the steps done, on every process."""
    if self.multi_process:
      if multihost_utils.reached_preemption_sync_point(step):
        self.signal_name = self.signal_name or "preemption notice"
        return True
      return False
    return self.signal_name is not None


def fault_point(name: str, step: int) -> None:
  """The test hook described in the module docstring; nothing when the variable is unset."""
  spec = os.environ.get(FAULT_ENV)
  if not spec:
    return
  where, sig = spec.split(":")
  point, at = where.split("@")
  if point == name and int(at) == step:
    logging.warning("Test fault: %s at %s, step %d.", sig, name, step)
    logging.flush()
    os.kill(os.getpid(), getattr(signal, sig))
