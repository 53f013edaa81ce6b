"""A CBLAS library's sgemm for the native product handler (`pointwise_impl='blas'`).

Where the sgemm comes from, in this order:
  1. $XCEPTION_JAX_BLAS: the path of a shared library that exports `cblas_sgemm`
     (MKL's libmkl_rt, OpenBLAS, BLIS...); `0` (or off/false/no) disables the BLAS
     products.
  2. Intel MKL from the `mkl` wheel, which requirements.txt installs on x86-64 Linux:
     the `libmkl_rt.so.*` among that distribution's files.
MKL is switched to its sequential threading layer before its first call (OpenBLAS to
one thread): the handler (gemm_cpu.cc) splits every product over XLA's own intra-op
pool, one single-threaded sgemm per thread, so that no second thread pool competes
with XLA's between the products (docs/performance/cpu.md).

Loaded once per process. When no library is found or loads, `available()` is False,
`unavailable_reason()` says why, and `pointwise_impl='auto'` keeps XLA's products.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import logging
import os

from xception_jax.native import loader

ENV = "XCEPTION_JAX_BLAS"
MKL_THREADING_SEQUENTIAL = 1  # mkl_service.h
INSTALL_HINT = ("install MKL (`pip install -r requirements.txt` does, on x86-64 Linux) or "
                f"set {ENV}=/path/to/a/cblas/library.so")
_SGEMM_SYMBOLS = ("cblas_sgemm", "scipy_cblas_sgemm")  # the second: scipy-openblas wheels


def mkl_library_path() -> str | None:
  """libmkl_rt from the installed `mkl` distribution, or None."""
  try:
    files = importlib.metadata.files("mkl") or ()
  except importlib.metadata.PackageNotFoundError:
    return None
  for file in files:
    if file.name.startswith("libmkl_rt.so"):
      path = os.path.normpath(str(file.locate()))
      if os.path.exists(path):
        return path
  return None


def deliberately_disabled() -> bool:
  """True when XCEPTION_JAX_BLAS=0 (or off/false/no) asks for XLA's products only."""
  return loader.switched_off(ENV)


def _single_threaded(library: ctypes.CDLL) -> None:
  """MKL's sequential layer (before any other MKL call), or OpenBLAS on one thread."""
  if hasattr(library, "MKL_Set_Threading_Layer"):
    library.MKL_Set_Threading_Layer(ctypes.c_int(MKL_THREADING_SEQUENTIAL))
  for name in ("openblas_set_num_threads", "scipy_openblas_set_num_threads"):
    if hasattr(library, name):
      getattr(library, name)(ctypes.c_int(1))


@functools.cache
def _load() -> tuple[str | None, str | None]:
  """(path of the CBLAS library in use, None) or (None, why there is none)."""
  native = loader.library()
  if native is None:
    return None, loader.unavailable_reason()
  if deliberately_disabled():
    return None, f"{ENV}={os.environ[ENV].strip()} is set (BLAS products deliberately unavailable)"
  path = os.environ.get(ENV, "").strip() or mkl_library_path()
  if path is None:
    return None, f"no CBLAS library found: {INSTALL_HINT}"
  try:
    library = ctypes.CDLL(path)
  except OSError as error:
    return None, f"loading {path} failed ({error}); {INSTALL_HINT}"
  sgemm = next((getattr(library, s) for s in _SGEMM_SYMBOLS if hasattr(library, s)), None)
  if sgemm is None:
    return None, f"{path} exports no cblas_sgemm; {INSTALL_HINT}"
  _single_threaded(library)
  native.XceptionJaxSetSgemm(ctypes.cast(sgemm, ctypes.c_void_p))
  _LOADED.append(library)  # keeps the library referenced for the process's life
  logging.getLogger(__name__).info("xception_jax: BLAS products by %s", path)
  return path, None


_LOADED: list[ctypes.CDLL] = []


def available() -> bool:
  """Whether a CBLAS sgemm is loaded and handed to the native product handler."""
  return _load()[0] is not None


def library_path() -> str | None:
  """The CBLAS library in use (None when unavailable)."""
  return _load()[0]


def unavailable_reason() -> str | None:
  """Why the BLAS products are unavailable (None when they are available)."""
  return _load()[1]
