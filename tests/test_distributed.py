"""Two processes on localhost run main.py through jax.distributed (2 CPU devices each).

The run must finish on both processes, write one checkpoint, and its evaluation, merged
from the two processes' evaluator states, must equal a single-process evaluation of the
same checkpoint.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from configs import demo
import processes
from xception_jax import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"embedded.num_train": 96, "embedded.num_eval": 40, "embedded.image_size": 72,
        "embedded.num_classes": 8, "image_size": 72, "batch_size": 8, "eval_batch_size": 8,
        "model.num_middle_blocks": 1, "num_train_steps": 3, "log_every_steps": 1,
        "eval_every_steps": 3, "checkpoint_every_steps": 3}


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_and_evaluate_like_one(tmp_path):
  data_dir, workdir = str(tmp_path / "tfds"), str(tmp_path / "run")
  port = _free_port()
  overrides = [f"--config.{k}={v}" for k, v in TINY.items()]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
         "PYTHONUNBUFFERED": "1"}
  procs, logs = [], []
  for i in range(2):
    logs.append(open(tmp_path / f"process{i}.log", "w+"))
    procs.append(subprocess.Popen(
        [sys.executable, "main.py", "--config=configs/demo.py", f"--workdir={workdir}",
         f"--config.data_dir={data_dir}", f"--coordinator_address=localhost:{port}",
         "--num_processes=2", f"--process_id={i}", *overrides],
        cwd=ROOT, env=env, stdout=logs[i], stderr=subprocess.STDOUT))
  codes = processes.wait_all(procs, timeout=600)
  for i, code in enumerate(codes):
    logs[i].seek(0)
    output = logs[i].read()
    assert code == 0, f"process {i} failed:\n{output[-5000:]}"
    assert "JAX process %d of 2" % i in output
    assert "Training from step 0 to 3" in output
    if i == 0:
      results = json.loads(output[output.rindex("{\n"):])
  assert np.isfinite(results["eval_map_at_100"])

  config = demo.get_config()
  config.data_dir = data_dir
  config.update_from_flattened_dict(TINY)
  config.eval_only = True
  config.init_from = workdir
  single = train.train_and_evaluate(config, str(tmp_path / "single"))
  for name in ("eval_loss", "eval_map_at_100", "eval_precision_at_1", "eval_precision_at_5"):
    np.testing.assert_allclose(results[name], single[name], rtol=1e-4, err_msg=name)
