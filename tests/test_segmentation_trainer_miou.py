"""The segmentation trainer's mean IoU against scikit-learn, like test_train.py's MAP test.

A tiny DeepLab v3+ trains a few steps on 4 devices on the embedded segmentation data,
with an eval batch (8) that does not divide the eval split (12: the last batch is
padded) and multi-scale, flipped inference (eval_scales, eval_flip). Then, without the
trainer: the checkpoint's model is applied to the stored validation images
(`segmentation_steps.predict_probabilities` with the same scales and flip, itself tested
against NumPy in tests/test_segmentation_steps.py), and scikit-learn's confusion_matrix
scores the argmax. Mean IoU, pixel accuracy and every class's IoU must equal the
trainer's: padded rows counted, rows matched to other masks, or scales/flip dropped on
the way to the eval step fail this.
"""
import os

import jax
import numpy as np
import pytest
from sklearn.metrics import confusion_matrix
import tensorflow_datasets as tfds

from configs import deeplab_demo
from input_pipeline import embedded_shapes_segmentation as ess
from xception_jax import checkpointing, report, segmentation_steps, train
from xception_jax.models import create_model

EMB = dict(num_train=32, num_eval=12, image_size=32, num_classes=4, max_objects=2, seed=1)
SCALES, FLIP, STEPS = (1.0, 1.25), True, 3


def _config(data_dir):
  config = deeplab_demo.get_config()
  config.data_dir = str(data_dir)
  config.embedded_segmentation.update(EMB)
  config.update_from_flattened_dict({
      "image_size": 32, "eval_image_size": 32, "batch_size": 8, "eval_batch_size": 8,
      "num_devices": 4, "num_train_steps": STEPS, "log_every_steps": 1,
      "eval_every_steps": STEPS, "checkpoint_every_steps": STEPS,
      "async_checkpointing": False, "model.num_middle_blocks": 1,
      # Small: a few steps at the demo's rate collapse every pixel to background, and a
      # constant prediction would hide a row matched to the wrong mask.
      "learning_rate": 0.001,
      # Glorot logits: TF's 0.01-stddev ones leave every pixel background after 3 steps.
      "model.head_init": "glorot_uniform"})
  config.eval_scales, config.eval_flip = SCALES, FLIP
  return config


def _scores(confusion):
  """Mean IoU over the classes present, per-class IoU (NaN when absent), accuracy."""
  tp = np.diag(confusion).astype(np.float64)
  union = confusion.sum(0) + confusion.sum(1) - tp
  per_class = np.full(len(tp), np.nan)
  per_class[union > 0] = tp[union > 0] / union[union > 0]
  return np.nanmean(per_class), per_class, tp.sum() / confusion.sum()


@pytest.mark.slow
def test_trainer_mean_iou_equals_sklearn_on_the_checkpoints_predictions(tmp_path):
  config = _config(tmp_path / "tfds")
  workdir = str(tmp_path / "run")
  results = train.train_and_evaluate(config, workdir)

  variables, fields, step = checkpointing.load_variables(workdir)
  assert step == STEPS
  model = create_model(fields)
  builder = ess.builder(config.data_dir, **EMB)
  stored = list(tfds.as_numpy(builder.as_dataset(
      split="validation", read_config=tfds.ReadConfig(interleave_cycle_length=1))))
  assert len(stored) == 12 and 12 % config.eval_batch_size  # a padded last batch
  images = np.stack([e["image"] for e in stored]).astype(np.float32) / 127.5 - 1
  labels = np.stack([e["segmentation_mask"][..., 0] for e in stored]).astype(np.int64)
  assert images.shape == (12, 32, 32, 3)
  predict = jax.jit(lambda v, x, scales, flip: jax.numpy.argmax(
      segmentation_steps.predict_probabilities(model, v, x, scales, flip), axis=-1),
      static_argnums=(2, 3))
  predictions = np.asarray(predict(variables, images, SCALES, FLIP))
  single = np.asarray(predict(variables, images, (1.0,), False))
  assert (single != predictions).any()  # the scales and the flip change this model's output
  assert len(np.unique(predictions)) > 1, np.unique(predictions)

  num_classes = EMB["num_classes"] + 1
  kept = labels != 255
  confusion = confusion_matrix(labels[kept], predictions[kept], labels=range(num_classes))
  mean_iou, per_class, accuracy = _scores(confusion)
  np.testing.assert_allclose(results["eval_mean_iou"], mean_iou, rtol=1e-6)
  np.testing.assert_allclose(results["eval_pixel_accuracy"], accuracy, rtol=1e-6)
  np.testing.assert_allclose([results[f"eval_iou/class_{c}"] for c in range(num_classes)],
                             per_class, rtol=1e-6)

  # The report tool reads this workdir back (issue 28: it raised on segmentation runs).
  with open(report.write_report([workdir], str(tmp_path / "report"))) as f:
    text = f.read()
  row = next(l for l in text.splitlines() if l.startswith("| run |"))
  assert row.split("|")[2].strip() == f"{results['eval_mean_iou']:.4f}"
  assert "| Run | IoU class 0 |" in text
  assert os.path.exists(tmp_path / "report" / "eval_mean_iou.png")
