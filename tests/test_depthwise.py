"""The two depthwise implementations against each other and a per-channel NumPy loop."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from reference import grouped_conv_same
from xception_jax.models import depthwise


def _inputs(seed, shape=(2, 7, 9, 5), k=3):
  rx, rk = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(rx, shape, jnp.float32)
  kernel = jax.random.normal(rk, (k, k, 1, shape[-1]), jnp.float32)
  return x, kernel


@pytest.mark.parametrize("impl", sorted(depthwise.DEPTHWISE_IMPLEMENTATIONS))
@pytest.mark.parametrize("k", [3, 5])
def test_forward_matches_per_channel_loop(impl, k):
  x, kernel = _inputs(0, k=k)
  got = depthwise.DEPTHWISE_IMPLEMENTATIONS[impl](x, kernel)
  want = grouped_conv_same(np.asarray(x), np.asarray(kernel), groups=x.shape[-1])
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_shift_gradients_match_feature_group():
  x, kernel = _inputs(1)
  cotangent = jax.random.normal(jax.random.key(2), x.shape)

  def loss(fn):
    return lambda x, k: jnp.sum(fn(x, k) * cotangent)

  gx_ref, gk_ref = jax.grad(loss(depthwise.depthwise_conv_feature_group), (0, 1))(x, kernel)
  gx, gk = jax.jit(jax.grad(loss(depthwise.depthwise_conv_shift), (0, 1)))(x, kernel)
  np.testing.assert_allclose(np.asarray(gx), np.asarray(gx_ref), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(np.asarray(gk), np.asarray(gk_ref), rtol=1e-5, atol=1e-4)


def test_shift_custom_vjp_against_finite_differences():
  x, kernel = _inputs(3, shape=(1, 5, 6, 3))
  check_grads(depthwise.depthwise_conv_shift, (x, kernel), order=1, modes=("rev",),
              atol=5e-2, rtol=5e-2)


def test_bfloat16_shift_close_to_float32():
  x, kernel = _inputs(4)
  got = depthwise.depthwise_conv_shift(x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16))
  assert got.dtype == jnp.bfloat16
  want = depthwise.depthwise_conv_feature_group(x, kernel)
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), rtol=0.05, atol=0.1)


def test_errors_name_the_problem():
  x, kernel = _inputs(5)
  with pytest.raises(ValueError, match="depthwise kernel must have shape"):
    depthwise.depthwise_conv_shift(x, kernel[..., :3])
  with pytest.raises(ValueError, match="odd"):
    depthwise.depthwise_conv_shift(x, jnp.zeros((2, 2, 1, 5)))
  with pytest.raises(ValueError, match="depthwise_impl must be one of"):
    depthwise.resolve_depthwise_impl("winograd")
  # The test machine is a CPU: the native kernel when built (test_depthwise_native.py).
  assert depthwise.resolve_depthwise_impl("auto") == (
      "native" if "native" in depthwise.DEPTHWISE_IMPLEMENTATIONS else "shift")
