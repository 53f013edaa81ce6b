"""The report tool on synthetic runs: TensorBoard event files written here with
clu.metric_writers, and config.json files as the trainer writes them."""
import functools
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from clu import metric_writers
from PIL import Image
from test_inception_v3 import hand_count

from configs import demo, experiments
from xception_jax import report
from xception_jax.models import create_model
from xception_jax.report import plots, table

MULTI = {  # step: scalars of the multi-label run
    10: {"train_loss": 0.9, "train_steps_per_sec": 0.5},
    20: {"train_loss": 0.7, "train_steps_per_sec": 5.0, "eval_map_at_100": 0.25,
         "eval_map_at_100_random_scores": 0.1},
    30: {"train_loss": 0.5, "train_steps_per_sec": 7.0, "eval_map_at_100": 0.4321,
         "eval_map_at_100_random_scores": 0.1234},
}
SINGLE = {
    5: {"train_loss": 2.0, "train_steps_per_sec": 3.0, "eval_top_1": 0.5, "eval_top_5": 0.75},
    8: {"train_loss": 1.5, "train_steps_per_sec": 4.0, "eval_top_1": 0.625,
        "eval_top_5": 0.875},
}


def _write_run(workdir, config, scalars):
  os.makedirs(workdir)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  writer = metric_writers.SummaryWriter(workdir)
  for step, values in scalars.items():
    writer.write_scalars(step, values)
  writer.close()


def _tiny_xception_config():
  config = demo.get_config()
  config.image_size = 72
  config.embedded.num_classes = 8
  config.model.num_middle_blocks = 1
  config.experiment = "tiny_xception"
  return config


def _inception_config():
  """Full width (its parameters are then the hand count of Keras' layers), 75x75."""
  config = experiments.get_config("imagenet_inception_v3")
  config.image_size = 75
  config.num_classes = 10
  return config


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  root = tmp_path_factory.mktemp("report")
  multi, single = str(root / "multi"), str(root / "single")
  _write_run(multi, _tiny_xception_config(), MULTI)
  _write_run(single, _inception_config(), SINGLE)
  out = str(root / "out")
  path = report.write_report([multi, single], out)
  with open(path) as f:
    return out, f.read()


def _row(text, label):
  line = next(l for l in text.splitlines() if l.startswith(f"| {label} |"))
  return [cell.strip() for cell in line.strip("|").split("|")]


def _params(config, num_classes):
  model = create_model(config.model, num_classes=num_classes)
  size = config.image_size
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros((1, size, size, 3)))
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


def xception_multiply_adds(size, w, middle, classes):
  """Multiply-adds of the convolutions and the head of a tiny Xception, by hand.
  w: widths (conv1, conv2, entry modules..., middle, exit 1024, 1536, 2048)."""
  c1, c2, e1, e2, e3, mid, x1, s1, s2 = w
  macs, s = 0, (size - 3) // 2 + 1
  macs += s * s * 27 * c1
  s -= 2
  macs += s * s * 9 * c1 * c2

  def sep(cin, cout, side):
    return side * side * (9 * cin + cin * cout)

  cin = c2
  for cout in (e1, e2, e3):                       # entry modules: 2 separable, pool, 1x1/2
    macs += sep(cin, cout, s) + sep(cout, cout, s)
    s = (s + 1) // 2
    macs += s * s * cin * cout
    cin = cout
  macs += middle * 3 * sep(mid, mid, s)
  macs += sep(mid, mid, s) + sep(mid, x1, s)       # exit module 728 -> 1024
  s = (s + 1) // 2
  macs += s * s * mid * x1
  macs += sep(x1, s1, s) + sep(s1, s2, s) + s2 * classes
  return macs


def test_table_holds_the_logged_numbers(written):
  out, text = written
  multi = _row(text, "tiny_xception")
  assert multi[1:3] == ["0.4321", "0.1234"]              # MAP@100 and chance at step 30
  config = _tiny_xception_config()
  assert multi[3] == f"{_params(config, 8):,}"
  assert multi[5] == "5.00" and multi[6] == "30"          # median of 0.5, 5, 7; last step
  single = _row(text, "imagenet_inception_v3")
  assert single[1:3] == ["0.625", "0.875"]
  assert single[3] == f"{hand_count(10):,}"
  assert single[5:7] == ["3.50", "8"]
  assert "| Run | Top-1 accuracy | Top-5 accuracy |" in text
  assert "| Run | MAP@100 | MAP@100, random scores |" in text


def test_flops_against_a_hand_count_of_the_convolutions(written):
  _, text = written
  value, prefix = re.fullmatch(r"([\d.]+) ([kMG])", _row(text, "tiny_xception")[4]).groups()
  flops = float(value) * {"k": 1e3, "M": 1e6, "G": 1e9}[prefix]
  macs = xception_multiply_adds(72, (8, 8, 16, 32, 88, 88, 128, 192, 256), 1, 8)
  # Convolutions dominate; BN, ReLU, pooling and the residual sums add a little.
  assert 2 * macs <= flops <= 1.3 * 2 * macs, (flops, 2 * macs)


def test_pngs_decode_to_the_figure_size(written):
  out, text = written
  names = sorted(n for n in os.listdir(out) if n.endswith(".png"))
  assert names == ["eval_map_at_100.png", "eval_top_1.png", "train_loss.png"]
  for name in names:
    with Image.open(os.path.join(out, name)) as image:
      image.load()
      assert image.size == (640, 400) and image.format == "PNG"
    assert f"]({name})" in text


def test_command_line_groups_and_progress(written, tmp_path):
  out, _ = written
  runs = os.path.dirname(out)
  result = subprocess.run(
      [sys.executable, "-m", "xception_jax.report", os.path.join(runs, "multi"),
       os.path.join(runs, "single"), f"--out={tmp_path}", "--figure=loss:multi,single",
       "--metrics=train_loss"], capture_output=True, text=True, check=True)
  assert "[2/2] read" in result.stderr
  assert sorted(os.listdir(tmp_path)) == ["loss_train_loss.png", "report.md"]


def test_not_a_run_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    report.write_report([str(tmp_path)], str(tmp_path / "out"))


def test_si_prefixes():
  assert table.si(13_618_940) == "13.62 M" and table.si(1.68e10) == "16.80 G"
  assert plots.metric_title("eval_map_at_100") == "MAP@100 (eval)"
