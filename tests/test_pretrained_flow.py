"""The README's pretrained-weights flow end to end, as a user runs it:

  python -m xception_jax.convert --keras=FILE --out=DIR
  python main.py ... --config.init_from=DIR --config.eval_only=True

A full-width Keras Xception (random weights, 8 classes, 72x72 inputs, a rescaled head so
that its logits are of order one) is saved as Keras writes `.weights.h5`, converted by the
command line, and evaluated by the trainer on the embedded dataset's eval split. The
trainer's loss and MAP@100 must be those of Keras' own logits on the same images,
computed here with the evaluator's `map_at_k` and NumPy's sigmoid cross-entropy.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import keras  # pylint: disable=wrong-import-order  (a requirement: missing means failing)
import input_pipeline
from test_train import _eval_split_by_hand, _tiny_config
from xception_jax import train
from xception_jax.evaluation import map_at_k
from xception_jax.evaluation.class_weights import load_class_weights

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE, CLASSES = 72, 8

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:keras.*")]


def test_convert_then_init_from_then_eval_only_gives_keras_metrics(tmp_path):
  keras.utils.set_random_seed(0)
  model = keras.applications.Xception(weights=None, classes=CLASSES,
                                      classifier_activation=None,
                                      input_shape=(SIZE, SIZE, 3))
  head = model.get_layer("predictions")
  kernel, bias = head.get_weights()
  probe = np.random.default_rng(0).uniform(-1, 1, (4, SIZE, SIZE, 3)).astype(np.float32)
  scale = np.std(np.asarray(model(probe, training=False)))
  head.set_weights([kernel / scale, np.random.default_rng(1).normal(0, 0.5, CLASSES)])
  weights_file = str(tmp_path / "xception.weights.h5")
  model.save_weights(weights_file)

  out = str(tmp_path / "converted")
  subprocess.run([sys.executable, "-m", "xception_jax.convert", f"--keras={weights_file}",
                  f"--out={out}"], cwd=REPO, check=True, capture_output=True, text=True)

  config = _tiny_config(str(tmp_path / "tfds"), num_devices=1, eval_only=True,
                        init_from=out, **{"model.width_multiplier": 1.0,
                                          "model.num_middle_blocks": 8,
                                          "model.bn_momentum": 0.99})
  results = train.train_and_evaluate(config, str(tmp_path / "evaluated"))

  images, labels = _eval_split_by_hand(config)
  logits = np.asarray(model(images, training=False), np.float64)
  assert np.std(logits) > 0.3                         # logits of order one
  builder = input_pipeline.embedded_shapes.builder(config.data_dir,
                                                   **config.embedded.to_dict())
  weights = load_class_weights(input_pipeline.embedded_shapes.class_weights_path(builder),
                               CLASSES)
  assert np.ptp(weights) > 0                          # the dataset's weights are not uniform
  want_map = map_at_k(1 / (1 + np.exp(-logits)), labels, k=100, class_weights=weights)
  per_class = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
  want_loss = per_class.sum(axis=1).mean()
  np.testing.assert_allclose(results["eval_map_at_100"], want_map, rtol=1e-5)
  np.testing.assert_allclose(results["eval_loss"], want_loss, rtol=1e-4)
