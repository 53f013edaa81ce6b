"""What the machine can do: peak FLOP/s of a device (known or estimated) and peak memory.

Accelerators: dense peaks from the vendors' datasheets (PEAK_TFLOPS). CPUs have no
such table: the peak is ESTIMATED as cores x clock x FP32 FLOP per cycle, the last from
the vector extensions in /proc/cpuinfo's flags (a fused multiply-add is 2 FLOP per
lane; two FMA units per core assumed where the extension has them), and every figure
says how it was found. `--peak_tflops` of the benchmark command overrides both.
"""
from __future__ import annotations

import resource

import jax

from xception_jax import host

# Dense peak TFLOP/s per device: (device_kind substring, {compute dtype: peak}), first
# match wins. NVIDIA H100 SXM / H200 datasheets: BF16/FP16 tensor 989.4 (dense; 1979 is
# with sparsity), TF32 tensor 494.7, FP32 66.9. H100 PCIe: 756.5 / 378 / 51.2.
# A100: 312 / 156 / 19.5. TPU: bf16 peaks of Google's Cloud TPU pages (v4 275, v5e 197,
# v5p 459, v6e 918). 'float32' on an NVIDIA GPU means XLA's default precision, which
# uses TF32 tensor cores for float32 convolutions and dots on A100/H100
# (jax-ml/jax#18934); with `jax_default_matmul_precision='highest'` the FP32 column
# applies ('float32_highest').
PEAK_TFLOPS = (
    ("H100 PCIe", {"bfloat16": 756.5, "float16": 756.5, "float32": 378.0,
                   "float32_highest": 51.2}),
    ("H100", {"bfloat16": 989.4, "float16": 989.4, "float32": 494.7,
              "float32_highest": 66.9}),
    ("H200", {"bfloat16": 989.4, "float16": 989.4, "float32": 494.7,
              "float32_highest": 66.9}),
    ("A100", {"bfloat16": 312.0, "float16": 312.0, "float32": 156.0,
              "float32_highest": 19.5}),
    ("TPU v4", {"bfloat16": 275.0}),
    ("TPU v5 lite", {"bfloat16": 197.0}),
    ("TPU v5e", {"bfloat16": 197.0}),
    ("TPU v5p", {"bfloat16": 459.0}),
    ("TPU v5", {"bfloat16": 459.0}),
    ("TPU v6", {"bfloat16": 918.0}),
)


def _cpu_flags() -> set[str]:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("flags"):
          return set(line.split(":", 1)[1].split())
  except OSError:
    pass
  return set()


def _cpu_info(key: str) -> str | None:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.split(":")[0].strip() == key:
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return None


def cpu_flops_per_cycle(cpu_flags: set[str], vendor: str | None) -> tuple[int, str]:
  """FP32 FLOP per cycle per core from the vector extensions, and the assumption.

  A fused multiply-add counts 2 FLOP per lane: FLOP/cycle = lanes x 2 x FMA units."""
  if "avx512f" in cpu_flags:
    if vendor == "AuthenticAMD":  # Zen 4 runs 512-bit FMAs on two 256-bit pipes
      return 32, "AVX-512 on AMD (Zen 4: two 256-bit FMA pipes assumed): 8 lanes x 2 x 2"
    return 64, "AVX-512 + FMA (two 512-bit FMA units assumed): 16 lanes x 2 x 2"
  if "avx2" in cpu_flags and "fma" in cpu_flags:
    return 32, "AVX2 + FMA (two 256-bit FMA units assumed, as Haswell+/Zen 2+): 8 lanes x 2 x 2"
  if "avx" in cpu_flags:
    return 16, "AVX without FMA (one 256-bit add and one multiply per cycle assumed)"
  return 8, "SSE (one 128-bit add and one multiply per cycle assumed)"


def cpu_peak() -> tuple[float, str]:
  """An ESTIMATE of the process's CPU FP32 peak FLOP/s: cores x GHz x FLOP/cycle."""
  cores = host.available_cpus()
  mhz = _cpu_info("cpu MHz")
  ghz = float(mhz) / 1000 if mhz else 2.0
  per_cycle, how = cpu_flops_per_cycle(_cpu_flags(), _cpu_info("vendor_id"))
  source = "/proc/cpuinfo 'cpu MHz'" if mhz else "2.0 GHz assumed, no /proc/cpuinfo"
  peak = cores * ghz * 1e9 * per_cycle
  return peak, (f"estimated: {cores} cores x {ghz:.2f} GHz ({source}) x {per_cycle} FP32 "
                f"FLOP/cycle ({how}) = {peak / 1e9:.0f} GFLOP/s")


def device_peak(dtype: str, num_devices: int, given_tflops: float | None = None
                ) -> tuple[float | None, str]:
  """(peak FLOP/s of the mesh or None, how it was found)."""
  device = jax.devices()[0]
  if given_tflops is not None:
    return given_tflops * 1e12 * num_devices, (
        f"--peak_tflops={given_tflops:g} x {num_devices} device(s)")
  if device.platform == "cpu":
    return cpu_peak()
  key = dtype
  if dtype == "float32" and jax.config.jax_default_matmul_precision in ("highest", "float32"):
    key = "float32_highest"
  for substring, table in PEAK_TFLOPS:
    if substring.lower() in device.device_kind.lower() and key in table:
      return table[key] * 1e12 * num_devices, (
          f"{device.device_kind}: {table[key]:g} TFLOP/s dense {key} (datasheet) x "
          f"{num_devices} device(s)")
  return None, f"unknown for {device.device_kind!r} {dtype}: give --peak_tflops"


def peak_memory() -> tuple[int | None, str]:
  """(bytes, what they are): device peak on accelerators, process peak RSS on CPU."""
  stats = jax.devices()[0].memory_stats() if jax.devices()[0].platform != "cpu" else None
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use (cumulative)"
  rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
  return int(rss_kib) * 1024, "process peak RSS (whole process, cumulative)"
