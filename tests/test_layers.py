"""The separable convolution's spectrum, checked against brute-force NumPy convolutions."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reference import grouped_conv_same
from xception_jax.models import layers

C = 8


def _x(seed=0, channels=C):
  return jax.random.normal(jax.random.key(seed), (2, 6, 7, channels), jnp.float32)


@pytest.mark.parametrize("segments", [1, 2, 4, None])
@pytest.mark.parametrize("impl", ["feature_group", "shift"])
def test_spatial_conv_is_grouped_convolution(segments, impl):
  x = _x()
  module = layers.SpatialConv(segments=segments, depthwise_impl=impl)
  params = module.init(jax.random.key(1), x)
  kernel = np.asarray(params["params"]["kernel"])
  groups = C if segments is None else segments
  assert kernel.shape == (3, 3, C // groups, C)
  got = module.apply(params, x)
  np.testing.assert_allclose(np.asarray(got), grouped_conv_same(np.asarray(x), kernel, groups),
                             rtol=1e-5, atol=1e-5)


def test_one_segment_is_an_ordinary_convolution():
  """segments=1 computes what a regular 3x3 convolution with the same weights does."""
  x = _x(3)
  spatial = layers.SpatialConv(segments=1)
  params = spatial.init(jax.random.key(4), x)
  regular = nn.Conv(C, (3, 3), padding="SAME", use_bias=False)
  want = regular.apply({"params": {"kernel": params["params"]["kernel"]}}, x)
  np.testing.assert_allclose(np.asarray(spatial.apply(params, x)), np.asarray(want),
                             rtol=1e-5, atol=1e-5)


def test_one_segment_per_channel_is_channel_by_channel_convolution():
  x = _x(5)
  spatial = layers.SpatialConv(segments=C)
  params = spatial.init(jax.random.key(6), x)
  kernel = np.asarray(params["params"]["kernel"])
  got = np.asarray(spatial.apply(params, x))
  for c in range(C):  # each channel convolved on its own, as a 1-channel regular conv
    want = grouped_conv_same(np.asarray(x)[..., c:c + 1], kernel[..., c:c + 1], groups=1)
    np.testing.assert_allclose(got[..., c:c + 1], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strides", [1, 2])
def test_pointwise_is_a_strided_1x1_same_convolution(strides):
  x = _x(7)
  pointwise = layers.PointwiseConv(5, strides=strides)
  params = pointwise.init(jax.random.key(8), x)
  kernel = params["params"]["kernel"]
  want = jax.lax.conv_general_dilated(x, kernel, (strides, strides), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(np.asarray(pointwise.apply(params, x)), np.asarray(want),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strides", [1, 2])
def test_pointwise_gradients_equal_a_1x1_convolution(strides):
  """The CPU form (a 2-D product on the flattened pixels) has the gradients of the plain
  4-D product and of a 1x1 convolution: input and kernel, random cotangent."""
  x = _x(9)
  pointwise = layers.PointwiseConv(5, strides=strides)
  params = pointwise.init(jax.random.key(10), x)
  kernel = params["params"]["kernel"]
  cot = jax.random.normal(jax.random.key(11), pointwise.apply(params, x).shape)

  def ours(x, kernel):
    return jnp.sum(pointwise.apply({"params": {"kernel": kernel}}, x) * cot)

  def conv(x, kernel):
    return jnp.sum(jax.lax.conv_general_dilated(
        x, kernel, (strides, strides), "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC")) * cot)

  def plain(x, kernel):
    return jnp.sum((x[:, ::strides, ::strides, :] @ kernel[0, 0]) * cot)

  got = jax.grad(ours, argnums=(0, 1))(x, kernel)
  for reference in (conv, plain):
    want = jax.grad(reference, argnums=(0, 1))(x, kernel)
    for g, w in zip(got, want):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)


def test_pointwise_product_equals_the_plain_product():
  """Same values as the plain product for 2-D, 3-D and 4-D inputs."""
  matrix = jax.random.normal(jax.random.key(12), (C, 3))
  for shape in ((4, C), (2, 5, C), (2, 3, 4, C)):
    x = jax.random.normal(jax.random.key(13), shape)
    np.testing.assert_allclose(np.asarray(layers.pointwise_product(x, matrix)),
                               np.asarray(x @ matrix), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("order", layers.ORDERS)
@pytest.mark.parametrize("activation", [None, "relu", "elu"])
def test_separable_conv_composes_in_the_given_order(order, activation):
  x = _x(9)
  module = layers.SeparableConv(12, segments=2, order=order, intermediate_activation=activation)
  params = module.init(jax.random.key(10), x)["params"]
  spatial_k = np.asarray(params["depthwise"]["kernel"])
  point_k = np.asarray(params["pointwise"]["kernel"])[0, 0]
  act = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0),
         "elu": lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0)))}[activation]
  xn = np.asarray(x, np.float64)
  if order == "depthwise_pointwise":
    assert spatial_k.shape == (3, 3, C // 2, C)
    want = act(grouped_conv_same(xn, spatial_k, 2)) @ point_k
  else:  # the "extreme Inception" order: 1x1 first, the spatial conv on its outputs
    assert spatial_k.shape == (3, 3, 12 // 2, 12)
    want = grouped_conv_same(act(xn @ point_k), spatial_k, 2)
  got = module.apply({"params": params}, x)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4)


def test_bad_fields_raise_clear_errors():
  x = _x()
  with pytest.raises(ValueError, match="segments=3 must be a positive divisor of the 8"):
    layers.SpatialConv(segments=3).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="order must be one of"):
    layers.SeparableConv(4, order="sideways").init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="intermediate_activation must be one of"):
    layers.SeparableConv(4, intermediate_activation="tanh").init(jax.random.key(0), x)
