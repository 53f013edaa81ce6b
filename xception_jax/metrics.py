"""clu metric collections for training and evaluation (merged on the host)."""
import flax
from clu import metrics


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  """loss, top_1 (see `steps.top_k_hits`), global gradient norm and the learning rate."""
  loss: metrics.Average.from_output("loss")
  top_1: metrics.Average.from_output("top_1")
  grad_norm: metrics.Average.from_output("grad_norm")
  learning_rate: metrics.LastValue.from_output("learning_rate")


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  """Per-example averages over real (mask=1) examples; padding rows are ignored.

  top_k is top-k accuracy for single-label data and precision@k (the fraction of the k
  highest-scoring classes that are labels) for multi-label data.
  """
  loss: metrics.Average.from_output("loss")
  top_1: metrics.Average.from_output("top_1")
  top_5: metrics.Average.from_output("top_5")
