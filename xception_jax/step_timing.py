"""Timing one of the trainer's compiled steps: the benchmark command's measuring part.

`StepRunner` builds a step exactly as train.Trainer does (model from the architecture
registry, optimiser and schedule from optim.py, `steps.train_step` with the task's
objective, or the task's eval step (xception_jax/tasks/), the trainer's shardings over a mesh of
`config.num_devices`), compiles it ahead of time on a synthetic batch, and runs and
times it on demand, so that several runners (depthwise implementations, timm) can be
interleaved. FLOPs come from XLA's cost analysis of the compiled program, memory from
its memory analysis.
"""
from __future__ import annotations

import dataclasses
import functools
import statistics
import sys
import threading
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from xception_jax import hardware, optim, partitioning, steps, tasks
from xception_jax.models import depthwise, factory, pointwise

NUM_TRAIN_EXAMPLES = 1_281_167  # the schedule's length for 'poly' (ImageNet's train split)


def mesh_devices(config: ml_collections.ConfigDict) -> int:
  """The devices of the mesh `config.num_devices` asks for (-1: all)."""
  n = config.get("num_devices", -1)
  if n in (-1, None):
    return jax.device_count()
  if not 1 <= n <= jax.device_count():
    raise ValueError(f"config.num_devices={n}, but {jax.device_count()} devices exist.")
  return n

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
  remat: str | None = None   # the model's remat policy (models/remat.py); None: no field

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


# Implementations that run as XLA custom calls, whose FLOPs XLA's cost analysis leaves
# out, and the XLA-only implementation of the same function.
_CUSTOM_CALL_IMPLS = {"depthwise_impl": ("native", "feature_group"),
                      "pointwise_impl": ("blas", "xla")}


def xla_only_twin(model: Any) -> Any | None:
  """`model` with its custom-call implementations ('native' depthwise, 'blas'
  products, also when 'auto' picks them) replaced by XLA's, for counting FLOPs; None
  when it has none."""
  resolvers = {"depthwise_impl": depthwise.resolve_depthwise_impl,
               "pointwise_impl": pointwise.resolve_pointwise_impl}
  replace = {}
  for field, (custom, xla) in _CUSTOM_CALL_IMPLS.items():
    if hasattr(model, field) and resolvers[field](getattr(model, field)) == custom:
      replace[field] = xla
  return model.clone(**replace) if replace else None


def xla_memory_bytes(compiled: Any) -> int | None:
  stats = compiled.memory_analysis()
  if stats is None:
    return None
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
             + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


class _Progress:
  """A line while something slow runs, and one more every `every` seconds."""

  def __init__(self, what: str, out=sys.stderr, every: float = 15.0, quiet: bool = False):
    self.what, self.out, self.every, self.quiet = what, out, every, quiet
    self._done = threading.Event()

  def __enter__(self):
    self.start = time.perf_counter()
    if self.quiet:
      return self
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
    if exc[0] is None and not self.quiet:
      print(f"compiled {self.what} in {self.seconds:.1f} s", file=self.out, flush=True)


def synthetic_batch(config: ml_collections.ConfigDict, seed: int = 0
                    ) -> dict[str, np.ndarray]:
  """A batch as the input pipeline gives it, of the config's task (its
  `synthetic_batch`: images in [-1, 1], the task's labels)."""
  return tasks.get(config.get("task", "single_label")).synthetic_batch(
      config, np.random.default_rng(seed))


@dataclasses.dataclass(frozen=True)
class SyntheticData:
  """What a task's eval step reads of its data (input_pipeline.DataBundle's fields),
  for synthetic batches."""
  num_classes: int
  class_weights: Any = None


class StepRunner:
  """One compiled trainer step (train or eval) with its state and batch, timed on demand.

  Built exactly as train.Trainer builds its steps: model from the factory, optimiser
  and schedule from optim.py, steps.train_step / the task's eval step, the same
  shardings."""

  def __init__(self, config: ml_collections.ConfigDict, mode: str,
               depthwise_impl: str | None = None, progress: bool = True,
               remat: str | None = None):
    overrides = {} if depthwise_impl is None else {"depthwise_impl": depthwise_impl}
    if remat is not None:
      overrides["remat"] = remat
    self.mode, self.depthwise_impl = mode, depthwise_impl
    self.batch_size = config.batch_size
    task = tasks.get(config.get("task", "single_label"))
    self.model = factory.create_model(config.model, num_classes=config.num_classes,
                                      **overrides)
    total_steps = optim.steps_for(config, NUM_TRAIN_EXAMPLES)
    schedule = optim.learning_rate_schedule(config, total_steps)
    tx = optim.create_optimizer(config, total_steps)
    self.num_devices = mesh_devices(config)
    mesh = partitioning.create_mesh(config.get("num_devices", -1),
                                    config.get("num_slices", -1))
    data_sharding = partitioning.data_sharding(mesh)
    replicated = partitioning.replicated(mesh)
    init = functools.partial(steps.create_train_state, self.model, tx,
                             image_size=config.image_size)
    abstract = jax.eval_shape(init, jax.random.key(0))
    state_sharding = partitioning.tree_shardings(
        abstract, mesh, partitioning.partition_rules(config.get("shard_head", False)))
    self.state = jax.jit(init, out_shardings=state_sharding)(jax.random.key(0))
    self.batch = jax.device_put(synthetic_batch(config), data_sharding)

    def make_step(model):
      if mode == "train":
        return jax.jit(
            functools.partial(steps.train_step, model=model, tx=tx, schedule=schedule,
                              objective=task.objective(config),
                              skip_nonfinite=config.get("skip_nonfinite_updates", False)),
            in_shardings=(state_sharding, data_sharding, replicated),
            out_shardings=(state_sharding, replicated), donate_argnums=0)
      data = SyntheticData(num_classes=config.num_classes)
      return jax.jit(task.eval_step(config, data, model),
                     in_shardings=(state_sharding, data_sharding),
                     out_shardings=(replicated, data_sharding if task.EVAL_OUTPUT_SHARDED
                                    else replicated))

    if mode == "train":
      self.rng = jax.device_put(jax.random.key(1), replicated)
      args = (self.state, self.batch, self.rng)
    else:
      args = (self.state, self.batch)
    self.remat = getattr(self.model, "remat", None)
    what = f"{mode} step (depthwise_impl={depthwise_impl}, remat={self.remat})"
    with _Progress(what, quiet=not progress) as timer:
      self.compiled = make_step(self.model).lower(*args).compile()
    self.compile_seconds = timer.seconds
    twin = xla_only_twin(self.model)
    if twin is None:
      self.flops_per_image = flops_per_image(self.compiled, self.batch_size, self.num_devices)
    else:  # XLA does not count custom calls: the same step with XLA's own operations
      self.flops_per_image = flops_per_image(make_step(twin).lower(*args).compile(),
                                             self.batch_size, self.num_devices)
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
    return time_calls(self.run, n)


def time_calls(run: Callable[[], None], n: int) -> list[float]:
  """Seconds of each of n calls of `run` (which waits for its own completion)."""
  seconds = []
  for _ in range(n):
    start = time.perf_counter()
    run()
    seconds.append(time.perf_counter() - start)
  return seconds


def measure(config: ml_collections.ConfigDict, mode: str, depthwise_impl: str | None,
            num_steps: int, warmup: int, progress: bool = True,
            remat: str | None = None) -> Result:
  """One row: `remat` overrides the config's model.remat (None: the config's)."""
  runner = StepRunner(config, mode, depthwise_impl, progress=progress, remat=remat)
  for _ in range(warmup):
    runner.run()
  seconds = runner.time_steps(num_steps)
  return Result(depthwise_impl=depthwise_impl, mode=mode, batch_size=config.batch_size,
                step_seconds=seconds, compile_seconds=runner.compile_seconds,
                flops_per_image=runner.flops_per_image,
                xla_memory_bytes=runner.xla_memory_bytes,
                peak_memory_bytes=hardware.peak_memory()[0], remat=runner.remat)
