"""The DeepLab configs: DeepLab v3+'s VOC recipe, the demo, command-line overrides."""
import pytest

from configs import deeplab_demo, deeplab_voc
from test_configs import _none_fields, _parse
from xception_jax import validation
from xception_jax.models import DeepLabV3Plus, create_model


def test_voc_recipe_is_deeplabs():
  c = deeplab_voc.get_config()
  assert (c.task, c.dataset, c.train_split, c.eval_split) == (
      "segmentation", "voc_segmentation", "train_aug", "validation")
  assert (c.image_size, c.eval_image_size, c.batch_size) == (513, 513, 16)
  assert (c.optimizer, c.momentum, c.learning_rate, c.weight_decay) == ("sgd", 0.9, 0.007, 4e-5)
  assert (c.lr_schedule, c.lr_poly_power, c.num_train_steps) == ("poly", 0.9, 30_000)
  assert (c.min_scale_factor, c.max_scale_factor, c.scale_factor_step_size) == (0.5, 2.0, 0.25)
  model = create_model(c.model, num_classes=21)
  assert isinstance(model, DeepLabV3Plus)
  assert (model.backbone, model.output_stride, model.rates()) == ("xception65", 16, (6, 12, 18))
  assert (model.aspp_depth, model.decoder_projection_depth, model.decoder_depth) == (256, 48, 256)
  assert (model.dropout_rate, model.bn_momentum) == (0.1, 0.9997)
  assert c.init_from is None                     # set on the command line
  assert deeplab_voc.get_config("train").train_split == "train"
  with pytest.raises(ValueError, match="Unknown config variant"):
    deeplab_voc.get_config("coco")


def test_demo_config_is_valid_and_tiny():
  c = deeplab_demo.get_config()
  validation.validate(c)                         # fields, dataset name, the model's init
  model = create_model(c.model, num_classes=9)
  assert (model.backbone, model.width_multiplier, model.num_middle_blocks) == (
      "xception41", 0.125, 2)
  assert model.head_widths() == dict(aspp_depth=32, decoder_projection_depth=8,
                                     decoder_depth=32)
  assert c.dataset == "embedded_shapes_segmentation" and c.lr_schedule == "poly"


@pytest.mark.parametrize("path,module", [("configs/deeplab_voc.py", deeplab_voc),
                                         ("configs/deeplab_demo.py", deeplab_demo)])
def test_every_unset_field_can_be_set_from_the_command_line(path, module):
  values = {str: ("x", "x"), int: ("4", 4), float: ("0.5", 0.5),
            tuple: ("(3,5,7)", (3, 5, 7))}
  fields = list(_none_fields(module.get_config()))
  assert "init_from" in dict(fields)
  argv = [f"--config={path}"] + [f"--config.{name}={values[kind][0]}" for name, kind in fields]
  config = _parse(argv)
  for name, kind in fields:
    value = config
    for part in name.split("."):
      value = value[part]
    assert value == values[kind][1], name
