"""Native CPU kernels registered with XLA through `jax.ffi`.

- depthwise_cpu.cc: the depthwise 'SAME' correlation (forward, and the kernel
  gradient per sample) in C++, threaded on XLA's own intra-op thread pool (common.h).
- gemm_cpu.cc: float32 matrix products by a CBLAS sgemm the library is handed at run
  time, one single-threaded call per thread of XLA's pool.
- build.py: compiles both into one library (called by setup.py at `pip install`, or
  by hand: `python -m xception_jax.native.build`).
- loader.py: loads the library once and registers its FFI targets; when that fails,
  one warning line says why and how to build it.
- blas.py: finds a CBLAS library (MKL from its wheel, or $XCEPTION_JAX_BLAS) and hands
  its sgemm to gemm_cpu.cc.
- gemm_ffi.py: `matmul`, the JAX function with a custom VJP, used by
  `pointwise_impl='blas'` (xception_jax/models/pointwise.py).
- depthwise_ffi.py: `depthwise_conv_native`, the JAX function with a custom VJP,
  registered as `depthwise_impl='native'` (xception_jax/models/depthwise.py, which
  passes in the pure-JAX form for dtypes other than float32), and `check_arguments`,
  the depthwise contract every implementation checks.

This package imports nothing from `xception_jax.models` (tests/test_imports.py).
"""
from __future__ import annotations

from xception_jax.native.blas import available as blas_available
from xception_jax.native.blas import unavailable_reason as blas_unavailable_reason
from xception_jax.native.depthwise_ffi import check_arguments, depthwise_conv_native
from xception_jax.native.gemm_ffi import matmul
from xception_jax.native.loader import available, deliberately_disabled, unavailable_reason

__all__ = ["available", "blas_available", "blas_unavailable_reason", "check_arguments",
           "deliberately_disabled", "depthwise_conv_native", "matmul", "unavailable_reason"]
