"""Batch normalization in two implementations that compute the same function.

- 'flax': `flax.linen.BatchNorm`, the reference. In training mode its statistics
  (E[x], E[x^2]) and autodiff's backward pass through them take several passes over
  the activations.
- 'fused': `BatchNorm` below, with the same parameters ('scale', 'bias'), the same
  batch statistics ('mean', 'var' in the 'batch_stats' collection), the same
  running-average update and the same forward formula as Flax (fast variance
  E[x^2] - E[x]^2 clipped at 0, y = (x - mean) * rsqrt(var + eps) * scale + bias),
  so checkpoints and converters are shared. Its training-mode gradient is a
  `jax.custom_vjp` with the closed form

      dx = scale * r * (g - mean(g) - xhat * mean(g * xhat)),  r = rsqrt(var + eps),
      xhat = (x - mean) * r,  dscale = sum(g * xhat),  dbias = sum(g),

  i.e. one reduction pass (sum g, sum g * x, and sum g * (x - mean) from them) and one
  elementwise pass (dx = A g + B x + C with per-channel A, B, C), instead of autodiff's chain
  through the normalisation, the variance and the mean.
- 'auto': 'fused' on the CPU backend (where it is measured faster,
  docs/performance/cpu.md), 'flax' elsewhere.

Statistics are over every axis but the last (NHWC or NC), in float32 whatever the
compute dtype, as Flax's. Tested against flax.linen.BatchNorm (values, gradients,
running averages) in tests/test_fast_layers.py.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from xception_jax.models import implementations

Dtype = Any

BN_IMPLEMENTATIONS = ("flax", "fused")


@functools.cache
def _cpu_default() -> str:
  return "fused" if jax.default_backend() == "cpu" else "flax"


def resolve_bn_impl(name: str) -> str:
  """Maps 'auto' to the fast choice for the default backend; validates the name."""
  return implementations.resolve("bn_impl", name, BN_IMPLEMENTATIONS, _cpu_default)


def _reduce_axes(x: jax.Array) -> tuple[int, ...]:
  return tuple(range(x.ndim - 1))


def _stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Flax's fast variance: E[x], max(0, E[x^2] - E[x]^2), in float32, one fusion."""
  x32 = x.astype(jnp.float32)
  axes = _reduce_axes(x)
  mean = jnp.mean(x32, axes)
  mean2 = jnp.mean(jnp.square(x32), axes)
  return mean, jnp.maximum(0.0, mean2 - jnp.square(mean))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float,
                     dtype: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm: (y, batch mean, batch variance); y in `dtype`."""
  return _batch_norm_train_fwd(x, scale, bias, epsilon, dtype)[0]


def _batch_norm_train_fwd(x, scale, bias, epsilon, dtype):
  mean, var = _stats(x)
  rstd = jax.lax.rsqrt(var + epsilon)
  y = (x.astype(jnp.float32) - mean) * (rstd * scale) + bias
  return (y.astype(dtype), mean, var), (x, scale, mean, rstd)


def _batch_norm_train_bwd(epsilon, dtype, residuals, cotangents):
  del epsilon, dtype
  x, scale, mean, rstd = residuals
  g, g_mean, g_var = cotangents
  axes = _reduce_axes(x)
  count = x.size // x.shape[-1]
  g32 = g.astype(jnp.float32)
  # Written on x itself, not on a centred (x - mean): XLA's reduction engine on CPU
  # (YNNPACK) cannot fuse the broadcast subtraction, so a shared (x - mean) was written
  # out as one more activation-sized pass (~34 ms at 8 x 147 x 147 x 128); now the sums
  # read x and g and the dx pass reads them again. sum(g * (x - mean)) =
  # sum(g * x) - mean * sum(g): its rounding is that of the forward's E[x^2] - E[x]^2
  # (tests/test_fast_layers.py, against float64 with means up to 25 standard deviations).
  # The barrier keeps XLA from sharing work with the forward pass (docs/performance/
  # cpu.md, "Issue 27"). Values as before up to rounding.
  x32 = jax.lax.optimization_barrier(x).astype(jnp.float32)
  sum_g = jnp.sum(g32, axes)
  sum_g_centred = jnp.sum(g32 * x32, axes) - mean * sum_g   # same pass as sum_g
  dbias = sum_g
  dscale = sum_g_centred * rstd                       # sum(g * xhat)
  # dx = a * g + b * (x - mean) + c = a * g + b * x + (c - b * mean), per channel:
  #   the normalisation:        scale * r * (g - mean(g) - xhat * mean(g * xhat))
  #   the batch-mean output:    g_mean / count
  #   the batch-variance output: g_var * 2 (x - mean) / count  (var = E[x^2] - E[x]^2)
  a = scale * rstd
  b = -a * rstd * rstd * sum_g_centred / count + 2.0 * g_var / count
  c = -a * sum_g / count + g_mean / count
  dx = a * g32 + b * x32 + (c - b * mean)
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


batch_norm_train.defvjp(_batch_norm_train_fwd, _batch_norm_train_bwd)


class BatchNorm(nn.Module):
  """Drop-in for `flax.linen.BatchNorm` (the fields Xception's models use) with the
  fused training-mode gradient; same variables, same running-average update."""
  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  use_bias: bool = True
  use_scale: bool = True
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros
  scale_init: Callable[..., jax.Array] = nn.initializers.ones

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = (x.shape[-1],)
    ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32),
                            features)
    ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32),
                           features)
    scale = (self.param("scale", self.scale_init, features, self.param_dtype)
             if self.use_scale else jnp.ones(features, jnp.float32))
    bias = (self.param("bias", self.bias_init, features, self.param_dtype)
            if self.use_bias else jnp.zeros(features, jnp.float32))
    scale = jnp.asarray(scale, jnp.promote_types(scale.dtype, jnp.float32))
    bias = jnp.asarray(bias, jnp.promote_types(bias.dtype, jnp.float32))
    dtype = self.dtype or jnp.result_type(x, self.param_dtype)
    if self.use_running_average:
      y = (x - ra_mean.value) * (jax.lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
      return jnp.asarray(y, dtype)
    y, mean, var = batch_norm_train(x, scale, bias, self.epsilon, jnp.dtype(dtype))
    if not self.is_initializing():
      mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
      ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * var
    return y


def batch_norm_class(impl: str) -> type[nn.Module]:
  """The module class of an implementation name ('flax', 'fused' or 'auto')."""
  return BatchNorm if resolve_bn_impl(impl) == "fused" else nn.BatchNorm
