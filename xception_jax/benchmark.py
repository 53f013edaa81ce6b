"""The benchmark command: images/s, compile time, memory and MFU of the trainer's steps.

  python -m xception_jax.benchmark                                    # CPU target (below)
  python -m xception_jax.benchmark --depthwise_impl=shift,feature_group --image_size=299
  python -m xception_jax.benchmark --config=configs/imagenet.py --batch_size=128 \
      --image_size=299 --dtype=bfloat16                               # on an accelerator
  python -m xception_jax.benchmark --config=configs/demo.py:relu --mode=train
  python -m xception_jax.benchmark --architecture=xception65 --width_multiplier=0.5

What is measured is what users run: the model is built by the architecture registry
(models/factory.py) from `config.model`, the training step is `steps.train_step` with the
config's optimiser, schedule and loss (optim.py, losses.py), the evaluation step is
`steps.eval_step` (`segmentation_steps.eval_step` for segmentation), both jitted with
the trainer's shardings over a mesh of `config.num_devices` devices and run on a
synthetic batch (no input pipeline). Without `--config`, the config is
configs/imagenet.py (the paper's recipe: SGD, momentum, weight decay, dropout 0.5,
1000 classes) at batch 8, 150x150, float32: the CPU target of the project.
`--config.FIELD=VALUE` overrides any field of a given config, as main.py takes them;
the plain flags below override the config.

Per depthwise implementation (`--depthwise_impl`, names from the registry
`models.depthwise.DEPTHWISE_IMPLEMENTATIONS` at run time, plus 'auto') and mode, the
table gives:
- images/s: batch / the median time of `--steps` timed steps, each run to completion,
  after `--warmup` untimed steps;
- compile: seconds to lower and compile the step (ahead of time);
- GFLOP/image: XLA's cost analysis of the compiled step (the program that runs; a
  multiply-add counts 2; per device, times devices, over the batch). A training step
  counts the forward, backward and optimiser; the shift-and-multiply depthwise form
  counts its elementwise products, so the figure can differ between implementations;
- TFLOP/s achieved (FLOP/image x images/s) and MFU = achieved / peak. The peak is
  `--peak_tflops` x devices if given; otherwise from PEAK_TFLOPS for known
  accelerators (NVIDIA's datasheets, dense tensor-core rates), or on CPU an
  ESTIMATE: cores x clock x FP32 FLOP/cycle from the CPU's vector flags (printed);
- memory: XLA's memory analysis of the compiled step (arguments + outputs + temporaries
  - aliased), and the measured peak: the device's `peak_bytes_in_use` on GPU/TPU
  (cumulative over the run), or the process's peak RSS on CPU (everything the process
  holds, TensorFlow and both steps included).

Benchmarks print numbers; no test asserts a speed (docs/PERFORMANCE.md records runs).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import resource
import statistics
import sys
import threading
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from xception_jax import logs, optim, partitioning, segmentation_steps, steps
from xception_jax.models import depthwise, factory

MODES = ("train", "eval", "both")
DEFAULT_CONFIG = "configs/imagenet.py"
# Without --config: configs/imagenet.py at the CPU target of issue 19.
DEFAULT_OVERRIDES = dict(batch_size=8, image_size=150, dtype="float32")
DTYPES = ("float32", "bfloat16", "float16")
NUM_TRAIN_EXAMPLES = 1_281_167  # the schedule's length for 'poly' (ImageNet's train split)

# Dense peak TFLOP/s per device: (device_kind substring, {compute dtype: peak}), first
# match wins. NVIDIA H100 SXM / H200 datasheets: BF16/FP16 tensor 989.4 (dense; 1979 is
# with sparsity), TF32 tensor 494.7, FP32 66.9. H100 PCIe: 756.5 / 378 / 51.2.
# A100: 312 / 156 / 19.5. TPU: bf16 peaks of Google's Cloud TPU pages (v4 275, v5e 197,
# v5p 459, v6e 918). 'float32' on an NVIDIA GPU means XLA's default precision, which
# uses TF32 tensor cores for float32 convolutions and dots (Ampere and later); with
# `jax_default_matmul_precision='highest'` the FP32 column applies ('float32_highest').
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


class BenchmarkError(ValueError):
  """A bad option: printed as one line, exit status 2."""


# -- options -----------------------------------------------------------------------------
def define_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  fv = dict(flag_values=flag_values)
  config_flags.DEFINE_config_file(
      "config", None, "A config file in configs/ (FILE[:variant]), as main.py takes it; "
      f"default {DEFAULT_CONFIG} at batch 8, 150x150, float32.", lock_config=False, **fv)
  flags.DEFINE_string("architecture", None, "Model architecture (models/factory.py), "
                      "e.g. xception, xception65, inception_v3; default the config's.", **fv)
  flags.DEFINE_float("width_multiplier", None, "Model width; default the config's.", **fv)
  flags.DEFINE_integer("num_middle_blocks", None, "Xception middle-flow modules.", **fv)
  flags.DEFINE_integer("num_classes", None, "Classes; default the config's.", **fv)
  flags.DEFINE_integer("batch_size", None, "Global batch; default the config's.", **fv)
  flags.DEFINE_integer("image_size", None, "Input side; default the config's.", **fv)
  flags.DEFINE_integer("num_devices", None, "Devices of the mesh (-1: all); default the "
                       "config's num_devices.", **fv)
  flags.DEFINE_string("dtype", None, f"Compute dtype {DTYPES}; default the config's.", **fv)
  flags.DEFINE_list("depthwise_impl", None, "Depthwise implementations, one row each "
                    "(models/depthwise.py's registry, or 'auto'); default the config's.", **fv)
  flags.DEFINE_string("mode", "both", f"One of {MODES}.", **fv)
  flags.DEFINE_integer("steps", 10, "Timed steps (the median is reported).", **fv)
  flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.", **fv)
  flags.DEFINE_float("peak_tflops", None, "Peak TFLOP/s per device for MFU; default "
                     "the known accelerator's, or an estimate on CPU.", **fv)
  flags.DEFINE_bool("debug", False, "Show the traceback of an option error.", **fv)


@dataclasses.dataclass(frozen=True)
class Options:
  """What to measure; `config` already carries every model/batch override."""
  config: ml_collections.ConfigDict
  depthwise_impls: tuple[str | None, ...]   # None: the architecture has no such field
  modes: tuple[str, ...]
  steps: int
  warmup: int
  peak_tflops: float | None = None


def default_config() -> ml_collections.ConfigDict:
  from configs import imagenet  # pylint: disable=import-outside-toplevel
  config = imagenet.get_config()
  config.batch_size = DEFAULT_OVERRIDES["batch_size"]
  config.image_size = DEFAULT_OVERRIDES["image_size"]
  config.model.dtype = DEFAULT_OVERRIDES["dtype"]
  return config


def implementations() -> tuple[str, ...]:
  """The depthwise implementations registered now, and 'auto'."""
  return tuple(depthwise.DEPTHWISE_IMPLEMENTATIONS) + ("auto",)


def _switch_architecture(config: ml_collections.ConfigDict, name: str) -> None:
  if name not in factory.architectures():
    raise BenchmarkError(f"--architecture={name!r} is not registered; valid: "
                         f"{list(factory.architectures())}.")
  if name == config.model.get("architecture", factory.DEFAULT_ARCHITECTURE):
    return
  from configs import base  # pylint: disable=import-outside-toplevel
  if name in base.ALIGNED_ARCHITECTURES:
    base.apply_model_variants(config, name)
    return
  if name == factory.DEFAULT_ARCHITECTURE:
    model = base.model_config()
  else:  # the module's own defaults, keeping the fields both have
    model = ml_collections.ConfigDict({"architecture": name})
  valid = factory.model_fields(name)
  for field, value in config.model.items():
    if field in valid and field != "architecture":
      model[field] = value
  config.model = model


def options_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> Options:
  """Checks the options (one-line BenchmarkError naming the flag) and applies them."""
  fv = flag_values
  config = fv.config if fv.config is not None else default_config()
  config = ml_collections.ConfigDict(config.to_dict())  # a private, unlocked copy
  if fv.mode not in MODES:
    raise BenchmarkError(f"--mode must be one of {MODES}; got {fv.mode!r}.")
  if fv.steps < 1:
    raise BenchmarkError(f"--steps must be at least 1; got {fv.steps}.")
  if fv.warmup < 0:
    raise BenchmarkError(f"--warmup must be 0 or more; got {fv.warmup}.")
  if fv.peak_tflops is not None and fv.peak_tflops <= 0:
    raise BenchmarkError(f"--peak_tflops must be positive; got {fv.peak_tflops}.")
  for name in ("batch_size", "image_size", "num_classes", "num_middle_blocks", "num_devices"):
    if fv[name].value is not None and fv[name].value < 1 and not (
        name == "num_devices" and fv[name].value == -1):
      raise BenchmarkError(f"--{name} must be positive; got {fv[name].value}.")
  if fv.width_multiplier is not None and fv.width_multiplier <= 0:
    raise BenchmarkError(f"--width_multiplier must be positive; got {fv.width_multiplier}.")
  if fv.dtype is not None and fv.dtype not in DTYPES:
    raise BenchmarkError(f"--dtype must be one of {DTYPES}; got {fv.dtype!r}.")

  if fv.architecture is not None:
    _switch_architecture(config, fv.architecture)
  architecture = config.model.get("architecture") or factory.DEFAULT_ARCHITECTURE
  valid_fields = factory.model_fields(architecture)
  for name in ("width_multiplier", "num_middle_blocks", "dtype"):
    value = fv[name].value
    if value is None:
      continue
    if name not in valid_fields:
      raise BenchmarkError(f"--{name}: architecture {architecture!r} has no field {name!r}; "
                           f"its fields: {list(valid_fields)}.")
    config.model[name] = value
  for name in ("batch_size", "image_size", "num_classes", "num_devices"):
    if fv[name].value is not None:
      config[name] = fv[name].value
  if not config.get("num_classes"):
    embedded = config.get("embedded")
    if config.get("dataset") == "embedded_shapes" and embedded:
      config.num_classes = int(embedded.num_classes)
    else:
      raise BenchmarkError("the config has no num_classes (the dataset's own count): "
                           "give --num_classes.")

  if "depthwise_impl" in valid_fields:
    impls = tuple(fv.depthwise_impl or (config.model.get("depthwise_impl", "feature_group"),))
    known = implementations()
    for impl in impls:
      if impl not in known:
        raise BenchmarkError(f"--depthwise_impl: unknown implementation {impl!r}; "
                             f"valid: {list(known)}.")
  elif fv.depthwise_impl:
    raise BenchmarkError(f"--depthwise_impl: architecture {architecture!r} has no "
                         "depthwise convolutions to choose.")
  else:
    impls = (None,)

  num_devices = _num_devices(config)
  if config.batch_size % num_devices:
    raise BenchmarkError(f"--batch_size={config.batch_size} must be divisible by the "
                         f"{num_devices} devices of the mesh (or set --config.num_devices).")
  modes = ("train", "eval") if fv.mode == "both" else (fv.mode,)
  return Options(config=config, depthwise_impls=impls, modes=modes, steps=fv.steps,
                 warmup=fv.warmup, peak_tflops=fv.peak_tflops)


def _num_devices(config: ml_collections.ConfigDict) -> int:
  n = config.get("num_devices", -1)
  if n in (-1, None):
    return jax.device_count()
  if not 1 <= n <= jax.device_count():
    raise BenchmarkError(f"config.num_devices={n}, but {jax.device_count()} devices exist.")
  return n


# -- peak FLOP/s -------------------------------------------------------------------------
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
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
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


# -- measuring ---------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
  """One row of the table."""
  depthwise_impl: str | None
  mode: str
  batch_size: int
  step_seconds: list[float]
  compile_seconds: float
  flops_per_image: float | None
  xla_memory_bytes: int | None
  peak_memory_bytes: int | None

  @property
  def images_per_second(self) -> float:
    return self.batch_size / statistics.median(self.step_seconds)


def flops_per_image(compiled: Any, batch_size: int, num_devices: int) -> float | None:
  """XLA's cost analysis of a compiled program (one device's share of an SPMD program)
  times the devices, over the global batch."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
    analysis = analysis[0] if analysis else None
  if not analysis or "flops" not in analysis:
    return None
  return float(analysis["flops"]) * num_devices / batch_size


def xla_memory_bytes(compiled: Any) -> int | None:
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
             + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def peak_memory() -> tuple[int | None, str]:
  """(bytes, what they are): device peak on accelerators, process peak RSS on CPU."""
  stats = jax.devices()[0].memory_stats() if jax.devices()[0].platform != "cpu" else None
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use (cumulative)"
  rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
  return int(rss_kib) * 1024, "process peak RSS (whole process, cumulative)"


class _Progress:
  """A line while something slow runs, and one more every `every` seconds."""

  def __init__(self, what: str, out=sys.stderr, every: float = 15.0):
    self.what, self.out, self.every = what, out, every
    self._done = threading.Event()

  def __enter__(self):
    self.start = time.perf_counter()
    print(f"compiling {self.what} ...", file=self.out, flush=True)
    self._thread = threading.Thread(target=self._tick, daemon=True)
    self._thread.start()
    return self

  def _tick(self):
    while not self._done.wait(self.every):
      print(f"  ... still compiling {self.what} ({time.perf_counter() - self.start:.0f} s)",
            file=self.out, flush=True)

  def __exit__(self, *exc):
    self._done.set()
    self.seconds = time.perf_counter() - self.start
    if exc[0] is None:
      print(f"compiled {self.what} in {self.seconds:.1f} s", file=self.out, flush=True)


def synthetic_batch(config: ml_collections.ConfigDict, task: str, seed: int = 0
                    ) -> dict[str, np.ndarray]:
  """A batch as the input pipeline gives it: images in [-1, 1], labels of the task."""
  rng = np.random.default_rng(seed)
  b, s, c = config.batch_size, config.image_size, config.num_classes
  batch = {"image": rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32),
           "mask": np.ones([b], np.float32)}
  if task == "multi_label":
    batch["label"] = (rng.uniform(size=(b, c)) < 0.1).astype(np.float32)
  elif task == "segmentation":
    batch["label"] = rng.integers(0, c, (b, s, s)).astype(np.int32)
  else:
    batch["label"] = rng.integers(0, c, b).astype(np.int32)
  return batch


class StepRunner:
  """One compiled trainer step (train or eval) with its state and batch, timed on demand.

  Built exactly as train.Trainer builds its steps: model from the factory, optimiser
  and schedule from optim.py, steps.train_step / steps.eval_step, the same shardings."""

  def __init__(self, config: ml_collections.ConfigDict, mode: str,
               depthwise_impl: str | None = None, progress: bool = True):
    overrides = {} if depthwise_impl is None else {"depthwise_impl": depthwise_impl}
    self.mode, self.depthwise_impl = mode, depthwise_impl
    self.batch_size = config.batch_size
    task = config.get("task", "single_label")
    self.model = factory.create_model(config.model, num_classes=config.num_classes,
                                      **overrides)
    total_steps = optim.steps_for(config, NUM_TRAIN_EXAMPLES)
    schedule = optim.learning_rate_schedule(config, total_steps)
    tx = optim.create_optimizer(config, total_steps)
    self.num_devices = _num_devices(config)
    mesh = partitioning.create_mesh(config.get("num_devices", -1))
    data_sharding = partitioning.data_sharding(mesh)
    replicated = partitioning.replicated(mesh)
    init = functools.partial(steps.create_train_state, self.model, tx,
                             image_size=config.image_size)
    abstract = jax.eval_shape(init, jax.random.key(0))
    state_sharding = partitioning.tree_shardings(
        abstract, mesh, partitioning.partition_rules(config.get("shard_head", False)))
    self.state = jax.jit(init, out_shardings=state_sharding)(jax.random.key(0))
    self.batch = jax.device_put(synthetic_batch(config, task), data_sharding)
    if mode == "train":
      self.rng = jax.device_put(jax.random.key(1), replicated)
      step = jax.jit(
          functools.partial(steps.train_step, model=self.model, tx=tx, schedule=schedule,
                            task=task, label_smoothing=config.get("label_smoothing", 0.0),
                            skip_nonfinite=config.get("skip_nonfinite_updates", False)),
          in_shardings=(state_sharding, data_sharding, replicated),
          out_shardings=(state_sharding, replicated), donate_argnums=0)
      args = (self.state, self.batch, self.rng)
    elif task == "segmentation":
      step = jax.jit(
          functools.partial(segmentation_steps.eval_step, model=self.model,
                            num_classes=config.num_classes,
                            scales=tuple(config.get("eval_scales", (1.0,))),
                            flip=config.get("eval_flip", False)),
          in_shardings=(state_sharding, data_sharding), out_shardings=(replicated, replicated))
      args = (self.state, self.batch)
    else:
      step = jax.jit(functools.partial(steps.eval_step, model=self.model, task=task),
                     in_shardings=(state_sharding, data_sharding),
                     out_shardings=(replicated, data_sharding))
      args = (self.state, self.batch)
    what = f"{mode} step (depthwise_impl={depthwise_impl})"
    with _Progress(what, out=sys.stderr if progress else open(os.devnull, "w")) as timer:
      self.compiled = step.lower(*args).compile()
    self.compile_seconds = timer.seconds
    self.flops_per_image = flops_per_image(self.compiled, self.batch_size, self.num_devices)
    self.xla_memory_bytes = xla_memory_bytes(self.compiled)

  def run(self) -> None:
    """One step, to completion."""
    if self.mode == "train":
      self.state, metrics = self.compiled(self.state, self.batch, self.rng)
      jax.block_until_ready((self.state, metrics))
    else:
      jax.block_until_ready(self.compiled(self.state, self.batch))

  def time_steps(self, n: int) -> list[float]:
    """Seconds of each of n steps."""
    seconds = []
    for _ in range(n):
      start = time.perf_counter()
      self.run()
      seconds.append(time.perf_counter() - start)
    return seconds


def measure(config: ml_collections.ConfigDict, mode: str, depthwise_impl: str | None,
            num_steps: int, warmup: int, progress: bool = True) -> Result:
  runner = StepRunner(config, mode, depthwise_impl, progress=progress)
  for _ in range(warmup):
    runner.run()
  seconds = runner.time_steps(num_steps)
  return Result(depthwise_impl=depthwise_impl, mode=mode, batch_size=config.batch_size,
                step_seconds=seconds, compile_seconds=runner.compile_seconds,
                flops_per_image=runner.flops_per_image,
                xla_memory_bytes=runner.xla_memory_bytes, peak_memory_bytes=peak_memory()[0])


# -- the table ---------------------------------------------------------------------------
def _fmt(value: float | None, spec: str) -> str:
  return "n/a" if value is None else format(value, spec)


def format_table(results: Sequence[Result], peak_flops: float | None) -> str:
  header = ("| depthwise_impl | mode | images/s | step ms (median) | compile s | "
            "GFLOP/image | TFLOP/s | MFU | XLA memory MiB | peak memory MiB |")
  lines = [header, "|" + "---|" * 10]
  for r in results:
    achieved = None if r.flops_per_image is None else r.flops_per_image * r.images_per_second
    mfu = None if achieved is None or not peak_flops else achieved / peak_flops
    mib = lambda b: None if b is None else b / 2**20
    lines.append(
        f"| {r.depthwise_impl or '-'} | {r.mode} | {r.images_per_second:.2f} | "
        f"{1000 * statistics.median(r.step_seconds):.1f} | {r.compile_seconds:.1f} | "
        f"{_fmt(None if r.flops_per_image is None else r.flops_per_image / 1e9, '.4f')} | "
        f"{_fmt(None if achieved is None else achieved / 1e12, '.4f')} | "
        f"{_fmt(None if mfu is None else 100 * mfu, '.2f')}% | "
        f"{_fmt(mib(r.xla_memory_bytes), '.0f')} | {_fmt(mib(r.peak_memory_bytes), '.0f')} |")
  return "\n".join(lines)


def describe(config: ml_collections.ConfigDict) -> str:
  model = config.model
  fields = ", ".join(f"{k}={model[k]}" for k in ("architecture", "width_multiplier",
                                                   "num_middle_blocks", "dtype")
                     if k in model)
  return (f"model: {fields}, num_classes={config.num_classes}; task "
          f"{config.get('task', 'single_label')}, optimizer {config.get('optimizer')}; "
          f"batch {config.batch_size}, image {config.image_size}x{config.image_size}")


def environment() -> str:
  device = jax.devices()[0]
  return (f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} x "
          f"{device.device_kind}; python {sys.version.split()[0]}")


def run(options: Options, out=sys.stdout, progress: bool = True) -> list[Result]:
  """Measures every (implementation, mode) and prints the table."""
  config = options.config
  dtype = config.model.get("dtype", "float32")
  peak, peak_how = device_peak(dtype, _num_devices(config), options.peak_tflops)
  print(environment(), file=out)
  print(describe(config), file=out)
  print(f"timing: median of {options.steps} steps after {options.warmup} warm-up steps",
        file=out, flush=True)
  results = []
  for impl in options.depthwise_impls:
    for mode in options.modes:
      results.append(measure(config, mode, impl, options.steps, options.warmup, progress))
  print(format_table(results, peak), file=out)
  print(f"peak FLOP/s for MFU: {peak_how}", file=out)
  print(f"peak memory: {peak_memory()[1]}; XLA memory: arguments + outputs + temporaries "
        "- aliased, of the compiled step", file=out, flush=True)
  return results


def main(argv: Sequence[str], flag_values: flags.FlagValues = flags.FLAGS) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logs.quiet_library_logs()
  try:
    options = options_from_flags(flag_values)
    run(options)
  except (BenchmarkError, ValueError, TypeError) as e:
    if flag_values.debug:
      raise
    message = (str(e).strip().splitlines() or [repr(e)])[0]
    print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  define_flags()
  app.run(main)
