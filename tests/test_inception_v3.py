"""Inception V3: parameter count against a hand count of Keras' layers, shapes, errors,
and the forward pass against keras.applications.InceptionV3 with the same weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xception_jax.models import InceptionV3, create_model, model_to_fields
from xception_jax.models.inception_v3 import KERAS_ORDER


def keras_convs():
  """(kh, kw, in, out) of every conv2d_bn call of keras.applications.InceptionV3, in
  Keras' order, typed from its source (independent of the Flax module's tables)."""
  c = [(3, 3, 3, 32), (3, 3, 32, 32), (3, 3, 32, 64), (1, 1, 64, 80), (3, 3, 80, 192)]
  cin = 192
  for pool in (32, 64, 64):                                     # mixed0-2
    c += [(1, 1, cin, 64), (1, 1, cin, 48), (5, 5, 48, 64), (1, 1, cin, 64),
          (3, 3, 64, 96), (3, 3, 96, 96), (1, 1, cin, pool)]
    cin = 64 + 64 + 96 + pool
  c += [(3, 3, cin, 384), (1, 1, cin, 64), (3, 3, 64, 96), (3, 3, 96, 96)]  # mixed3
  cin = 384 + 96 + cin
  for m in (128, 160, 160, 192):                                # mixed4-7
    c += [(1, 1, cin, 192), (1, 1, cin, m), (1, 7, m, m), (7, 1, m, 192), (1, 1, cin, m),
          (7, 1, m, m), (1, 7, m, m), (7, 1, m, m), (1, 7, m, 192), (1, 1, cin, 192)]
    cin = 768
  c += [(1, 1, cin, 192), (3, 3, 192, 320), (1, 1, cin, 192), (1, 7, 192, 192),
        (7, 1, 192, 192), (3, 3, 192, 192)]                     # mixed8
  cin = 320 + 192 + 768
  for _ in range(2):                                            # mixed9-10
    c += [(1, 1, cin, 320), (1, 1, cin, 384), (1, 3, 384, 384), (3, 1, 384, 384),
          (1, 1, cin, 448), (3, 3, 448, 384), (1, 3, 384, 384), (3, 1, 384, 384),
          (1, 1, cin, 192)]
    cin = 2048
  return c, cin


def hand_count(num_classes):
  """Trainable: conv kernels, one BN offset per channel (no scale), the head."""
  convs, features = keras_convs()
  return (sum(kh * kw * i * o + o for kh, kw, i, o in convs)
          + features * num_classes + num_classes)


def _abstract(model, size=299):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)),
                                           train=False))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_parameter_count_is_keras():
  variables = _abstract(InceptionV3(num_classes=1000))
  assert hand_count(1000) == 23_817_352                   # Keras' trainable count
  assert _count(variables["params"]) == hand_count(1000)
  assert _count(variables["params"]) + _count(variables["batch_stats"]) == 23_851_784
  assert _count(_abstract(InceptionV3(num_classes=17_000))["params"]) == hand_count(17_000)


def test_parameter_tree_follows_keras_order():
  params = _abstract(InceptionV3(num_classes=10))["params"]
  convs, _ = keras_convs()
  assert len(KERAS_ORDER) == len(convs) == 94
  for path, shape in zip(KERAS_ORDER, convs):
    node = params
    for part in path.split("/"):
      node = node[part]
    assert node["conv"]["kernel"].shape == shape, path
    assert set(node["bn"]) == {"bias"}, path              # BatchNorm without scale
  assert params["head"]["kernel"].shape == (2048, 10)


def test_shapes_fc_layers_and_width_multiplier():
  model = create_model({"architecture": "inception_v3", "num_classes": 7,
                        "width_multiplier": 0.125, "fc_layers": [32, 16]})
  variables = _abstract(model, 75)
  assert variables["params"]["fc1"]["kernel"].shape == (256, 32)   # 2048 / 8 features
  assert variables["params"]["head"]["kernel"].shape == (16, 7)
  logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, 75, 75, 3))), variables)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  features = InceptionV3(include_top=False, width_multiplier=0.125)
  assert jax.eval_shape(lambda: features.init_with_output(
      jax.random.key(0), jnp.zeros((1, 80, 80, 3)))[0]).shape == (1, 256)


def test_fields_round_trip():
  model = create_model({"architecture": "inception_v3", "num_classes": 5, "dtype": "bfloat16",
                        "dropout_rate": 0.2, "fc_layers": (8,)})
  assert isinstance(model, InceptionV3)
  assert create_model(model_to_fields(model)) == model
  with pytest.raises(ValueError, match="Unknown InceptionV3 field.*'residual'"):
    create_model({"architecture": "inception_v3", "residual": True})
  with pytest.raises(ValueError, match="Unknown model architecture 'resnet'"):
    create_model({"architecture": "resnet"})


def test_small_input_is_refused_with_the_minimum():
  model = InceptionV3(num_classes=3, width_multiplier=0.125)
  with pytest.raises(ValueError, match="at least 75x75; got 74x80"):
    model.init(jax.random.key(0), jnp.zeros((1, 74, 80, 3)))


def _creation_index(layer):
  """conv2d -> 0, conv2d_12 -> 12: Keras numbers auto-named layers as it creates them."""
  suffix = layer.name.rsplit("_", 1)[-1]
  return int(suffix) if suffix.isdigit() else 0


@pytest.mark.slow  # ~45 s: builds Keras' network and compiles the full-width Flax one
def test_forward_matches_keras_with_the_same_weights():
  """keras.applications.InceptionV3 with random weights and BN statistics, its tensors
  copied along KERAS_ORDER: same logits (this fixes concatenation order, 1x7 vs 7x1,
  padding and average pooling that ignores the padding)."""
  import keras  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  net = keras.applications.InceptionV3(weights=None, input_shape=(75, 75, 3), classes=10,
                                       classifier_activation=None)
  convs = sorted((l for l in net.layers if l.__class__.__name__ == "Conv2D"),
                 key=_creation_index)
  norms = sorted((l for l in net.layers if l.__class__.__name__ == "BatchNormalization"),
                 key=_creation_index)
  params, stats = {}, {}
  for path, conv, norm in zip(KERAS_ORDER, convs, norms, strict=True):
    beta, mean, var = (rng.normal(size=w.shape).astype(np.float32) for w in norm.get_weights())
    var = np.abs(var) + 0.5
    norm.set_weights([beta, mean, var])
    p, s = params, stats
    for part in path.split("/"):
      p, s = p.setdefault(part, {}), s.setdefault(part, {})
    p["conv"] = {"kernel": conv.get_weights()[0]}
    p["bn"] = {"bias": beta}
    s["bn"] = {"mean": mean, "var": var}
  kernel, bias = net.get_layer("predictions").get_weights()
  bias = rng.normal(size=bias.shape).astype(np.float32)
  net.get_layer("predictions").set_weights([kernel, bias])
  params["head"] = {"kernel": kernel, "bias": bias}
  images = rng.uniform(-1, 1, size=(2, 75, 75, 3)).astype(np.float32)
  expected = np.asarray(net(images, training=False))
  got = InceptionV3(num_classes=10).apply({"params": params, "batch_stats": stats}, images)
  scale = np.abs(expected).max()
  assert scale > 0.1
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-4 * scale)
