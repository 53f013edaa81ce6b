"""The trainer end to end on the embedded dataset: devices, resume, init_from, eval_only.

Each `train_and_evaluate` call compiles its own steps (~10-20 s on 2 cores), so the
runs are module-scoped fixtures shared by the tests that compare them.
"""
import glob
import os

import jax
import numpy as np
import pytest
import tensorflow as tf

from configs import demo
from xception_jax import checkpointing, train

STEPS = 4


def _tiny_config(data_dir, **overrides):
  config = demo.get_config()
  config.data_dir = str(data_dir)
  config.embedded.num_train = 96
  config.embedded.num_eval = 40
  config.embedded.image_size = 72
  config.embedded.num_classes = 8
  config.image_size = 72
  config.batch_size = 8
  config.eval_batch_size = 16
  config.shuffle_buffer_size = 64
  config.model.num_middle_blocks = 1
  config.model.head_bias_init = 0.0
  config.num_train_steps = STEPS
  config.log_every_steps = 1
  config.eval_every_steps = STEPS
  config.checkpoint_every_steps = 2
  config.async_checkpointing = False
  config.update_from_flattened_dict(overrides)
  return config


def _train_losses(workdir):
  """train_loss per step, read back from the TensorBoard event files."""
  losses = {}
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == "train_loss":
          losses[event.step] = float(tf.make_ndarray(value.tensor))
  return [losses[s] for s in sorted(losses)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="module")
def run_one_device(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("one_device"))
  results = train.train_and_evaluate(_tiny_config(data_dir, num_devices=1), workdir)
  return workdir, results


@pytest.fixture(scope="module")
def run_four_devices(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("four_devices"))
  results = train.train_and_evaluate(_tiny_config(data_dir, num_devices=4), workdir)
  return workdir, results


def _params(workdir):
  variables, _, step = checkpointing.load_variables(workdir)
  return jax.tree.map(np.asarray, variables), step


def test_one_and_four_devices_give_the_same_run(run_one_device, run_four_devices):
  (dir1, res1), (dir4, res4) = run_one_device, run_four_devices
  losses1, losses4 = _train_losses(dir1), _train_losses(dir4)
  assert len(losses1) == STEPS and len(losses4) == STEPS
  assert losses1[-1] != losses1[0]  # training moved
  np.testing.assert_allclose(losses4, losses1, rtol=2e-4)
  for name in ("eval_loss", "eval_map_at_100"):
    np.testing.assert_allclose(res4[name], res1[name], rtol=2e-3)
  (p1, s1), (p4, s4) = _params(dir1), _params(dir4)
  assert s1 == s4 == STEPS
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4), p1, p4)


def test_resume_ends_where_an_uninterrupted_run_ends(run_one_device, data_dir,
                                                     tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("resumed"))
  train.train_and_evaluate(_tiny_config(data_dir, num_devices=1, num_train_steps=2), workdir)
  _, step = _params(workdir)
  assert step == 2
  train.train_and_evaluate(_tiny_config(data_dir, num_devices=1), workdir)
  (resumed, step), (straight, _) = _params(workdir), _params(run_one_device[0])
  assert step == STEPS
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               resumed, straight)
  np.testing.assert_allclose(_train_losses(workdir), _train_losses(run_one_device[0]),
                             rtol=1e-5)


def test_eval_only_reproduces_the_final_evaluation(run_one_device, data_dir):
  workdir, results = run_one_device
  again = train.train_and_evaluate(_tiny_config(data_dir, num_devices=1, eval_only=True),
                                   workdir)
  assert set(again) == set(results)
  for name, value in results.items():
    np.testing.assert_allclose(again[name], value, rtol=1e-5, err_msg=name)


def test_eval_only_with_init_from_evaluates_the_loaded_model(run_one_device, data_dir,
                                                             tmp_path):
  config = _tiny_config(data_dir, num_devices=1, eval_only=True, init_from=run_one_device[0])
  results = train.train_and_evaluate(config, str(tmp_path / "evaluated"))
  np.testing.assert_allclose(results["eval_loss"], run_one_device[1]["eval_loss"], rtol=1e-5)


def test_init_from_keeps_the_body_and_reinitialises_a_new_head(run_one_device, data_dir,
                                                                tmp_path):
  """Fine-tuning to 6 classes from the 8-class run: with a zero learning rate the body
  is exactly the source's after a step, and the head has the new shape."""
  config = _tiny_config(data_dir, num_devices=1, num_train_steps=1, learning_rate=0.0,
                        weight_decay=0.0, init_from=run_one_device[0],
                        **{"embedded.num_classes": 6})
  workdir = str(tmp_path / "finetuned")
  train.train_and_evaluate(config, workdir)
  (source, _), (tuned, step) = _params(run_one_device[0]), _params(workdir)
  assert step == 1
  assert source["params"]["head"]["kernel"].shape[-1] == 8
  assert tuned["params"]["head"]["kernel"].shape[-1] == 6
  body = lambda p: {k: v for k, v in p.items() if k != "head"}
  jax.tree.map(np.testing.assert_array_equal, body(tuned["params"]), body(source["params"]))


def test_init_from_refuses_a_different_body(run_one_device, data_dir, tmp_path):
  config = _tiny_config(data_dir, num_devices=1, init_from=run_one_device[0],
                        **{"model.width_multiplier": 0.25})
  with pytest.raises(ValueError, match="does not match the configured model"):
    train.train_and_evaluate(config, str(tmp_path / "mismatch"))


def test_indivisible_batch_fails_before_compiling(data_dir, tmp_path):
  config = _tiny_config(data_dir, num_devices=4, batch_size=6)
  with pytest.raises(ValueError, match="batch_size=6 does not divide evenly over 4 devices"):
    train.train_and_evaluate(config, str(tmp_path))


def test_eval_only_without_a_checkpoint_is_an_error(data_dir, tmp_path):
  with pytest.raises(FileNotFoundError, match="eval_only: no checkpoint in .* no config.init_from"):
    train.train_and_evaluate(_tiny_config(data_dir, num_devices=1, eval_only=True),
                             str(tmp_path / "empty"))


def test_bad_config_fields_are_named(data_dir, tmp_path):
  with pytest.raises(ValueError, match="config.task"):
    train.train_and_evaluate(_tiny_config(data_dir, task="regression"), str(tmp_path))
  with pytest.raises(ValueError, match="Unknown Xception field"):
    train.train_and_evaluate(_tiny_config(data_dir, **{"model.depth": 3}), str(tmp_path))
