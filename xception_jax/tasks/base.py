"""What a task is: the protocol every task module follows (docs/TASKS.md).

A task is one module (single_label.py, multi_label.py, segmentation.py) holding
everything the trainer needs to know about one kind of supervision, so that the
trainer, the steps, the benchmark and validation hold no branch on `config.task`:

  NAME                  the `config.task` string it answers to.
  EVAL_OUTPUT_SHARDED   True: eval_step's second output has one row per example and is
                        sharded like the batch (each process reads its own rows);
                        False: one array for the whole global batch, replicated.
  create_datasets(config, *, process_index, process_count, start_step)
                        this process's data (an input_pipeline.DataBundle: `train`,
                        `eval_batches()`, `num_classes`, ...).
  objective(config)     -> fn(logits, batch) -> (loss, {name: value}): the training
                        loss over the global batch and the task's training figures
                        (each a scalar; logged as train_<name>).
  eval_step(config, data, model)
                        -> fn(state, batch) -> (metrics.Collection, output): metrics over
                        the real rows of an eval batch (`batch['mask']`), and what the
                        evaluator consumes.
  evaluator(config, data)
                        -> Evaluator: host-side accumulation over an eval pass.
  synthetic_batch(config, rng)
                        a batch as the input pipeline gives it, for the benchmark.

Every function is pure except `create_datasets` and the evaluator; `objective` and
`eval_step` are traced under `jax.jit` with the batch sharded over the mesh, so their
reductions are over the global batch.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import jax
import ml_collections
import numpy as np

Objective = Callable[[jax.Array, dict], "tuple[jax.Array, dict[str, jax.Array]]"]
EvalStep = Callable[[Any, dict], "tuple[Any, Any]"]


class Evaluator(Protocol):
  """Accumulates one eval pass on the host, then combines every process's share."""

  def update(self, batch: dict[str, np.ndarray], output: Any) -> None:
    """batch: this process's local batch (NumPy, with 'mask' and, for streams that
    number their rows, 'index'); output: eval_step's second output for the global
    batch (a jax.Array sharded as EVAL_OUTPUT_SHARDED says)."""

  def result(self) -> dict[str, float]:
    """The metrics of the whole pass over every process (call it on every process);
    names without the 'eval_' prefix, which the trainer adds."""


class Task(Protocol):
  """The attributes of a task module (see the module docstring)."""

  NAME: str
  EVAL_OUTPUT_SHARDED: bool

  def create_datasets(self, config: ml_collections.ConfigDict, *, process_index: int,
                      process_count: int, start_step: int) -> Any: ...

  def objective(self, config: ml_collections.ConfigDict) -> Objective: ...

  def eval_step(self, config: ml_collections.ConfigDict, data: Any, model: Any
                ) -> EvalStep: ...

  def evaluator(self, config: ml_collections.ConfigDict, data: Any) -> Evaluator: ...

  def synthetic_batch(self, config: ml_collections.ConfigDict,
                      rng: np.random.Generator) -> dict[str, np.ndarray]: ...


REQUIRED = ("NAME", "EVAL_OUTPUT_SHARDED", "create_datasets", "objective", "eval_step",
            "evaluator", "synthetic_batch")


class NoEvaluator:
  """For a task whose eval metrics are all in its eval step's metric collection."""

  def update(self, batch: dict[str, np.ndarray], output: Any) -> None:
    del batch, output

  def result(self) -> dict[str, float]:
    return {}


def synthetic_images(config: ml_collections.ConfigDict, rng: np.random.Generator
                     ) -> dict[str, np.ndarray]:
  """The image and mask half of a synthetic batch: [-1, 1] pixels, every row real."""
  b, s = config.batch_size, config.image_size
  return {"image": rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32),
          "mask": np.ones([b], np.float32)}
