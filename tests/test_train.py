"""The trainer end to end on the embedded dataset: devices, resume, init_from, eval_only.

Each `train_and_evaluate` call compiles its own steps (~10-20 s on 2 cores), so the
runs are module-scoped fixtures shared by the tests that compare them.
"""
import functools
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import input_pipeline
from configs import demo
import events
import processes
from xception_jax import checkpointing, optim, steps, train
from xception_jax.evaluation import map_at_k
from xception_jax.models import create_model

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
  config.model.num_middle_blocks = 1
  config.model.head_bias_init = 0.0
  config.num_train_steps = STEPS
  config.log_every_steps = 1
  config.eval_every_steps = STEPS
  config.checkpoint_every_steps = 2
  config.async_checkpointing = False
  config.update_from_flattened_dict(overrides)
  return config


def _initial_params(config, num_classes):
  """The parameters a fresh run starts from (the trainer's init, computed apart)."""
  model = create_model(config.model, num_classes=num_classes)
  init = functools.partial(steps.create_train_state, model, optim.create_optimizer(config),
                           image_size=config.image_size)
  return jax.tree.map(np.asarray, jax.jit(init)(jax.random.key(config.seed)).params)


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


def test_one_and_four_devices_give_the_same_run(run_one_device, run_four_devices, data_dir):
  (dir1, res1), (dir4, res4) = run_one_device, run_four_devices
  losses1, losses4 = events.loss_curve(dir1), events.loss_curve(dir4)
  assert len(losses1) == STEPS and len(losses4) == STEPS
  assert losses1[-1] != losses1[0]  # training moved
  np.testing.assert_allclose(losses4, losses1, rtol=2e-4)
  for name in ("eval_loss", "eval_map_at_100"):
    np.testing.assert_allclose(res4[name], res1[name], rtol=2e-3)
  (p1, s1), (p4, s4) = _params(dir1), _params(dir4)
  assert s1 == s4 == STEPS
  # Every parameter moved during the run, and the two runs differ by a small fraction of
  # that move (measured: at most 0.9%): a 4-device run whose gradients or BN statistics
  # were not those of the global batch would differ by a sizeable part of the update.
  start = _initial_params(_tiny_config(data_dir), num_classes=8)
  for path, before in jax.tree_util.tree_leaves_with_path(start):
    name = jax.tree_util.keystr(path)
    one = _get(p1["params"], path)
    four = _get(p4["params"], path)
    update = np.max(np.abs(one - before))
    assert update > 1e-4, f"{name} did not move"
    assert np.max(np.abs(one - four)) <= 0.05 * update, name


def _get(tree, path):
  for key in path:
    tree = tree[key.key]
  return tree


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_resume_continues_from_the_checkpoint(run_one_device, data_dir, tmp_path,
                                              asynchronous):
  """Stop after 2 steps, start again: the second run must begin at the checkpoint (it
  logs steps 3 and 4 only and writes config_step2.json), and end where an
  uninterrupted run ends. A second run that ignored the checkpoint and trained from
  step 0 would log steps 1-4. Checkpoints every step with keep_checkpoints=2 also
  checks the pruning: only steps 3 and 4 remain."""
  workdir = str(tmp_path / "resumed")
  overrides = dict(num_devices=1, async_checkpointing=asynchronous,
                   checkpoint_every_steps=1, keep_checkpoints=2)
  train.train_and_evaluate(_tiny_config(data_dir, num_train_steps=2, **overrides), workdir)
  _, step = _params(workdir)
  assert step == 2
  first_run = events.event_files(workdir)
  assert sorted(events.logged(first_run)) == [1, 2]
  train.train_and_evaluate(_tiny_config(data_dir, **overrides), workdir)
  second_run = events.event_files(workdir) - first_run
  assert sorted(events.logged(second_run)) == [3, 4]
  assert os.path.exists(os.path.join(workdir, "config_step2.json"))
  manager = checkpointing.create_manager(os.path.join(workdir, "checkpoints"),
                                         max_to_keep=None, asynchronous=False, read_only=True)
  assert list(manager.all_steps()) == [3, 4]
  manager.close()
  (resumed, step), (straight, _) = _params(workdir), _params(run_one_device[0])
  assert step == STEPS
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               resumed, straight)
  np.testing.assert_allclose(events.loss_curve(workdir), events.loss_curve(run_one_device[0]),
                             rtol=1e-5)


def _eval_split_by_hand(config):
  """The eval split's images and multi-hot labels, read with tfds directly (in stored
  order, the evaluator's row order) and preprocessed as docs/DATA.md says. (Through
  `as_data_source`: the embedded dataset is stored as ArrayRecord, which tfds 4.9.10's
  `as_dataset` cannot read.)"""
  builder = input_pipeline.embedded_shapes.prepare(config.data_dir,
                                                   **config.embedded.to_dict())
  source = builder.as_data_source(split="validation",
                                  decoders={"image": tfds.decode.SkipDecoding()})
  images, labels = [], []
  for i in range(len(source)):
    example = source[i]
    images.append(input_pipeline.preprocessing.preprocess_eval(
        tf.constant(example["image"]), image_size=config.image_size,
        crop_fraction=config.eval_crop_fraction).numpy())
    hot = np.zeros(config.embedded.num_classes, np.float32)
    hot[np.asarray(example["labels"])] = 1.0
    labels.append(hot)
  return np.stack(images), np.stack(labels)


def test_trainer_map_equals_map_at_k_of_the_models_scores(run_one_device, data_dir,
                                                          tmp_path):
  """eval_only on the trained checkpoint with a non-uniform class-weights file must give
  the evaluator's MAP@100 of the model's own sigmoid scores on the eval split, computed
  here without the trainer: weights that never reached the evaluator, or rows matched
  to the wrong labels, fail this."""
  weights = np.random.default_rng(3).uniform(0.05, 5.0, 8)
  weights_file = tmp_path / "weights.txt"
  weights_file.write_text("".join(f"{float(w)!r}\n" for w in weights))
  config = _tiny_config(data_dir, num_devices=1, eval_only=True,
                        init_from=run_one_device[0], class_weights_file=str(weights_file))
  results = train.train_and_evaluate(config, str(tmp_path / "evaluated"))

  variables, fields, _ = checkpointing.load_variables(run_one_device[0])
  model = create_model(fields)
  images, labels = _eval_split_by_hand(config)
  assert len(images) == config.embedded.num_eval
  scores = np.asarray(jax.nn.sigmoid(jax.jit(model.apply)(variables, images)))
  want = map_at_k(scores, labels, k=100, class_weights=weights)
  unweighted = map_at_k(scores, labels, k=100)
  assert abs(want - unweighted) > 1e-3          # the weights matter for this model
  np.testing.assert_allclose(results["eval_map_at_100"], want, rtol=1e-5)


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
  # The new head holds the values of a fresh initialisation (not zeros, not a slice of
  # the source's head).
  fresh = _initial_params(config, num_classes=6)["head"]
  jax.tree.map(np.testing.assert_array_equal, tuned["params"]["head"], fresh)
  assert np.std(fresh["kernel"]) > 0


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


@pytest.mark.slow  # a 16-device child process (25 s); test_steps checks the padding rows
def test_any_eval_batch_size_on_any_device_count(run_one_device, data_dir, tmp_path):
  """eval_batch_size=1000 on 16 devices (a subprocess: 1000 rows do not split over 16)
  gives the evaluation of 100 on 4 devices: each process pads its rows to a multiple of
  its devices with mask-0 rows, which count nowhere. The train batch keeps its check."""
  config = _tiny_config(data_dir, num_devices=4, eval_only=True, eval_batch_size=100,
                        init_from=run_one_device[0])
  four = train.train_and_evaluate(config, str(tmp_path / "four"))
  overrides = {"data_dir": str(data_dir), "embedded.num_train": 96, "embedded.num_eval": 40,
               "embedded.image_size": 72, "embedded.num_classes": 8, "image_size": 72,
               "batch_size": 16, "eval_batch_size": 1000, "model.num_middle_blocks": 1,
               "model.head_bias_init": 0.0, "eval_only": True,
               "init_from": run_one_device[0]}
  result = subprocess.run(
      [sys.executable, "main.py", "--config=configs/demo.py",
       f"--workdir={tmp_path / 'sixteen'}", *(f"--config.{k}={v}" for k, v in overrides.items())],
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), capture_output=True,
      text=True, timeout=600,
      env={**os.environ, "XLA_FLAGS": processes.xla_flags(16)})
  assert result.returncode == 0, result.stderr[-3000:]
  sixteen = json.loads(result.stdout[result.stdout.rindex("{\n"):])
  assert set(four) <= set(sixteen)
  for name, value in four.items():
    np.testing.assert_allclose(sixteen[name], value, rtol=1e-5, err_msg=name)
