"""Keras InceptionV3 -> Flax conversion: the layer mapping, the recognition of the
network, and numerical parity with keras.applications.InceptionV3.

Default suite (no Keras model, no forward pass): synthetic files in the layouts Keras
writes, whose arrays are lazily filled HDF5 datasets (`fillvalue`, nothing written)
holding one marker value per Keras layer; the converted tree must put the i-th created
Conv2D / BatchNormalization at KERAS_ORDER[i] with the shapes typed from Keras' source
(test_inception_v3.keras_convs, independent of the Flax tables).

Slow suite: a full-width keras.applications.InceptionV3(weights=None) at 107x107
(the smallest size where the last stage keeps a 2x2 grid, so 1x3 and 3x1 differ) with
random weights and BN statistics, saved in every format Keras 3.15 writes plus the
Keras 2 layout of the published weights; each converts to Keras' logits within 1e-4
of their scale.
"""
import os
import re
import shutil
import subprocess
import sys

import h5py
import jax
import numpy as np
import pytest

from keras2_layout import write_keras2_weights
from test_inception_v3 import keras_convs
from xception_jax import checkpointing, convert, predict
from xception_jax.convert import keras_inception_v3
from xception_jax.models import InceptionV3, factory
from xception_jax.models.inception_v3 import KERAS_ORDER

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-4          # max |Flax - Keras| / max |Keras logit| (issue 18, docs/WEIGHTS.md)
SENSITIVITY = 1e-2        # what one wrong layer must move the logits by, at least
SIZE = 107
KERAS_TRAINABLE = 23_817_352   # keras.applications.InceptionV3(weights=None).count_params()
                               # minus its BN moving statistics, 1000 classes


_CONVERTED = {}


def _convert(path, **kwargs):
  """from_keras once per file and arguments (each reads ~95 MB and traces the model)."""
  key = (path, tuple(sorted(kwargs.items())))
  if key not in _CONVERTED:
    _CONVERTED[key] = convert.from_keras(path, **kwargs)
  return _CONVERTED[key]


# ----------------------------------------------------------------------------- synthetic


def _markers(i):
  """Fill values of the i-th created conv kernel, BN beta, moving mean, moving var."""
  return float(i + 1), 1000.0 + i, 2000.0 + i, 3000.0 + i


def _synthetic_layers(num_classes, first=0):
  """(keras name, class, [(weight name, shape, fill)]) in Keras' model.layers order."""
  convs, features = keras_convs()
  by_creation = []
  for i, shape in enumerate(convs):
    k, beta, mean, var = _markers(i)
    n = f"_{first + i}" if first + i else ""
    by_creation.append((
        (f"conv2d{n}", "conv2d", [("kernel", shape, k)]),
        (f"batch_normalization{n}", "batch_normalization",
         [("beta", shape[-1:], beta), ("moving_mean", shape[-1:], mean),
          ("moving_variance", shape[-1:], var)])))
  layers = [by_creation[c][0] for c in keras_inception_v3.KERAS3_LAYERS_ORDER]
  layers += [by_creation[c][1] for c in keras_inception_v3.KERAS3_LAYERS_ORDER]
  if num_classes:
    layers.append(("predictions", "dense", [("kernel", (features, num_classes), 0.5),
                                            ("bias", (num_classes,), -0.5)]))
  return layers


def _write_keras2(path, num_classes=1000):
  """The published inception_v3_weights_tf_dim_ordering_tf_kernels.h5 layout: names
  numbered from 1, layer_names in model.layers order, <layer>/<layer>/<weight>:0."""
  layers = _synthetic_layers(num_classes, first=1)
  with h5py.File(path, "w") as f:
    f.attrs["layer_names"] = np.array([name.encode() for name, _, _ in layers])
    for name, _, weights in layers:
      group = f.create_group(name)
      names = [f"{name}/{w}:0" for w, _, _ in weights]
      group.attrs["weight_names"] = np.array([n.encode() for n in names])
      for n, (_, shape, fill) in zip(names, weights):
        group.create_dataset(n, shape, np.float32, fillvalue=fill)


def _write_keras3(path, num_classes=1000, first=0, named=True):
  """Keras 3 .weights.h5: layers/<class>[_k]/vars/<i>, k counting each class in
  model.layers order; the `name` attribute holds the layer's name (absent: older Keras 3)."""
  counts = {}
  with h5py.File(path, "w") as f:
    for name, klass, weights in _synthetic_layers(num_classes, first):
      k = counts[klass] = counts.get(klass, -1) + 1
      group = f.create_group(f"layers/{klass}{f'_{k}' if k else ''}/vars")
      if named:
        group.attrs["name"] = name
      for i, (_, shape, fill) in enumerate(weights):
        group.create_dataset(str(i), shape, np.float32, fillvalue=fill)


def _node(tree, path):
  for part in path:
    tree = tree[part]
  return tree


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("inception_v3_synthetic")
  files = {"keras2.h5": tmp / "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
           "keras3.weights.h5": tmp / "named.weights.h5",
           "keras3_second_model.weights.h5": tmp / "second.weights.h5",
           "keras3_unnamed.weights.h5": tmp / "unnamed.weights.h5",
           "notop.h5": tmp / "notop.h5"}
  _write_keras2(files["keras2.h5"])
  _write_keras3(files["keras3.weights.h5"])
  _write_keras3(files["keras3_second_model.weights.h5"], first=94)   # names conv2d_94 ...
  _write_keras3(files["keras3_unnamed.weights.h5"], named=False)
  _write_keras2(files["notop.h5"], num_classes=0)
  return dict(tmp=tmp, files={k: str(v) for k, v in files.items()})


@pytest.mark.parametrize("fmt", ["keras2.h5", "keras3.weights.h5",
                                 "keras3_second_model.weights.h5",
                                 "keras3_unnamed.weights.h5"])
def test_mapping_puts_each_keras_layer_at_its_flax_path(synthetic, fmt):
  model, variables = _convert(synthetic["files"][fmt])
  assert isinstance(model, InceptionV3) and model.include_top and model.num_classes == 1000
  assert factory.model_to_fields(model)["architecture"] == "inception_v3"
  convs, _ = keras_convs()
  params, stats = variables["params"], variables["batch_stats"]
  for i, (path, shape) in enumerate(zip(KERAS_ORDER, convs, strict=True)):
    k, beta, mean, var = _markers(i)
    parts = path.split("/")
    kernel = np.asarray(_node(params, parts + ["conv", "kernel"]))
    assert kernel.shape == shape and np.all(kernel == k), (i, path)
    assert set(_node(params, parts + ["bn"])) == {"bias"}
    assert np.all(np.asarray(_node(params, parts + ["bn", "bias"])) == beta), (i, path)
    assert np.all(np.asarray(_node(stats, parts + ["bn", "mean"])) == mean), (i, path)
    assert np.all(np.asarray(_node(stats, parts + ["bn", "var"])) == var), (i, path)
  assert params["head"]["kernel"].shape == (2048, 1000)
  assert float(params["head"]["bias"][0]) == -0.5
  assert convert.count_parameters(variables) == KERAS_TRAINABLE


def test_spot_checks_of_the_mapping(synthetic):
  """A few layers by hand from keras/applications/inception_v3.py: conv2d_7 is mixed0's
  branch5x5 (5x5, 48 -> 64), conv2d_26 mixed3's 3x3/2 (288 -> 384), conv2d_93 mixed10's
  branch_pool (2048 -> 192)."""
  _, variables = _convert(synthetic["files"]["keras2.h5"])
  params = variables["params"]
  for i, path, shape in ((7, ("mixed0", "branch5x5_2"), (5, 5, 48, 64)),
                         (26, ("mixed3", "branch3x3"), (3, 3, 288, 384)),
                         (93, ("mixed10", "branch_pool"), (1, 1, 2048, 192))):
    kernel = np.asarray(params[path[0]][path[1]]["conv"]["kernel"])
    assert kernel.shape == shape and np.all(kernel == _markers(i)[0]), path


def test_notop_file_and_include_top(synthetic):
  model, variables = _convert(synthetic["files"]["notop.h5"])
  assert not model.include_top and "head" not in variables["params"]
  model, variables = _convert(synthetic["files"]["keras2.h5"], include_top=False)
  assert not model.include_top and "head" not in variables["params"]
  with pytest.raises(convert.KerasFileError, match="has no 'predictions' layer"):
    convert.from_keras(synthetic["files"]["notop.h5"], include_top=True)


def _edited(synthetic, name, edit, source="keras2.h5"):
  path = synthetic["tmp"] / name
  shutil.copy(synthetic["files"][source], path)
  with h5py.File(path, "r+") as f:
    edit(f)
  return str(path)


def _drop(f, layer):
  del f[layer]
  f.attrs["layer_names"] = [n for n in f.attrs["layer_names"] if n != layer.encode()]


def _reshape(f, layer, weight, shape):
  del f[f"{layer}/{layer}/{weight}:0"]
  f.create_dataset(f"{layer}/{layer}/{weight}:0", shape, np.float32)


def _add_dense(f, layer):
  f.attrs["layer_names"] = list(f.attrs["layer_names"]) + [layer.encode()]
  group = f.create_group(layer)
  group.attrs["weight_names"] = [f"{layer}/kernel:0".encode(), f"{layer}/bias:0".encode()]
  group.create_dataset(f"{layer}/kernel:0", (2048, 4), np.float32)
  group.create_dataset(f"{layer}/bias:0", (4,), np.float32)


@pytest.mark.parametrize("name, edit, message", [
    ("missing_bn.h5", lambda f: _drop(f, "batch_normalization_40"),
     r"holds 93 BatchNormalization layers, InceptionV3 has 94"),
    ("wrong_shape.h5", lambda f: _reshape(f, "conv2d_8", "kernel", (5, 5, 48, 65)),
     r"layer 'conv2d_8' .*kernel has shape \(5, 5, 48, 65\), expected \(5, 5, 48, 64\) "
     r"\(Flax params/mixed0/branch5x5_2/conv/kernel\)"),
    ("gap.h5", lambda f: f.move("conv2d_94", "conv2d_95") or f.attrs.__setitem__(
        "layer_names", [b"conv2d_95" if n == b"conv2d_94" else n
                        for n in f.attrs["layer_names"]]),
     r"numbered consecutively"),
    ("extra.h5", lambda f: _add_dense(f, "fc1"), r"unexpected weighted layer\(s\) \['fc1'\]"),
])
def test_mismatching_file_is_refused_naming_the_layer(synthetic, name, edit, message):
  with pytest.raises(convert.KerasFileError, match=message):
    convert.from_keras(_edited(synthetic, name, edit))


def test_neither_network_is_refused_in_one_line(synthetic):
  """Scale-ful BN and no separable convolution (e.g. ResNet, MobileNet): neither."""
  path = synthetic["tmp"] / "other.h5"
  with h5py.File(path, "w") as f:
    f.attrs["layer_names"] = [b"conv1", b"bn1"]
    for name, weights in (("conv1", {"kernel": (3, 3, 3, 8)}),
                          ("bn1", {w: (8,) for w in ("gamma", "beta", "moving_mean",
                                                    "moving_variance")})):
      group = f.create_group(name)
      group.attrs["weight_names"] = [f"{name}/{w}:0".encode() for w in weights]
      for w, shape in weights.items():
        group.create_dataset(f"{name}/{w}:0", shape, np.float32)
  with pytest.raises(convert.KerasFileError) as error:
    convert.from_keras(str(path))
  text = str(error.value)
  assert "\n" not in text
  assert re.search(r"does not match Keras' Xception: missing layer 'block1_conv1'.*nor "
                   r"Keras' InceptionV3: no BatchNormalization without scale", text)


# ----------------------------------------------------------------------------- Keras


def _randomise(net, rng):
  """Random BN statistics of the activations' real scale and a random head bias of the
  logits' spread.

  Statistics drawn blind would flatten deep layers to their BN offsets (Keras' glorot
  kernels do not keep the scale), and a wrong mapping could go unseen; instead one
  training-mode pass with momentum 0 sets each layer's moving statistics to a random
  batch's, which are then perturbed, and beta is random: every layer carries signal
  (test_parity_is_sensitive checks it).
  """
  import keras  # pylint: disable=import-outside-toplevel
  norms = [l for l in net.layers if isinstance(l, keras.layers.BatchNormalization)]
  for layer in norms:
    layer.momentum = 0.0
  net(rng.uniform(-1, 1, (4, SIZE, SIZE, 3)).astype(np.float32), training=True)
  for layer in norms:
    layer.momentum = 0.99
    beta, mean, var = layer.get_weights()
    c = beta.shape[0]
    layer.set_weights([rng.normal(0.0, 0.2, c), mean + rng.normal(0.0, 0.2, c) * np.sqrt(var),
                       var * rng.uniform(0.7, 1.4, c)])
  head = net.get_layer("predictions")
  kernel, bias = head.get_weights()
  spread = np.std(np.asarray(net(rng.uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32),
                                 training=False)))
  head.set_weights([kernel, rng.normal(0.0, spread, bias.shape)])   # of the logits' scale


def _write_published_layout(path, net):
  """Keras 2's save_weights layout (the published ..._tf_kernels.h5): auto-named layers
  numbered from 1 (Keras 3 numbers from 0), datasets at <layer>/<layer>/<weight>:0."""
  def keras2_name(name):
    match = re.fullmatch(r"(conv2d|batch_normalization|activation|max_pooling2d|"
                         r"average_pooling2d|input_layer)(?:_(\d+))?", name)
    return f"{match[1]}_{int(match[2] or 0) + 1}" if match else name

  write_keras2_weights(
      path, [(keras2_name(l.name), l) for l in net.layers], keras_version=b"2.1.5")


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
  import keras  # pylint: disable=import-outside-toplevel
  tmp = tmp_path_factory.mktemp("inception_v3_keras")
  keras.utils.set_random_seed(0)
  rng = np.random.default_rng(0)
  net = keras.applications.InceptionV3(weights=None, input_shape=(SIZE, SIZE, 3),
                                       classifier_activation=None)
  _randomise(net, rng)
  images = rng.uniform(-1, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
  pool = keras.Model(net.inputs, net.get_layer("avg_pool").output)
  files = {"published_layout.h5": tmp / "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
           "legacy_model.h5": tmp / "model.h5",        # Keras 3 model.save('x.h5')
           "keras3.weights.h5": tmp / "model.weights.h5",
           "keras3.keras": tmp / "model.keras"}
  _write_published_layout(files["published_layout.h5"], net)
  net.save(files["legacy_model.h5"])
  net.save_weights(files["keras3.weights.h5"])
  net.save(files["keras3.keras"])
  unnamed = tmp / "unnamed.weights.h5"                  # older Keras 3: no `name` attribute
  shutil.copy(files["keras3.weights.h5"], unnamed)
  with h5py.File(unnamed, "r+") as f:
    for key in f["layers"]:
      if "vars" in f["layers"][key]:
        f["layers"][key]["vars"].attrs.pop("name", None)
  files["keras3_unnamed.weights.h5"] = unnamed
  creation = [l.name for l in net.layers if isinstance(l, keras.layers.Conv2D)]
  return dict(
      tmp=tmp, files={k: str(v) for k, v in files.items()}, images=images,
      logits=np.asarray(net(images, training=False)),
      features=np.asarray(pool(images, training=False)),
      trainable=sum(int(np.prod(w.shape)) for w in net.trainable_weights),
      conv_numbers=[keras_inception_v3._number(n) for n in creation])  # pylint: disable=protected-access


_APPLY = {}


def _apply(model, variables, images):
  """One jitted apply per model (the full-width compile is the slow part, ~10 s)."""
  if model not in _APPLY:
    _APPLY[model] = jax.jit(lambda v, x, m=model: m.apply(v, x, train=False))
  return np.asarray(_APPLY[model](variables, images))


def _relative_error(out, ref):
  assert out.shape == ref.shape
  return float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))


FORMATS = ["published_layout.h5", "legacy_model.h5", "keras3.weights.h5", "keras3.keras",
           "keras3_unnamed.weights.h5"]


@pytest.mark.slow
def test_keras_facts(keras_files):
  """Keras' own layer order and parameter count, against the converter's constants."""
  numbers = keras_files["conv_numbers"]
  assert [n - min(numbers) for n in numbers] == list(keras_inception_v3.KERAS3_LAYERS_ORDER)
  assert keras_files["trainable"] == KERAS_TRAINABLE


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FORMATS)
def test_logits_match_keras(keras_files, fmt):
  model, variables = _convert(keras_files["files"][fmt])
  assert isinstance(model, InceptionV3) and model.num_classes == 1000
  ref = keras_files["logits"]
  assert np.max(np.abs(ref)) > 0.1                      # the comparison is not vacuous
  error = _relative_error(_apply(model, variables, keras_files["images"]), ref)
  print(f"InceptionV3 {fmt} {SIZE}x{SIZE}: max|diff| / max|logit| = {error:.2e} "
        f"(logit scale {np.max(np.abs(ref)):.3f})")
  assert error <= TOLERANCE
  assert convert.count_parameters(variables) == keras_files["trainable"]
  _, reference = _convert(keras_files["files"][FORMATS[0]])
  jax.tree.map(np.testing.assert_array_equal, variables, reference)


@pytest.mark.slow
def test_parity_is_sensitive(keras_files):
  """A wrong mapping must fail the tolerance by far: two same-shaped BN layers swapped
  (mixed5's and mixed6's branch7x7_2), two same-shaped kernels swapped inside one
  module (mixed9's 1x3 and 3x1 are not the same shape; its branch3x3_2a and
  branch3x3dbl_3a are), and a dropped head bias."""
  model, variables = _convert(keras_files["files"]["keras3.keras"])
  images, ref = keras_files["images"], keras_files["logits"]

  def error_after(edit):
    broken = jax.tree.map(np.array, variables)
    edit(broken)
    return _relative_error(_apply(model, broken, images), ref)

  def swap_bn(v):
    for collection in ("params", "batch_stats"):
      a = v[collection]["mixed5"]["branch7x7_2"]
      b = v[collection]["mixed6"]["branch7x7_2"]
      a["bn"], b["bn"] = b["bn"], a["bn"]

  def swap_kernels(v):
    module = v["params"]["mixed9"]
    a, b = module["branch3x3_2a"]["conv"], module["branch3x3dbl_3a"]["conv"]
    a["kernel"], b["kernel"] = b["kernel"], a["kernel"]

  def drop_head_bias(v):
    v["params"]["head"]["bias"] = np.zeros_like(v["params"]["head"]["bias"])

  for edit in (swap_bn, swap_kernels, drop_head_bias):
    error = error_after(edit)
    print(f"{edit.__name__}: max|diff| / max|logit| = {error:.2e}")
    assert error > SENSITIVITY, edit.__name__


@pytest.mark.slow
def test_other_classes_and_pooled_features(keras_files):
  """A 10-class head (edited into the published layout) gives Keras' pooled features
  times the new kernel plus bias; include_top=False gives the pooled features."""
  model, variables = _convert(keras_files["files"]["keras3.keras"], include_top=False)
  assert not model.include_top
  features = _apply(model, variables, keras_files["images"])
  error = _relative_error(features, keras_files["features"])
  print(f"InceptionV3 pooled features: max|diff| / max|feature| = {error:.2e}")
  assert error <= TOLERANCE
  rng = np.random.default_rng(1)
  kernel = rng.normal(0, 0.05, (2048, 10)).astype(np.float32)
  bias = rng.normal(0, 0.3, (10,)).astype(np.float32)
  path = keras_files["tmp"] / "ten.h5"
  shutil.copy(keras_files["files"]["published_layout.h5"], path)
  with h5py.File(path, "r+") as f:
    del f["predictions/predictions"]
    f.create_dataset("predictions/predictions/kernel:0", data=kernel)
    f.create_dataset("predictions/predictions/bias:0", data=bias)
  model, variables = convert.from_keras(str(path))
  assert model.num_classes == 10
  expected = keras_files["features"].astype(np.float64) @ kernel + bias
  error = _relative_error(_apply(model, variables, keras_files["images"]), expected)
  print(f"InceptionV3 10-class head: max|diff| / max|logit| = {error:.2e}")
  assert error <= TOLERANCE


@pytest.mark.slow
def test_cli_then_predictor(keras_files):
  """`python -m xception_jax.convert --keras=FILE.keras` writes an inception_v3
  checkpoint that `predict.Predictor` builds and runs: softmax of Keras' logits."""
  out = keras_files["tmp"] / "converted"
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-m", "xception_jax.convert",
                           f"--keras={keras_files['files']['keras3.keras']}", f"--out={out}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  _, fields, _ = checkpointing.load_variables(str(out))
  assert fields["architecture"] == "inception_v3" and fields["num_classes"] == 1000
  predictor = predict.Predictor(str(out))
  probabilities = predictor.probabilities(keras_files["images"])
  expected = np.asarray(jax.nn.softmax(keras_files["logits"]))
  np.testing.assert_allclose(probabilities, expected, atol=1e-5 * expected.max())
