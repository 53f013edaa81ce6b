"""Keras Xception -> Flax conversion: numerical parity with keras.applications.Xception.

One full-width Keras Xception (random weights, randomised BN statistics and gamma/beta,
random head bias) is built once for the module and saved in every format from_keras
reads; each conversion must give Keras' logits (pre-softmax, `classifier_activation=None`)
at 299x299 and at 96x96, and Keras' pooled features without the top, to within 1e-5 of
the outputs' scale (the README's claim; measured 7.6e-7 to 1.6e-6). Keras is a pinned
requirement: a missing Keras fails this module instead of skipping it. Mismatching files must be refused naming the first bad layer.
"""
import json
import os
import shutil
import subprocess
import sys

import h5py
import jax
import numpy as np
import pytest

from keras2_layout import write_keras2_weights
from xception_jax import checkpointing, convert
from xception_jax.models import factory

import keras  # pylint: disable=wrong-import-order  (a requirement: missing means failing)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")

SMALL = 96
TOLERANCE = 1e-5          # max abs difference / max abs Keras output (README, docs/WEIGHTS.md)
SENSITIVITY = 1e-2        # what one wrong layer must move the logits by, at least
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_APPLY = {}


def _apply(model, variables, images):
  """model.apply(train=False) under one jit per distinct model."""
  key = json.dumps(factory.model_to_fields(model), sort_keys=True)
  if key not in _APPLY:
    _APPLY[key] = jax.jit(lambda v, x, m=model: m.apply(v, x, train=False))
  return np.asarray(_APPLY[key](variables, images))


def _randomise(model, calibration_model, rng):
  """Random BN gamma/beta and statistics of the activations' real scale, a random head bias.

  Keras' glorot kernels shrink every separable conv's output ~100x, so BN statistics
  drawn blind would flatten each branch to its BN offset and the comparison would not
  see the convolutions. Instead the statistics are those of a calibration batch (one
  training-mode pass with momentum 0 sets them to the batch's), then perturbed: every
  layer then carries signal (test_parity_is_sensitive checks it).
  """
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      c = layer.gamma.shape[0]
      layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0.0, 0.2, c),
                         np.zeros(c), np.ones(c)])
  head = model.get_layer("predictions")
  kernel, bias = head.get_weights()
  head.set_weights([kernel, rng.normal(0.0, 0.3, bias.shape)])
  calibration_model.set_weights(model.get_weights())
  norms = [l for l in calibration_model.layers
           if isinstance(l, keras.layers.BatchNormalization)]
  for layer in norms:
    layer.momentum = 0.0
  calibration_model(rng.uniform(-1, 1, (4,) + calibration_model.input_shape[1:]).astype(
      np.float32), training=True)
  for layer in norms:
    layer.momentum = 0.99
    gamma, beta, mean, var = layer.get_weights()
    c = gamma.shape[0]
    layer.set_weights([gamma, beta, mean + rng.normal(0.0, 0.2, c) * np.sqrt(var),
                       var * rng.uniform(0.7, 1.4, c)])
  model.set_weights(calibration_model.get_weights())


def _write_keras2_h5(path, model):
  """The layout of Keras' published xception_weights_tf_dim_ordering_tf_kernels(_notop).h5
  (Keras 2 `save_weights`): bytes layer_names, unnamed layers numbered from 1, and
  datasets at <layer>/<layer>/<weight>:0."""
  counters, names = {}, []
  for layer in model.layers:
    name = layer.name
    if not name.startswith("block") and name != "predictions":
      prefix = {"Conv2D": "conv2d", "BatchNormalization": "batch_normalization",
                "InputLayer": "input"}.get(type(layer).__name__, name.split("_")[0])
      counters[prefix] = counters.get(prefix, 0) + 1
      name = f"{prefix}_{counters[prefix]}"
    names.append((name, layer))
  write_keras2_weights(path, names, backend=b"tensorflow", keras_version=b"2.0.8")


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
  """Keras references (built once) and the files every format test converts."""
  tmp = tmp_path_factory.mktemp("keras")
  keras.utils.set_random_seed(0)          # Keras' glorot kernels
  rng = np.random.default_rng(0)
  full = keras.applications.Xception(weights=None, classifier_activation=None)
  small = keras.applications.Xception(weights=None, classifier_activation=None,
                                      input_shape=(SMALL, SMALL, 3))
  _randomise(full, small, rng)
  notop = keras.applications.Xception(weights=None, include_top=False, pooling="avg",
                                      input_shape=(SMALL, SMALL, 3))
  notop.set_weights(full.get_weights()[:-2])
  images = {299: rng.uniform(-1, 1, (2, 299, 299, 3)).astype(np.float32),
            SMALL: rng.uniform(-1, 1, (2, SMALL, SMALL, 3)).astype(np.float32)}
  refs = {
      "logits": {299: np.asarray(full(images[299], training=False)),
                 SMALL: np.asarray(small(images[SMALL], training=False))},
      "features": np.asarray(notop(images[SMALL], training=False)),
      "head": full.get_layer("predictions").get_weights(),
  }
  files = {
      "keras2.h5": tmp / "xception_weights_tf_dim_ordering_tf_kernels.h5",
      "keras3.weights.h5": tmp / "xception.weights.h5",
      "keras3_legacy_model.h5": tmp / "xception_model.h5",
      "keras3.keras": tmp / "xception.keras",
      "notop_keras2.h5": tmp / "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
      "notop_keras3.weights.h5": tmp / "xception_notop.weights.h5",
  }
  _write_keras2_h5(files["keras2.h5"], full)
  full.save_weights(files["keras3.weights.h5"])
  full.save(files["keras3_legacy_model.h5"])
  full.save(files["keras3.keras"])
  _write_keras2_h5(files["notop_keras2.h5"], notop)
  notop.save_weights(files["notop_keras3.weights.h5"])
  return dict(files={k: str(v) for k, v in files.items()}, images=images, tmp=tmp, **refs)


_CONVERTED = {}


def _convert(path, **kwargs):
  key = (path, tuple(sorted(kwargs.items())))
  if key not in _CONVERTED:
    _CONVERTED[key] = convert.from_keras(path, depthwise_impl="shift", **kwargs)
  return _CONVERTED[key]


def _relative_error(out, ref):
  assert out.shape == ref.shape
  return float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))


TOP_FORMATS = ["keras2.h5", "keras3.weights.h5", "keras3_legacy_model.h5", "keras3.keras"]


@pytest.mark.parametrize("size", [299, SMALL])
@pytest.mark.parametrize("fmt", TOP_FORMATS)
def test_logits_match_keras(keras_files, fmt, size):
  model, variables = _convert(keras_files["files"][fmt])
  assert model.include_top and model.num_classes == 1000
  logits = _apply(model, variables, keras_files["images"][size])
  ref = keras_files["logits"][size]
  assert np.max(np.abs(ref)) > 0.1            # the comparison is not vacuous
  error = _relative_error(logits, ref)
  print(f"{fmt} {size}x{size}: max|diff| / max|logit| = {error:.2e} "
        f"(logit scale {np.max(np.abs(ref)):.3f})")
  assert error <= TOLERANCE


def test_parity_is_sensitive(keras_files):
  """One wrong layer anywhere must show: a flipped depthwise kernel deep in the middle
  flow, swapped BN statistics, a dropped head bias each move the logits by more than
  1e-2 of their scale (1000x the tolerance)."""
  model, variables = _convert(keras_files["files"]["keras2.h5"])
  images, ref = keras_files["images"][SMALL], keras_files["logits"][SMALL]

  def error_after(edit):
    broken = jax.tree.map(np.array, variables)
    edit(broken)
    return _relative_error(_apply(model, broken, images), ref)

  def flip_depthwise(v):
    layer = v["params"]["middle_flow"]["module6"]["sepconv2"]["depthwise"]
    layer["kernel"] = layer["kernel"][::-1]

  def swap_statistics(v):
    stats = v["batch_stats"]["middle_flow"]["module3"]["sepconv1_bn"]
    stats["mean"], stats["var"] = stats["var"], stats["mean"]

  def drop_head_bias(v):
    v["params"]["head"]["bias"] = np.zeros_like(v["params"]["head"]["bias"])

  for edit in (flip_depthwise, swap_statistics, drop_head_bias):
    assert error_after(edit) > SENSITIVITY, edit.__name__


@pytest.mark.slow
def test_logits_match_keras_with_the_reference_depthwise(keras_files):
  """The same at 299 with depthwise_impl='feature_group' (the model's default)."""
  model, variables = convert.from_keras(keras_files["files"]["keras3.keras"])
  assert model.depthwise_impl == "feature_group"
  logits = _apply(model, variables, keras_files["images"][299])
  error = _relative_error(logits, keras_files["logits"][299])
  print(f"feature_group 299x299: max|diff| / max|logit| = {error:.2e}")
  assert error <= TOLERANCE


def test_every_format_gives_the_same_variables(keras_files):
  _, reference = _convert(keras_files["files"]["keras2.h5"])
  assert sum(x.size for x in jax.tree.leaves(reference["params"])) == 22_855_952
  for fmt in TOP_FORMATS[1:]:
    _, variables = _convert(keras_files["files"][fmt])
    jax.tree.map(np.testing.assert_array_equal, variables, reference)


@pytest.mark.parametrize("fmt", ["notop_keras2.h5", "notop_keras3.weights.h5"])
def test_notop_file_gives_the_pooled_features(keras_files, fmt):
  model, variables = _convert(keras_files["files"][fmt])
  assert not model.include_top and "head" not in variables["params"]
  features = _apply(model, variables, keras_files["images"][SMALL])
  error = _relative_error(features, keras_files["features"])
  print(f"{fmt} {SMALL}x{SMALL} pooled features: max|diff| / max|feature| = {error:.2e}")
  assert error <= TOLERANCE


def test_include_top_false_drops_the_head_and_true_needs_one(keras_files):
  model, variables = _convert(keras_files["files"]["keras3.keras"], include_top=False)
  assert not model.include_top and "head" not in variables["params"]
  features = _apply(model, variables, keras_files["images"][SMALL])
  assert _relative_error(features, keras_files["features"]) <= TOLERANCE
  with pytest.raises(convert.KerasFileError, match="has no 'predictions' layer"):
    convert.from_keras(keras_files["files"]["notop_keras3.weights.h5"], include_top=True)


def test_keras3_file_without_layer_name_attributes(keras_files):
  """Older Keras 3 writes no `name` attribute: matched by class order like Keras does."""
  path = keras_files["tmp"] / "unnamed.weights.h5"
  shutil.copy(keras_files["files"]["keras3.weights.h5"], path)
  with h5py.File(path, "r+") as f:
    for key in f["layers"]:
      f["layers"][key]["vars"].attrs.pop("name", None)
  _, variables = convert.from_keras(str(path))
  _, reference = _convert(keras_files["files"]["keras3.weights.h5"])
  jax.tree.map(np.testing.assert_array_equal, variables, reference)


def _edited_copy(keras_files, name, edit):
  path = keras_files["tmp"] / name
  shutil.copy(keras_files["files"]["keras2.h5"], path)
  with h5py.File(path, "r+") as f:
    edit(f)
  return str(path)


def test_other_number_of_classes(keras_files):
  rng = np.random.default_rng(1)
  kernel, bias = rng.normal(0, 0.05, (2048, 10)), rng.normal(0, 0.3, (10,))

  def edit(f):
    del f["predictions/predictions"]
    f.create_dataset("predictions/predictions/kernel:0", data=kernel.astype(np.float32))
    f.create_dataset("predictions/predictions/bias:0", data=bias.astype(np.float32))

  model, variables = convert.from_keras(_edited_copy(keras_files, "ten.h5", edit),
                                        depthwise_impl="shift")
  assert model.num_classes == 10
  logits = _apply(model, variables, keras_files["images"][SMALL])
  expected = keras_files["features"].astype(np.float64) @ kernel + bias
  assert _relative_error(logits, expected) <= TOLERANCE


def _replace(f, layer, index, shape):
  group = f[layer]
  weight = group.attrs["weight_names"][index].decode()
  del group[weight]
  group.create_dataset(weight, data=np.zeros(shape, np.float32))


@pytest.mark.parametrize("name, edit, message", [
    ("wrong_shape.h5", lambda f: _replace(f, "block3_sepconv1", 1, (1, 1, 128, 255)),
     r"layer 'block3_sepconv1' .*pointwise_kernel has shape \(1, 1, 128, 255\), "
     r"expected \(1, 1, 128, 256\)"),
    ("wrong_depthwise.h5", lambda f: _replace(f, "block5_sepconv2", 0, (3, 3, 1, 728)),
     r"layer 'block5_sepconv2' .*depthwise_kernel has shape \(3, 3, 1, 728\), "
     r"expected \(3, 3, 728, 1\)"),
    ("missing_layer.h5", lambda f: f.__delitem__("block7_sepconv3_bn") or f.attrs.__setitem__(
        "layer_names", [n for n in f.attrs["layer_names"] if n != b"block7_sepconv3_bn"]),
     r"missing layer 'block7_sepconv3_bn'"),
    ("missing_shortcut.h5", lambda f: f.__delitem__("conv2d_4") or f.attrs.__setitem__(
        "layer_names", [n for n in f.attrs["layer_names"] if n != b"conv2d_4"]),
     r"missing layer 'shortcut Conv2D of block13"),
])
def test_mismatching_file_names_the_first_bad_layer(keras_files, name, edit, message):
  path = _edited_copy(keras_files, name, edit)
  with pytest.raises(convert.KerasFileError, match=message):
    convert.from_keras(path)


def test_extra_layer_is_refused(keras_files):
  def edit(f):
    f.attrs["layer_names"] = list(f.attrs["layer_names"]) + [b"fc1"]
    group = f.create_group("fc1")
    group.attrs["weight_names"] = np.array([b"fc1/kernel:0", b"fc1/bias:0"])
    group.create_dataset("fc1/kernel:0", data=np.zeros((2048, 4), np.float32))
    group.create_dataset("fc1/bias:0", data=np.zeros((4,), np.float32))

  with pytest.raises(convert.KerasFileError, match=r"unexpected weighted layer\(s\) \['fc1'\]"):
    convert.from_keras(_edited_copy(keras_files, "extra.h5", edit))


def test_other_architecture_is_refused(keras_files):
  mobilenet = keras.applications.MobileNet(weights=None, alpha=0.25, include_top=False,
                                           input_shape=(SMALL, SMALL, 3))
  path = str(keras_files["tmp"] / "mobilenet.weights.h5")
  mobilenet.save_weights(path)
  with pytest.raises(convert.KerasFileError,
                     match=r"does not match Keras' Xception: missing layer 'block1_conv1'"):
    convert.from_keras(path)


def test_unreadable_files_are_refused(keras_files):
  tmp = keras_files["tmp"]
  truncated = tmp / "truncated.h5"
  data = open(keras_files["files"]["keras2.h5"], "rb").read()
  truncated.write_bytes(data[:len(data) // 2])
  with pytest.raises(convert.KerasFileError, match="truncated or corrupted"):
    convert.from_keras(str(truncated))
  garbage = tmp / "garbage.keras"
  garbage.write_bytes(b"not a model" * 100)
  with pytest.raises(convert.KerasFileError, match="neither an HDF5 file"):
    convert.from_keras(str(garbage))
  with pytest.raises(FileNotFoundError):
    convert.from_keras(str(tmp / "absent.h5"))


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", "xception_jax.convert", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)


def test_cli_round_trip(keras_files):
  source = keras_files["files"]["keras3.weights.h5"]
  out = str(keras_files["tmp"] / "converted")
  result = _cli(f"--keras={source}", f"--out={out}")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "Wrote" in result.stdout

  variables, fields, step = checkpointing.load_variables(out)
  model, reference = _convert(source)
  assert step == 0
  assert fields == factory.model_to_fields(convert.from_keras(source)[0])
  jax.tree.map(np.testing.assert_array_equal, variables, reference)
  loaded = factory.create_model(fields, depthwise_impl="shift")
  logits = _apply(loaded, variables, keras_files["images"][SMALL])
  assert _relative_error(logits, keras_files["logits"][SMALL]) <= TOLERANCE

  again = _cli(f"--keras={source}", f"--out={out}")
  assert again.returncode != 0 and "Refusing to write" in again.stderr


def test_cli_refuses_a_mismatching_file_before_writing(keras_files):
  out = keras_files["tmp"] / "never_written"
  bad = keras_files["tmp"] / "garbage.h5"
  bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
  result = _cli(f"--keras={bad}", f"--out={out}")
  assert result.returncode != 0 and "Error:" in result.stderr
  assert not out.exists()
