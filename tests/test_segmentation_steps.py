"""Segmentation's objective, evaluation step and multi-scale inference, against NumPy.

A toy per-pixel model stands in for DeepLab (the steps do not depend on the network);
the references are written here in float64 NumPy and scikit-learn.
"""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import optax
import pytest
from sklearn.metrics import confusion_matrix

from configs import base
from xception_jax import optim, segmentation_steps, steps
from xception_jax.tasks import segmentation

C, IGNORE = 5, 255


def _labels(rng, shape, ignore_fraction=0.2):
  labels = rng.integers(0, C, shape)
  labels[rng.random(shape) < ignore_fraction] = IGNORE
  return labels.astype(np.int32)


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  shifted = x - x.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def test_objective_is_the_mean_cross_entropy_over_labelled_pixels():
  rng = np.random.default_rng(0)
  logits = rng.normal(0, 2, (3, 6, 7, C)).astype(np.float32)
  labels = _labels(rng, (3, 6, 7))
  loss, figures = segmentation.objective(ml_collections.ConfigDict())(
      jnp.asarray(logits), {"label": jnp.asarray(labels)})
  accuracy = figures["pixel_accuracy"]
  log_p = _log_softmax(logits)
  losses, hits = [], []
  for b, i, j in np.ndindex(labels.shape):     # pixel by pixel
    if labels[b, i, j] != IGNORE:
      losses.append(-log_p[b, i, j, labels[b, i, j]])
      hits.append(np.argmax(logits[b, i, j]) == labels[b, i, j])
  np.testing.assert_allclose(float(loss), np.mean(losses), rtol=1e-5)
  np.testing.assert_allclose(float(accuracy), np.mean(hits), rtol=1e-6)


class _Toy(nn.Module):
  """A 3x3 convolution to class logits: not flip-equivariant, any input size."""

  @nn.compact
  def __call__(self, x, train=False):
    return nn.Conv(C, (3, 3), padding="SAME")(x)


@functools.cache
def _toy():
  model = _Toy()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  state = steps.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                           batch_stats={}, opt_state=())
  return model, variables, state


def _batch(seed=1, rows=4, real=3):
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1, 1, (rows, 9, 10, 3)).astype(np.float32)
  mask = np.zeros(rows, np.float32)
  mask[:real] = 1
  return {"image": images, "label": _labels(rng, (rows, 9, 10)), "mask": mask}


def test_eval_step_confusion_and_loss_cover_the_real_rows_only():
  model, variables, state = _toy()
  batch = _batch()
  metrics, confusion = jax.jit(functools.partial(
      segmentation_steps.eval_step, model=model, num_classes=C))(state, batch)
  logits = np.asarray(model.apply(variables, batch["image"]), np.float64)
  real = batch["mask"] > 0
  labels, predictions = batch["label"][real], logits[real].argmax(-1)
  keep = labels != IGNORE
  want = confusion_matrix(labels[keep], predictions[keep], labels=list(range(C)))
  np.testing.assert_array_equal(np.asarray(confusion), want)
  log_p = _log_softmax(logits[real])
  picked = np.take_along_axis(log_p, np.where(keep, labels, 0)[..., None], -1)[..., 0]
  np.testing.assert_allclose(float(metrics.compute()["loss"]), -picked[keep].mean(),
                             rtol=1e-5)


def test_multi_scale_flipped_inference_averages_probabilities():
  model, variables, state = _toy()
  batch = _batch(seed=2, rows=2, real=2)
  images = batch["image"]
  scales = (0.75, 1.0, 1.5)
  got = segmentation_steps.predict_probabilities(model, variables, images, scales, flip=True)
  want = np.zeros(images.shape[:3] + (C,))
  for scale in scales:
    size = (round(9 * scale), round(10 * scale))
    scaled = jax.image.resize(images, (2,) + size + (3,), "bilinear")
    for flipped in (False, True):
      x = scaled[:, :, ::-1] if flipped else scaled
      logits = model.apply(variables, x)
      logits = logits[:, :, ::-1] if flipped else logits
      logits = jax.image.resize(logits, (2, 9, 10, C), "bilinear")
      want += np.exp(_log_softmax(logits))
  want /= 2 * len(scales)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  # The flip matters for this model (a 3x3 kernel is not symmetric).
  single = segmentation_steps.predict_probabilities(model, variables, images)
  assert np.max(np.abs(np.asarray(single) - want)) > 1e-3
  # And the eval step's prediction is the averaged probabilities' argmax.
  _, confusion = segmentation_steps.eval_step(state, batch, model=model, num_classes=C,
                                              scales=scales, flip=True)
  keep = batch["label"] != IGNORE
  expected = confusion_matrix(batch["label"][keep], want.argmax(-1)[keep],
                              labels=list(range(C)))
  np.testing.assert_array_equal(np.asarray(confusion), expected)


def test_poly_schedule_is_deeplabs():
  config = base.get_config()
  config.lr_schedule = "poly"
  config.learning_rate = 0.007
  schedule = optim.learning_rate_schedule(config, total_steps=1000)
  for step in (0, 1, 250, 999, 1000):
    want = 0.007 * (1 - step / 1000) ** 0.9
    np.testing.assert_allclose(float(schedule(step)), want, rtol=1e-4, atol=1e-12)  # float32 pow
  tx = optim.create_optimizer(config, total_steps=1000)
  assert isinstance(tx, optax.GradientTransformation)


def _align_corners_resize(x, height, width):
  """TF's resize_bilinear(align_corners=True) as two interpolation matrices, written
  from the formula: output i reads input i * (n - 1) / (m - 1)."""
  def matrix(n, m):
    a = np.zeros((m, n))
    for i in range(m):
      c = i * (n - 1) / (m - 1) if m > 1 else 0.0
      lo = min(int(c), n - 1)
      a[i, lo] += 1 - (c - lo)
      a[i, min(lo + 1, n - 1)] += c - lo
    return a
  return np.einsum("hi,wj,nijc->nhwc", matrix(x.shape[1], height),
                   matrix(x.shape[2], width), np.asarray(x, np.float64))


def test_multi_scale_inference_with_aligned_corners_is_tf_deeplabs():
  model, variables, _ = _toy()
  images = _batch(seed=3, rows=2, real=2)["image"]     # 9 x 10
  scales = (0.5, 1.75)
  got = segmentation_steps.predict_probabilities(model, variables, images, scales,
                                                 align_corners=True)
  want = np.zeros(images.shape[:3] + (C,))
  for scale in scales:
    size = (int(8 * scale + 1), int(9 * scale + 1))   # TF's _scale_dimension: 5 x 5, 15 x 16
    scaled = _align_corners_resize(images, *size).astype(np.float32)
    logits = _align_corners_resize(model.apply(variables, scaled), 9, 10)
    want += np.exp(_log_softmax(logits))
  want /= len(scales)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  half = segmentation_steps.predict_probabilities(model, variables, images, scales)
  assert np.max(np.abs(np.asarray(half) - want)) > 1e-3   # _Toy has no align_corners
  model.align_corners = True   # a model's own field decides when none is passed
  try:
    same = segmentation_steps.predict_probabilities(model, variables, images, scales)
  finally:
    del model.align_corners
  np.testing.assert_allclose(np.asarray(same), want, rtol=1e-5, atol=1e-6)


def test_the_task_evaluates_at_eval_output_stride_in_the_models_geometry():
  from xception_jax.models.deeplab import DeepLabV3Plus  # pylint: disable=import-outside-toplevel
  model = DeepLabV3Plus(num_classes=3, backbone="xception41", num_middle_blocks=0,
                        width_multiplier=0.125, output_stride=16)
  data = type("Data", (), {"num_classes": 3})()
  config = ml_collections.ConfigDict({"eval_scales": (1.0,), "eval_flip": False,
                                      "eval_output_stride": 8})
  step = segmentation.eval_step(config, data, model)
  assert step.keywords["model"] == model.at_output_stride(8)
  assert step.keywords["model"].rates() == (12, 24, 36)
  assert "align_corners" not in step.keywords   # the model's own (True) decides
  config.eval_output_stride = None
  assert segmentation.eval_step(config, data, model).keywords["model"] is model
  config.eval_output_stride = 8
  with pytest.raises(ValueError, match="eval_output_stride=8: model _Toy"):
    segmentation.eval_step(config, data, _Toy())
