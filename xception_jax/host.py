"""The host resources this process may use, found in one place.

`available_cpus()` is what the input pipeline's thread pools and tf.data's autotuner
size themselves by, and what the CPU peak estimate (hardware.py) counts: the CPUs in
the process's affinity mask (`os.sched_getaffinity(0)`: set by `taskset`, `numactl`,
SLURM's `--cpus-per-task` / `--cpu-bind`, a container's cpuset), not the machine's
`os.cpu_count()`, so that 8 processes bound to 8 CPU sets of one node do not each start
a thread per core of the node. Platforms without affinity masks (macOS) fall back to
`os.cpu_count()`. No JAX, TensorFlow or model imports: the input pipeline uses it.
"""
from __future__ import annotations

import os


def available_cpus() -> int:
  """The CPUs this process may run on (>= 1)."""
  if hasattr(os, "sched_getaffinity"):
    return max(1, len(os.sched_getaffinity(0)))
  return max(1, os.cpu_count() or 1)
