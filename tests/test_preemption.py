"""Faults on a real `python main.py`: SIGTERM (preemption), SIGKILL, a damaged checkpoint.

Each run is a subprocess on a tiny demo config (6 steps, asynchronous checkpoints every
2 steps, evaluation every 3). A fault is placed deterministically with the test hook of
xception_jax/preemption.py (XCEPTION_JAX_TEST_FAULT="POINT@STEP:SIGNAL": the process
signals itself at that point). Every interrupted run is restarted with the same command
and must end with parameters and BatchNorm statistics bitwise equal to those of one
uninterrupted run (shared by all tests). Each process compiles its steps (~15-25 s on
2 cores; the persistent compilation cache of tests/conftest.py is shared), so only one
SIGTERM case is in the default suite, the rest under `-m slow`.
"""
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from xception_jax import checkpointing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6
TINY = {"embedded.num_train": 96, "embedded.num_eval": 40, "embedded.image_size": 72,
        "embedded.num_classes": 8, "image_size": 72, "batch_size": 8,
        "eval_batch_size": 16, "model.num_middle_blocks": 1,
        "num_train_steps": STEPS, "log_every_steps": 1, "eval_every_steps": 3,
        "checkpoint_every_steps": 2, "async_checkpointing": True,
        "progress_every_secs": 3600.0}


def _main(workdir, data_dir, fault=None, timeout=600, extra=()):
  """Runs main.py to its end (or its fault); returns (exit code, log)."""
  env = {k: v for k, v in os.environ.items() if k != "XCEPTION_JAX_TEST_FAULT"}
  cache = os.path.join(os.environ.get("PYTEST_JAX_CACHE", "/tmp"), "xception_jax_test_cache")
  env.update(PYTHONUNBUFFERED="1", JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  if fault:
    env["XCEPTION_JAX_TEST_FAULT"] = fault
  command = [sys.executable, "main.py", "--config=configs/demo.py", f"--workdir={workdir}",
             f"--config.data_dir={data_dir}", *[f"--config.{k}={v}" for k, v in TINY.items()],
             *extra]
  proc = subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)
  return proc.returncode, proc.stdout


def _final_variables(workdir):
  variables, _, step = checkpointing.load_variables(workdir)
  return jax.tree.map(np.asarray, variables), step


def _committed_steps(workdir):
  root = os.path.join(workdir, "checkpoints")
  return sorted(int(n) for n in os.listdir(root) if n.isdigit())


def _assert_bitwise_equal(workdir, reference):
  variables, step = _final_variables(workdir)
  assert step == STEPS
  jax.tree.map(np.testing.assert_array_equal, variables, reference)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
  """The uninterrupted run: its workdir and final variables."""
  workdir = str(tmp_path_factory.mktemp("reference"))
  code, log = _main(workdir, data_dir)
  assert code == 0, log[-5000:]
  variables, step = _final_variables(workdir)
  assert step == STEPS
  return workdir, variables


def _preempt_and_resume(reference, data_dir, workdir, fault, expected_step):
  code, log = _main(workdir, data_dir, fault=fault)
  assert code == 0, log[-5000:]
  assert f"Preempted (SIGTERM): checkpoint at step {expected_step} written" in log, log[-3000:]
  assert _committed_steps(workdir)[-1] == expected_step
  code, log = _main(workdir, data_dir)
  assert code == 0, log[-5000:]
  assert f"Resuming from {os.path.join(workdir, 'checkpoints')} at step {expected_step}" in log
  _assert_bitwise_equal(workdir, reference[1])
  return log


def test_sigterm_during_a_step_saves_there_and_resumes_bitwise(reference, data_dir, tmp_path):
  # SIGTERM arrives while step 3 is in flight: the run finishes that step, skips the
  # evaluation due at step 3 and writes a checkpoint at step 3 (none was due there).
  _preempt_and_resume(reference, data_dir, str(tmp_path / "run"), "train_step@3:SIGTERM", 3)


@pytest.mark.slow
def test_sigterm_during_evaluation(reference, data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  code, log = _main(workdir, data_dir, fault="eval@3:SIGTERM")
  assert code == 0, log[-5000:]
  assert "Evaluation at step 3 interrupted" in log
  assert "Preempted (SIGTERM): checkpoint at step 3 written" in log
  assert _committed_steps(workdir) == [2, 3]
  code, log = _main(workdir, data_dir)
  assert code == 0, log[-5000:]
  _assert_bitwise_equal(workdir, reference[1])


@pytest.mark.slow
def test_sigterm_during_a_checkpoint_write(reference, data_dir, tmp_path):
  # The periodic save at step 4 is in flight (asynchronous) when SIGTERM comes: the
  # run waits for it and exits; the checkpoint at step 4 is the one it leaves.
  _preempt_and_resume(reference, data_dir, str(tmp_path / "run"),
                      "checkpoint_write@4:SIGTERM", 4)


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_leaves_no_partial_checkpoint(reference, data_dir,
                                                                        tmp_path):
  workdir = str(tmp_path / "run")
  code, log = _main(workdir, data_dir, fault="checkpoint_write@4:SIGKILL")
  assert code == -signal.SIGKILL, log[-3000:]
  names = os.listdir(os.path.join(workdir, "checkpoints"))
  assert any(n.startswith("4.") and "tmp" in n for n in names), names  # the write in flight
  assert _committed_steps(workdir) == [2]
  code, log = _main(workdir, data_dir)
  assert code == 0, log[-5000:]
  assert "at step 2." in log
  # The restarted run's manager removed the unfinished write (cleanup_tmp_directories).
  names = os.listdir(os.path.join(workdir, "checkpoints"))
  assert not any("tmp" in n for n in names), names
  _assert_bitwise_equal(workdir, reference[1])


@pytest.mark.slow
def test_truncated_latest_checkpoint_is_moved_aside(reference, data_dir, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(reference[0], workdir)
  step_dir = os.path.join(workdir, "checkpoints", str(STEPS))
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, "variables"))
           for f in fs]
  largest = max(files, key=os.path.getsize)
  truncated_size = os.path.getsize(largest) // 2
  with open(largest, "r+b") as f:
    f.truncate(truncated_size)
  code, log = _main(workdir, data_dir)
  assert code == 0, log[-5000:]
  assert f"Checkpoint {step_dir} cannot be restored" in log, log[-3000:]
  assert "at step 4." in log  # resumed from the previous complete checkpoint
  damaged = os.listdir(os.path.join(workdir, "checkpoints_damaged"))
  assert len(damaged) == 1 and damaged[0].startswith(f"{STEPS}-")
  moved = os.path.join(workdir, "checkpoints_damaged", damaged[0],
                       os.path.relpath(largest, step_dir))
  assert os.path.getsize(moved) == truncated_size  # kept as it was, for inspection
  assert not os.path.exists(largest) or os.path.getsize(largest) > truncated_size
  _assert_bitwise_equal(workdir, reference[1])


def test_another_optimizer_is_refused_before_any_step_and_nothing_moved(reference, data_dir,
                                                                        tmp_path):
  """issue 28: a changed optimizer was taken for damage and the run restarted at 0."""
  workdir = str(tmp_path / "run")
  shutil.copytree(reference[0], workdir)
  before = _committed_steps(workdir)
  code, log = _main(workdir, data_dir, extra=("--config.optimizer=sgd",))
  assert code == 2, log[-3000:]
  assert "holds another training setup's optimizer state" in log.splitlines()[-1]
  assert "--config.init_from=" in log.splitlines()[-1]
  assert "Training from step" not in log
  assert _committed_steps(workdir) == before
  assert not os.path.exists(os.path.join(workdir, "checkpoints_damaged"))
  _assert_bitwise_equal(workdir, reference[1])
