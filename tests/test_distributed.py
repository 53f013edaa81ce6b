"""Two processes on localhost run main.py through jax.distributed (2 CPU devices each).

The run must finish on both processes, write one checkpoint, and its evaluation, merged
from the two processes' evaluator states, must equal a single-process evaluation of the
same checkpoint.
"""
import json

import numpy as np
import pytest

from configs import demo
import processes
from xception_jax import train

TINY = {"embedded.num_train": 96, "embedded.num_eval": 40, "embedded.image_size": 72,
        "embedded.num_classes": 8, "image_size": 72, "batch_size": 8, "eval_batch_size": 8,
        "model.num_middle_blocks": 1, "num_train_steps": 3, "log_every_steps": 1,
        "eval_every_steps": 3, "checkpoint_every_steps": 3}


@pytest.mark.slow
def test_two_processes_train_and_evaluate_like_one(tmp_path):
  data_dir, workdir = str(tmp_path / "tfds"), str(tmp_path / "run")
  outputs = processes.run_main(tmp_path, workdir, data_dir, TINY, timeout=600)
  for output in outputs:
    assert "Training from step 0 to 3" in output
  results = json.loads(outputs[0][outputs[0].rindex("{\n"):])
  assert np.isfinite(results["eval_map_at_100"])

  config = demo.get_config()
  config.data_dir = data_dir
  config.update_from_flattened_dict(TINY)
  config.eval_only = True
  config.init_from = workdir
  single = train.train_and_evaluate(config, str(tmp_path / "single"))
  for name in ("eval_loss", "eval_map_at_100", "eval_precision_at_1", "eval_precision_at_5"):
    np.testing.assert_allclose(results[name], single[name], rtol=1e-4, err_msg=name)
