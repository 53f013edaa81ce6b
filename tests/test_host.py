"""xception_jax/host.py: the CPUs this process may run on (its affinity mask) size the
input pipeline's threads, tf.data's autotuner, the train stream's read-ahead guard and
the CPU peak estimate; config.input_threads overrides them. The mask is monkeypatched:
three CPUs of a larger machine, as under `taskset -c 0,3,5` or SLURM --cpus-per-task=3."""
import os
import types

import input_pipeline
from input_pipeline import defaults, pipeline, sources, train_stream
from xception_jax import hardware, host

BOUND = {0, 3, 5}


def _bound(monkeypatch, cpus=BOUND, machine=64):
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(cpus), raising=False)
  monkeypatch.setattr(os, "cpu_count", lambda: machine)


def test_available_cpus_is_the_affinity_mask_not_the_machine(monkeypatch):
  _bound(monkeypatch)
  assert host.available_cpus() == 3


def test_without_affinity_masks_the_machine_count_is_used(monkeypatch):
  _bound(monkeypatch)
  monkeypatch.delattr(os, "sched_getaffinity")
  assert host.available_cpus() == 64
  monkeypatch.setattr(os, "cpu_count", lambda: None)
  assert host.available_cpus() == 1


def test_input_threads_follow_the_mask_unless_the_config_sets_them(monkeypatch):
  _bound(monkeypatch)
  config = input_pipeline.default_data_config()
  assert config.input_threads is None
  assert defaults.input_threads(config) == 3
  options = pipeline._tf_options(config)  # pylint: disable=protected-access
  assert options.threading.private_threadpool_size == 3
  assert options.autotune.cpu_budget == 3
  config.input_threads = 5
  assert defaults.input_threads(config) == 5
  options = pipeline._tf_options(config)  # pylint: disable=protected-access
  assert (options.threading.private_threadpool_size, options.autotune.cpu_budget) == (5, 5)


def test_read_ahead_guard_counts_the_input_threads(monkeypatch):
  """tf.data reads a chunk per thread ahead: the guard's limit grows with the threads."""
  _bound(monkeypatch)
  def limit(threads):
    config = input_pipeline.default_data_config()
    config.input_threads = threads
    options = pipeline._tf_options(config)  # pylint: disable=protected-access
    stream = types.SimpleNamespace(_options=options, _prefetch=2, _b=4)
    return train_stream.TrainStream._read_ahead_limit(stream)  # pylint: disable=protected-access
  expected = lambda t: (train_stream.MAX_SUBSTITUTE_TRIES
                        + 4 * (2 + 2 + t) * (4 + sources.LOOKUP_CHUNK))
  assert limit(None) == expected(3)
  assert limit(7) == expected(7)


def test_cpu_peak_counts_the_bound_cpus(monkeypatch):
  _bound(monkeypatch)
  peak_bound, how = hardware.cpu_peak()
  assert how.startswith("estimated: 3 cores"), how
  _bound(monkeypatch, cpus=range(6))
  peak_six, _ = hardware.cpu_peak()
  assert abs(peak_six / peak_bound - 2.0) < 1e-9
