"""`python -m xception_jax.predict`: preprocessing, probabilities, names, multi-label."""
import os
import re
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from xception_jax import checkpointing, predict
from xception_jax.models import factory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 128
# Head biases that make the ranking known: logits ~ bias (+- ~0.05 from the features).
STRONG = {3: 6.0, 17: 5.0, 999: 4.0, 42: 2.0, 500: 1.0}
LINE = re.compile(r"^  (\d+)\. ([0-9.]+)  \[(\d+)\] (.*)$")


def _random(rng, path, shape):
  """He-scaled kernels, BN near identity with some spread, small biases."""
  if "kernel" in path:
    return rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1])), shape).astype(np.float32)
  if "'scale'" in path or "'var'" in path:
    return rng.uniform(0.5, 1.5, shape).astype(np.float32)
  return rng.normal(0, 0.1, shape).astype(np.float32)


def _random_variables(model, image_size, rng):
  """`_random` values in the shapes of the model's variables (model.init compiles
  slowly on 2 cores; its shapes alone do not)."""
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)), train=False))
  return jax.tree_util.tree_map_with_path(
      lambda path, s: _random(rng, jax.tree_util.keystr(path), s.shape), shapes)


def _tiny_checkpoint(directory, num_classes=1000, include_top=True, strong=None):
  fields = dict(width_multiplier=0.125, num_middle_blocks=1, num_classes=num_classes,
                include_top=include_top)
  model = factory.create_model(fields)
  rng = np.random.default_rng(0)
  variables = _random_variables(model, 96, rng)
  if include_top:
    head = variables["params"]["head"]
    bias = np.full((num_classes,), -5.0, np.float32)
    for index, value in (strong or {}).items():
      bias[index] = value
    # Scale the kernel so the image moves every logit by ~0.2: the probabilities depend
    # on the pixels, the ranking of the biased classes does not.
    head["bias"] = np.zeros(num_classes, np.float32)
    probe = rng.uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    spread = np.std(np.asarray(model.apply(variables, probe, train=False)))
    head["kernel"] = (head["kernel"] * (0.2 / spread)).astype(np.float32)
    head["bias"] = (bias + rng.normal(0, 0.1, num_classes)).astype(np.float32)
  checkpointing.save_variables(str(directory), variables, factory.model_to_fields(model))
  return model, variables


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("predict")
  model, variables = _tiny_checkpoint(tmp / "ckpt", strong=STRONG)
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:80, 0:100]
  png = np.stack([yy * 3, xx * 2, (yy + xx) % 256], -1).astype(np.uint8)
  jpeg = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
  paths = {"png": tmp / "gradient.png", "jpeg": tmp / "noise.jpg", "bad": tmp / "bad.jpg"}
  paths["png"].write_bytes(tf.io.encode_png(png).numpy())
  paths["jpeg"].write_bytes(tf.io.encode_jpeg(jpeg, quality=95).numpy())
  paths["bad"].write_bytes(b"\xff\xd8\xff this is not really a JPEG")
  return dict(tmp=tmp, ckpt=str(tmp / "ckpt"), model=model, variables=variables,
              png=png, paths={k: str(v) for k, v in paths.items()})


def _direct(setup, paths, activation):
  """model.apply (feature_group depthwise, the reference) on the same pixels."""
  pixels = np.stack([predict.preprocess_image(p, SIZE) for p in paths])
  logits = setup["model"].apply(setup["variables"], pixels, train=False)
  return np.asarray(activation(logits))


def _run_cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", "xception_jax.predict", *args], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)


def _parse(stdout):
  """{path: [(index, probability, name), ...]} from the printed blocks."""
  blocks, current = {}, None
  for line in stdout.splitlines():
    match = LINE.match(line)
    if match:
      blocks[current].append((int(match[3]), float(match[2]), match[4]))
    elif line and not line.startswith("  "):
      current = line
      blocks[current] = []
  return blocks


def test_preprocessing_crops_resizes_and_scales(setup):
  """Independently: tf.image.central_crop(0.875), bilinear resize, x / 127.5 - 1."""
  image = predict.preprocess_image(setup["paths"]["png"], SIZE)
  assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.float32
  crop = tf.image.central_crop(setup["png"], 0.875).numpy().astype(np.float32)
  assert crop.shape == (70, 88, 3)        # 80x100 keeps rows 5..74 and columns 6..93
  expected = tf.image.resize(crop, [SIZE, SIZE], method="bilinear").numpy() / 127.5 - 1
  np.testing.assert_allclose(image, expected, atol=1e-6)
  jpeg = predict.preprocess_image(setup["paths"]["jpeg"], SIZE)
  assert jpeg.shape == (SIZE, SIZE, 3) and -1 <= jpeg.min() < jpeg.max() <= 1


def test_imagenet_names_come_from_the_installed_package_offline(monkeypatch):
  def no_network(*args, **kwargs):
    raise AssertionError("imagenet_class_names tried to use the network")

  monkeypatch.setattr(socket, "socket", no_network)
  monkeypatch.setattr(socket, "create_connection", no_network)
  names = predict.imagenet_class_names.__wrapped__()
  assert len(names) == 1000
  assert names[0] == "tench, Tinca tinca (n01440764)"
  assert names[3] == "tiger shark, Galeocerdo cuvieri (n01491361)"
  assert names[409] == "analog clock (n02708093)"
  assert names[999].startswith("toilet tissue") and names[999].endswith("(n15075141)")


def test_cli_prints_top5_softmax_with_imagenet_names(setup):
  paths = [setup["paths"]["png"], setup["paths"]["jpeg"]]
  result = _run_cli(f"--checkpoint={setup['ckpt']}", f"--image_size={SIZE}", *paths)
  assert result.returncode == 0, result.stderr[-3000:]
  printed = _parse(result.stdout)
  assert list(printed) == paths
  probabilities = _direct(setup, paths, jax.nn.softmax)
  names = predict.imagenet_class_names()
  for path, p in zip(paths, probabilities):
    expected = np.argsort(-p)[:5]
    assert [i for i, _, _ in printed[path]] == list(expected)
    assert sorted(expected.tolist()) == sorted(STRONG)
    for index, probability, name in printed[path]:
      assert abs(probability - p[index]) <= 1e-6
      assert name == names[index]
  assert printed[paths[0]][0][2] == "tiger shark, Galeocerdo cuvieri (n01491361)"


def test_cli_multilabel_threshold(setup):
  paths = [setup["paths"]["png"], setup["paths"]["jpeg"]]
  result = _run_cli(f"--checkpoint={setup['ckpt']}", f"--image_size={SIZE}",
                    "--multilabel", "--threshold=0.9", *paths)
  assert result.returncode == 0, result.stderr[-3000:]
  printed = _parse(result.stdout)
  probabilities = _direct(setup, paths, jax.nn.sigmoid)
  names = predict.imagenet_class_names()
  for path, p in zip(paths, probabilities):
    above = [int(i) for i in np.argsort(-p) if p[i] >= 0.9]
    assert above == [3, 17, 999]                     # sigmoid(logit) >= 0.9: logit >= 2.2
    assert [i for i, _, _ in printed[path]] == above
    for index, probability, name in printed[path]:
      assert abs(probability - p[index]) <= 1e-6 and name == names[index]


def test_multilabel_threshold_in_process(setup):
  paths = [setup["paths"]["png"]]
  low = predict.predict(setup["ckpt"], paths, image_size=SIZE, multilabel=True,
                        threshold=0.5)
  assert [c[0] for c in low[0].classes] == [3, 17, 999, 42, 500]   # logit > 0
  none = predict.predict(setup["ckpt"], paths, image_size=SIZE, multilabel=True,
                         threshold=0.9999)
  assert none[0].classes == ()
  text = predict.format_predictions(none, multilabel=True, threshold=0.9999)
  assert text.splitlines() == [paths[0], "  (no class with probability >= 0.9999)"]


def test_labels_file_and_numbered_classes(setup):
  ckpt = setup["tmp"] / "five"
  _tiny_checkpoint(ckpt, num_classes=5, strong={2: 3.0})
  paths = [setup["paths"]["png"]]
  numbered = predict.predict(str(ckpt), paths, image_size=SIZE, top_k=3)
  assert len(numbered[0].classes) == 3
  assert numbered[0].classes[0][:2] == (2, "class 2")
  labels = setup["tmp"] / "labels.txt"
  labels.write_text("ant\nbee\ncat\ndog\neel\n")
  named = predict.predict(str(ckpt), paths, image_size=SIZE, labels_file=str(labels))
  animals = ["ant", "bee", "cat", "dog", "eel"]
  assert [name for _, name, _ in named[0].classes] == [animals[i] for i, _, _ in
                                                       named[0].classes]
  assert named[0].classes[0][1] == "cat"
  assert abs(sum(c[2] for c in named[0].classes) - 1.0) < 1e-5   # all 5 of 5 shown
  labels.write_text("ant\nbee\n")
  with pytest.raises(ValueError, match="has 2 lines but the model has 5 classes"):
    predict.predict(str(ckpt), paths, image_size=SIZE, labels_file=str(labels))


def test_clear_errors(setup):
  paths = setup["paths"]
  with pytest.raises(FileNotFoundError, match="No image file at"):
    predict.predict(setup["ckpt"], [paths["png"], str(setup["tmp"] / "absent.png")])
  with pytest.raises(ValueError, match="Cannot decode .*bad.jpg.* as an image"):
    predict.predict(setup["ckpt"], [paths["bad"]])
  with pytest.raises(FileNotFoundError, match="No checkpoint directory"):
    predict.predict(str(setup["tmp"] / "no_ckpt"), [paths["png"]], image_size=SIZE)
  notop = setup["tmp"] / "notop"
  _tiny_checkpoint(notop, include_top=False)
  with pytest.raises(ValueError, match="no classification head"):
    predict.predict(str(notop), [paths["png"]], image_size=SIZE)


@pytest.mark.slow
def test_cli_error_exit(setup):
  result = _run_cli(f"--checkpoint={setup['ckpt']}", str(setup["tmp"] / "absent.png"))
  assert result.returncode != 0
  assert "Error: No image file at" in result.stderr


def test_inception_v3_checkpoint_predicts(setup):
  """A registered architecture without `depthwise_impl` (Inception V3, tiny) loads and
  predicts through the architecture registry; the probabilities are model.apply's."""
  ckpt = setup["tmp"] / "inception_v3"
  fields = dict(architecture="inception_v3", width_multiplier=0.125, num_classes=7)
  model = factory.create_model(fields)
  variables = _random_variables(model, 80, np.random.default_rng(1))
  checkpointing.save_variables(str(ckpt), variables, factory.model_to_fields(model))
  paths = [setup["paths"]["png"], setup["paths"]["jpeg"]]
  predictions = predict.predict(str(ckpt), paths, image_size=80, top_k=7,
                                depthwise_impl="shift")
  pixels = np.stack([predict.preprocess_image(p, 80) for p in paths])
  expected = np.asarray(jax.nn.softmax(model.apply(variables, pixels, train=False)))
  assert expected.std() > 1e-3                       # the images move the probabilities
  for prediction, p in zip(predictions, expected):
    assert [c[0] for c in prediction.classes] == list(np.argsort(-p, kind="stable"))
    assert [c[1] for c in prediction.classes] == [f"class {i}" for i, _, _ in
                                                  prediction.classes]
    np.testing.assert_allclose([c[2] for c in prediction.classes],
                               np.sort(p)[::-1], atol=1e-6)
