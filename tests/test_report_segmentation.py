"""The report tool on segmentation runs (issue 28: it raised `config.json has no
num_classes` on the DeepLab demo's workdir): the mean IoU table, the per-class IoU
table, the mean IoU curve, and the class count of a tfds dataset read from the run's
checkpoint. Synthetic runs (event files written here, config.json as the trainer writes
it); tests/test_segmentation_trainer_miou.py reports a real trained workdir (slow).
"""
import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_report import _write_run

from configs import deeplab_demo
from xception_jax import checkpointing, report
from xception_jax.models import create_model
from xception_jax.report import cost

NAN = float("nan")
SCALARS = {  # step: scalars of a segmentation run, with the trainer's tags
    10: {"train_loss": 1.5, "train_steps_per_sec": 2.0},
    20: {"train_loss": 1.0, "train_steps_per_sec": 4.0, "eval_mean_iou": 0.25,
         "eval_pixel_accuracy": 0.8, "eval_mean_iou_majority_class": 0.1,
         **{f"eval_iou/class_{c}": v for c, v in enumerate((0.9, 0.1, 0.0, NAN, 0.0))}},
    30: {"train_loss": 0.8, "train_steps_per_sec": 6.0, "eval_mean_iou": 0.4321,
         "eval_pixel_accuracy": 0.9123, "eval_mean_iou_majority_class": 0.0961,
         **{f"eval_iou/class_{c}": v for c, v in enumerate((0.95, 0.5, 0.25, NAN, 0.125))}},
}


def _config(**fields):
  config = deeplab_demo.get_config()
  config.image_size = 32
  config.embedded_segmentation.num_classes = 4  # + background: 5 classes
  config.model.num_middle_blocks = 1
  config.update_from_flattened_dict(fields)
  return config


def _row(text, label, header):
  """The cells of `label`'s row in the table whose header starts with `header`."""
  table = text[text.index(header):].split("\n\n")[0]
  line = next(l for l in table.splitlines() if l.startswith(f"| {label} |"))
  return [cell.strip() for cell in line.strip("|").split("|")]


@pytest.fixture(scope="module", name="written")
def _written(tmp_path_factory):
  root = tmp_path_factory.mktemp("report_segmentation")
  _write_run(str(root / "deeplab"), _config(), SCALARS)
  out = str(root / "out")
  with open(report.write_report([str(root / "deeplab")], out)) as f:
    return root, out, f.read()


def test_mean_iou_and_per_class_tables_hold_the_last_evaluation(written):
  _, _, text = written
  row = _row(text, "deeplab", "| Run | Mean IoU |")
  assert row[1:4] == ["0.4321", "0.9123", "0.0961"]
  model = create_model(_config().model, num_classes=5)
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  assert row[4] == f"{sum(x.size for x in jax.tree.leaves(variables['params'])):,}"
  assert row[6:8] == ["4.00", "30"]  # median of 2, 4, 6; the last step
  per_class = _row(text, "deeplab", "| Run | IoU class 0 |")
  assert per_class[1:] == ["0.950", "0.500", "0.250", "n/a", "0.125"]
  assert "| Run | Top-1 accuracy |" not in text  # not a classification table


def test_mean_iou_curve_is_plotted(written):
  _, out, text = written
  assert sorted(n for n in os.listdir(out) if n.endswith(".png")) == [
      "eval_mean_iou.png", "train_loss.png"]
  assert "](eval_mean_iou.png)" in text and "mean IoU (eval)" in text


def test_a_tfds_dataset_takes_its_class_count_from_the_checkpoint(tmp_path):
  config = _config(dataset="voc_segmentation").to_dict()
  assert not config.get("num_classes")
  workdir = str(tmp_path / "voc")
  with pytest.raises(ValueError, match="no checkpoint under checkpoints/ stores it"):
    cost.num_classes(config, workdir)
  checkpointing.save_variables(os.path.join(workdir, "checkpoints"),
                               {"params": {"w": np.zeros(2)}}, {"num_classes": 21}, step=7)
  assert cost.num_classes(config, workdir) == 21
  assert cost.model_fields(config, workdir)["num_classes"] == 21


def test_command_line_refuses_an_unreadable_run_in_one_line(tmp_path):
  _write_run(str(tmp_path / "no_classes"), _config(dataset="voc_segmentation"), SCALARS)
  result = subprocess.run(
      [sys.executable, "-m", "xception_jax.report", str(tmp_path / "no_classes"),
       f"--out={tmp_path / 'out'}"], capture_output=True, text=True, check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(
      f"error: {tmp_path / 'no_classes'}: config.json has no num_classes")
