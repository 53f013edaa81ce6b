"""The CPU-fast BatchNorm and max-pool against their references.

batch_norm.BatchNorm ('fused') against flax.linen.BatchNorm: same variables, outputs,
running averages and gradients (input, scale, bias) in training mode, same outputs in
inference mode. pooling.max_pool ('shift') against nn.max_pool and its autodiff
(select-and-scatter) gradient, on random inputs and on inputs full of ties.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xception_jax.models import Xception, batch_norm, pooling


def _bn_pair(momentum=0.9, epsilon=1e-3, **kwargs):
  ref = nn.BatchNorm(use_running_average=False, momentum=momentum, epsilon=epsilon, **kwargs)
  fused = batch_norm.BatchNorm(use_running_average=False, momentum=momentum,
                               epsilon=epsilon, **kwargs)
  return ref, fused


@pytest.mark.parametrize("shape,use_scale", [((4, 7, 5, 6), True), ((3, 9), True),
                                             ((2, 6, 6, 5), False)])
def test_batch_norm_training_matches_flax(shape, use_scale):
  rng = np.random.default_rng(0)
  # A non-zero mean and a non-unit scale, as activations have.
  x = jnp.asarray(rng.normal(0.7, 2.0, shape), jnp.float32)
  g = jnp.asarray(rng.normal(size=shape), jnp.float32)
  ref, fused = _bn_pair(use_scale=use_scale)
  variables = ref.init(jax.random.key(0), x)
  assert jax.tree.structure(variables) == jax.tree.structure(
      fused.init(jax.random.key(0), x))
  params = jax.tree.map(lambda p: p + jnp.asarray(rng.normal(size=p.shape), p.dtype),
                        variables["params"])
  stats = {"mean": jnp.asarray(rng.normal(size=shape[-1]), jnp.float32),
           "var": jnp.asarray(rng.uniform(0.5, 2, shape[-1]), jnp.float32)}

  def run(module, params, x):
    y, updates = module.apply({"params": params, "batch_stats": stats}, x,
                              mutable=["batch_stats"])
    return jnp.sum(y * g), (y, updates["batch_stats"])

  outputs = {}
  for name, module in (("ref", ref), ("fused", fused)):
    (_, aux), grads = jax.value_and_grad(run, argnums=(1, 2), has_aux=True)(module, params, x)
    outputs[name] = aux, grads
  (y_ref, stats_ref), grads_ref = outputs["ref"]
  (y_fused, stats_fused), grads_fused = outputs["fused"]
  np.testing.assert_allclose(y_fused, y_ref, rtol=1e-5, atol=1e-5)
  for key in ("mean", "var"):
    np.testing.assert_allclose(stats_fused[key], stats_ref[key], rtol=1e-6, atol=1e-6)
  for a, b in zip(jax.tree.leaves(grads_fused), jax.tree.leaves(grads_ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("offset", [0.0, 10.0, 50.0])
def test_batch_norm_gradients_against_float64_with_a_large_mean(offset):
  """The backward pass sums g * x and subtracts mean * sum(g) (no centred tensor to
  write out): against the closed form in float64 it is as accurate as Flax's autodiff,
  also for activations whose mean is many standard deviations from zero."""
  rng = np.random.default_rng(1)
  shape = (4, 19, 19, 32)
  x = rng.normal(offset, 2.0, shape).astype(np.float32)
  g = rng.normal(size=shape).astype(np.float32)
  params = {"scale": rng.normal(1.0, 0.2, 32).astype(np.float32),
            "bias": rng.normal(size=32).astype(np.float32)}
  stats = {"mean": np.zeros(32, np.float32), "var": np.ones(32, np.float32)}

  def grads(module):
    def loss(params, x):
      y, _ = module.apply({"params": params, "batch_stats": stats}, x,
                          mutable=["batch_stats"])
      return jnp.sum(y * g)
    (dparams, dx) = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    return np.asarray(dx), np.asarray(dparams["scale"]), np.asarray(dparams["bias"])

  x64, g64 = x.astype(np.float64), g.astype(np.float64)
  count = x64.size // 32
  mean, var = x64.mean((0, 1, 2)), x64.var((0, 1, 2))
  r = 1.0 / np.sqrt(var + 1e-3)
  xhat = (x64 - mean) * r
  dscale, dbias = (g64 * xhat).sum((0, 1, 2)), g64.sum((0, 1, 2))
  dx = params["scale"] * r * (g64 - dbias / count - xhat * dscale / count)
  want = (dx, dscale, dbias)

  def errors(got):
    return [np.abs(a - b).max() / np.abs(b).max() for a, b in zip(got, want)]

  ref, fused = _bn_pair()
  for fused_error, flax_error in zip(errors(grads(fused)), errors(grads(ref))):
    assert fused_error <= max(2.0 * flax_error, 1e-6), (offset, fused_error, flax_error)


def test_batch_norm_inference_matches_flax():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(2, 5, 5, 4)), jnp.float32)
  ref = nn.BatchNorm(use_running_average=True, epsilon=1e-3)
  fused = batch_norm.BatchNorm(use_running_average=True, epsilon=1e-3)
  variables = jax.tree.map(lambda v: v + jnp.asarray(rng.uniform(0.1, 1, v.shape), v.dtype),
                           ref.init(jax.random.key(0), x))
  np.testing.assert_allclose(fused.apply(variables, x), ref.apply(variables, x),
                             rtol=1e-6, atol=1e-6)


def test_batch_norm_gradient_of_statistics_outputs():
  """The custom VJP's cotangents for the batch mean/variance against autodiff."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(0.3, 1.5, (3, 4, 4, 5)), jnp.float32)
  scale, bias = jnp.ones(5) * 1.3, jnp.zeros(5) + 0.2
  weights = [jnp.asarray(rng.normal(size=s), jnp.float32) for s in (x.shape, (5,), (5,))]

  def loss(fn, x):
    y, mean, var = fn(x)
    return jnp.sum(y * weights[0]) + jnp.sum(mean * weights[1]) + jnp.sum(var * weights[2])

  def reference(x):
    mean = jnp.mean(x, (0, 1, 2))
    var = jnp.mean(jnp.square(x), (0, 1, 2)) - jnp.square(mean)
    return (x - mean) * jax.lax.rsqrt(var + 1e-3) * scale + bias, mean, var

  fused = lambda x: batch_norm.batch_norm_train(x, scale, bias, 1e-3, jnp.dtype(jnp.float32))
  np.testing.assert_allclose(jax.grad(lambda x: loss(fused, x))(x),
                             jax.grad(lambda x: loss(reference, x))(x), rtol=1e-4, atol=1e-4)


def test_bn_impl_names():
  assert batch_norm.resolve_bn_impl("auto") in batch_norm.BN_IMPLEMENTATIONS
  with pytest.raises(ValueError, match="bn_impl"):
    batch_norm.resolve_bn_impl("fast")
  with pytest.raises(ValueError, match="max_pool_impl"):
    pooling.resolve_max_pool_impl("fast")


def _pool_pair(x, window, strides, padding):
  ref = lambda x: nn.max_pool(x, window, strides=strides, padding=padding)
  shift = lambda x: pooling.max_pool(x, window, strides, padding, impl="shift")
  return ref, shift


@pytest.mark.parametrize("shape,window,strides,padding", [
    ((2, 9, 9, 3), (3, 3), (2, 2), "SAME"),      # Xception's, odd size
    ((2, 10, 8, 3), (3, 3), (2, 2), "SAME"),     # even sizes: padding only at the end
    ((1, 11, 11, 2), (3, 3), (2, 2), "VALID"),   # Inception V3's
    ((1, 7, 6, 2), (2, 3), (1, 2), "SAME"),
])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_shift_matches_autodiff(shape, window, strides, padding, ties):
  rng = np.random.default_rng(3)
  if ties:  # few distinct values: most windows hold their maximum several times
    x = rng.integers(0, 3, shape).astype(np.float32)
  else:
    x = rng.normal(size=shape).astype(np.float32)
  x = jnp.asarray(x)
  ref, shift = _pool_pair(x, window, strides, padding)
  y_ref = ref(x)
  g = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
  np.testing.assert_array_equal(shift(x), y_ref)
  grad_ref = jax.grad(lambda x: jnp.sum(ref(x) * g))(x)
  grad_shift = jax.grad(lambda x: jnp.sum(shift(x) * g))(x)
  np.testing.assert_allclose(grad_shift, grad_ref, rtol=1e-6, atol=1e-6)


def test_max_pool_all_equal_window_gives_first_position():
  """A constant input: XLA's select-and-scatter sends each window's cotangent to its
  first (row-major) position that is not padding. 'SAME' pads 5 by one pixel on each
  side, so window p covers rows 2p-1..2p+1 and its first real row is 0, 1, 3."""
  x = jnp.zeros((1, 5, 5, 1))
  g = jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)
  _, shift = _pool_pair(x, (3, 3), (2, 2), "SAME")
  grad = jax.grad(lambda x: jnp.sum(shift(x) * g))(x)[0, :, :, 0]
  expected = np.zeros((5, 5))
  expected[np.ix_([0, 1, 3], [0, 1, 3])] = np.arange(1.0, 10.0).reshape(3, 3)
  np.testing.assert_array_equal(grad, expected)


@pytest.fixture(scope="module")
def tiny_models():
  kwargs = dict(num_classes=5, width_multiplier=0.0625, num_middle_blocks=1,
                depthwise_impl="shift")
  return (Xception(**kwargs, bn_impl="flax", max_pool_impl="xla"),
          Xception(**kwargs, bn_impl="fused", max_pool_impl="shift"))


@pytest.mark.slow  # A whole model's gradient; the layers' own tests above stay default.
def test_xception_training_step_same_with_fast_layers(tiny_models):
  reference, fast = tiny_models
  rng = np.random.default_rng(4)
  x = jnp.asarray(rng.uniform(-1, 1, (2, 71, 71, 3)), jnp.float32)
  variables = reference.init(jax.random.key(0), x)
  assert jax.tree.structure(variables) == jax.tree.structure(fast.init(jax.random.key(0), x))

  def loss(model, params):
    logits, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                  x, train=True, mutable=["batch_stats"])
    return jnp.sum(logits * jnp.arange(5.0)), updates["batch_stats"]

  (l_ref, s_ref), g_ref = jax.jit(jax.value_and_grad(
      lambda p: loss(reference, p), has_aux=True))(variables["params"])
  (l_fast, s_fast), g_fast = jax.jit(jax.value_and_grad(
      lambda p: loss(fast, p), has_aux=True))(variables["params"])
  np.testing.assert_allclose(l_fast, l_ref, rtol=1e-4)
  for a, b in zip(jax.tree.leaves((s_fast, g_fast)), jax.tree.leaves((s_ref, g_ref))):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)
  np.testing.assert_allclose(fast.apply(variables, x), reference.apply(variables, x),
                             rtol=1e-5, atol=1e-5)
