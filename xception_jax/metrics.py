"""Metric collections for training and evaluation (made under jit, merged on the host).

The fields are the task's (xception_jax/tasks/): a task's objective names its
training figures (top_1, precision_at_1, pixel_accuracy, ...) and its eval step its
per-example averages, and these factories make the collection for those names. Each
factory is cached, so one set of names is one class (a stable pytree type for jit).

The metrics are those of clu.metrics (Average, LastValue) with the same arithmetic,
written here so that the steps import no clu: the benchmark runs the trainer's steps
on accelerator images that lack clu and TensorFlow (docs/PERFORMANCE.md). A collection
is used as clu's: `Collection.single_from_model_output(**outputs)` in the step,
`.merge(other)` over steps and `.compute()` -> {name: value} on the host.
"""
from __future__ import annotations

import functools
from typing import Any

import flax
import jax.numpy as jnp


def _values_and_mask(values: Any, mask: Any) -> tuple[jnp.ndarray, jnp.ndarray]:
  """values (a scalar becomes [1]) and mask as booleans broadcast over values' trailing
  axes; a mask whose first axis differs from values' (a per-example mask beside a
  per-batch scalar such as the loss) is ignored, as clu's `from_output` does."""
  values = jnp.asarray(values)
  if mask is not None and (values.shape or [0])[0] != mask.shape[0]:
    mask = None
  if values.ndim == 0:
    values = values[None]
  if mask is None:
    return values, jnp.ones(values.shape, bool)
  mask = jnp.asarray(mask)
  mask = jnp.expand_dims(mask, tuple(range(mask.ndim, values.ndim))).astype(bool)
  return values, jnp.broadcast_to(mask, values.shape)


@flax.struct.dataclass
class Average:
  """The mean of the (masked) values over every step merged."""
  total: jnp.ndarray
  count: jnp.ndarray

  @classmethod
  def from_model_output(cls, values: Any, mask: Any = None) -> "Average":
    values, mask = _values_and_mask(values, mask)
    return cls(total=jnp.where(mask, values, jnp.zeros_like(values)).sum(),
               count=mask.astype(jnp.int32).sum())

  def merge(self, other: "Average") -> "Average":
    return type(self)(total=self.total + other.total, count=self.count + other.count)

  def compute(self) -> jnp.ndarray:
    return self.total / self.count


@flax.struct.dataclass
class LastValue(Average):
  """The last step's (masked) mean: made as an Average, but merging keeps the other,
  later, value."""

  def merge(self, other: "LastValue") -> "LastValue":
    return other


@flax.struct.dataclass
class Count:
  """A sum over steps: e.g. how many updates were skipped."""
  total: jnp.ndarray

  @classmethod
  def from_model_output(cls, values: Any, mask: Any = None) -> "Count":
    del mask
    return cls(total=jnp.sum(values))

  def merge(self, other: "Count") -> "Count":
    return type(self)(total=self.total + other.total)

  def compute(self) -> jnp.ndarray:
    return self.total


@flax.struct.dataclass
class Collection:
  """Named metrics, each made from the model output of its own name (and `mask`)."""
  metrics: dict[str, Any]
  KINDS = {}  # name -> metric class; set by `collection` for each subclass

  @classmethod
  def single_from_model_output(cls, **outputs: Any) -> "Collection":
    mask = outputs.get("mask")
    return cls(metrics={name: kind.from_model_output(outputs[name], mask=mask)
                        for name, kind in cls.KINDS.items()})

  def merge(self, other: "Collection") -> "Collection":
    return type(self)(metrics={name: metric.merge(other.metrics[name])
                               for name, metric in self.metrics.items()})

  def compute(self) -> dict[str, jnp.ndarray]:
    return {name: metric.compute() for name, metric in self.metrics.items()}


def collection(**kinds: type) -> type[Collection]:
  """A Collection class of these named metrics (e.g. loss=Average)."""
  return flax.struct.dataclass(type("MetricCollection", (Collection,), {"KINDS": kinds}))


@functools.cache
def train_metrics(figures: tuple[str, ...], skipping: bool = False) -> type[Collection]:
  """loss, the task's training figures (each averaged over steps), the global gradient
  norm and the learning rate; with `skipping` (config.skip_nonfinite_updates) also the
  count of updates skipped for a non-finite loss or gradient."""
  fields: dict[str, type] = {"loss": Average}
  fields.update({name: Average for name in figures})
  fields["grad_norm"] = Average
  fields["learning_rate"] = LastValue
  if skipping:
    fields["skipped_updates"] = Count
  return collection(**fields)


@functools.cache
def masked_averages(names: tuple[str, ...]) -> type[Collection]:
  """Averages over the real (mask=1) rows of eval batches: pass each name's per-example
  (or per-pixel) values and `mask=` to `single_from_model_output`; padding rows are
  left out."""
  return collection(**{name: Average for name in names})

