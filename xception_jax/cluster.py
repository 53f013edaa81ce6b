"""How a process joins a multi-process job: `jax.distributed.initialize`'s arguments
from main.py's flags and the scheduler's environment (docs/SCALING.md).

- TPU VMs and GCE/GKE: JAX detects everything itself (every local chip is used).
- SLURM (`srun python main.py --distributed ...`): JAX reads SLURM_PROCID, SLURM_NTASKS,
  SLURM_STEP_NODELIST and SLURM_JOB_ID, and by default restricts each process to the
  GPU numbered SLURM_LOCALID: right for one task per GPU, wrong for one task per node
  (4 nodes x 1 task would train on 4 GPUs of 32, silently). `local_device_ids` below
  fixes the layout from what SLURM says:
    one task on this node              -> every GPU the task can see
                                          (CUDA_VISIBLE_DEVICES, else SLURM_GPUS_ON_NODE);
    several tasks, GPUs bound per task -> every GPU the task can see (SLURM set
      (CUDA_VISIBLE_DEVICES lists fewer    CUDA_VISIBLE_DEVICES per task, renumbered
       GPUs than the node has tasks)       from 0 inside the task);
    several tasks sharing the node's GPUs -> JAX's default, the GPU SLURM_LOCALID.
  `--local_device_ids=0,1,2,3` overrides it; `--local_device_ids=slurm` keeps JAX's
  default.
- Anything else: `--coordinator_address=HOST:PORT --num_processes=N --process_id=I`.
"""
from __future__ import annotations

import re
import socket
import time
from typing import Mapping, Optional, Sequence

SLURM_VARIABLES = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                   "SLURM_LOCALID")
AUTO = "auto"
JAX_DEFAULT = "slurm"


class ClusterError(ValueError):
  """A flag or scheduler environment that cannot form the job; one line."""


def under_slurm(environ: Mapping[str, str]) -> bool:
  """Whether this process is a SLURM step's task (what JAX's detection needs)."""
  return all(name in environ for name in SLURM_VARIABLES)


def _expand_counts(spec: str) -> list[int]:
  """SLURM's compressed per-node counts: '2(x3),1' -> [2, 2, 2, 1]."""
  counts = []
  for part in spec.split(","):
    match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
    if not match:
      raise ValueError(spec)
    counts += [int(match.group(1))] * int(match.group(2) or 1)
  return counts


def tasks_on_this_node(environ: Mapping[str, str]) -> Optional[int]:
  """How many tasks of this step run on this process's node (None: SLURM did not say)."""
  for name in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
    if name in environ:
      try:
        counts = _expand_counts(environ[name])
      except ValueError:
        return None
      node = int(environ.get("SLURM_NODEID", 0))
      return counts[node] if node < len(counts) else None
  if "SLURM_NTASKS_PER_NODE" in environ:
    return int(environ["SLURM_NTASKS_PER_NODE"])
  return None


def _visible_gpus(environ: Mapping[str, str]) -> Optional[int]:
  for name in ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"):
    value = environ.get(name, "").strip()
    if value and value not in ("NoDevFiles", "-1"):
      return len([v for v in value.split(",") if v.strip()])
  return None


def parse_device_ids(flag: str) -> Optional[list[int]]:
  """--local_device_ids: 'auto' / 'slurm' (None here) or a list like '0,1,2,3'."""
  if flag in (AUTO, JAX_DEFAULT, "", None):
    return None
  try:
    ids = [int(x) for x in flag.split(",")]
  except ValueError:
    ids = []
  if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
    raise ClusterError(f"--local_device_ids={flag!r}: must be '{AUTO}', '{JAX_DEFAULT}' or "
                       "distinct device numbers like 0,1,2,3.")
  return ids


def local_device_ids(environ: Mapping[str, str], flag: str = AUTO
                     ) -> tuple[Optional[list[int]], str]:
  """The `local_device_ids` for jax.distributed.initialize (None: JAX decides) and a
  sentence saying why, for the log."""
  ids = parse_device_ids(flag)
  if ids is not None:
    return ids, f"--local_device_ids={flag}"
  if flag == JAX_DEFAULT or not under_slurm(environ):
    return None, "JAX's own detection"
  local_tasks = tasks_on_this_node(environ)
  visible = _visible_gpus(environ)
  if local_tasks == 1:
    count = visible if visible is not None else (
        int(environ["SLURM_GPUS_ON_NODE"]) if environ.get("SLURM_GPUS_ON_NODE") else None)
    if count is not None:
      return list(range(count)), (f"SLURM: one task on this node, all {count} visible "
                                  "GPU(s)")
    return None, ("SLURM: one task on this node, but neither CUDA_VISIBLE_DEVICES nor "
                  "SLURM_GPUS_ON_NODE says how many GPUs it has: JAX uses the GPU "
                  "SLURM_LOCALID only; pass --local_device_ids=0,1,...")
  if visible is not None and local_tasks is not None and visible < local_tasks:
    return list(range(visible)), (f"SLURM: {local_tasks} tasks on this node with GPUs "
                                  f"bound per task, all {visible} visible GPU(s)")
  return None, f"SLURM: {local_tasks or 'several'} tasks on this node, GPU SLURM_LOCALID each"


def initialize_arguments(environ: Mapping[str, str], *, coordinator_address: Optional[str],
                         num_processes: Optional[int], process_id: Optional[int],
                         device_ids_flag: str = AUTO, initialization_timeout: int = 300
                         ) -> tuple[dict, str]:
  """Keyword arguments for jax.distributed.initialize, and what they were decided
  from. Raises ClusterError (one line) for flags that cannot form a job; what is None
  JAX detects from the scheduler (and refuses in one line where it finds none)."""
  if num_processes is not None and num_processes < 1:
    raise ClusterError(f"--num_processes={num_processes}: must be >= 1.")
  if process_id is not None and num_processes is not None and not (
      0 <= process_id < num_processes):
    raise ClusterError(f"--process_id={process_id}: must lie in [0, --num_processes="
                       f"{num_processes}).")
  ids, why = local_device_ids(environ, device_ids_flag)
  kwargs = dict(coordinator_address=coordinator_address, num_processes=num_processes,
                process_id=process_id, local_device_ids=ids,
                initialization_timeout=initialization_timeout)
  return kwargs, why


def describe(kwargs: dict, why: str, environ: Mapping[str, str]) -> str:
  where = "SLURM job " + environ["SLURM_JOB_ID"] if under_slurm(environ) else "flags"
  ids: Optional[Sequence[int]] = kwargs.get("local_device_ids")
  return (f"jax.distributed from {where}; local devices: "
          f"{'as JAX decides' if ids is None else ','.join(map(str, ids))} ({why})")


def wait_for_coordinator(address: str, timeout: float, poll: float = 0.5) -> None:
  """Waits until HOST:PORT accepts a TCP connection (process 0 serves the job's
  coordinator there); raises ClusterError after `timeout` seconds. jax.distributed
  aborts the whole process (no Python error) when it cannot reach the coordinator, so
  the other processes check first."""
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise ClusterError(f"--coordinator_address={address!r}: must be HOST:PORT.")
  deadline = time.monotonic() + timeout
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)), timeout=poll):
        return
    except OSError as error:
      if time.monotonic() >= deadline:
        raise ClusterError(
            f"--coordinator_address={address}: nothing answered within {timeout:.0f} s "
            f"({error.strerror or error}); start process 0 first (it serves the "
            "coordinator), check the host and port, or raise --initialization_timeout."
        ) from None
      time.sleep(poll)
