"""DeepLab v3+ (xception_jax/models/deeplab.py): output size, backbones, head size, fields.

Shapes come from jax.eval_shape (tracing, no compilation). The head's parameter count
is checked against a hand count written here from the architecture's description
(DeepLab v3+ section 3, tensorflow/models research/deeplab model.py), not from the
module: every 1x1 conv is in x out weights, every separable conv 9 x in (depthwise) +
in x out (pointwise), every BatchNorm 2 x channels (scale, bias) plus 2 x channels of
statistics, the classifier in x classes + classes.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xception_jax.models import create_model, model_to_fields, scaled_width
from xception_jax.models.aligned_xception import AlignedXception
from xception_jax.models.deeplab import DeepLabV3Plus, backbone_blocks

TINY = dict(width_multiplier=0.125, num_middle_blocks=1)


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _shapes(model, height, width):
  x = jax.ShapeDtypeStruct((2, height, width, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
  logits = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
  return variables, logits


@pytest.mark.parametrize("output_stride", [8, 16])
def test_logits_have_the_input_size(output_stride):
  model = DeepLabV3Plus(num_classes=5, backbone="xception41", output_stride=output_stride,
                        **TINY)
  for height, width in [(65, 65), (33, 47), (64, 96)]:
    _, logits = _shapes(model, height, width)
    assert (logits.shape, logits.dtype) == ((2, height, width, 5), jnp.float32)


@pytest.mark.parametrize("backbone", ["xception41", "xception65", "xception71"])
def test_every_backbone_depth_builds_and_its_variables_are_the_classifiers(backbone):
  """The 'backbone' subtree has exactly the shapes of the classification model of that
  depth minus its dense head: a classification checkpoint fits it."""
  model = DeepLabV3Plus(num_classes=3, backbone=backbone, width_multiplier=0.125)
  variables, logits = _shapes(model, 33, 33)
  assert logits.shape == (2, 33, 33, 3)
  classifier = create_model({"architecture": backbone, "width_multiplier": 0.125},
                            num_classes=7)
  reference = jax.eval_shape(
      lambda: classifier.init(jax.random.key(0), jnp.zeros((1, 33, 33, 3))))
  for collection in ("params", "batch_stats"):
    expected = {k: v for k, v in reference[collection].items() if k != "head"}
    got = variables[collection]["backbone"]
    assert jax.tree.map(lambda a: a.shape, got) == jax.tree.map(lambda a: a.shape, expected)
  assert set(variables["params"]) == {"backbone", "head"}
  assert set(variables["params"]["head"]) == {"aspp", "decoder"}


def _hand_count(num_classes, encoder=2048, low_level=256, aspp=256, projection=48,
                decoder=256):
  """(trainable, BN statistics) of ASPP + decoder, from the architecture's description."""
  params = stats = 0

  def bn(c):
    nonlocal params, stats
    params += 2 * c
    stats += 2 * c

  def conv1x1(cin, cout):
    nonlocal params
    params += cin * cout
    bn(cout)

  def separable(cin, cout):          # depthwise 3x3 -> BN -> ReLU -> 1x1 -> BN -> ReLU
    nonlocal params
    params += 9 * cin
    bn(cin)
    conv1x1(cin, cout)

  conv1x1(encoder, aspp)             # ASPP 1x1 branch
  for _ in range(3):                 # three atrous separable branches
    separable(encoder, aspp)
  conv1x1(encoder, aspp)             # image pooling
  conv1x1(5 * aspp, aspp)            # projection of the concatenation
  conv1x1(low_level, projection)     # decoder: stride-4 features to 48
  separable(aspp + projection, decoder)
  separable(decoder, decoder)
  params += decoder * num_classes + num_classes  # 1x1 classifier with bias
  return params, stats


def test_head_parameters_match_the_hand_count_at_full_width():
  model = create_model({"architecture": "deeplabv3plus"}, num_classes=21)
  variables, _ = _shapes(model, 33, 33)
  head = (_count(variables["params"]["head"]), _count(variables["batch_stats"]["head"]))
  assert head == _hand_count(21) == (3_188_101, 17_600)   # docs/MODELS.md's table
  assert _count(variables["params"]["head"]["aspp"]) == 3_019_776
  # The backbone is Xception-65 without its 1000-class dense layer (2048 x 1000 + 1000).
  assert _count(variables["params"]["backbone"]) == 39_916_312 - 2_049_000


def test_head_widths_scale_with_the_width_multiplier():
  model = DeepLabV3Plus(num_classes=9, backbone="xception65", **TINY)
  variables, _ = _shapes(model, 33, 33)
  w = lambda c: scaled_width(c, 0.125)
  expected = _hand_count(9, encoder=w(2048), low_level=w(256), aspp=w(256),
                         projection=w(48), decoder=w(256))
  head = (_count(variables["params"]["head"]), _count(variables["batch_stats"]["head"]))
  assert head == expected
  assert (w(256), w(48)) == (32, 8)


def test_fields_round_trip_through_the_factory():
  model = create_model({"architecture": "deeplabv3plus", "backbone": "xception71",
                        "output_stride": 8, "atrous_rates": [3, 5, 7], **TINY},
                       num_classes=4)
  fields = model_to_fields(model)
  assert fields["architecture"] == "deeplabv3plus" and fields["backbone"] == "xception71"
  assert create_model(fields) == model
  assert model.rates() == (3, 5, 7)
  assert DeepLabV3Plus(output_stride=16).rates() == (6, 12, 18)
  assert DeepLabV3Plus(output_stride=8).rates() == (12, 24, 36)


def test_middle_flow_can_be_shortened():
  assert len(backbone_blocks("xception65")) == 3 + 16 + 2
  short = backbone_blocks("xception65", 2)
  assert [b.flow for b in short] == ["entry"] * 3 + ["middle"] * 2 + ["exit"] * 2


@pytest.mark.parametrize("fields,message", [
    (dict(backbone="resnet50"), "backbone must be one of"),
    (dict(output_stride=32), "output_stride must be one of"),
    (dict(atrous_rates=(6, 12)), "atrous_rates must be None or three integers"),
    (dict(dropout_rate=1.0), "dropout_rate must be in"),
    (dict(head_bn_epsilon=0.0), "head_bn_epsilon must be > 0"),
    (dict(head_init="he"), "head_init must be one of"),
])
def test_bad_fields_are_named(fields, message):
  model = DeepLabV3Plus(num_classes=3, **{**TINY, **fields})
  with pytest.raises(ValueError, match=message):
    _shapes(model, 33, 33)


def test_another_output_stride_keeps_the_parameters_and_scales_the_rates():
  """Evaluation at output stride 8 of a model trained at 16 (DeepLab's best row): the
  same variables apply; default rates become (12, 24, 36), explicit ones scale by 2, and
  the backbone's stride-2 blocks become dilated."""
  model = DeepLabV3Plus(num_classes=3, backbone="xception41", **TINY)
  at8 = model.at_output_stride(8)
  assert (at8.output_stride, at8.rates()) == (8, (12, 24, 36))
  assert model.at_output_stride(16) is model
  explicit = model.clone(atrous_rates=(3, 5, 7)).at_output_stride(8)
  assert explicit.rates() == (6, 10, 14)
  assert DeepLabV3Plus(output_stride=8, atrous_rates=(2, 4, 6)).at_output_stride(16).rates() \
      == (1, 2, 3)
  with pytest.raises(ValueError, match="do not scale to integers"):
    DeepLabV3Plus(output_stride=8, atrous_rates=(3, 4, 6)).at_output_stride(16)
  with pytest.raises(ValueError, match="output_stride must be one of"):
    model.at_output_stride(32)
  x = jax.random.uniform(jax.random.key(0), (1, 65, 65, 3))
  variables = jax.jit(lambda x: model.init(jax.random.key(1), x))(x)
  shapes = lambda tree: jax.tree.map(lambda a: a.shape, tree)
  assert shapes(jax.eval_shape(lambda: at8.init(jax.random.key(1), x))) == shapes(variables)
  assert np.asarray(jax.jit(at8.apply)(variables, x)).shape == (1, 65, 65, 3)
  backbone = {k: v["backbone"] for k, v in variables.items()}
  def final(m):
    encoder = AlignedXception(backbone_blocks("xception41", 1), include_top=False,
                              output_stride=m.output_stride, width_multiplier=0.125)
    return np.asarray(encoder.apply(backbone, x, return_features=True)["level5"])
  assert final(model).shape[1:3] == (5, 5) and final(at8).shape[1:3] == (9, 9)


def test_validation_knows_the_head_inits():
  from xception_jax import validation  # pylint: disable=import-outside-toplevel
  from xception_jax.models import deeplab  # pylint: disable=import-outside-toplevel
  assert validation.HEAD_INITS == deeplab.HEAD_INITS
