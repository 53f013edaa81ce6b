"""The configs load with every variant, and every field can be set from the command line."""
import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from configs import demo, imagenet, multilabel
from xception_jax.models import create_model


def _parse(argv):
  """Parses argv the way main.py does, on a private flag registry (config_flags finds
  the `--config.X` overrides in the argv it is given, by default sys.argv)."""
  argv = ["main.py", *argv]
  registry = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=registry,
                                  lock_config=True, sys_argv=argv)
  registry(argv)
  return registry.config


def _none_fields(config, prefix=""):
  """(dotted name, type) of every field that is None by default."""
  for name, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _none_fields(value, f"{prefix}{name}.")
    elif value is None:
      yield f"{prefix}{name}", config.get_ref(name).get_type()


@pytest.mark.parametrize("module,variants", [
    (imagenet, ["", "no_residual", "relu", "elu", "fc", "pointwise_first", "segments=4",
                "no_residual,elu"]),
    (multilabel, ["", "fc", "open_images_v4", "coco/2017,fc", "voc/2012"]),
    (demo, ["", "relu"]),
])
def test_configs_and_variants_build_valid_models(module, variants):
  for variant in variants:
    config = module.get_config(variant)
    model = create_model(config.model, num_classes=config.num_classes or 10)
    assert model.residual == ("no_residual" not in variant)
    if "fc" in variant.split(","):
      assert tuple(model.fc_layers) == (4096, 4096)
    if "segments=4" in variant:
      assert model.segments == 4


def test_paper_recipes():
  im, ml = imagenet.get_config(), multilabel.get_config()
  assert (im.optimizer, im.learning_rate, im.momentum, im.lr_decay_rate) == ("sgd", 0.045, 0.9, 0.94)
  assert im.lr_decay_every_examples == 2 * 1_281_167 and im.weight_decay == 1e-5
  assert im.model.dropout_rate == 0.5 and im.image_size == 299 and im.task == "single_label"
  assert (ml.optimizer, ml.learning_rate, ml.momentum, ml.lr_decay_rate) == ("rmsprop", 0.001, 0.9, 0.9)
  assert ml.lr_decay_every_examples == 3_000_000 and ml.model.dropout_rate == 0.0
  assert ml.num_classes == 17_000 and ml.task == "multi_label" and ml.map_k == 100


def test_unknown_variant_is_named():
  with pytest.raises(ValueError, match="Unknown config variant 'resnet'"):
    imagenet.get_config("resnet")


@pytest.mark.parametrize("path", ["configs/demo.py", "configs/imagenet.py",
                                  "configs/multilabel.py"])
def test_every_unset_field_can_be_set_from_the_command_line(path):
  module = {"configs/demo.py": demo, "configs/imagenet.py": imagenet,
            "configs/multilabel.py": multilabel}[path]
  values = {str: "x", int: 4, float: 0.5, tuple: (1, 3)}
  fields = list(_none_fields(module.get_config()))
  assert fields, "expected optional fields (data_dir, init_from, ...)"
  argv = [f"--config={path}"] + [f"--config.{name}={values[kind]}" for name, kind in fields]
  config = _parse(argv)
  for name, kind in fields:
    value = config
    for part in name.split("."):
      value = value[part]
    assert value == values[kind], name


def test_command_line_overrides_reach_nested_fields():
  config = _parse(["--config=configs/imagenet.py:relu", "--config.batch_size=512",
                   "--config.model.residual=False", "--config.data_dir=/data/tfds",
                   "--config.init_from=/ckpt/keras"])
  assert config.batch_size == 512 and config.model.residual is False
  assert config.model.intermediate_activation == "relu"
  assert (config.data_dir, config.init_from) == ("/data/tfds", "/ckpt/keras")
