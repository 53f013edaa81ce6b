"""XLA:CPU options the package sets when it is imported (issue 27, docs/performance/cpu.md).

    --xla_cpu_experimental_ynn_fusion_type=-individual_convolution

takes regular convolutions (Xception's entry 3x3 convolutions, their gradients; any
`lax.conv_general_dilated` that is not a depthwise kernel of ours) out of YNNPACK and
leaves them to XLA:CPU's Eigen convolution. In jaxlib 0.10.2 YNNPACK's convolution
ran the entry flow's 3x3 convolution (32 -> 64 channels at 147x147) at ~37 GFLOP/s
on 2 AVX-512 cores, where the matrix products reach ~250; measured side by side, the
flag made the eval forward at 299 1.2x and the training step at 150 1.15x faster.
The same value on every CPU; it is an XLA:CPU option, so GPU and TPU backends are
unaffected.

Rules:
- Set through $XLA_FLAGS, which XLA reads once, when the first backend is created:
  `apply()` runs when `xception_jax` is imported, which is before any of the
  project's entry points (main.py, python -m xception_jax.benchmark, benchmarks/)
  create one. A process that created a JAX backend before importing xception_jax
  keeps its options.
- A flag already named in $XLA_FLAGS is left as the user set it.
- Only for the jaxlib versions where the flag was measured (KNOWN_JAXLIB): XLA aborts
  on a flag it does not know, so another jaxlib gets nothing until it is re-measured
  and added here.
- XCEPTION_JAX_XLA_CPU_FLAGS=0 sets nothing (XLA's own defaults); so does
  JAX_ENABLE_X64=1 (float64 everywhere; see Float64).

Float64: the flag makes float64 convolutions on CPU very slow (XLA:CPU has no Eigen
convolution for float64; YNNPACK ran them). Measured 2026-12-07 on 2 AVX-512 cores:
the aligned Xception-41's forward on 2 images of 160x160 in float64 (the timm parity
check of tests/test_convert_timm.py) took 113 s with the flag and 0.7 s without. Run
float64 work with XCEPTION_JAX_XLA_CPU_FLAGS=0, or with JAX_ENABLE_X64=1, which sets no
flag either. `warn_if_float64(dtype)` logs one warning when a float64 model is asked
for in a process where the flag is in effect (the converters call it); the float64
parity tests rerun themselves in a child process without it (tests/processes.py).
"""
from __future__ import annotations

import logging
import os
from typing import Any, MutableMapping

DISABLE_ENV = "XCEPTION_JAX_XLA_CPU_FLAGS"
X64_ENV = "JAX_ENABLE_X64"
_OFF = ("0", "false", "no", "off")
DEFAULT_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",)
KNOWN_JAXLIB = ("0.10.2",)


def _jaxlib_version() -> str | None:
  try:
    from jaxlib import version  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return version.__version__


def flags_to_add(environ: MutableMapping[str, str] | None = None,
                 jaxlib_version: str | None = None) -> list[str]:
  """The default flags that `apply` would append to $XLA_FLAGS now."""
  environ = os.environ if environ is None else environ
  if environ.get(DISABLE_ENV, "").strip().lower() in _OFF:
    return []
  if environ.get(X64_ENV, "").strip().lower() not in ("",) + _OFF:
    return []  # float64 everywhere: the flag would make its convolutions ~150x slower
  if (jaxlib_version or _jaxlib_version()) not in KNOWN_JAXLIB:
    return []
  existing = environ.get("XLA_FLAGS", "")
  return [flag for flag in DEFAULT_FLAGS if flag.split("=")[0] not in existing]


def apply(environ: MutableMapping[str, str] | None = None,
          jaxlib_version: str | None = None) -> list[str]:
  """Appends the default XLA:CPU flags to $XLA_FLAGS (see the module's rules);
  returns those added."""
  environ = os.environ if environ is None else environ
  added = flags_to_add(environ, jaxlib_version)
  if added:
    environ["XLA_FLAGS"] = " ".join([environ.get("XLA_FLAGS", "").strip()] + added).strip()
  return added


def in_effect(environ: MutableMapping[str, str] | None = None) -> list[str]:
  """The default flags present in $XLA_FLAGS (set by `apply` or by the user)."""
  existing = (os.environ if environ is None else environ).get("XLA_FLAGS", "")
  return [flag for flag in DEFAULT_FLAGS if flag in existing.split()]


_warned = False


def warn_if_float64(dtype: Any) -> bool:
  """Logs one warning (per process) when `dtype` is float64 and the flags are in
  effect on a CPU backend; returns whether it warned now."""
  global _warned  # pylint: disable=global-statement
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  if _warned or dtype is None or np.dtype(dtype) != np.float64 or not in_effect():
    return False
  if jax.default_backend() != "cpu":
    return False
  _warned = True
  logging.getLogger(__name__).warning(
      "float64 convolutions run ~150x slower on CPU under the XLA flag %s, which "
      "xception_jax adds at import: start the process with %s=0 or %s=1 to leave it "
      "out (or drop it from $XLA_FLAGS if you set it; xception_jax/xla_cpu.py, Float64).",
      " ".join(in_effect()), DISABLE_ENV, X64_ENV)
  return True
