"""Test-session set-up: 4 simulated CPU devices, so sharded code runs on a real mesh.

Must run before any JAX backend is initialised; single-device tests are unaffected
(computations without shardings run on device 0).
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# Compilation, not execution, is most of the default suite's time on 2 cores (one
# core busy): XLA's backend optimisation level 0 (no LLVM optimisation of the fused
# loops; dots and convolutions still call their libraries) compiles ~30% faster and
# leaves every comparison within its tolerance. The `slow` tests (full-width parity,
# the demos that must learn) keep XLA's default level, the one a user's job runs
# at. XLA reads its flags once, when the first backend is created, which is after
# pytest_configure. A level the user names in $XLA_FLAGS is kept;
# XCEPTION_JAX_TEST_XLA_OPT=default keeps XLA's default level for any selection.
_OPT_FLAG = "--xla_backend_optimization_level"


def pytest_configure(config):
  selects_slow = "slow" in config.getoption("markexpr", "").replace("not slow", "")
  if (selects_slow or os.environ.get("XCEPTION_JAX_TEST_XLA_OPT") == "default"
      or _OPT_FLAG in os.environ.get("XLA_FLAGS", "")):
    return
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_OPT_FLAG}=0".strip()


import jax  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

NUM_CPU_DEVICES = 4
jax.config.update("jax_num_cpu_devices", NUM_CPU_DEVICES)

# Tests build the same small models many times (one trainer per run): a persistent
# compilation cache for the session lets identical programs compile once.
_CACHE = os.path.join(os.environ.get("PYTEST_JAX_CACHE", "/tmp"), "xception_jax_test_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(autouse=True)
def _close_train_streams():
  """Stops the tf.data readers of every train stream a test left open, when it ends.

  train_stream's atexit hook would close them at interpreter exit; streams left
  reading in the background while the rest of the suite ran took 20-50 s each to close
  there (3 of them: ~2-3 min after the last test), where one closed at its own test's
  end takes milliseconds. A closed stream stays usable: its next batch restarts the
  pipeline at the right position (tests/test_input_pipeline_train_stream.py).
  """
  yield
  module = sys.modules.get("input_pipeline.train_stream")
  if module is not None:
    module._close_open_streams()  # pylint: disable=protected-access
