"""The native CPU depthwise kernel (xception_jax/native) against `feature_group_count`.

Values and both gradients on random inputs, for odd sizes, one channel, channel
counts that are not multiples of the 8-float vector (the scalar tail), kernels 3 and
5, dilations 1, 2 and 4, shapes big enough to be split over threads, under jit and
under a jit sharded over the 4 simulated CPU devices (conftest.py); the 'auto'
resolution; the bfloat16 fallback; SpatialConv's strided path, alone and with a
dilation; one thread against the default pool, bitwise.

The library must be built (`pip install -r requirements.txt` builds it): when it is
not, every test here fails with the loader's reason. Only XCEPTION_JAX_NATIVE=0
(native deliberately unavailable, README) turns the failures into skips.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from xception_jax import native
from xception_jax.models import aligned_xception, depthwise
from xception_jax.models.layers import SpatialConv

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True, scope="module")
def _library():
  if not native.available():
    if native.deliberately_disabled():
      pytest.skip(native.unavailable_reason())
    pytest.fail(f"native depthwise kernel unavailable: {native.unavailable_reason()}")


@functools.partial(jax.jit, static_argnums=(0, 4))
def _value_and_grads(impl, x, kernel, g, dilation):
  y, vjp = jax.vjp(lambda x, k: depthwise.DEPTHWISE_IMPLEMENTATIONS[impl](x, k, dilation),
                   x, kernel)
  return (y, *vjp(g))


def _random(shape, kernel_size, seed=0):
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 1, shape[-1])), jnp.float32)
  g = jnp.asarray(rng.normal(size=shape), jnp.float32)
  return x, kernel, g


def _assert_close(actual, expected, what):
  actual, expected = np.asarray(actual), np.asarray(expected)
  scale = np.max(np.abs(expected))
  error = np.max(np.abs(actual - expected)) / scale
  assert error < 2e-6, f"{what}: relative error {error:.2e}"


@pytest.mark.parametrize("shape,kernel_size,dilation", [
    ((2, 7, 9, 5), 3, 1),       # odd sizes, 5 channels: scalar tail only
    ((1, 11, 6, 1), 5, 2),      # one channel
    ((3, 13, 13, 83), 3, 4),    # 64 + 16 + 3 channels: every block width
    ((2, 10, 10, 130), 5, 1),   # 2 x 64 + 2
    ((1, 7, 7, 24), 5, 4),      # dilation larger than the image: most taps fall outside
    ((2, 20, 20, 96), 3, 1),    # enough work for several threads and gradient chunks
    ((4, 9, 9, 728), 3, 2),     # Xception's middle flow at 150, dilated
])
def test_values_and_gradients_match_feature_group(shape, kernel_size, dilation):
  x, kernel, g = _random(shape, kernel_size)
  y, dx, dk = _value_and_grads("native", x, kernel, g, dilation)
  y_ref, dx_ref, dk_ref = _value_and_grads("feature_group", x, kernel, g, dilation)
  assert y.shape == y_ref.shape and dk.shape == kernel.shape
  _assert_close(y, y_ref, "output")
  _assert_close(dx, dx_ref, "input gradient")
  _assert_close(dk, dk_ref, "kernel gradient")


def test_sharded_jit_over_four_devices():
  devices = jax.devices()
  assert len(devices) == 4, "conftest.py sets 4 CPU devices"
  mesh = Mesh(np.array(devices), ("data",))
  batch = NamedSharding(mesh, P("data"))
  replicated = NamedSharding(mesh, P())
  x, kernel, g = _random((8, 12, 11, 40), 3, seed=1)

  def loss(x, kernel):
    y = depthwise.DEPTHWISE_IMPLEMENTATIONS["native"](x, kernel, 2)
    return jnp.sum(y * g), y

  sharded = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True),
                    in_shardings=(batch, replicated), out_shardings=((replicated, batch),
                                                                     (batch, replicated)))
  (_, y), (dx, dk) = sharded(jax.device_put(x, batch), jax.device_put(kernel, replicated))
  y_ref, dx_ref, dk_ref = _value_and_grads("feature_group", x, kernel, g, 2)
  assert y.sharding.is_equivalent_to(batch, 4)
  _assert_close(y, y_ref, "sharded output")
  _assert_close(dx, dx_ref, "sharded input gradient")
  _assert_close(dk, dk_ref, "sharded kernel gradient")


def test_strided_spatial_conv_subsamples_the_native_output():
  x, _, _ = _random((2, 15, 15, 12), 3, seed=2)
  outputs = {}
  for impl in ("native", "feature_group"):
    conv = SpatialConv(kernel_size=3, depthwise_impl=impl, strides=2)
    variables = conv.init(jax.random.key(0), x)
    y, vjp = jax.vjp(lambda v, x: conv.apply(v, x), variables, x)
    outputs[impl] = (y, *jax.tree.leaves(vjp(jnp.ones_like(y))))
  assert outputs["native"][0].shape == (2, 8, 8, 12)
  for actual, expected in zip(outputs["native"], outputs["feature_group"]):
    _assert_close(actual, expected, "strided SpatialConv")


@pytest.mark.parametrize("size,kernel_size", [((15, 15), 3), ((14, 11), 5)])
def test_stride_and_dilation_together_match_feature_group(size, kernel_size):
  """A SpatialConv with strides=2 and dilation=2 at once (DeepLab's entry flow at output
  stride 8 never does both, but the layer allows it): output, input and kernel gradient."""
  x, _, _ = _random((2, *size, 12), kernel_size, seed=4)
  out_shape = (2, -(-size[0] // 2), -(-size[1] // 2), 12)
  cotangent = jnp.asarray(np.random.default_rng(5).normal(size=out_shape), jnp.float32)
  outputs = {}
  for impl in ("native", "feature_group"):
    conv = SpatialConv(kernel_size=kernel_size, depthwise_impl=impl, strides=2, dilation=2)
    variables = conv.init(jax.random.key(0), x)
    y, vjp = jax.vjp(lambda v, x: conv.apply(v, x), variables, x)
    outputs[impl] = (y, *jax.tree.leaves(vjp(cotangent)))
  assert outputs["native"][0].shape == out_shape
  for what, actual, expected in zip(("output", "kernel gradient", "input gradient"),
                                    outputs["native"], outputs["feature_group"]):
    _assert_close(actual, expected, f"strides=2, dilation=2: {what}")


_THREADS_SCRIPT = """
import sys
import jax, jax.numpy as jnp, numpy as np
from xception_jax import native
assert native.available(), native.unavailable_reason()
rng = np.random.default_rng(6)
x = jnp.asarray(rng.normal(size=(3, 41, 30, 80)), jnp.float32)
k = jnp.asarray(rng.normal(size=(3, 3, 1, 80)), jnp.float32)
g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
y, vjp = jax.vjp(lambda x, k: native.depthwise_conv_native(x, k, 2), x, k)
np.savez(sys.argv[1], y=y, dx=vjp(g)[0], dk=vjp(g)[1])
"""


def test_results_do_not_depend_on_the_thread_count(tmp_path):
  """XCEPTION_JAX_NATIVE_THREADS=1 (the calling thread alone) against the default (XLA's
  whole intra-op pool), bitwise. The variable is read once per process, so each runs in
  its own process. The shape gives the kernel gradient 5 row blocks per sample (8 rows
  each) that cut across its 9-row float32 groups, so a chunking that followed the thread
  count would change the sums (seen: a build with one block under 1 thread differed in
  639 of the 720 kernel-gradient values)."""
  results = {}
  for threads in ("1", None):
    env = {k: v for k, v in os.environ.items() if k != "XCEPTION_JAX_NATIVE_THREADS"}
    if threads:
      env["XCEPTION_JAX_NATIVE_THREADS"] = threads
    out = str(tmp_path / f"threads_{threads}.npz")
    proc = subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, out], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results[threads] = np.load(out)
  assert os.cpu_count() > 1, "one core: the default pool is one thread too"
  for name in ("y", "dx", "dk"):
    np.testing.assert_array_equal(results["1"][name], results[None][name], err_msg=name)


@pytest.mark.slow
def test_whole_network_with_strides_and_dilation_matches_feature_group():
  """A tiny aligned Xception at output stride 8 (stride-2 and dilated depthwise convs),
  training mode: loss and every parameter gradient."""
  blocks = aligned_xception.ARCHITECTURES["xception41"][:4] + \
      aligned_xception.ARCHITECTURES["xception41"][-2:]
  model = aligned_xception.AlignedXception(blocks, width_multiplier=0.125, output_stride=8,
                                           num_classes=5, depthwise_impl="native")
  images = jax.random.uniform(jax.random.key(2), (2, 33, 33, 3), minval=-1, maxval=1)
  variables = model.init(jax.random.key(1), images, train=False)

  def loss(m, params):
    logits, _ = m.apply({**variables, "params": params}, images, train=True,
                        mutable=["batch_stats"])
    return jnp.sum(jnp.sin(logits))

  (la, ga), (lb, gb) = [jax.jit(jax.value_and_grad(functools.partial(loss, m)))(
      variables["params"]) for m in (model, model.clone(depthwise_impl="feature_group"))]
  np.testing.assert_allclose(la, lb, rtol=1e-4)
  # Some leaves are rounding noise (the gradients of parameters that a BatchNorm
  # right after cancels): an absolute floor of 1e-6 against O(1) gradients.
  for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-3 * float(np.max(np.abs(b))) + 1e-6)


def test_auto_resolves_to_native_on_cpu_else_shift(monkeypatch):
  assert jax.default_backend() == "cpu"
  assert depthwise.resolve_depthwise_impl("native") == "native"
  depthwise._cpu_default.cache_clear()  # pylint: disable=protected-access
  assert depthwise.resolve_depthwise_impl("auto") == "native"
  monkeypatch.delitem(depthwise.DEPTHWISE_IMPLEMENTATIONS, "native")
  depthwise._cpu_default.cache_clear()  # pylint: disable=protected-access
  try:
    assert depthwise.resolve_depthwise_impl("auto") == "shift"
    with pytest.raises(ValueError, match="'native' is unavailable"):
      depthwise.resolve_depthwise_impl("native")
  finally:
    monkeypatch.undo()
    depthwise._cpu_default.cache_clear()  # pylint: disable=protected-access


def test_bfloat16_falls_back_to_shift():
  x, kernel, _ = _random((2, 9, 9, 20), 3, seed=3)
  x, kernel = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)
  y = depthwise.DEPTHWISE_IMPLEMENTATIONS["native"](x, kernel, 2)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_array_equal(np.asarray(y, np.float32),
                                np.asarray(depthwise.depthwise_conv_shift(x, kernel, 2),
                                           np.float32))
  # The kernel package alone (it imports nothing from models/) takes the fallback it
  # is given, and without one refuses in one line.
  with pytest.raises(ValueError, match="computes float32; got bfloat16"):
    native.depthwise_conv_native(x, kernel, 2)


def test_bad_arguments_raise_one_line_errors():
  x, kernel, _ = _random((1, 5, 5, 4), 3)
  with pytest.raises(ValueError, match="dilation"):
    native.depthwise_conv_native(x, kernel, 0)
  with pytest.raises(ValueError, match="odd"):
    native.depthwise_conv_native(x, jnp.zeros((2, 2, 1, 4)), 1)
  with pytest.raises(ValueError, match="channels"):
    native.depthwise_conv_native(x, jnp.zeros((3, 3, 1, 5)), 1)
