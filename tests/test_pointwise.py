"""The pointwise products' engines (xception_jax/models/pointwise.py): 'blas', a CBLAS
sgemm through the native handler (xception_jax/native/gemm_cpu.cc, blas.py), against a
float64 NumPy product and against XLA's dot.

Values and both gradients on random inputs: row counts below, at and above the
handler's split into per-thread chunks (64 rows a chunk), one column, one contracting
channel, long contractions split over the threads, under jit and under a jit sharded
over the 4 simulated CPU devices (conftest.py); a whole tiny Xception's loss gradients
with 'blas' and 'xla'; the 'auto' resolution, the bfloat16 fallback, one-line errors,
and the library search (XCEPTION_JAX_BLAS) in fresh processes.

The native library and MKL are installed by `pip install -r requirements.txt`: when the
BLAS products are unavailable these tests fail with the reason, except when
XCEPTION_JAX_NATIVE=0 or XCEPTION_JAX_BLAS=0 deliberately turn them off (skips).
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from xception_jax import native
from xception_jax.models import Xception, pointwise
from xception_jax.native import blas

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _blas_required():
  if not native.blas_available():
    reason = native.blas_unavailable_reason()
    if native.deliberately_disabled() or blas.deliberately_disabled():
      pytest.skip(reason)
    pytest.fail(f"BLAS products unavailable: {reason}")


@pytest.fixture
def library():
  _blas_required()


def _random(shape, seed):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _value_and_grads(impl, x, w, g):
  y, vjp = jax.vjp(lambda x, w: pointwise.pointwise_product(x, w, impl), x, w)
  return (y, *vjp(g))


# (40, 9000, 8) and (9000, 40, 24): too few output rows for both threads and a long
# contraction, so the forward (first) and the kernel gradient (second) split K instead.
@pytest.mark.parametrize("m,k,n", [(1, 5, 3), (63, 7, 1), (64, 1, 9), (129, 16, 24),
                                   (1000, 40, 33), (40, 9000, 8), (9000, 40, 24)])
def test_blas_product_and_gradients_equal_float64_numpy(library, m, k, n):
  x, w, g = _random((m, k), 0), _random((k, n), 1), _random((m, n), 2)
  y, dx, dw = _value_and_grads("blas", x, w, g)
  x64, w64, g64 = (a.astype(np.float64) for a in (x, w, g))
  for got, want in ((y, x64 @ w64), (dx, g64 @ w64.T), (dw, x64.T @ g64)):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_blas_runs_as_the_native_custom_call_and_equals_xla_on_4d_inputs(library):
  """NHWC activations: flattened to pixels x channels, same values and gradients as
  XLA's product; the compiled function holds the custom call (not XLA's dot)."""
  x, w, g = _random((2, 9, 7, 24), 3), _random((24, 40), 4), _random((2, 9, 7, 40), 5)
  hlo = _value_and_grads.lower("blas", x, w, g).as_text()
  assert hlo.count("xception_jax_gemm") >= 3, "forward and both gradients are custom calls"
  got = _value_and_grads("blas", x, w, g)
  want = _value_and_grads("xla", x, w, g)
  for a, b in zip(got, want):
    assert a.shape == b.shape
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("trim", [0, 1])
def test_blas_under_a_jit_sharded_over_the_simulated_devices(library, trim):
  """Rows split over the devices: each device multiplies its own rows (forward and
  input gradient with no gather; the kernel gradient summed by one all-reduce). With
  `trim` rows cut inside the jit they no longer split evenly and are gathered. Values
  and gradients as unsharded."""
  devices = np.array(jax.devices())
  mesh = Mesh(devices, ("data",))
  m = len(devices) * 40
  x, w, g = _random((m, 16), 6), _random((16, 8), 7), _random((m, 8), 8)
  by_rows, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  args = (jax.device_put(x, by_rows), jax.device_put(w, replicated),
          jax.device_put(g, by_rows))
  fn = jax.jit(lambda x, w, g: _value_and_grads("blas", x[trim:], w, g[trim:]))
  y, dx, dw = fn(*args)
  x64, w64, g64 = x[trim:].astype(np.float64), w.astype(np.float64), g[trim:].astype(np.float64)
  for got, want in ((y, x64 @ w64), (dx, g64 @ w64.T), (dw, x64.T @ g64)):
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
  if not trim:
    hlo = fn.lower(*args).compile().as_text()
    assert y.sharding.spec == P("data") and dx.sharding.spec == P("data")
    assert "all-gather" not in hlo
    assert hlo.count("all-reduce(") == 1, "the kernel gradient's partial sums"


def test_xception_loss_gradients_equal_with_blas_and_xla(library):
  """A tiny Xception (every 1x1 conv, shortcuts included) trained one gradient: the
  loss, every parameter's gradient and the BatchNorm statistics agree."""
  images = jnp.asarray(_random((2, 71, 71, 3), 8))
  labels = jnp.asarray([1, 3])

  def loss_and_grads(impl):
    model = Xception(num_classes=5, width_multiplier=0.0625, num_middle_blocks=1,
                     pointwise_impl=impl)
    variables = model.init(jax.random.key(0), images)

    def loss(params):
      logits, updates = model.apply({**variables, "params": params}, images, train=True,
                                    mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), updates

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])

  (loss_b, stats_b), grads_b = loss_and_grads("blas")
  (loss_x, stats_x), grads_x = loss_and_grads("xla")
  np.testing.assert_allclose(float(loss_b), float(loss_x), rtol=1e-5)
  for tree_b, tree_x in ((grads_b, grads_x), (stats_b, stats_x)):
    for (path, b), x in zip(jax.tree_util.tree_leaves_with_path(tree_b),
                            jax.tree_util.tree_leaves(tree_x)):
      np.testing.assert_allclose(np.asarray(b), np.asarray(x), rtol=1e-4,
                                 atol=1e-4 * max(1e-3, float(np.abs(x).max())),
                                 err_msg=jax.tree_util.keystr(path))


def test_auto_is_blas_on_cpu_and_bfloat16_falls_back_to_xla(library):
  assert pointwise.resolve_pointwise_impl("auto") == "blas"
  x = jnp.asarray(_random((3, 4, 16), 9), jnp.bfloat16)
  w = jnp.asarray(_random((16, 8), 10), jnp.bfloat16)
  fn = jax.jit(lambda x, w: pointwise.pointwise_product(x, w, "blas"))
  assert "xception_jax_gemm" not in fn.lower(x, w).as_text()
  got = fn(x, w)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(got, np.float32),
                                np.asarray(pointwise.pointwise_product(x, w, "xla"), np.float32))


def test_bad_names_and_shapes_give_one_line_errors():
  with pytest.raises(ValueError, match=r"pointwise_impl must be one of \['xla', 'blas', "
                                       r"'auto'\]; got 'mkl'"):
    pointwise.resolve_pointwise_impl("mkl")
  with pytest.raises(ValueError, match="resolve 'auto' first"):
    pointwise.pointwise_product(jnp.ones((2, 3)), jnp.ones((3, 4)), "auto")
  with pytest.raises(ValueError, match=r"matmul needs x \[M, K\] and w \[K, N\]"):
    native.matmul(jnp.ones((2, 3)), jnp.ones((4, 4)))


def _resolve_in_a_fresh_process(env_value: str) -> str:
  code = ("from xception_jax.models import pointwise\n"
          "from xception_jax import native\n"
          "print(pointwise.resolve_pointwise_impl('auto'))\n"
          "try:\n"
          "  pointwise.resolve_pointwise_impl('blas')\n"
          "except ValueError as error:\n"
          "  print(error)\n")
  env = {**os.environ, blas.ENV: env_value}
  result = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=True, timeout=300)
  return result.stdout


def test_blas_off_or_missing_keeps_xla_and_says_why():
  off = _resolve_in_a_fresh_process("0").splitlines()
  assert off[0] == "xla"
  assert off[1] == ("pointwise_impl 'blas' is unavailable: XCEPTION_JAX_BLAS=0 is set "
                    "(BLAS products deliberately unavailable)")
  missing = _resolve_in_a_fresh_process("/nonexistent/libcblas.so").splitlines()
  assert missing[0] == "xla"
  assert missing[1].startswith("pointwise_impl 'blas' is unavailable: loading "
                               "/nonexistent/libcblas.so failed")
  assert "XCEPTION_JAX_BLAS=/path/to/a/cblas/library.so" in missing[1]


def test_an_explicit_library_path_is_used():
  """XCEPTION_JAX_BLAS names the library: here the MKL the search would find."""
  path = blas.mkl_library_path()
  if path is None:
    pytest.skip("the mkl wheel is not installed (requirements.txt installs it on x86-64 Linux)")
  assert _resolve_in_a_fresh_process(path).splitlines() == ["blas"]
