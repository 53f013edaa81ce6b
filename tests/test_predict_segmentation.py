"""predict on a DeepLab checkpoint: mask and overlay PNGs that follow the model's classes.

A tiny DeepLabV3Plus with random variables (BN statistics and logits drawn so that
several classes win somewhere) is exported with `checkpointing.save_variables`; the
references decode the written PNGs with PIL and recompute the classes with the model
on images prepared here in NumPy.
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from xception_jax import checkpointing, predict_segmentation
from xception_jax.models import DeepLabV3Plus, model_to_fields

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = DeepLabV3Plus(num_classes=6, backbone="xception41", num_middle_blocks=1,
                      width_multiplier=0.125, depthwise_impl="auto")
SIZES = [(40, 56), (33, 33)]   # (height, width) of the test images


def _random_variables(seed=0):
  shapes = jax.eval_shape(lambda: MODEL.init(jax.random.key(0), jnp.zeros((1, 33, 33, 3))))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if "var" in name:
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    if "kernel" in name:
      scale = np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
      return rng.normal(0, scale, leaf.shape).astype(np.float32)
    return rng.normal(0, 0.5, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(draw, shapes)


def _spread_the_classes(variables, paths):
  """A random network's logits barely vary over an image: scale the classifier up and
  centre each class's logit on the test images, so that several classes win."""
  logits = variables["params"]["head"]["decoder"]["logits"]
  logits["kernel"] = logits["kernel"] * 100.0
  logits["bias"] = np.zeros_like(logits["bias"])
  means = [np.asarray(MODEL.apply(variables, _padded(path)[None])).mean(axis=(0, 1, 2))
           for path in paths]
  logits["bias"] = -np.mean(means, axis=0).astype(np.float32)
  return variables


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("predict_segmentation")
  rng = np.random.default_rng(1)
  paths = []
  for i, (h, w) in enumerate(SIZES):
    # Blocks of colour, so that the classes vary over the image.
    blocks = rng.integers(0, 256, (-(-h // 8), -(-w // 8), 3), dtype=np.uint8)
    image = np.kron(blocks, np.ones((8, 8, 1), np.uint8))[:h, :w]
    path = str(root / f"image{i}.png")
    Image.fromarray(image).save(path)
    paths.append(path)
  variables = _spread_the_classes(_random_variables(), paths)
  checkpoint = checkpointing.save_variables(str(root / "ckpt"), variables,
                                            model_to_fields(MODEL))
  return checkpoint, variables, paths, root


def _padded(path):
  """The image scaled to [-1, 1], zero-padded to a square of its longer side (bottom
  and right), as evaluation does."""
  image = np.asarray(Image.open(path).convert("RGB"), np.float32) / 127.5 - 1.0
  h, w = image.shape[:2]
  padded = np.zeros((max(h, w), max(h, w), 3), np.float32)
  padded[:h, :w] = image
  return padded


def _reference_classes(variables, path):
  """The model's argmax on the padded image, cropped back to the image."""
  h, w = np.asarray(Image.open(path)).shape[:2]
  logits = MODEL.apply(variables, _padded(path)[None], train=False)
  return np.asarray(jnp.argmax(logits, -1))[0, :h, :w]


def test_voc_palette_has_vocs_colours():
  palette = predict_segmentation.voc_palette()
  known = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
           7: (128, 128, 128), 8: (64, 0, 0), 15: (192, 128, 128), 20: (0, 64, 128),
           255: (224, 224, 192)}
  for c, colour in known.items():
    assert tuple(palette[c]) == colour, c
  assert len({tuple(c) for c in palette}) == 256   # one colour per class id


def test_masks_and_overlays_follow_the_predicted_classes(setup):
  checkpoint, variables, paths, root = setup
  predictor = predict_segmentation.SegmentationPredictor.from_checkpoint(checkpoint)
  out = str(root / "masks")
  predictions = predict_segmentation.predict_masks(predictor, paths, out)
  colour_to_class = {tuple(c): i for i, c in
                     enumerate(predict_segmentation.voc_palette()[:MODEL.num_classes])}
  seen_classes = set()
  for path, prediction, (h, w) in zip(paths, predictions, SIZES):
    assert prediction.mask_path == os.path.join(out, os.path.basename(path)[:-4] + "_mask.png")
    mask = np.asarray(Image.open(prediction.mask_path))
    shown = np.asarray(Image.open(prediction.overlay_path))
    assert mask.shape == shown.shape == (h, w, 3)
    decoded = np.vectorize(lambda *rgb: colour_to_class[rgb])(mask[..., 0], mask[..., 1],
                                                              mask[..., 2])
    expected = _reference_classes(variables, path)
    np.testing.assert_array_equal(decoded, expected)
    seen_classes |= set(np.unique(expected).tolist())
    # Overlay: the image where the class is background, else half image, half colour.
    image = np.asarray(Image.open(path).convert("RGB"), np.float64)
    colours = predict_segmentation.voc_palette()[expected].astype(np.float64)
    blend = np.where((expected > 0)[..., None], np.round(0.5 * image + 0.5 * colours), image)
    np.testing.assert_array_equal(shown, blend.astype(np.uint8))
  assert len(seen_classes) >= 3, seen_classes   # a test of colours, not of one class


@pytest.mark.slow  # two interpreter starts with TensorFlow and JAX: ~45 s of 2 cores
def test_cli_writes_and_prints_the_paths(setup):
  checkpoint, _, paths, root = setup
  out = str(root / "cli")
  result = subprocess.run(
      [sys.executable, "-m", "xception_jax.predict", f"--checkpoint={checkpoint}",
       f"--output_dir={out}", *paths], cwd=REPO, capture_output=True, text=True,
      timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  for path in paths:
    stem = os.path.basename(path)[:-4]
    for kind in ("mask", "overlay"):
      written = os.path.join(out, f"{stem}_{kind}.png")
      assert written in result.stdout and os.path.isfile(written)
  missing = subprocess.run(
      [sys.executable, "-m", "xception_jax.predict", f"--checkpoint={checkpoint}", *paths],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert missing.returncode != 0 and "--output_dir" in missing.stderr
