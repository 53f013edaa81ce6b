"""The task registry, and a toy task written here that the trainer runs unchanged.

The toy task (per-image regression of how many labels an image of the embedded
dataset carries) uses only the protocol of xception_jax/tasks/base.py: its own data
(the embedded dataset's batches with the label count as target), objective, eval step,
host evaluator and synthetic batch. It trains through `train.train_and_evaluate`, and
its eval metrics equal the same numbers computed here from the saved checkpoint.
"""
import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import demo
from xception_jax import checkpointing, metrics, partitioning, step_timing, tasks, train
from xception_jax import validation
from xception_jax.tasks import base
from xception_jax.models import create_model

STEPS = 3


class LabelCount:
  """Regress the number of labels of each image (one output, squared error)."""

  NAME = "toy_label_count"
  EVAL_OUTPUT_SHARDED = True  # one prediction per example

  @staticmethod
  def _counts(batches):
    for batch in batches:
      yield {**batch, "label": batch["label"].sum(-1, keepdims=True).astype(np.float32)}

  def create_datasets(self, config, *, process_index, process_count, start_step):
    import input_pipeline  # pylint: disable=import-outside-toplevel
    inner = ml_collections.ConfigDict(config.to_dict())
    inner.task = "multi_label"  # the embedded dataset's own labels, then counted
    data = input_pipeline.create_datasets(inner, process_index=process_index,
                                          process_count=process_count,
                                          start_step=start_step)
    return dataclasses.replace(data, train=self._counts(data.train),
                               eval_batches=lambda: self._counts(data.eval_batches()),
                               num_classes=1, class_weights=None, task=self.NAME)

  def objective(self, config):
    def fn(outputs, batch):
      error = outputs - batch["label"]
      return jnp.mean(error ** 2), {"mean_absolute_error": jnp.mean(jnp.abs(error))}
    return fn

  def eval_step(self, config, data, model):
    collection = metrics.masked_averages(("loss", "mean_absolute_error"))

    def step(state, batch):
      outputs = model.apply(state.variables, batch["image"], train=False)
      error = (outputs - batch["label"])[:, 0]
      return (collection.single_from_model_output(
          loss=error ** 2, mean_absolute_error=jnp.abs(error), mask=batch["mask"]),
              outputs[:, 0])
    return step

  def evaluator(self, config, data):
    return MaxError()

  def synthetic_batch(self, config, rng):
    b, s = config.batch_size, config.image_size
    return {"image": rng.uniform(-1, 1, (b, s, s, 3)).astype(np.float32),
            "label": rng.integers(0, 4, (b, 1)).astype(np.float32),
            "mask": np.ones([b], np.float32)}


class MaxError:
  """The largest absolute error over the real rows (a host-side evaluator)."""

  def __init__(self):
    self.worst = 0.0

  def update(self, batch, predictions):
    rows = partitioning.local_rows(predictions)
    real = batch["mask"] > 0
    errors = np.abs(rows[real] - batch["label"][real, 0])
    self.worst = max(self.worst, float(errors.max(initial=0.0)))

  def result(self):
    return {"max_absolute_error": self.worst}


@pytest.fixture
def toy_task():
  task = tasks.register(LabelCount())
  yield task
  tasks.unregister(task.NAME)


def _tiny_config(data_dir):
  config = demo.get_config()
  config.task = LabelCount.NAME
  config.data_dir = str(data_dir)
  config.embedded.num_train = 48
  config.embedded.num_eval = 20
  config.embedded.image_size = 72
  config.embedded.num_classes = 8
  config.image_size = 72
  config.batch_size = 8
  config.eval_batch_size = 8        # 20 rows: the last batch is padded
  config.num_classes = None
  config.model.num_middle_blocks = 1
  config.model.head_bias_init = 0.0
  config.num_train_steps = STEPS
  config.log_every_steps = 1
  config.eval_every_steps = STEPS
  config.checkpoint_every_steps = STEPS
  config.async_checkpointing = False
  config.num_devices = 2
  return config


def test_a_toy_task_trains_through_the_unchanged_trainer(toy_task, tmp_path):
  config = _tiny_config(tmp_path / "tfds")
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir)
  assert set(results) == {"eval_loss", "eval_mean_absolute_error",
                          "eval_max_absolute_error"}

  # The same numbers from the checkpoint, computed here on the toy's eval rows.
  variables, fields, step = checkpointing.load_variables(workdir)
  assert step == STEPS and fields["num_classes"] == 1
  model = create_model(fields)
  data = toy_task.create_datasets(config, process_index=0, process_count=1, start_step=0)
  errors = []
  for batch in data.eval_batches():
    outputs = np.asarray(jax.jit(model.apply)(variables, batch["image"]))[:, 0]
    real = batch["mask"] > 0
    errors.append(outputs[real] - batch["label"][real, 0])
  errors = np.concatenate(errors)
  assert errors.size == config.embedded.num_eval
  np.testing.assert_allclose(results["eval_loss"], np.mean(errors ** 2), rtol=1e-4)
  np.testing.assert_allclose(results["eval_mean_absolute_error"], np.mean(np.abs(errors)),
                             rtol=1e-4)
  np.testing.assert_allclose(results["eval_max_absolute_error"], np.max(np.abs(errors)),
                             rtol=1e-4)


def test_the_benchmark_builds_a_registered_tasks_steps(toy_task):
  config = demo.get_config()
  config.task = LabelCount.NAME
  config.num_classes = 1
  config.image_size = 72
  config.batch_size = 4
  config.num_devices = 2
  config.model.num_middle_blocks = 1
  batch = step_timing.synthetic_batch(config)
  assert batch["label"].shape == (4, 1)
  runner = step_timing.StepRunner(config, "eval", progress=False)
  runner.run()


def test_an_unknown_task_is_one_line_listing_the_known_ones():
  with pytest.raises(tasks.UnknownTaskError) as raised:
    tasks.get("detection")
  message = str(raised.value)
  assert "\n" not in message and "'detection'" in message
  for name in ("single_label", "multi_label", "segmentation"):
    assert name in message
  config = demo.get_config()
  config.task = "detection"
  with pytest.raises(validation.ConfigError, match=r"config.task = 'detection'.*"
                     r"single_label.*multi_label.*segmentation"):
    validation.validate(config)


def test_validation_accepts_a_registered_task_and_forgets_it_after(toy_task):
  config = demo.get_config()
  config.task = toy_task.NAME
  assert toy_task.NAME in tasks.names()
  validation.validate(config)            # no error
  tasks.unregister(toy_task.NAME)
  with pytest.raises(validation.ConfigError, match="toy_label_count"):
    validation.validate(config)


def test_register_refuses_an_object_that_is_not_a_task():
  class Half:
    NAME = "half"

    def objective(self, config):
      return None

  with pytest.raises(TypeError, match="lacks EVAL_OUTPUT_SHARDED, create_datasets"):
    tasks.register(Half())
  assert "half" not in tasks.names()


@pytest.mark.parametrize("name", ["single_label", "multi_label", "segmentation"])
def test_built_in_tasks_follow_the_protocol(name):
  task = tasks.get(name)
  assert task.NAME == name
  assert all(hasattr(task, attribute) for attribute in base.REQUIRED)
  config = ml_collections.ConfigDict(dict(batch_size=2, image_size=5, num_classes=3))
  batch = task.synthetic_batch(config, np.random.default_rng(0))
  assert batch["image"].shape == (2, 5, 5, 3) and batch["mask"].shape == (2,)
