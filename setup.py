"""Builds the native CPU kernels (depthwise convolution, BLAS products) when the package
is installed.

`pip install -r requirements.txt` installs this package editable (`-e .`), and an
editable install builds extensions in place: the library lands beside its source,
xception_jax/native/_native_cpu<EXT_SUFFIX>, where the loader looks. The
compilation itself is xception_jax/native/build.py (stdlib only; loaded here by path,
since pip's isolated build environment has no jax to import the package with).

A missing compiler or a failed build never fails the install: one warning says so,
and xception_jax uses its pure-JAX depthwise implementations ('shift' on CPU) and
XLA's own matrix products.
Metadata lives in pyproject.toml.
"""
from __future__ import annotations

import importlib.util
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

_ROOT = os.path.dirname(os.path.abspath(__file__))
_BUILD_PY = os.path.join(_ROOT, "xception_jax", "native", "build.py")


def _native_build_module():
  spec = importlib.util.spec_from_file_location("_xception_jax_native_build", _BUILD_PY)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# The library's name and sources, as build.py compiles them.
_BUILD = _native_build_module()
NATIVE = "xception_jax.native." + _BUILD.LIBRARY_STEM


class BuildNative(build_ext):
  """Compiles the FFI library with build.py instead of distutils' compiler driver."""

  def build_extension(self, ext):
    if ext.name != NATIVE:
      return super().build_extension(ext)
    output = self.get_ext_fullpath(ext.name)
    try:
      _BUILD.compile_library(output)
    except Exception as error:  # pylint: disable=broad-except
      # Never fail the install: the pure-JAX path works everywhere.
      print(f"WARNING: xception_jax: the native CPU kernels were not built ({error}). "
            "depthwise_impl 'auto' will use the pure-JAX 'shift' on CPU and pointwise_impl "
            "'auto' XLA's products. Build them later "
            "with `pip install -e .` or `python -m xception_jax.native.build`.",
            file=sys.stderr)
    return None


setup(
    ext_modules=[Extension(NATIVE, sources=[os.path.relpath(source, _ROOT)
                                            for source in _BUILD.SOURCES],
                           optional=True)],
    cmdclass={"build_ext": BuildNative},
)
