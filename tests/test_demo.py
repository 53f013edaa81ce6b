"""The README's main job, shortened: the demo config learns the embedded dataset.

The full demo (1,500 steps) reaches MAP@100 ~0.9 against ~0.1 for random scores
(docs/TRAINING.md); a few hundred steps must already be clearly above chance.
"""
import pytest

from configs import demo
from xception_jax import train


def _shortened(data_dir, steps):
  config = demo.get_config()
  config.data_dir = str(data_dir)
  config.embedded.num_train = 2000
  config.embedded.num_eval = 300
  config.num_train_steps = steps
  config.log_every_steps = 50
  config.eval_every_steps = steps
  config.checkpoint_every_steps = steps
  return config


@pytest.mark.slow  # ~100 s on 2 cores: the default suite's largest single test.
def test_shortened_demo_beats_random_scores(tmp_path):
  results = train.train_and_evaluate(_shortened(tmp_path / "tfds", 300), str(tmp_path / "run"))
  chance = results["eval_map_at_100_random_scores"]
  assert 0.0 < chance < 0.3
  assert results["eval_map_at_100"] > 2 * chance
  assert results["eval_map_at_100"] > chance + 0.2


@pytest.mark.slow
def test_full_demo_learns_the_dataset(tmp_path):
  config = demo.get_config()
  config.data_dir = str(tmp_path / "tfds")
  results = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert results["eval_map_at_100"] > 0.8 > 4 * results["eval_map_at_100_random_scores"]
