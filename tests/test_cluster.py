"""cluster.py: which GPUs a process takes under SLURM's layouts, and the one-line refusals.

The environments are what SLURM sets for `srun` steps (sbatch --nodes=4 with
--ntasks-per-node=1 or 8, with or without per-task GPU binding). The two-process run
under a simulated SLURM environment is in test_distributed.py.
"""
import socket
import threading

import pytest

from xception_jax import cluster

BASE = {"SLURM_JOB_ID": "4242", "SLURM_STEP_NODELIST": "node[001-004]",
        "SLURM_NTASKS": "4", "SLURM_PROCID": "2", "SLURM_LOCALID": "0", "SLURM_NODEID": "2"}


def test_one_task_per_node_takes_every_gpu_of_the_node():
  env = {**BASE, "SLURM_STEP_TASKS_PER_NODE": "1(x4)", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
  ids, why = cluster.local_device_ids(env)
  assert ids == list(range(8)) and "one task on this node" in why
  # Without CUDA_VISIBLE_DEVICES, SLURM_GPUS_ON_NODE says how many.
  env = {**BASE, "SLURM_STEP_TASKS_PER_NODE": "1(x4)", "SLURM_GPUS_ON_NODE": "4"}
  assert cluster.local_device_ids(env)[0] == [0, 1, 2, 3]
  # Neither: JAX's default, with a sentence saying what to pass.
  ids, why = cluster.local_device_ids({**BASE, "SLURM_NTASKS_PER_NODE": "1"})
  assert ids is None and "--local_device_ids" in why


def test_one_task_per_gpu_keeps_jaxs_slurm_localid():
  env = {**BASE, "SLURM_NTASKS": "32", "SLURM_PROCID": "19", "SLURM_LOCALID": "3",
         "SLURM_STEP_TASKS_PER_NODE": "8(x4)", "CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}
  ids, why = cluster.local_device_ids(env)
  assert ids is None and "SLURM_LOCALID" in why


def test_gpus_bound_per_task_are_renumbered_from_zero():
  """--gpus-per-task=1: SLURM shows each task its own GPU, which CUDA numbers 0; JAX's
  default (device SLURM_LOCALID=3) would ask for a device the task cannot see."""
  env = {**BASE, "SLURM_LOCALID": "3", "SLURM_STEP_TASKS_PER_NODE": "8(x4)",
         "CUDA_VISIBLE_DEVICES": "3"}
  assert cluster.local_device_ids(env)[0] == [0]
  env["CUDA_VISIBLE_DEVICES"] = "6,7"      # --gpus-per-task=2
  assert cluster.local_device_ids(env)[0] == [0, 1]


def test_the_node_index_picks_the_node_s_task_count():
  env = {**BASE, "SLURM_STEP_TASKS_PER_NODE": "2(x2),1,3", "SLURM_NODEID": "2"}
  assert cluster.tasks_on_this_node(env) == 1
  env["SLURM_NODEID"] = "3"
  assert cluster.tasks_on_this_node(env) == 3
  env["SLURM_NODEID"] = "1"
  assert cluster.tasks_on_this_node(env) == 2
  assert cluster.tasks_on_this_node({"SLURM_STEP_TASKS_PER_NODE": "garbled"}) is None


def test_flags_override_and_outside_slurm_jax_decides():
  env = {**BASE, "SLURM_STEP_TASKS_PER_NODE": "1(x4)", "CUDA_VISIBLE_DEVICES": "0,1"}
  assert cluster.local_device_ids(env, "2,3")[0] == [2, 3]
  assert cluster.local_device_ids(env, "slurm")[0] is None
  assert cluster.local_device_ids({"CUDA_VISIBLE_DEVICES": "0,1"})[0] is None
  for bad in ("0,0", "-1", "x", "1,,2"):
    with pytest.raises(cluster.ClusterError, match="--local_device_ids"):
      cluster.local_device_ids(env, bad)


def test_initialize_arguments_refuse_an_impossible_process_id():
  with pytest.raises(cluster.ClusterError, match=r"--process_id=2: must lie in \[0, "):
    cluster.initialize_arguments({}, coordinator_address="h:1", num_processes=2,
                                 process_id=2)
  with pytest.raises(cluster.ClusterError, match="--num_processes=0"):
    cluster.initialize_arguments({}, coordinator_address="h:1", num_processes=0,
                                 process_id=0)
  kwargs, _ = cluster.initialize_arguments(
      {**BASE, "SLURM_NTASKS_PER_NODE": "1", "SLURM_GPUS_ON_NODE": "2"},
      coordinator_address=None, num_processes=None, process_id=None,
      initialization_timeout=30)
  assert kwargs == dict(coordinator_address=None, num_processes=None, process_id=None,
                        local_device_ids=[0, 1], initialization_timeout=30)


def test_wait_for_coordinator_returns_once_it_listens_and_fails_fast_otherwise():
  with socket.socket() as server:
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    # Listening only after a moment: the wait must poll, not fail at the first refusal.
    timer = threading.Timer(0.6, server.listen)
    timer.start()
    cluster.wait_for_coordinator(f"127.0.0.1:{port}", timeout=10, poll=0.1)
    timer.join()
  with pytest.raises(cluster.ClusterError, match=f"127.0.0.1:{port}: nothing answered"):
    cluster.wait_for_coordinator(f"127.0.0.1:{port}", timeout=0.3, poll=0.1)
  with pytest.raises(cluster.ClusterError, match="HOST:PORT"):
    cluster.wait_for_coordinator("nohostport", timeout=1)
