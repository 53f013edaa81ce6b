"""validation.py: every class of bad input is refused in one line naming the field.

Cheap: nothing is compiled or generated (the model is traced with jax.eval_shape).
"""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import deeplab_demo
from configs import demo
from xception_jax import checkpointing, validation
from xception_jax.validation import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**overrides):
  config = demo.get_config()
  config.model.num_middle_blocks = 1
  config.image_size = 72
  config.data_dir = "/nonexistent/tfds"  # never opened by validation
  with config.unlocked():
    for key, value in overrides.items():
      node = config
      *parents, leaf = key.split(".")
      for part in parents:
        node = node[part]
      node[leaf] = value
  return config


def _refused(config, workdir, *fragments):
  with pytest.raises(ConfigError) as info:
    validation.validate(config, str(workdir))
  message = str(info.value)
  assert "\n" not in message, message
  for fragment in fragments:
    assert fragment in message, message
  return message


def test_the_shipped_configs_pass(tmp_path):
  validation.validate(_config(), str(tmp_path / "run"))
  validation.validate(_config(keep_checkpoints=None), str(tmp_path / "run"))


BAD_NUMBERS = [
    ("batch_size", 0, "integer >= 1"),
    ("eval_batch_size", -8, "integer >= 1"),
    ("learning_rate", -0.1, ">= 0"),
    ("learning_rate", float("nan"), ">= 0"),
    ("momentum", 1.0, "[0, 1)"),
    ("rmsprop_decay", 1.5, "[0, 1)"),
    ("rmsprop_epsilon", 0.0, "> 0"),
    ("lr_decay_rate", 0.0, "(0, 1]"),
    ("lr_decay_every_examples", 0, "> 0"),
    ("weight_decay", -1e-5, ">= 0"),
    ("label_smoothing", 1.0, "[0, 1)"),
    ("grad_clip_norm", -1.0, "None or a number > 0"),
    ("warmup_steps", -1, ">= 0"),
    ("num_train_steps", 0, "-1 to let num_epochs decide"),
    ("log_every_steps", 0, ">= 1"),
    ("eval_every_steps", 0, ">= 1"),
    ("checkpoint_every_steps", 0, ">= 1"),
    ("keep_checkpoints", 0, ">= 1, or None to keep all"),
    ("map_k", 0, ">= 1"),
    ("num_devices", 0, "-1 for every device"),
    ("num_slices", 0, "-1 for the devices' own slice count"),
    ("profile_steps", (5, 5), "0 <= first < last"),
    ("profile_steps", (-1, 3), "0 <= first < last"),
    ("profile_steps", (2,), "0 <= first < last"),
    ("profile_steps", (1.0, 3), "0 <= first < last"),
    ("crop_area_range", (0.5, 0.2), "0 < lo <= hi <= 1"),
    ("crop_area_range", (0.0, 1.0), "0 < lo <= hi <= 1"),
    ("crop_aspect_range", (0.0, 1.0), "0 < lo <= hi"),
    ("crop_min_object_covered", 1.5, "[0, 1]"),
    ("eval_crop_fraction", 0.0, "(0, 1]"),
    ("shuffle", None, "True (a permutation of the whole split per epoch) or False"),
    ("model.dropout_rate", 1.0, "[0, 1)"),
    ("model.width_multiplier", 0.0, "> 0"),
    ("model.num_middle_blocks", -1, ">= 0"),
    ("model.bn_momentum", 1.0, "[0, 1)"),
    ("embedded.num_classes", 30, "[1, 24]"),
]


@pytest.mark.parametrize("field,value,allowed", BAD_NUMBERS)
def test_impossible_numbers_are_refused(field, value, allowed, tmp_path):
  _refused(_config(**{field: value}), tmp_path, f"config.{field} = {value!r}", allowed)


def test_removed_fields_are_refused_not_ignored(tmp_path):
  _refused(_config(shuffle_buffer_size=10_000), tmp_path,
           "config.shuffle_buffer_size = 10000", "removed", "config.shuffle = False")


def test_removed_fields_are_refused_for_segmentation_too(tmp_path):
  # The segmentation train stream is the same index-based stream: no buffer either.
  config = deeplab_demo.get_config()
  config.data_dir = "/nonexistent/tfds"
  validation.validate(config)  # The shipped config does not set it.
  with config.unlocked():
    config.shuffle_buffer_size = 8
  _refused(config, tmp_path, "config.shuffle_buffer_size = 8", "removed",
           "config.shuffle = False")


def test_several_slices_need_every_device(tmp_path):
  validation.validate(_config(num_slices=2), str(tmp_path / "run"))
  validation.validate(_config(num_slices=1, num_devices=2), str(tmp_path / "run"))
  validation.validate(_config(profile_steps=(0, 3)), str(tmp_path / "run"))
  _refused(_config(num_slices=2, num_devices=2), tmp_path, "config.num_devices = 2",
           "-1 when config.num_slices = 2")


def test_epochs_must_be_positive_when_they_decide(tmp_path):
  _refused(_config(num_train_steps=-1, num_epochs=0.0), tmp_path, "config.num_epochs = 0.0",
           "num_train_steps = -1")


def test_unknown_names_are_refused(tmp_path):
  _refused(_config(optimizer="adam"), tmp_path, "config.optimizer = 'adam'", "'rmsprop'")
  _refused(_config(task="regression"), tmp_path, "config.task = 'regression'")
  _refused(_config(dataset="imagenet2021"), tmp_path, "config.dataset = 'imagenet2021'",
           "did you mean", "imagenet2012")
  _refused(_config(**{"model.depth": 3}), tmp_path, "config.model:", "Unknown Xception field",
           "depth")
  _refused(_config(**{"model.intermediate_activation": "gelu"}), tmp_path, "config.model:",
           "gelu")
  _refused(_config(**{"model.order": "sideways"}), tmp_path, "config.model:", "sideways")
  with pytest.raises(ValueError, match="Unknown config variant 'resnet'"):
    demo.get_config("resnet")


def test_the_model_judges_the_image_size(tmp_path):
  _refused(_config(image_size=64), tmp_path, "config.model:", "at least 71x71",
           "image_size")


def test_missing_files_and_globs_are_refused(tmp_path):
  _refused(_config(class_weights_file=str(tmp_path / "w.txt")), tmp_path,
           f"config.class_weights_file = '{tmp_path / 'w.txt'}'", "no such file")
  pattern = str(tmp_path / "train-*.tfrecord")
  _refused(_config(dataset="tfrecord_multilabel:" + pattern), tmp_path,
           "config.dataset", "no file matches")
  (tmp_path / "train-0.tfrecord").write_bytes(b"")
  _refused(_config(dataset="tfrecord_multilabel:" + pattern,
                   eval_files=str(tmp_path / "eval-*.tfrecord")), tmp_path,
           "config.eval_files", "no file matches")
  _refused(_config(task="single_label", dataset="folder:" + str(tmp_path / "images")),
           tmp_path, "config.dataset", "no directory")
  _refused(_config(init_from=str(tmp_path / "nothing")), tmp_path, "config.init_from",
           "no such directory")
  (tmp_path / "a_file").write_text("x")
  _refused(_config(data_dir=str(tmp_path / "a_file")), tmp_path, "config.data_dir",
           "is a file")


def test_unusable_workdirs_are_refused(tmp_path, monkeypatch):
  (tmp_path / "a_file").write_text("x")
  _refused(_config(), tmp_path / "a_file", "--workdir", "is a file")
  _refused(_config(), tmp_path / "a_file" / "run", "--workdir", "is a file")
  monkeypatch.setattr(os, "access", lambda path, mode: False)  # root can write anywhere
  _refused(_config(), tmp_path / "run", "--workdir", "not writable")


def test_a_workdir_of_another_model_is_refused_and_left_untouched(tmp_path):
  config = _config()
  params = validation._abstract_params(config, num_classes=20)  # pylint: disable=protected-access
  zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), params)
  root = tmp_path / "run" / "checkpoints"
  checkpointing.save_variables(str(root), {"params": zeros, "batch_stats": {}},
                               {"num_classes": 20}, step=7)
  before = sorted((p, os.path.getmtime(os.path.join(d, p)))
                  for d, _, fs in os.walk(root) for p in fs)
  validation.validate(config, str(tmp_path / "run"))  # the same model: accepted
  _refused(_config(**{"model.width_multiplier": 0.25}), tmp_path / "run",
           "holds another model's checkpoint", str(root / "7"), "checkpoints untouched")
  after = sorted((p, os.path.getmtime(os.path.join(d, p)))
                 for d, _, fs in os.walk(root) for p in fs)
  assert after == before


def test_main_prints_one_line_and_no_traceback(tmp_path):
  command = [sys.executable, "main.py", "--config=configs/demo.py",
             f"--workdir={tmp_path / 'run'}", "--config.learning_rate=-0.1"]
  proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                        check=False)
  assert proc.returncode == 2, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: config.learning_rate = -0.1: must be a number >= 0. "
      "(--debug shows the traceback)")
  assert not os.path.exists(tmp_path / "run")  # refused before anything was written
