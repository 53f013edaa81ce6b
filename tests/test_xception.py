"""The Xception network: parameter counts, shapes, determinism and its switches."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from xception_jax.models import Xception, scaled_width

PAPER_PARAMS = 22_855_952          # paper and Keras' trainable count, 1000 classes
KERAS_BN_STATISTICS = 22_910_480 - PAPER_PARAMS


def _shapes(model, size=299, batch=1):
  return jax.eval_shape(
      lambda: model.init(jax.random.key(0), jnp.zeros((batch, size, size, 3)), train=False))


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _expected_params(num_classes=1000, residual=True, fc_layers=(), segments=None,
                     order="depthwise_pointwise"):
  """Counts Figure 5's parameters by hand, independently of the Flax code."""
  bn = lambda c: 2 * c                       # BN scale and shift
  def sep(cin, cout):
    spatial = cin if order == "depthwise_pointwise" else cout
    groups = spatial if segments is None else segments
    return 9 * (spatial // groups) * spatial + cin * cout + bn(cout)
  total = 3 * 3 * 3 * 32 + bn(32) + 3 * 3 * 32 * 64 + bn(64)
  for cin, f in [(64, 128), (128, 256), (256, 728)]:
    total += sep(cin, f) + sep(f, f) + residual * (cin * f + bn(f))
  total += 8 * 3 * sep(728, 728)
  total += sep(728, 728) + sep(728, 1024) + residual * (728 * 1024 + bn(1024))
  total += sep(1024, 1536) + sep(1536, 2048)
  width = 2048
  for f in fc_layers:
    total += width * f + f
    width = f
  return total + width * num_classes + num_classes


def test_paper_parameter_count():
  variables = _shapes(Xception(num_classes=1000))
  assert _count(variables["params"]) == PAPER_PARAMS == _expected_params()
  assert _count(variables["batch_stats"]) == KERAS_BN_STATISTICS == 54_528


@pytest.mark.parametrize("fields", [
    dict(residual=False),
    dict(fc_layers=(4096, 4096)),
    dict(num_classes=17_000),
    dict(segments=1),
    dict(segments=8),
    dict(order="pointwise_depthwise"),
])
def test_switches_change_the_count_as_the_architecture_implies(fields):
  count = _count(_shapes(Xception(**fields))["params"])
  assert count == _expected_params(**fields)
  if fields == dict(residual=False):
    assert count < PAPER_PARAMS
  if "fc_layers" in fields:
    assert count > PAPER_PARAMS


def test_activations_and_impls_do_not_change_the_count():
  for fields in [dict(intermediate_activation="relu"), dict(intermediate_activation="elu"),
                 dict(depthwise_impl="shift"), dict(dropout_rate=0.5)]:
    assert _count(_shapes(Xception(**fields))["params"]) == PAPER_PARAMS


def test_output_shapes_full_width():
  model = Xception(num_classes=1000)
  out = jax.eval_shape(lambda v, x: model.apply(v, x), _shapes(model),
                       jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32))
  assert out.shape == (2, 1000) and out.dtype == jnp.float32
  features = Xception(include_top=False, fc_layers=(64,))
  out = jax.eval_shape(lambda v, x: features.apply(v, x), _shapes(features),
                       jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32))
  assert out.shape == (2, 64)


TINY = dict(width_multiplier=0.125, num_middle_blocks=1, num_classes=7,
            depthwise_impl="shift")


@functools.cache
def _tiny(**fields):
  """A tiny model with its jitted init and eval-mode apply, compiled once per test run."""
  model = Xception(**{**TINY, **fields})
  init = jax.jit(lambda key, x: model.init(key, x, train=False))
  return model, init, jax.jit(model.apply)


def _tiny_variables(size, seed=0, **fields):
  model, init, _ = _tiny(**fields)
  return model, init(jax.random.key(seed), jnp.zeros((1, size, size, 3)))


@pytest.mark.parametrize("size", [71, 299])
def test_tiny_model_runs_at_any_size(size):
  _, variables = _tiny_variables(size)
  images = jax.random.uniform(jax.random.key(1), (2, size, size, 3), minval=-1, maxval=1)
  logits = _tiny()[2](variables, images)
  assert logits.shape == (2, 7)
  assert np.all(np.isfinite(logits))
  assert not np.allclose(logits[0], logits[1])  # depends on the input


def test_widths_round_to_multiples_of_8():
  assert [scaled_width(c, 1.0) for c in (32, 728)] == [32, 728]
  assert [scaled_width(c, 0.125) for c in (32, 64, 128, 728, 2048)] == [8, 8, 16, 88, 256]
  assert scaled_width(728, 0.5) == 368


def test_init_is_deterministic_for_a_seed():
  _, a = _tiny_variables(71, seed=0)
  _, b = _tiny_variables(71, seed=0)
  _, c = _tiny_variables(71, seed=1)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  diffs = jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.any(x != y)), a["params"],
                                       c["params"]))
  assert any(diffs)


def test_depthwise_implementations_give_the_same_network():
  model, variables = _tiny_variables(71)
  other = model.clone(depthwise_impl="feature_group")
  images = jax.random.uniform(jax.random.key(2), (2, 71, 71, 3), minval=-1, maxval=1)

  def loss(m, params):
    logits, _ = m.apply({**variables, "params": params}, images, train=True,
                        mutable=["batch_stats"])
    return jnp.sum(logits ** 2)

  (la, ga), (lb, gb) = [jax.jit(jax.value_and_grad(functools.partial(loss, m)))(
                            variables["params"])
                        for m in (model, other)]
  np.testing.assert_allclose(la, lb, rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4), ga, gb)


def test_training_mode_updates_batch_statistics_and_uses_dropout():
  model, variables = _tiny_variables(71, dropout_rate=0.5)
  images = jax.random.uniform(jax.random.key(3), (4, 71, 71, 3), minval=-1, maxval=1)
  run = jax.jit(lambda seed: model.apply(variables, images, train=True, mutable=["batch_stats"],
                                         rngs={"dropout": jax.random.key(seed)}))
  (logits_a, updates), (logits_b, _) = run(0), run(1)
  assert not np.allclose(logits_a, logits_b)                 # dropout is on
  before, after = variables["batch_stats"], updates["batch_stats"]
  assert any(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.any(x != y)), before, after)))
  apply = _tiny(dropout_rate=0.5)[2]
  np.testing.assert_array_equal(apply(variables, images), apply(variables, images))


def test_residual_switch_removes_shortcuts():
  _, variables = _tiny_variables(71, residual=False)
  names = "/".join(jax.tree_util.keystr(p) for p, _ in
                   jax.tree_util.tree_leaves_with_path(variables["params"]))
  assert "shortcut" not in names
  _, variables = _tiny_variables(71)
  entry = variables["params"]["entry_flow"]
  assert all("shortcut" in entry[f"module{i}"] for i in (1, 2, 3))
  assert "shortcut" not in variables["params"]["middle_flow"]["module1"]


def test_bfloat16_compute_keeps_float32_params_and_logits():
  """bfloat16 compute approximates float32 to bfloat16's precision, relative to logits of
  order one (at initialisation the tiny model's logits are ~1e-3, so the head is rescaled
  first: an absolute tolerance there could not fail), and the dtype really reaches the
  computation (the logits are not float32's bit for bit)."""
  model, variables = _tiny_variables(71)
  images = jax.random.uniform(jax.random.key(4), (2, 71, 71, 3), minval=-1, maxval=1)
  apply32 = _tiny()[2]
  scale = float(np.max(np.abs(apply32(variables, images))))
  head = variables["params"]["head"]
  variables = {**variables, "params": {**variables["params"],
                                       "head": {**head, "kernel": head["kernel"] * 2 / scale}}}
  reference = np.asarray(apply32(variables, images))
  assert 1.5 < np.max(np.abs(reference)) < 2.5
  bf16 = model.clone(dtype=jnp.bfloat16)
  logits = jax.jit(bf16.apply)(variables, images)
  assert logits.dtype == jnp.float32
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
  error = float(np.max(np.abs(np.asarray(logits) - reference)) / np.max(np.abs(reference)))
  assert 1e-4 < error < 0.03, error    # measured 0.7%; bfloat16 keeps 8 bits of mantissa


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="at least 71x71"):
    _shapes(Xception(), size=64)
  with pytest.raises(ValueError, match="segments=5 must be a positive divisor"):
    _shapes(Xception(segments=5))
  with pytest.raises(ValueError, match="NHWC"):
    Xception().init(jax.random.key(0), jnp.zeros((299, 299, 3)))
