"""Dilated (atrous) and strided spatial convolutions, the aligned Xception's building blocks.

A dilated depthwise convolution must equal the undilated one on the spaced-out kernel
(zeros between the taps), for every implementation, in values and gradients; strided
and dilated SpatialConvs must equal a brute-force loop over PyTorch's definition
(symmetric zero padding dilation * (k // 2), out[i] = sum_t x[s*i + d*t - p]).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from reference import conv_torch_style
from xception_jax.models import depthwise, layers

IMPLS = sorted(depthwise.DEPTHWISE_IMPLEMENTATIONS)


def _inputs(seed, shape=(2, 9, 8, 4), k=3):
  rx, rk, rg = jax.random.split(jax.random.key(seed), 3)
  x = jax.random.normal(rx, shape, jnp.float32)
  kernel = jax.random.normal(rk, (k, k, 1, shape[-1]), jnp.float32)
  return x, kernel, rg


def _spaced_out(kernel, dilation):
  """The (d(k-1)+1)^2 kernel with the taps `dilation` apart and zeros between them."""
  kh, kw, one, c = kernel.shape
  big = jnp.zeros((dilation * (kh - 1) + 1, dilation * (kw - 1) + 1, one, c), kernel.dtype)
  return big.at[::dilation, ::dilation].set(kernel)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dilation", [2, 3])
def test_dilated_equals_undilated_on_the_spaced_out_kernel(impl, dilation):
  x, kernel, rg = _inputs(dilation)
  cotangent = jax.random.normal(rg, x.shape)
  dilated = depthwise.DEPTHWISE_IMPLEMENTATIONS[impl]

  def loss_dilated(x, k):
    return jnp.sum(dilated(x, k, dilation) * cotangent)

  def loss_spaced(x, k):
    return jnp.sum(dilated(x, _spaced_out(k, dilation)) * cotangent)

  np.testing.assert_allclose(
      np.asarray(dilated(x, kernel, dilation)),
      np.asarray(dilated(x, _spaced_out(kernel, dilation))), rtol=1e-5, atol=1e-5)
  gx, gk = jax.jit(jax.grad(loss_dilated, (0, 1)))(x, kernel)
  gx_ref, gk_ref = jax.jit(jax.grad(loss_spaced, (0, 1)))(x, kernel)
  np.testing.assert_allclose(np.asarray(gx), np.asarray(gx_ref), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(gk), np.asarray(gk_ref), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_shift_matches_feature_group_with_rhs_dilation(dilation):
  """Values and both gradients of the custom VJP against lax's rhs_dilation."""
  x, kernel, rg = _inputs(10 + dilation, shape=(2, 11, 10, 3))
  cotangent = jax.random.normal(rg, x.shape)

  def loss(fn):
    return lambda x, k: jnp.sum(fn(x, k, dilation) * cotangent)

  reference = depthwise.depthwise_conv_feature_group
  np.testing.assert_allclose(np.asarray(depthwise.depthwise_conv_shift(x, kernel, dilation)),
                             np.asarray(reference(x, kernel, dilation)), rtol=1e-5, atol=1e-5)
  want = jax.lax.conv_general_dilated(
      x, kernel, (1, 1), [(dilation, dilation)] * 2, rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=x.shape[-1])
  np.testing.assert_allclose(np.asarray(reference(x, kernel, dilation)), np.asarray(want),
                             rtol=1e-6, atol=1e-6)
  gx_ref, gk_ref = jax.grad(loss(reference), (0, 1))(x, kernel)
  gx, gk = jax.jit(jax.grad(loss(depthwise.depthwise_conv_shift), (0, 1)))(x, kernel)
  np.testing.assert_allclose(np.asarray(gx), np.asarray(gx_ref), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(gk), np.asarray(gk_ref), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("segments", [None, 2])
@pytest.mark.parametrize("strides,dilation", [(2, 1), (1, 2), (2, 2)])
def test_spatial_conv_strides_and_dilation_match_torch_definition(impl, segments, strides,
                                                                  dilation):
  size = (9, 8)  # an odd and an even side
  x = jax.random.normal(jax.random.key(20), (2, *size, 4), jnp.float32)
  module = layers.SpatialConv(segments=segments, depthwise_impl=impl, strides=strides,
                              dilation=dilation)
  variables = module.init(jax.random.key(21), x)
  kernel = np.asarray(variables["params"]["kernel"])
  groups = 4 if segments is None else segments
  want = conv_torch_style(x, kernel, groups, strides, dilation)
  got = np.asarray(module.apply(variables, x))
  assert got.shape == want.shape == (2, -(-size[0] // strides), -(-size[1] // strides), 4)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_strided_depthwise_gradients_agree_between_implementations():
  x = jax.random.normal(jax.random.key(30), (2, 9, 8, 4), jnp.float32)
  cotangent = jax.random.normal(jax.random.key(31), (2, 5, 4, 4))
  grads = {}
  for impl in IMPLS:
    module = layers.SpatialConv(depthwise_impl=impl, strides=2)
    variables = module.init(jax.random.key(32), x)
    grads[impl] = jax.grad(
        lambda v, x: jnp.sum(module.apply(v, x) * cotangent), (0, 1))(variables, x)
  assert set(grads) == set(IMPLS) and len(IMPLS) >= 2
  for impl in IMPLS:  # every implementation (native too, when built) against the reference
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                         rtol=1e-5, atol=1e-5),
                 grads[impl], grads["feature_group"])


def test_separable_conv_passes_strides_and_dilation_to_its_spatial_conv():
  x = jax.random.normal(jax.random.key(40), (1, 9, 9, 4), jnp.float32)
  module = layers.SeparableConv(6, strides=2, dilation=2, depthwise_impl="shift")
  params = module.init(jax.random.key(41), x)["params"]
  want = conv_torch_style(x, params["depthwise"]["kernel"], 4, 2, 2) @ np.asarray(
      params["pointwise"]["kernel"][0, 0], np.float64)
  np.testing.assert_allclose(np.asarray(module.apply({"params": params}, x)), want,
                             rtol=1e-5, atol=1e-5)


def test_bad_dilation_or_stride_is_refused():
  x, kernel, _ = _inputs(50)
  with pytest.raises(ValueError, match="dilation must be a positive integer"):
    depthwise.depthwise_conv_shift(x, kernel, 0)
  with pytest.raises(ValueError, match="strides=0"):
    layers.SpatialConv(strides=0).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="odd kernel_size"):
    layers.SpatialConv(kernel_size=2, dilation=2).init(jax.random.key(0), x)
