"""DeepLab v3+'s ASPP and decoder inputs, seen from inside a tiny model's forward pass.

Every module call of one (jitted) forward pass is recorded (`flax.linen.intercept_methods`:
the module, its array inputs and its output). The input is wide enough that the encoder map
(21 x 19 at output stride 16) is wider than every default rate (6, 12, 18), so a branch
with another dilation would give other numbers. Checked against NumPy (float64) on
random weights, random BN scales and offsets in the head, and BN statistics taken from
the batch itself (not the initial 0 and 1):
- each atrous branch: a depthwise convolution dilated by its rate (zero padding `rate`
  on each side), BN, ReLU, pointwise, BN, ReLU;
- image pooling: its 1x1 conv sees the [N, 1, 1, C] mean of the map, and its output is
  spread over the whole map;
- the concatenation [1x1, rate 6, rate 12, rate 18, pooling], projected, BN, ReLU, is
  the ASPP output (dropout is off at evaluation);
- the decoder's low-level input is the backbone's stride-4 feature map taken before the
  ReLU (TF's `separable_conv2_pointwise`: the BN output, negative values and all), or
  after it with decoder_features_before_relu=False;
- the head's BNs use head_bn_epsilon (1e-5; the NumPy BN below uses it, and 1e-3 fails
  the ASPP comparison), the backbone's bn_epsilon (1e-3).
A dilation of 1 in any branch, or a per-pixel 1x1 conv for image pooling, fails here.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xception_jax.models import deeplab
from xception_jax.models.xception import scaled_width

H, W, BATCH = 321, 289, 2
EPS = 1e-3        # the backbone's
HEAD_EPS = 1e-5   # the head's (TF DeepLab's)


@pytest.fixture(name="forward", scope="module")
def _forward_fixture():
  return _forward()


def _forward():
  model = deeplab.DeepLabV3Plus(num_classes=5, backbone="xception41", num_middle_blocks=0,
                                width_multiplier=0.125, output_stride=16, bn_epsilon=EPS,
                                head_bn_epsilon=HEAD_EPS)
  images = jax.random.uniform(jax.random.key(0), (BATCH, H, W, 3), minval=-1, maxval=1)
  variables = jax.jit(lambda x: model.init(jax.random.key(1), x))(images)
  # BN statistics of this batch (momentum 0), so every map keeps unit scale and its
  # spatial variation at evaluation.
  _, updates = jax.jit(lambda v, x: model.clone(bn_momentum=0.0).apply(
      v, x, train=True, mutable=["batch_stats"],
      rngs={"dropout": jax.random.key(3)}))(variables, images)
  variables = {**variables, **updates}
  # The head's BN scales and offsets random (its statistics are the batch's, above).
  rng = np.random.default_rng(2)

  def randomise(path, leaf):
    if path[-1].key == "scale":
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
    if path[-1].key == "bias" and "_bn" in str(path[-2].key):
      return jnp.asarray(rng.normal(0, 0.2, leaf.shape), leaf.dtype)
    return leaf
  params = variables["params"]
  variables = {**variables, "params": {
      **params, "head": jax.tree_util.tree_map_with_path(randomise, params["head"])}}

  modules, calls = {}, {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__":
      path = tuple(context.module.path)
      modules.setdefault(path, context.module)
      calls.setdefault(path, (tuple(a for a in args if isinstance(a, jax.Array)), out))
    return out

  def apply(v, x):  # traced once: the arrays come back as outputs of the jitted pass
    with nn.intercept_methods(record):
      model.apply(v, x, train=False)
    return calls

  recorded = jax.jit(apply)(variables, images)
  numpy = lambda tree: jax.tree.map(lambda a: np.asarray(a, np.float64), tree)
  return (model, numpy(variables["params"]), numpy(variables["batch_stats"]),
          {path: (modules[path], *numpy(call)) for path, call in recorded.items()})


def _bn(y, params, stats):
  return (y - stats["mean"]) / np.sqrt(stats["var"] + HEAD_EPS) * params["scale"] + params["bias"]


def _pointwise(y, params):
  return y @ params["kernel"][0, 0]


def _depthwise_dilated(x, kernel, rate):
  """out[n, h, w, c] = sum_ij xpad[n, h + rate * i, w + rate * j, c] * k[i, j, 0, c]."""
  k = kernel.shape[0]
  pad = rate * (k // 2)
  xpad = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out = np.zeros_like(x)
  for i in range(k):
    for j in range(k):
      out += xpad[:, rate * i:rate * i + x.shape[1], rate * j:rate * j + x.shape[2]] * \
          kernel[i, j, 0]
  return out


def _relu(y):
  return np.maximum(y, 0.0)


def test_the_default_rates_reach_the_branches(forward):
  model, _, _, calls = forward
  aspp = calls[("head", "aspp")][0]
  assert model.rates() == aspp.atrous_rates == (6, 12, 18)
  for i, rate in enumerate((6, 12, 18), 1):
    assert calls[("head", "aspp", f"aspp{i}", "depthwise")][0].dilation == rate
  assert deeplab.default_atrous_rates(8) == (12, 24, 36)


def test_aspp_equals_numpy_with_atrous_branches_and_image_pooling(forward):
  _, params, stats, calls = forward
  p, s = params["head"]["aspp"], stats["head"]["aspp"]
  _, (x,), aspp_out = calls[("head", "aspp")]
  assert x.shape == (BATCH, -(-H // 16), -(-W // 16), scaled_width(2048, 0.125))
  assert x.shape[1:3] == (21, 19)  # wider than rate 18: every tap of every rate matters

  def conv_bn_relu(y, name):
    return _relu(_bn(_pointwise(y, p[name]), p[f"{name}_bn"], s[f"{name}_bn"]))

  branches = [conv_bn_relu(x, "aspp0")]
  for i, rate in enumerate((6, 12, 18), 1):
    bp, bs = p[f"aspp{i}"], s[f"aspp{i}"]
    y = _depthwise_dilated(x, bp["depthwise"]["kernel"], rate)
    y = _relu(_bn(y, bp["depthwise_bn"], bs["depthwise_bn"]))
    y = _relu(_bn(_pointwise(y, bp["pointwise"]), bp["pointwise_bn"], bs["pointwise_bn"]))
    got = calls[("head", "aspp", f"aspp{i}")][2]
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-4 * np.abs(y).max(),
                               err_msg=f"branch aspp{i} (rate {rate})")
    branches.append(y)

  pooled_input = calls[("head", "aspp", "image_pooling")][1][0]
  assert pooled_input.shape == (BATCH, 1, 1, x.shape[-1])
  np.testing.assert_allclose(pooled_input, x.mean(axis=(1, 2), keepdims=True), rtol=1e-5,
                             atol=1e-6)
  pooled = conv_bn_relu(x.mean(axis=(1, 2), keepdims=True), "image_pooling")
  branches.append(np.broadcast_to(pooled, branches[0].shape))
  want = conv_bn_relu(np.concatenate(branches, axis=-1), "concat_projection")
  assert want.std(axis=(1, 2)).mean() > 0.01  # a map that varies, not a constant
  np.testing.assert_allclose(aspp_out, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_the_decoder_takes_the_stride_4_entry_flow_features_before_the_relu(forward):
  model, _, _, calls = forward
  assert model.decoder_features_before_relu
  features = calls[("backbone",)][2]
  _, (encoder, low_level), _ = calls[("head", "decoder")]
  assert low_level.shape == (BATCH, -(-H // 4), -(-W // 4), scaled_width(256, 0.125))
  np.testing.assert_array_equal(low_level, features[deeplab.DECODER_LEVEL])
  # TF's end point: entry_flow/block2's second separable conv, its pointwise BN output.
  sepconv2 = calls[("backbone", "entry_flow_block2", "sepconv2")][2]
  np.testing.assert_array_equal(
      low_level, calls[("backbone", "entry_flow_block2", "sepconv2", "pointwise_bn")][2])
  np.testing.assert_array_equal(low_level, sepconv2)
  assert (low_level < 0).mean() > 0.2
  np.testing.assert_array_equal(encoder, calls[("head", "aspp")][2])


def test_the_old_switch_takes_the_features_after_the_relu():
  model = deeplab.DeepLabV3Plus(num_classes=3, backbone="xception41", num_middle_blocks=0,
                                width_multiplier=0.125, decoder_features_before_relu=False)
  images = jax.random.uniform(jax.random.key(0), (1, 33, 33, 3), minval=-1, maxval=1)
  variables = model.init(jax.random.key(1), images)
  seen = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == "__call__":
      seen.setdefault(tuple(context.module.path), (args, out))
    return out
  with nn.intercept_methods(record):
    model.apply(variables, images)
  low_level = np.asarray(seen[("head", "decoder")][0][1])
  sepconv2 = np.asarray(seen[("backbone", "entry_flow_block2", "sepconv2")][1])
  assert low_level.min() >= 0 and sepconv2.min() < 0
  np.testing.assert_array_equal(low_level, np.maximum(sepconv2, 0))


def test_the_head_and_backbone_bns_have_their_epsilons(forward):
  _, _, _, calls = forward
  bns = {path: module for path, (module, *_) in calls.items()
         if isinstance(module, nn.BatchNorm) or type(module).__name__.endswith("BatchNorm")}
  head = [m.epsilon for p, m in bns.items() if p[0] == "head"]
  backbone = [m.epsilon for p, m in bns.items() if p[0] == "backbone"]
  # ASPP: aspp0, image_pooling, concat_projection, 2 per atrous branch; decoder: 1 + 2 x 2
  assert len(head) == 14 and set(head) == {HEAD_EPS}
  assert len(backbone) > 20 and set(backbone) == {EPS}


def _align_corners_matrix(n_in, n_out):
  """Row i interpolates input coordinate i * (n_in - 1) / (n_out - 1) (TF's geometry)."""
  m = np.zeros((n_out, n_in))
  for i in range(n_out):
    c = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    lo = min(int(np.floor(c)), n_in - 1)
    hi = min(lo + 1, n_in - 1)
    m[i, lo] += 1 - (c - lo)
    m[i, hi] += c - lo
  return m


def _upsample(x, height, width):
  return np.einsum("hi,wj,nijc->nhwc", _align_corners_matrix(x.shape[1], height),
                   _align_corners_matrix(x.shape[2], width), x)


def test_the_decoder_and_the_logits_upsample_with_aligned_corners(forward):
  model, _, _, calls = forward
  assert model.align_corners
  _, (encoder, low_level), logits = calls[("head", "decoder")]
  decoder_input = calls[("head", "decoder", "decoder_conv0")][1][0]
  up = decoder_input[..., :encoder.shape[-1]]
  np.testing.assert_allclose(up, _upsample(encoder, *low_level.shape[1:3]), rtol=1e-5,
                             atol=1e-5 * np.abs(encoder).max())
  output = calls[()][2]
  np.testing.assert_allclose(output, _upsample(logits, H, W), rtol=1e-5,
                             atol=1e-5 * np.abs(logits).max())


def test_the_head_starts_from_tf_deeplabs_truncated_normals():
  """Stddev of a truncated normal cut at 2 stddev: 0.8796 x the nominal one."""
  variables = jax.jit(lambda: deeplab.DeepLabV3Plus(
      num_classes=64, backbone="xception41", num_middle_blocks=0, width_multiplier=0.5
  ).init(jax.random.key(0), jnp.zeros((1, 33, 33, 3))))()
  head = jax.tree.map(np.asarray, variables["params"]["head"])
  cut = 0.8796
  for kernel, stddev in [(head["decoder"]["decoder_conv0"]["depthwise"]["kernel"], 0.33),
                         (head["aspp"]["aspp1"]["depthwise"]["kernel"], 0.33),
                         (head["decoder"]["decoder_conv1"]["pointwise"]["kernel"], 0.06),
                         (head["aspp"]["aspp2"]["pointwise"]["kernel"], 0.06),
                         (head["decoder"]["logits"]["kernel"], 0.01)]:
    assert kernel.size >= 1000
    assert abs(kernel.std() / (cut * stddev) - 1) < 0.1, (kernel.shape, kernel.std(), stddev)
    assert np.abs(kernel).max() <= 2 * stddev + 1e-6
  # slim's Glorot uniform stays on the 1x1 convs: limit sqrt(6 / (fan_in + fan_out)).
  kernel = head["aspp"]["concat_projection"]["kernel"]
  limit = np.sqrt(6 / (kernel.shape[2] + kernel.shape[3]))
  assert abs(kernel.std() / (limit / np.sqrt(3)) - 1) < 0.1
