"""The small-scale study: every run's config builds its model; a two-step version of
the whole command (a subset of runs, a tiny dataset) trains and writes the report."""
import os

import jax
import jax.numpy as jnp
import pytest
from PIL import Image

from xception_jax import study
from xception_jax.models import create_model


def test_every_run_is_the_demo_recipe_with_its_experiments_model():
  params = {}
  for name in study.RUNS:
    config = study.run_config(name, steps=10, eval_every=5)
    assert (config.num_train_steps, config.eval_every_steps, config.experiment) == (10, 5, name)
    assert config.dataset == "embedded_shapes" and config.optimizer == "rmsprop"
    model = create_model(config.model, num_classes=config.embedded.num_classes)
    size = config.image_size
    shapes = jax.eval_shape(lambda m=model, s=size: m.init(jax.random.key(0),
                                                           jnp.zeros((1, s, s, 3))))
    params[name] = sum(x.size for x in jax.tree.leaves(shapes["params"]))
  # The spectrum: fewer segments, more parameters in the spatial convolutions.
  spectrum = [params[f"xception_segments_{n}"] for n in (1, 2, 4, 8)] + [params["xception"]]
  assert spectrum == sorted(spectrum, reverse=True) and len(set(spectrum)) == 5
  assert params["xception_relu"] == params["xception_elu"] == params["xception"]
  assert params["xception_no_residual"] < params["xception"]
  for group in study.FIGURES.values():
    assert set(group[1]) <= set(study.RUNS)


def test_unknown_run_is_named():
  with pytest.raises(ValueError, match="Unknown study run 'resnet'"):
    study.run_config("resnet", 10, 5)


@pytest.mark.slow  # three trainer runs: ~2-4 minutes on 2 cores
def test_two_step_study_writes_the_report(tmp_path):
  runs = ("xception", "inception_v3", "xception_segments_1")
  overrides = {"data_dir": str(tmp_path / "tfds"), "embedded.num_train": 64,
               "embedded.num_eval": 32, "batch_size": 8, "eval_batch_size": 16,
               "model.width_multiplier": 0.125}
  path = study.run_study(str(tmp_path / "study"), steps=2, eval_every=2, runs=runs,
                         overrides=overrides)
  with open(path) as f:
    text = f.read()
  for name in runs:
    row = next(l for l in text.splitlines() if l.startswith(f"| {name} |"))
    assert row.rstrip().endswith("| 2 |")                   # both runs' last step
    assert os.path.isfile(tmp_path / "study" / name / "config.json")
  pngs = sorted(n for n in os.listdir(tmp_path / "study") if n.endswith(".png"))
  assert pngs == ["spectrum_eval_map_at_100.png", "spectrum_train_loss.png",
                  "xception_vs_inception_v3_eval_map_at_100.png",
                  "xception_vs_inception_v3_train_loss.png"]
  with Image.open(tmp_path / "study" / pngs[0]) as image:
    assert image.size == (640, 400)
