"""clu metric collections for training and evaluation (merged on the host).

The fields are the task's (xception_jax/tasks/): a task's objective names its
training figures (top_1, precision_at_1, pixel_accuracy, ...) and its eval step its
per-example averages, and these factories make the collection for those names. Each
factory is cached, so one set of names is one class (a stable pytree type for jit).
"""
from __future__ import annotations

import functools

import flax
import jax.numpy as jnp
from clu import metrics


@flax.struct.dataclass
class Count(metrics.Metric):
  """A sum over steps (clu 0.0.12 has no Sum): e.g. how many updates were skipped."""
  total: jnp.ndarray

  @classmethod
  def from_model_output(cls, values: jnp.ndarray, **_) -> "Count":
    return cls(total=jnp.sum(values))

  def merge(self, other: "Count") -> "Count":
    return type(self)(total=self.total + other.total)

  def compute(self) -> jnp.ndarray:
    return self.total


@functools.cache
def train_metrics(figures: tuple[str, ...], skipping: bool = False
                  ) -> type[metrics.Collection]:
  """loss, the task's training figures (each averaged over steps), the global gradient
  norm and the learning rate; with `skipping` (config.skip_nonfinite_updates) also the
  count of updates skipped for a non-finite loss or gradient."""
  fields = {"loss": metrics.Average.from_output("loss")}
  fields.update({name: metrics.Average.from_output(name) for name in figures})
  fields["grad_norm"] = metrics.Average.from_output("grad_norm")
  fields["learning_rate"] = metrics.LastValue.from_output("learning_rate")
  if skipping:
    fields["skipped_updates"] = Count.from_output("skipped_updates")
  return metrics.Collection.create(**fields)


@functools.cache
def masked_averages(names: tuple[str, ...]) -> type[metrics.Collection]:
  """Averages over the real (mask=1) rows of eval batches: pass each name's per-example
  (or per-pixel) values and `mask=` to `single_from_model_output`; padding rows are
  left out."""
  return metrics.Collection.create(**{name: metrics.Average.from_output(name)
                                      for name in names})
