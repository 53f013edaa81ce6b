"""Test-session set-up: 4 simulated CPU devices, so sharded code runs on a real mesh.

Must run before any JAX backend is initialised; single-device tests are unaffected
(computations without shardings run on device 0).
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import jax  # pylint: disable=wrong-import-position

NUM_CPU_DEVICES = 4
jax.config.update("jax_num_cpu_devices", NUM_CPU_DEVICES)

# Tests build the same small models many times (one trainer per run): a persistent
# compilation cache for the session lets identical programs compile once.
_CACHE = os.path.join(os.environ.get("PYTEST_JAX_CACHE", "/tmp"), "xception_jax_test_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
