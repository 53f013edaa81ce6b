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
- XCEPTION_JAX_XLA_CPU_FLAGS=0 sets nothing (XLA's own defaults).

Float64: the flag makes float64 convolutions on CPU very slow (XLA:CPU has no Eigen
convolution for float64; YNNPACK ran them). Measured 2026-12-07 on 2 AVX-512 cores:
the aligned Xception-41's forward on 2 images of 160x160 in float64 (the timm parity
check of tests/test_convert_timm.py) took 113 s with the flag and 0.7 s without. Run
float64 work with XCEPTION_JAX_XLA_CPU_FLAGS=0 (the `slow` tests do, tests/conftest.py).
"""
from __future__ import annotations

import os
from typing import MutableMapping

DISABLE_ENV = "XCEPTION_JAX_XLA_CPU_FLAGS"
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
  if environ.get(DISABLE_ENV, "").strip().lower() in ("0", "false", "no", "off"):
    return []
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
