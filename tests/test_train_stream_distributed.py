"""Slow: the train stream does not depend on the process count, through the whole trainer.

Issue 14. Three runs of the demo model on a 40-image embedded dataset (batch 8, so an
epoch is 5 steps):
  A  one process x 4 CPU devices, steps 1-6, uninterrupted (in this process);
  B  two jax.distributed processes x 2 CPU devices on loopback (main.py), steps 1-3,
     checkpoint at step 3;
  C  one process x 4 devices resuming B's checkpoint, steps 4-6 (across the epoch
     boundary at step 5).
The record ids of every global batch (each process's `TrainStream.record_ids`, joined
in process order) must equal A's exactly, step by step: a stream that read other records
fails there whatever the losses do (issue 28). B's losses must equal A's steps 1-3, and
C's equal A's steps 4-6, up to reduction order. Before the index-based stream each process
shuffled its own share, so the losses of B differed from A's by up to 38% (issue 14),
and C could not continue B's stream.
"""
import json

import numpy as np
import pytest

from configs import demo
import events
import processes
from input_pipeline import train_stream
from xception_jax import train

STEPS, HALF = 6, 3
TINY = {"embedded.num_train": 40, "embedded.num_eval": 16, "embedded.image_size": 72,
        "embedded.num_classes": 8, "image_size": 72, "batch_size": 8, "eval_batch_size": 8,
        "model.num_middle_blocks": 1, "log_every_steps": 1, "eval_every_steps": STEPS,
        "checkpoint_every_steps": HALF, "async_checkpointing": False}


def _config(data_dir, num_train_steps):
  config = demo.get_config()
  config.data_dir = str(data_dir)
  config.update_from_flattened_dict(dict(TINY, num_train_steps=num_train_steps))
  config.num_devices = 4
  return config


# main.py, with each TrainStream batch's record ids appended to the file named by
# $RECORD_IDS_LOG (one JSON line per local batch, in the order the trainer takes them:
# step by step from the start step).
_LOGGING_MAIN = """
import json, os, runpy, sys
from input_pipeline import train_stream
path, sys.argv = os.environ["RECORD_IDS_LOG"], ["main.py", *sys.argv[1:]]
take = train_stream.TrainStream.__next__
def logged(self):
  batch = take(self)
  with open(path, "a") as f:
    f.write(json.dumps(self.record_ids.tolist()) + chr(10))
  return batch
train_stream.TrainStream.__next__ = logged
runpy.run_path("main.py", run_name="__main__")
"""


def _logging_next(path):
  take = train_stream.TrainStream.__next__

  def logged(self):
    batch = take(self)
    with open(path, "a") as f:
      f.write(json.dumps(self.record_ids.tolist()) + "\n")
    return batch
  return logged


def _record_ids(*paths):
  """[step, global batch] record ids: the local batches of each step, in process order."""
  per_process = [[json.loads(line) for line in open(path)] for path in paths]
  steps = min(len(p) for p in per_process)
  return np.array([sum((p[s] for p in per_process), []) for s in range(steps)])


def _two_processes(workdir, data_dir, tmp_path):
  outputs = processes.run_main(
      tmp_path, workdir, data_dir, dict(TINY, num_train_steps=HALF), timeout=900,
      envs=[{"RECORD_IDS_LOG": str(tmp_path / f"ids{i}.jsonl")} for i in range(2)],
      program=("-c", _LOGGING_MAIN))
  for output in outputs:
    assert f"Training from step 0 to {HALF}" in output


@pytest.mark.slow
def test_two_processes_then_one_continue_the_one_process_stream(tmp_path, monkeypatch):
  data_dir = tmp_path / "tfds"
  straight, handed_over = str(tmp_path / "one_process"), str(tmp_path / "two_then_one")
  # A (also generates the data before two processes share data_dir).
  with monkeypatch.context() as patch:
    patch.setattr(train_stream.TrainStream, "__next__", _logging_next(tmp_path / "a.jsonl"))
    train.train_and_evaluate(_config(data_dir, STEPS), straight)
  ids_a = _record_ids(tmp_path / "a.jsonl")[:STEPS]
  assert ids_a.shape == (STEPS, 8)
  a = events.losses(straight)
  assert sorted(a) == list(range(1, STEPS + 1))
  assert a[STEPS] != a[1]  # training moved

  # B: two processes, then C: one process from B's checkpoint.
  _two_processes(handed_over, data_dir, tmp_path)
  b = events.losses(handed_over)
  assert sorted(b) == list(range(1, HALF + 1))
  ids_b = _record_ids(tmp_path / "ids0.jsonl", tmp_path / "ids1.jsonl")[:HALF]
  np.testing.assert_array_equal(ids_b, ids_a[:HALF],
                                err_msg="record ids of steps 1-3, 2 processes vs 1")
  with monkeypatch.context() as patch:
    patch.setattr(train_stream.TrainStream, "__next__", _logging_next(tmp_path / "c.jsonl"))
    train.train_and_evaluate(_config(data_dir, STEPS), handed_over)
  np.testing.assert_array_equal(_record_ids(tmp_path / "c.jsonl")[:STEPS - HALF],
                                ids_a[HALF:], err_msg="record ids of steps 4-6, resumed")
  c = {step: loss for step, loss in events.losses(handed_over).items() if step not in b}
  assert sorted(c) == list(range(HALF + 1, STEPS + 1))  # resumed at the checkpoint

  steps_b, steps_c = sorted(b), sorted(c)
  # Same global batches, same arithmetic on a 4-device mesh: equal up to the
  # reduction order of the cross-process collectives (1 vs 4 devices: rtol 2e-4).
  np.testing.assert_allclose([b[s] for s in steps_b], [a[s] for s in steps_b], rtol=2e-4,
                             err_msg="2 processes x 2 devices vs 1 process x 4")
  # After the hand-over the parameters already differ by the 2-process arithmetic of
  # steps 1-3: measured 9e-5, 4e-5, 4.9e-4 relative at steps 4-6; another stream
  # differs by percents (issue 14: up to 38%).
  np.testing.assert_allclose([c[s] for s in steps_c], [a[s] for s in steps_c], rtol=2e-3,
                             err_msg="resumed in 1 process after 2 vs uninterrupted")
