"""configs/experiments.py: every experiment of the paper builds its model with the
paper's settings; one training step each at tiny size (slow); docs list every name."""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import experiments
from xception_jax import optim, steps, tasks, train
from xception_jax.models import InceptionV3, Xception, create_model
from xception_jax.validation import ConfigError

NAMES = list(experiments.EXPERIMENTS)


def _tiny(config, num_classes=6):
  """The experiment at tiny size: width 1/8, one middle module, 75x75, batch 2."""
  config.model.width_multiplier = 0.125
  if config.model.architecture == "xception":
    config.model.num_middle_blocks = 1
  config.model.dtype = "float32"
  if tuple(config.model.fc_layers):
    config.model.fc_layers = (16, 16)
  config.num_classes = num_classes
  config.image_size = 75
  config.batch_size = 2
  return config


@pytest.mark.parametrize("name", NAMES)
def test_every_experiment_builds_its_model(name):
  config = experiments.get_config(name)
  recipe, architecture, variant, _ = experiments.EXPERIMENTS[name]
  model = create_model(config.model, num_classes=config.num_classes)
  assert isinstance(model, {"xception": Xception, "inception_v3": InceptionV3}[architecture])
  assert config.task == {"imagenet": "single_label", "jft": "multi_label"}[recipe]
  assert config.num_classes == {"imagenet": 1000, "jft": 17_000}[recipe]
  assert tuple(model.fc_layers) == ((4096, 4096) if variant == "fc" else ())
  if architecture == "xception":
    assert model.residual == (variant != "no_residual")
    assert model.intermediate_activation == (variant if variant in ("relu", "elu") else None)
    assert model.segments == (int(variant.split("=")[1]) if "segments" in variant else None)
  tiny = create_model(_tiny(config).model, num_classes=6)
  shapes = jax.eval_shape(lambda: tiny.init(jax.random.key(0), jnp.zeros((1, 75, 75, 3))))
  assert shapes["params"]["head"]["kernel"].shape[-1] == 6


def test_the_paper_recipes_of_each_network():
  ix, iv = (experiments.get_config(n) for n in ("imagenet_xception", "imagenet_inception_v3"))
  assert (ix.optimizer, ix.learning_rate, ix.weight_decay, ix.label_smoothing) == (
      "sgd", 0.045, 1e-5, 0.0)
  assert (iv.optimizer, iv.learning_rate, iv.rmsprop_decay, iv.rmsprop_epsilon) == (
      "rmsprop", 0.045, 0.9, 1.0)
  assert (iv.label_smoothing, iv.weight_decay, iv.grad_clip_norm) == (0.1, 4e-5, 2.0)
  assert iv.lr_decay_rate == 0.94 and iv.lr_decay_every_examples == 2 * 1_281_167
  assert ix.model.dropout_rate == iv.model.dropout_rate == 0.5
  jx, jv = (experiments.get_config(n) for n in ("jft_xception", "jft_inception_v3_fc"))
  for config in (jx, jv):
    assert (config.optimizer, config.learning_rate, config.lr_decay_rate) == (
        "rmsprop", 0.001, 0.9)
    assert config.lr_decay_every_examples == 3_000_000 and config.model.dropout_rate == 0.0
  assert (jx.weight_decay, jv.weight_decay) == (1e-5, 4e-5)
  assert experiments.get_config("imagenet_xception_segments_16").model.segments == 16


def test_unknown_experiment_lists_the_names():
  with pytest.raises(ValueError, match="Unknown experiment 'jft'.*jft_xception_fc"):
    experiments.get_config("jft")


def test_jft_without_its_data_fails_before_compiling(tmp_path):
  config = experiments.get_config("jft_xception_fc")
  config.dataset = f"tfrecord_multilabel:{tmp_path}/train-*.tfrecord"
  with pytest.raises(ConfigError, match="config.dataset = .*: no file matches"):
    train.train_and_evaluate(config, str(tmp_path / "run"))


def test_docs_table_lists_every_experiment():
  path = os.path.join(os.path.dirname(__file__), "..", "docs", "EXPERIMENTS.md")
  with open(path) as f:
    text = f.read()
  for name, (_, _, _, where) in experiments.EXPERIMENTS.items():
    row = next((l for l in text.splitlines() if l.startswith(f"| `{name}` |")), None)
    assert row is not None, name
    assert where.split(",")[0].split(":")[0] in row, (name, where)


@pytest.mark.slow  # one compile per experiment: ~20-60 s each on 2 cores
@pytest.mark.parametrize("name", NAMES)
def test_every_experiment_trains_one_step(name):
  config = _tiny(experiments.get_config(name))
  model = create_model(config.model, num_classes=config.num_classes)
  tx = optim.create_optimizer(config)
  # An rbg key: Inception V3's init compiles ~4x faster than with threefry on CPU.
  state = jax.jit(functools.partial(steps.create_train_state, model, tx, image_size=75))(
      jax.random.key(0, impl="rbg"))
  rng = np.random.default_rng(0)
  images = rng.uniform(-1, 1, (2, 75, 75, 3)).astype(np.float32)
  if config.task == "single_label":
    labels = np.array([1, 4])
  else:
    labels = (rng.random((2, 6)) < 0.3).astype(np.float32)
  step = jax.jit(functools.partial(
      steps.train_step, model=model, tx=tx, schedule=optim.learning_rate_schedule(config),
      objective=tasks.get(config.task).objective(config)))
  new, metrics = step(state, {"image": images, "label": labels}, jax.random.key(1))
  assert int(new.step) == 1 and np.isfinite(float(metrics.compute()["loss"]))
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), new.params, state.params)
  assert max(jax.tree.leaves(moved)) > 0
