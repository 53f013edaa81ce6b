"""The workdir's checks, before anything is compiled (validation.validate calls them):
it must be a directory this process can write (local) or reach (gs://), and its latest
checkpoint must hold this model's parameter shapes and this optimizer's state tree;
otherwise ConfigError (one line), every checkpoint left in place.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from xception_jax import paths
from xception_jax.errors import ConfigError


def check_workdir(workdir: str) -> None:
  unreachable = paths.check_reachable(workdir, f"--workdir = {workdir!r}")
  if unreachable:
    raise ConfigError(unreachable)
  if paths.is_remote(workdir):
    if paths.isfile(workdir):
      raise ConfigError(f"--workdir = {workdir!r}: is an object, not a directory; "
                        "give a directory path.")
    return  # Whether the bucket is writable shows at the first write.
  path = paths.resolve(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError(f"--workdir = {workdir!r}: is a file; give a directory.")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ConfigError(f"--workdir = {workdir!r}: {existing!r} is a file; give a path "
                      "under a directory.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ConfigError(f"--workdir = {workdir!r}: {existing!r} is not writable by this "
                      "user; choose another directory.")


def latest_checkpoint_step(root: str) -> Optional[int]:
  """The latest finished step, as Orbax finds it (local or in a bucket)."""
  from xception_jax import checkpointing  # pylint: disable=import-outside-toplevel
  return checkpointing.latest_step(root)


def check_checkpoint_matches(root: str, step: int, expected_params: Any,
                             expected_train: Any = None) -> None:
  """ConfigError when the checkpoint at `step` holds other parameter shapes (another
  model) or, given `expected_train` ({'step', 'opt_state'}), another training state's
  tree (another optimizer, grad_clip_norm, weight_decay or momentum). A checkpoint
  whose metadata cannot be read passes: restoring it reports the damage."""
  from xception_jax import checkpointing  # pylint: disable=import-outside-toplevel
  from xception_jax.state_trees import (  # pylint: disable=import-outside-toplevel
      first_difference, leaf_shapes)
  path = paths.join(root, str(step))
  try:
    stored = checkpointing.variables_metadata(root, step)["params"]
    stored_train = (checkpointing.train_metadata(root, step)
                    if expected_train is not None else None)
  except Exception:  # pylint: disable=broad-except
    return
  have, want = leaf_shapes(stored), leaf_shapes(expected_params)
  if have != want:
    raise ConfigError(
        f"{path} holds another model's checkpoint (params/{first_difference(have, want)}); "
        "use another --workdir, the model fields of that run, or --config.init_from="
        f"{path} to start a new run from its parameters (checkpoints untouched).")
  if stored_train is None:
    return
  have, want = leaf_shapes(stored_train), leaf_shapes(expected_train)
  if have != want:
    raise ConfigError(
        f"{path} holds another training setup's optimizer state "
        f"({first_difference(have, want)}; config.optimizer, grad_clip_norm, "
        "weight_decay or momentum differ from that run's); resume with that run's values, "
        f"or start a new run from its parameters with --config.init_from={path} and "
        "another --workdir (checkpoints untouched).")


def checkpoint_num_classes(root: str, step: int) -> Optional[int]:
  import json  # pylint: disable=import-outside-toplevel
  try:
    text = paths.read_text(paths.join(root, str(step), "model", "metadata"))
    return int(json.loads(text)["num_classes"])
  except Exception:  # pylint: disable=broad-except
    return None
