"""Orbax checkpoints: the trainer's (resume) and exported model variables (fine-tune, predict).

Every checkpoint directory is an Orbax `CheckpointManager` root with numbered step
subdirectories, each holding up to three items:

    <root>/<step>/variables   {'params', 'batch_stats'}      (always)
    <root>/<step>/train       {'step', 'opt_state'}          (training checkpoints only)
    <root>/<step>/model       JSON: the Xception constructor fields (always)

So the same `load_variables` reads a training workdir's checkpoints, a converted
Keras model (`python -m xception_jax.convert`), or any single step directory, on any
device topology, and a training run resumes from all three items.
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging

VARIABLES, TRAIN, MODEL = "variables", "train", "model"


def create_manager(directory: str, *, max_to_keep: Optional[int] = 3,
                   save_interval_steps: int = 1, asynchronous: bool = True,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager over the three items, saving asynchronously by default."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, save_interval_steps=0 if read_only else save_interval_steps,
      enable_async_checkpointing=asynchronous, create=not read_only, read_only=read_only)
  handlers = {VARIABLES: ocp.StandardCheckpointHandler(),
              TRAIN: ocp.StandardCheckpointHandler(),
              MODEL: ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_handlers=handlers)


def save(manager: ocp.CheckpointManager, step: int, *, variables: Mapping[str, Any],
         model_config: Mapping[str, Any], train: Optional[Mapping[str, Any]] = None,
         force: bool = False) -> bool:
  """Saves (asynchronously if the manager is) and returns whether a save started."""
  items = {VARIABLES: ocp.args.StandardSave(dict(variables)),
           MODEL: ocp.args.JsonSave(dict(model_config))}
  if train is not None:
    items[TRAIN] = ocp.args.StandardSave(dict(train))
  return manager.save(step, args=ocp.args.Composite(**items), force=force)


def restore(manager: ocp.CheckpointManager, step: int, *, abstract_variables: Any,
            abstract_train: Any = None) -> dict:
  """Restores `variables` (and `train` if given) at `step` into the given shardings."""
  items = {VARIABLES: ocp.args.StandardRestore(abstract_variables),
           MODEL: ocp.args.JsonRestore()}
  if abstract_train is not None:
    items[TRAIN] = ocp.args.StandardRestore(abstract_train)
  restored = manager.restore(step, args=ocp.args.Composite(**items))
  return {name: restored[name] for name in items}


def _split_root_and_step(path: str) -> tuple[str, Optional[int]]:
  """Accepts a manager root, a step directory inside one, or a workdir with checkpoints/."""
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.isdir(path):
    raise FileNotFoundError(f"No checkpoint directory at {path!r}.")
  if os.path.isdir(os.path.join(path, "checkpoints")):
    return os.path.join(path, "checkpoints"), None
  base = os.path.basename(path)
  if base.isdigit() and os.path.isdir(os.path.join(path, VARIABLES)):
    return os.path.dirname(path), int(base)
  return path, None


def load_variables(path: str, sharding: Optional[jax.sharding.Sharding] = None
                   ) -> tuple[dict, dict, int]:
  """Reads {'params', 'batch_stats'} and the model fields from any checkpoint.

  Args:
    path: a checkpoint root, one of its step directories, or a training workdir.
    sharding: where to place every array (default: this process's first device).
  Returns:
    (variables, model_config, step).
  """
  root, step = _split_root_and_step(path)
  manager = create_manager(root, max_to_keep=None, asynchronous=False, read_only=True)
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(
        f"{path!r} holds no checkpoint steps. Expected an Orbax checkpoint written by "
        "main.py (WORKDIR/checkpoints) or by `python -m xception_jax.convert`.")
  metadata = manager.item_metadata(step)[VARIABLES]
  if sharding is None:
    sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  abstract = jax.tree.map(
      lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding), metadata)
  restored = restore(manager, step, abstract_variables=abstract)
  manager.close()
  logging.info("Loaded variables from %s (step %d).", root, step)
  return restored[VARIABLES], restored[MODEL], step


def save_variables(directory: str, variables: Mapping[str, Any],
                   model_config: Mapping[str, Any], step: int = 0) -> str:
  """Exports model variables as a one-step checkpoint that `load_variables`,
  `--config.init_from` and `xception_jax.predict` read. Refuses to overwrite a step."""
  manager = create_manager(directory, max_to_keep=None, asynchronous=False)
  if step in manager.all_steps():
    raise FileExistsError(
        f"{directory!r} already holds a checkpoint at step {step}; choose another --out.")
  save(manager, step, variables={"params": variables["params"],
                                 "batch_stats": variables.get("batch_stats", {})},
       model_config=model_config, force=True)
  manager.wait_until_finished()
  manager.close()
  return os.path.join(os.path.abspath(directory), str(step))
