"""Native CPU kernels registered with XLA through `jax.ffi`.

- depthwise_cpu.cc: the depthwise 'SAME' correlation (forward, and the kernel
  gradient per sample) in C++, threaded on XLA's own intra-op thread pool.
- build.py: compiles it (called by setup.py at `pip install`, or by hand:
  `python -m xception_jax.native.build`).
- loader.py: loads the library once and registers its FFI targets; when that fails,
  one warning line says why and how to build it.
- depthwise_ffi.py: `depthwise_conv_native`, the JAX function with a custom VJP,
  registered as `depthwise_impl='native'` (xception_jax/models/depthwise.py, which
  passes in the pure-JAX form for dtypes other than float32), and `check_arguments`,
  the depthwise contract every implementation checks.

This package imports nothing from `xception_jax.models` (tests/test_imports.py).
"""
from __future__ import annotations

from xception_jax.native.depthwise_ffi import check_arguments, depthwise_conv_native
from xception_jax.native.loader import available, deliberately_disabled, unavailable_reason

__all__ = ["available", "check_arguments", "deliberately_disabled", "depthwise_conv_native",
           "unavailable_reason"]
