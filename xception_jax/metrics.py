"""clu metric collections for training and evaluation (merged on the host)."""
import flax
import jax.numpy as jnp
from clu import metrics


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  """loss, top_1 (see `steps.top_k_hits`), global gradient norm and the learning rate."""
  loss: metrics.Average.from_output("loss")
  top_1: metrics.Average.from_output("top_1")
  grad_norm: metrics.Average.from_output("grad_norm")
  learning_rate: metrics.LastValue.from_output("learning_rate")


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


@flax.struct.dataclass
class SkippingTrainMetrics(metrics.Collection):
  """TrainMetrics' fields and the count of updates skipped for a non-finite loss or
  gradient (config.skip_nonfinite_updates). clu reads only a class's own annotations,
  so the fields are repeated rather than inherited."""
  loss: metrics.Average.from_output("loss")
  top_1: metrics.Average.from_output("top_1")
  grad_norm: metrics.Average.from_output("grad_norm")
  learning_rate: metrics.LastValue.from_output("learning_rate")
  skipped_updates: Count.from_output("skipped_updates")


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  """Per-example averages over real (mask=1) examples; padding rows are ignored.

  top_k is top-k accuracy for single-label data and precision@k (the fraction of the k
  highest-scoring classes that are labels) for multi-label data.
  """
  loss: metrics.Average.from_output("loss")
  top_1: metrics.Average.from_output("top_1")
  top_5: metrics.Average.from_output("top_5")
