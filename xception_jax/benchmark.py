"""The benchmark command: images/s, compile time, memory and MFU of the trainer's steps.

  python -m xception_jax.benchmark                                    # CPU target (below)
  python -m xception_jax.benchmark --depthwise_impl=shift,feature_group --image_size=299
  python -m xception_jax.benchmark --config=configs/imagenet.py --batch_size=128 \
      --image_size=299 --dtype=bfloat16                               # on an accelerator
  python -m xception_jax.benchmark --config=configs/demo.py:relu --mode=train
  python -m xception_jax.benchmark --architecture=xception65 --width_multiplier=0.5
  python -m xception_jax.benchmark --mode=train --remat=none,block,block_save_convs

What is measured is what users run: the model is built by the architecture registry
(models/factory.py) from `config.model`, the training step is `steps.train_step` with the
config's optimiser and schedule (optim.py) and the task's objective, the evaluation step
is the task's (`config.task`, xception_jax/tasks/), both jitted with the trainer's
shardings over a mesh of `config.num_devices` devices and run on the task's synthetic
batch (no input pipeline). Without `--config`, the config is
configs/imagenet.py (the paper's recipe: SGD, momentum, weight decay, dropout 0.5,
1000 classes) at batch 8, 150x150, float32: the CPU target of the project.
`--config.FIELD=VALUE` overrides any field of a given config, as main.py takes them;
the plain flags below override the config.

Per depthwise implementation (`--depthwise_impl`, names from the registry
`models.depthwise.DEPTHWISE_IMPLEMENTATIONS` at run time, plus 'auto'), remat policy
(`--remat`, models/remat.py's REMAT_POLICIES; the row's last column) and mode, the
table gives:
- images/s: batch / the median time of `--steps` timed steps, each run to completion,
  after `--warmup` untimed steps;
- compile: seconds to lower and compile the step (ahead of time);
- GFLOP/image: XLA's cost analysis of the compiled step (the program that runs; a
  multiply-add counts 2; per device, times devices, over the batch). A training step
  counts the forward, backward and optimiser; the shift-and-multiply depthwise form
  counts its elementwise products, so the figure can differ between implementations.
  XLA's cost analysis does not count custom calls: when the step runs the native
  depthwise kernel or the BLAS products (`pointwise_impl`, also when 'auto' picks them,
  as on CPU), the figure is that of the same step with XLA's own operations
  (`feature_group`, `xla`; step_timing.xla_only_twin), compiled for the count only.
  On GPU the convolutions become cuDNN custom calls that XLA's cost analysis does not
  count (an H200 run gave 2.06 GFLOP/image for a training step at 299 that does about
  50: docs/PERFORMANCE.md), so there the GFLOP and MFU columns understate; a warning
  line says so;
- TFLOP/s achieved (FLOP/image x images/s) and MFU = achieved / peak. The peak is
  `--peak_tflops` x devices if given; otherwise hardware.PEAK_TFLOPS for known
  accelerators (NVIDIA's datasheets, dense tensor-core rates), or on CPU an
  ESTIMATE: cores x clock x FP32 FLOP/cycle from the CPU's vector flags (printed);
- memory: XLA's memory analysis of the compiled step (arguments + outputs + temporaries
  - aliased), and the measured peak: the device's `peak_bytes_in_use` on GPU/TPU
  (cumulative over the run), or the process's peak RSS on CPU (everything the process
  holds, both steps included; the benchmark imports no TensorFlow).

It needs only jax, flax, optax, numpy, ml_collections and absl beside the project: no
TensorFlow, tfds or clu, which accelerator images often lack (docs/PERFORMANCE.md, "On
a bare accelerator image"; tests/test_benchmark_bare.py).

Benchmarks print numbers; no test asserts a speed (docs/PERFORMANCE.md records runs).
"""
from __future__ import annotations

import dataclasses
import statistics
import sys
from typing import Sequence

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from xception_jax import hardware, logs, step_timing
from xception_jax.models import depthwise, factory, pointwise, remat
from xception_jax.native import blas
from xception_jax.step_timing import Result

MODES = ("train", "eval", "both")
DEFAULT_CONFIG = "configs/imagenet.py"
# Without --config: configs/imagenet.py at the CPU target of issue 19.
DEFAULT_OVERRIDES = dict(batch_size=8, image_size=150, dtype="float32")
DTYPES = ("float32", "bfloat16", "float16")

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
  flags.DEFINE_list("remat", None, "Remat policies (models/remat.py), one row each; "
                    "default the config's model.remat.", **fv)
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
  remats: tuple[str | None, ...] = (None,)  # None: the config's (or no such field)


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

  remats = _remats(fv.remat, architecture, valid_fields)
  num_devices = step_timing.mesh_devices(config)
  if config.batch_size % num_devices:
    raise BenchmarkError(f"--batch_size={config.batch_size} must be divisible by the "
                         f"{num_devices} devices of the mesh (or set --config.num_devices).")
  modes = ("train", "eval") if fv.mode == "both" else (fv.mode,)
  return Options(config=config, depthwise_impls=impls, modes=modes, steps=fv.steps,
                 warmup=fv.warmup, peak_tflops=fv.peak_tflops, remats=remats)


def _remats(names: Sequence[str] | None, architecture: str,
            valid_fields: Sequence[str]) -> tuple[str | None, ...]:
  """The --remat policies, checked (None: the config's own, one row)."""
  if not names:
    return (None,)
  if "remat" not in valid_fields:
    raise BenchmarkError(f"--remat: architecture {architecture!r} has no field 'remat'.")
  for name in names:
    if name not in remat.REMAT_POLICIES:
      raise BenchmarkError(f"--remat: unknown policy {name!r}; valid: "
                           f"{list(remat.REMAT_POLICIES)}.")
  return tuple(names)


# -- the table ---------------------------------------------------------------------------
def _fmt(value: float | None, spec: str) -> str:
  return "n/a" if value is None else format(value, spec)


def format_table(results: Sequence[Result], peak_flops: float | None) -> str:
  header = ("| depthwise_impl | mode | images/s | step ms (median) | compile s | "
            "GFLOP/image | TFLOP/s | MFU | XLA memory MiB | peak memory MiB | remat |")
  lines = [header, "|" + "---|" * 11]
  for r in results:
    achieved = None if r.flops_per_image is None else r.flops_per_image * r.images_per_second
    mfu = None if achieved is None or not peak_flops else achieved / peak_flops
    mib = lambda b: None if b is None else b / 2**20
    lines.append(
        f"| {r.depthwise_impl or '-'} | {r.mode} | {r.images_per_second:.2f} | "
        f"{1000 * statistics.median(r.step_seconds):.1f} | {r.compile_seconds:.1f} | "
        f"{_fmt(None if r.flops_per_image is None else r.flops_per_image / 1e9, '.4g')} | "
        f"{_fmt(None if achieved is None else achieved / 1e12, '.4g')} | "
        f"{_fmt(None if mfu is None else 100 * mfu, '.2f')}% | "
        f"{_fmt(mib(r.xla_memory_bytes), '.0f')} | {_fmt(mib(r.peak_memory_bytes), '.0f')} | "
        f"{r.remat or '-'} |")
  return "\n".join(lines)


def describe(config: ml_collections.ConfigDict) -> str:
  model = config.model
  fields = ", ".join(f"{k}={model[k]}" for k in ("architecture", "width_multiplier",
                                                   "num_middle_blocks", "dtype")
                     if k in model)
  return (f"model: {fields}, num_classes={config.num_classes}; task "
          f"{config.get('task', 'single_label')}, optimizer {config.get('optimizer')}; "
          f"batch {config.batch_size}, image {config.image_size}x{config.image_size}"
          f"{products(model)}")


def products(model: ml_collections.ConfigDict) -> str:
  """'; pointwise products: ...' for a model with `pointwise_impl`: the engine 'auto'
  picks and, for 'blas', the CBLAS library in use."""
  if "pointwise_impl" not in model:
    return ""
  impl = pointwise.resolve_pointwise_impl(model.pointwise_impl)
  where = f" ({blas.library_path()})" if impl == "blas" else ""
  return f"; pointwise products: {impl}{where}"


def environment() -> str:
  device = jax.devices()[0]
  return (f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} x "
          f"{device.device_kind}; python {sys.version.split()[0]}")


def run(options: Options, out=sys.stdout, progress: bool = True) -> list[Result]:
  """Measures every (implementation, mode) and prints the table."""
  config = options.config
  dtype = config.model.get("dtype", "float32")
  peak, peak_how = hardware.device_peak(dtype, step_timing.mesh_devices(config),
                                        options.peak_tflops)
  print(environment(), file=out)
  print(describe(config), file=out)
  print(f"timing: median of {options.steps} steps after {options.warmup} warm-up steps",
        file=out, flush=True)
  results = []
  for impl in options.depthwise_impls:
    for policy in options.remats:
      for mode in options.modes:
        results.append(step_timing.measure(config, mode, impl, options.steps,
                                           options.warmup, progress, remat=policy))
  print(format_table(results, peak), file=out)
  print(f"peak FLOP/s for MFU: {peak_how}", file=out)
  if jax.default_backend() == "gpu":
    print("warning: on GPU, XLA's cost analysis leaves out convolutions run as cuDNN "
          "custom calls: GFLOP/image and MFU understate (a training step at 299 is "
          "about 3 x 16.8 GFLOP per image).", file=out)
  print(f"peak memory: {hardware.peak_memory()[1]}; XLA memory: arguments + outputs + "
        "temporaries - aliased, of the compiled step", file=out, flush=True)
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
