"""Finds the compiled native library, loads it and registers its FFI targets.

The library (`_native_cpu<EXT_SUFFIX>` beside this file: the depthwise kernel and the
BLAS product handler) is built by the install
command (`pip install -r requirements.txt`, whose `-e .` line compiles it; setup.py)
or by hand with `python -m xception_jax.native.build`. Loading is attempted once per
process; when it fails, one warning line says why and how to build it, and the
pure-JAX depthwise implementations are used ('auto' resolves to 'shift' on CPU) and
XLA's own products ('pointwise_impl' 'auto' resolves to 'xla').

XCEPTION_JAX_NATIVE=0 in the environment makes the library deliberately unavailable
(nothing is loaded, nothing is logged, and tests/test_depthwise_native.py skips with
that reason instead of failing).
"""
from __future__ import annotations

import ctypes
import functools
import glob
import importlib.machinery
import logging
import os

import jax

from xception_jax.native.build import LIBRARY_STEM

DISABLE_ENV = "XCEPTION_JAX_NATIVE"
FORWARD_TARGET = "xception_jax_depthwise_fwd"
KERNEL_GRAD_TARGET = "xception_jax_depthwise_dtaps"
GEMM_TARGET = "xception_jax_gemm"
_SYMBOLS = {FORWARD_TARGET: "XceptionJaxDepthwiseForward",
            KERNEL_GRAD_TARGET: "XceptionJaxDepthwiseKernelGrad",
            GEMM_TARGET: "XceptionJaxGemm"}
_HERE = os.path.dirname(os.path.abspath(__file__))
BUILD_HINT = ("build it with `pip install -e .` (or `python -m xception_jax.native.build`) "
              "from the repository root; needs a C++17 compiler (g++)")


def switched_off(variable: str) -> bool:
  """True when the environment variable is 0, false, no or off (any case)."""
  return os.environ.get(variable, "").strip().lower() in ("0", "false", "no", "off")


def deliberately_disabled() -> bool:
  """True when XCEPTION_JAX_NATIVE=0 asks for the pure-JAX path only."""
  return switched_off(DISABLE_ENV)


def library_path() -> str | None:
  """The built library beside this file (this Python's suffix first), or None."""
  for suffix in importlib.machinery.EXTENSION_SUFFIXES:
    path = os.path.join(_HERE, LIBRARY_STEM + suffix)
    if os.path.exists(path):
      return path
  found = sorted(glob.glob(os.path.join(_HERE, LIBRARY_STEM + "*.so")))
  return found[0] if found else None


@functools.cache
def _load() -> tuple[ctypes.CDLL | None, str | None]:
  if deliberately_disabled():
    return None, f"{DISABLE_ENV}=0 is set (native kernels deliberately unavailable)"
  path = library_path()
  if path is None:
    reason = f"the native library is not built in {_HERE}; {BUILD_HINT}"
  else:
    try:
      library = ctypes.cdll.LoadLibrary(path)
      for target, symbol in _SYMBOLS.items():
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, symbol)),
                                    platform="cpu")
      return library, None
    except (OSError, AttributeError) as error:  # stale or foreign build, missing symbol
      reason = f"loading {path} failed ({error}); rebuild: {BUILD_HINT}"
  logging.getLogger(__name__).warning(
      "xception_jax: depthwise_impl 'native' and pointwise_impl 'blas' unavailable ('auto' "
      "uses the pure-JAX 'shift' and XLA's products on CPU): %s", reason)
  return None, reason


def available() -> bool:
  """Whether the native library is loaded and its FFI targets registered."""
  return _load()[0] is not None


def library() -> ctypes.CDLL | None:
  """The loaded native library (None when unavailable): blas.py hands it an sgemm."""
  return _load()[0]


def unavailable_reason() -> str | None:
  """Why 'native' is unavailable (None when it is available)."""
  return _load()[1]
