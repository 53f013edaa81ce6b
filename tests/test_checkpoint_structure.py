"""A workdir checkpoint whose trees differ from the configured state is refused, never
taken for damage; only unreadable data is moved aside.

`train.Trainer.initial_state` restores the latest step through
`checkpointing.restore_latest`; a step that fails to restore goes to
`validation.check_checkpoint_matches`, which compares the stored metadata (params
shapes, then the `train` item's opt_state tree) with the configured state. Nothing is
compiled here: the states saved are random arrays shaped like the abstract state.
"""
import os
import types

import jax
import numpy as np
import pytest

from configs import demo
from xception_jax import checkpointing, partitioning, train, validation
from xception_jax.validation import ConfigError

SIZE, CLASSES = 71, 8


def _trainer(**overrides):
  config = demo.get_config()
  config.image_size = SIZE
  config.model.num_middle_blocks = 1
  config.update_from_flattened_dict(overrides)
  data = types.SimpleNamespace(task="multi_label", num_classes=CLASSES,
                               num_train_examples=1000)
  return train.Trainer(config, partitioning.create_mesh(1), data)


def _random_state(trainer, step, seed):
  rng = np.random.default_rng(seed)
  state = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(a.dtype),
                       trainer.abstract_state)
  return state.replace(step=np.asarray(step, np.int32))


def _files(root):
  return sorted((os.path.relpath(os.path.join(d, f), root),
                 os.path.getsize(os.path.join(d, f)))
                for d, _, fs in os.walk(root) for f in fs)


@pytest.fixture(name="workdir")
def _workdir(tmp_path):
  """A workdir with RMSprop training checkpoints at steps 2 and 4 (the demo's setup)."""
  trainer = _trainer()
  manager = checkpointing.create_manager(str(tmp_path / "checkpoints"), asynchronous=False)
  states = {step: _random_state(trainer, step, seed=step) for step in (2, 4)}
  for state in states.values():
    trainer.save(manager, state)
  manager.close()
  return tmp_path, states


@pytest.mark.parametrize("overrides, stored", [
    ({"optimizer": "sgd"}, "opt_state/1/0/nu/"),                  # RMSprop -> SGD
    ({"grad_clip_norm": 1.0}, "opt_state/1/0/nu/"),               # a clipping stage added
    ({"weight_decay": 0.0}, "opt_state/0/0/nu/"),                 # the decay stage removed
])
def test_another_optimizer_state_is_refused_and_every_checkpoint_kept(workdir, overrides,
                                                                      stored):
  tmp_path, _ = workdir
  before = _files(tmp_path)
  manager = checkpointing.create_manager(str(tmp_path / "checkpoints"), asynchronous=False)
  with pytest.raises(ConfigError) as info:
    _trainer(**overrides).initial_state(manager)
  manager.close()
  message = str(info.value)
  assert "\n" not in message
  step_dir = os.path.join(str(tmp_path / "checkpoints"), "4")
  assert f"{step_dir} holds another training setup's optimizer state (opt_state" in message
  assert stored in message
  assert f"--config.init_from={step_dir}" in message and "checkpoints untouched" in message
  assert _files(tmp_path) == before
  assert not os.path.exists(tmp_path / checkpointing.DAMAGED)


def test_another_model_is_refused_and_every_checkpoint_kept(workdir):
  tmp_path, _ = workdir
  before = _files(tmp_path)
  manager = checkpointing.create_manager(str(tmp_path / "checkpoints"), asynchronous=False)
  with pytest.raises(ConfigError, match="holds another model's checkpoint .params/"):
    _trainer(**{"model.num_middle_blocks": 2}).initial_state(manager)
  manager.close()
  assert _files(tmp_path) == before


def test_truncated_array_data_is_moved_aside_and_the_previous_step_restored(workdir):
  tmp_path, states = workdir
  step_dir = tmp_path / "checkpoints" / "4"
  data = [os.path.join(d, f) for d, _, fs in os.walk(step_dir / "train") for f in fs
          if "_METADATA" not in f and "manifest" not in f]
  largest = max(data, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)
  manager = checkpointing.create_manager(str(tmp_path / "checkpoints"), asynchronous=False)
  state = _trainer().initial_state(manager)
  manager.close()
  assert int(state.step) == 2
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state), states[2])
  moved = os.listdir(tmp_path / checkpointing.DAMAGED)
  assert len(moved) == 1 and moved[0].startswith("4-")
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]



def test_validate_refuses_another_optimizer_before_any_compilation(workdir):
  """main.py validates first: the same refusal, from metadata and traced shapes only."""
  tmp_path, _ = workdir
  before = _files(tmp_path)
  config = _trainer().config
  config.data_dir = "/nonexistent/tfds"  # never opened by validation
  validation.validate(config, str(tmp_path))  # the run's own setup: accepted
  config.optimizer = "sgd"
  with pytest.raises(ConfigError, match=r"checkpoints/4 holds another training setup's "
                     r"optimizer state \(opt_state/1/0/nu/"):
    validation.validate(config, str(tmp_path))
  assert _files(tmp_path) == before
