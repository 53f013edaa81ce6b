"""Slow: two jax.distributed processes as a cluster starts them, and preemption across them.

Issue 26. Every run is the demo model on a 40-image embedded dataset, 2 CPU devices per
process, 12 steps:
  S  launch/slurm_gpu.sbatch run as SLURM would run it, with tests/fake_slurm/srun
     starting its two tasks here with srun's variables (node list 'localhost'): they
     must form one job (process i of 2 each) and train like one process with 4
     devices (in this process);
  P  two processes started with explicit flags, SIGTERM to one of them or to both at
     step 2: both stop at the same step, one checkpoint is written, both exit 0;
     started again, the pair ends bitwise equal to S (same 2 x 2 layout).
"""
import os
import re
import subprocess

import jax
import numpy as np
import pytest

from configs import demo
import events
import processes
from xception_jax import checkpointing, preemption, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Long enough that the agreed stop step (one past the furthest step any process had
# reached when the notice spread, ~1 s after the signal) falls inside the run on a fast
# machine too: at 5 steps an idle machine ran to the end before the notice arrived.
STEPS = 12
COMPARED = 5  # 2 x 2 against 1 x 4 devices: the first steps, before reduction-order drift
TINY = {"embedded.num_train": 40, "embedded.num_eval": 16, "embedded.image_size": 72,
        "embedded.num_classes": 8, "image_size": 72, "batch_size": 8, "eval_batch_size": 8,
        "model.num_middle_blocks": 1, "log_every_steps": 1, "eval_every_steps": STEPS,
        "checkpoint_every_steps": STEPS, "num_train_steps": STEPS}

pytestmark = pytest.mark.slow


def _check_announced(outputs):
  for i, output in enumerate(outputs):
    assert f"JAX process {i} of 2" in output, output[-3000:]


def _params(workdir):
  variables, _, step = checkpointing.load_variables(workdir)
  return jax.tree.map(np.asarray, variables), step


def _steps_saved(workdir):
  return sorted(int(p) for p in os.listdir(os.path.join(workdir, "checkpoints"))
                if p.isdigit())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def slurm_run(data_dir, tmp_path_factory):
  """launch/slurm_gpu.sbatch itself, its srun replaced by tests/fake_slurm/srun (two
  tasks on this machine with the variables srun sets)."""
  tmp_path = tmp_path_factory.mktemp("slurm")
  workdir = str(tmp_path / "run")
  env = {**os.environ, "PATH": os.path.join(ROOT, "tests", "fake_slurm") + os.pathsep +
         os.environ["PATH"], "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2",
         "JAX_COORDINATOR_PORT": str(processes.free_port()), "FAKE_SRUN_OUTPUT": str(tmp_path / "task"),
         "XLA_FLAGS": processes.xla_flags(2), "PYTHONUNBUFFERED": "1"}
  overrides = [f"--config.{k}={v}" for k, v in TINY.items()]
  result = subprocess.run(
      ["bash", "launch/slurm_gpu.sbatch", "configs/demo.py", workdir,
       f"--config.data_dir={data_dir}", *overrides], cwd=ROOT, env=env, timeout=900,
      capture_output=True, text=True)
  outputs = [(tmp_path / f"task.{i}").read_text() for i in range(2)]
  assert result.returncode == 0, "\n".join(o[-3000:] for o in outputs) + result.stderr
  _check_announced(outputs)
  for output in outputs:
    assert "jax.distributed from SLURM job 4242" in output
    assert f"Training from step 0 to {STEPS}" in output
  return workdir


def test_a_slurm_job_of_two_processes_trains_like_one_process(slurm_run, data_dir, tmp_path):
  config = demo.get_config()
  config.data_dir = data_dir
  config.update_from_flattened_dict(TINY)
  config.num_devices = 4
  single = str(tmp_path / "single")
  train.train_and_evaluate(config, single)
  two, one = events.loss_curve(slurm_run), events.loss_curve(single)
  assert len(two) == len(one) == STEPS and one[-1] != one[0]
  # 2 x 2 against 1 x 4 devices: the same global batches, reduction order aside.
  np.testing.assert_allclose(two[:COMPARED], one[:COMPARED], rtol=2e-4)


@pytest.mark.parametrize("signalled", [(1,), (0, 1)], ids=["one_process", "both"])
def test_sigterm_stops_both_processes_at_one_step_and_resumes_bitwise(
    slurm_run, data_dir, tmp_path, signalled):
  workdir = str(tmp_path / "run")
  fault = {preemption.FAULT_ENV: "train_step@2:SIGTERM"}
  outputs = processes.run_main(tmp_path, workdir, data_dir, TINY, timeout=900,
                               envs=[fault if i in signalled else {} for i in range(2)],
                               name="preempted")
  stops = [re.search(r"Preempted \(.*\): checkpoint at step (\d+)", output)
           for output in outputs]
  assert all(stops), [output[-3000:] for output in outputs]
  stop = int(stops[0].group(1))
  assert int(stops[1].group(1)) == stop and 2 <= stop < STEPS
  assert _steps_saved(workdir) == [stop]

  outputs = processes.run_main(tmp_path, workdir, data_dir, TINY, timeout=900,
                               name="resumed")
  assert all(f"Training from step {stop} to {STEPS}" in output for output in outputs)
  (resumed, step), (uninterrupted, step_s) = _params(workdir), _params(slurm_run)
  assert step == step_s == STEPS
  jax.tree.map(np.testing.assert_array_equal, resumed, uninterrupted)
