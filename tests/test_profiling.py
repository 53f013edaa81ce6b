"""xception_jax/profiling.py: `profile_steps` traces exactly the asked train steps into
WORKDIR/plugins/profile (an .xplane.pb for TensorBoard's profile plugin, and a
trace.json.gz read back here to see which steps it holds); no field, no trace; process
0 only unless `profile_all_processes`. The StepProfiler runs here on the trainer's loop
shape with a toy step (fast); one slow test runs it inside train_and_evaluate."""
import glob
import gzip
import json
import os

import jax
import jax.numpy as jnp
import pytest

from configs import demo
from xception_jax import profiling, train


def _traces(workdir, pattern="*.xplane.pb"):
  return glob.glob(os.path.join(workdir, "plugins", "profile", "*", pattern))


def _traced_steps(workdir):
  """step_num of every StepTraceAnnotation('train') in the trace's JSON."""
  (path,) = _traces(workdir, "*.trace.json.gz")
  with gzip.open(path, "rt") as f:
    events = json.load(f)["traceEvents"]
  return sorted({int(e["args"]["step_num"]) for e in events
                 if e.get("name") == "train" and "step_num" in e.get("args", {})})


def _toy_loop(profiler, num_steps):
  """The trainer's loop shape: the profiler, then the annotated step."""
  step_fn = jax.jit(lambda x: x @ x / x.shape[0])
  state = jnp.ones((32, 32))
  with profiler as profile:
    for step in range(num_steps):
      profile(step, state)
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state = step_fn(state)
  return state


def test_the_window_is_traced_and_nothing_else(tmp_path):
  _toy_loop(profiling.StepProfiler((2, 5), str(tmp_path)), num_steps=8)
  assert len(_traces(str(tmp_path))) == 1
  assert _traced_steps(str(tmp_path)) == [2, 3, 4]


def test_a_loop_ending_inside_the_window_still_writes_the_trace(tmp_path):
  _toy_loop(profiling.StepProfiler((1, 100), str(tmp_path)), num_steps=3)
  assert _traced_steps(str(tmp_path)) == [1, 2]


def test_no_window_or_another_process_writes_nothing(tmp_path):
  _toy_loop(profiling.StepProfiler(None, str(tmp_path / "none")), num_steps=3)
  _toy_loop(profiling.StepProfiler((0, 2), str(tmp_path / "p1"), process_index=1),
            num_steps=3)
  assert not glob.glob(str(tmp_path / "**" / "*.pb"), recursive=True)


def test_every_process_when_asked(tmp_path):
  _toy_loop(profiling.StepProfiler((0, 2), str(tmp_path), process_index=1,
                                   all_processes=True), num_steps=3)
  assert not _traces(str(tmp_path))
  assert _traced_steps(str(tmp_path / "process_1")) == [0, 1]


def _tiny_config(data_dir, **overrides):
  config = demo.get_config()
  config.data_dir = str(data_dir)
  config.embedded.update(num_train=48, num_eval=16, image_size=72, num_classes=8)
  config.image_size = 72  # test_train.py's tiny model: compiled programs are cached
  config.batch_size, config.eval_batch_size = 8, 16
  config.model.num_middle_blocks = 1
  config.model.head_bias_init = 0.0
  config.num_devices = 1
  config.num_train_steps = 3
  config.log_every_steps = config.eval_every_steps = config.checkpoint_every_steps = 3
  config.async_checkpointing = False
  config.update_from_flattened_dict(overrides)
  return config


@pytest.mark.slow  # two training runs: ~50-100 s on 2 busy cores
def test_a_training_run_traces_the_asked_steps(tmp_path):
  """train_and_evaluate's loop: the window's steps traced into the workdir; a run
  without profile_steps writes no plugins/ at all."""
  data_dir = tmp_path / "tfds"
  train.train_and_evaluate(_tiny_config(data_dir, profile_steps=(1, 3)),
                           str(tmp_path / "profiled"))
  assert len(_traces(str(tmp_path / "profiled"))) == 1
  assert _traced_steps(str(tmp_path / "profiled")) == [1, 2]
  train.train_and_evaluate(_tiny_config(data_dir), str(tmp_path / "plain"))
  assert not os.path.exists(tmp_path / "plain" / "plugins")
