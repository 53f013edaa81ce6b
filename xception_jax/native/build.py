"""Compiles the native CPU kernels (depthwise_cpu.cc, gemm_cpu.cc) into one shared library.

  python -m xception_jax.native.build        # writes _native_cpu<EXT_SUFFIX> here

setup.py calls `compile_library` when pip installs the package (`pip install -r
requirements.txt` holds `-e .`), and this module is the same build by hand. It needs
only the standard library and a C++17 compiler: $CXX, else the first of g++, c++,
clang++ on PATH. The XLA FFI headers are vendored (third_party/README.md), so no jax
is needed to build.

Flags: -O3 -march=native. The library is built on the machine that runs it (pip
compiles it at install), so -march=native gives the widest vectors that machine has
(AVX2 with FMA, or AVX-512) for the channel loops; a compiler that rejects
-march=native gets a second try without it (the compiler's default target, e.g.
x86-64 SSE2). $XCEPTION_JAX_NATIVE_ARCH_FLAGS replaces "-march=native" (e.g.
"-mavx2 -mfma" when the library is built on one machine for others).

The output is a plain shared library, not a Python extension module: XLA calls its
handler symbols; Python loads it with ctypes (loader.py).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = [os.path.join(HERE, name) for name in ("depthwise_cpu.cc", "gemm_cpu.cc")]
INCLUDE_DIR = os.path.join(HERE, "third_party")
LIBRARY_STEM = "_native_cpu"
BASE_FLAGS = ["-std=c++17", "-O3", "-ffp-contract=fast", "-shared", "-fPIC", "-fvisibility=hidden", "-pthread"]
DEFAULT_ARCH_FLAGS = "-march=native"


def default_output() -> str:
  return os.path.join(HERE, LIBRARY_STEM + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))


def find_compiler() -> str | None:
  """$CXX if set, else the first C++ compiler on PATH."""
  if os.environ.get("CXX"):
    return os.environ["CXX"]
  for name in ("g++", "c++", "clang++"):
    path = shutil.which(name)
    if path:
      return path
  return None


def compile_library(output: str | None = None, verbose: bool = True) -> str:
  """Compiles SOURCES into `output`; returns its path.

  Raises RuntimeError with the compiler's message when no compiler is found or
  every attempt fails.
  """
  output = output or default_output()
  compiler = find_compiler()
  if compiler is None:
    raise RuntimeError("no C++ compiler found (set $CXX or install g++)")
  arch = shlex.split(os.environ.get("XCEPTION_JAX_NATIVE_ARCH_FLAGS", DEFAULT_ARCH_FLAGS))
  attempts = [arch, []] if arch else [[]]
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  errors = []
  for arch_flags in attempts:
    command = (shlex.split(compiler) + BASE_FLAGS + arch_flags +
               ["-I", INCLUDE_DIR, "-I", HERE, *SOURCES, "-o", output])
    if verbose:
      print("xception_jax.native: " + " ".join(shlex.quote(a) for a in command))
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode == 0:
      return output
    errors.append(f"{' '.join(command)}\n{result.stderr.strip()[-2000:]}")
  raise RuntimeError("compiling the native CPU kernels failed:\n" + "\n".join(errors))


def main() -> int:
  try:
    path = compile_library(sys.argv[1] if len(sys.argv) > 1 else None)
  except (RuntimeError, OSError) as error:
    print(f"xception_jax.native: {error}", file=sys.stderr)
    return 1
  print(f"xception_jax.native: built {path}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
