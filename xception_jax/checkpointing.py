"""Orbax checkpoints: the trainer's (resume) and exported model variables (fine-tune, predict).

Every checkpoint directory is an Orbax `CheckpointManager` root with numbered step
subdirectories, each holding up to three items:

    <root>/<step>/variables   {'params', 'batch_stats'}      (always)
    <root>/<step>/train       {'step', 'opt_state'}          (training checkpoints only)
    <root>/<step>/model       JSON: the Xception constructor fields (always)

So the same `load_variables` reads a training workdir's checkpoints, a converted
Keras model (`python -m xception_jax.convert`), or any single step directory, on any
device topology, and a training run resumes from all three items.

Paths go through xception_jax/paths.py, so a root may be local or `gs://...`.

Faults. Orbax writes a step into `<step>.orbax-checkpoint-tmp` and renames it to
`<step>` when the write is complete (on GCS, which has no rename, it writes `<step>`
and marks it finished with `<step>/commit_success.txt`), so a process killed while
writing leaves a step that `latest_step()` never lists (docs/RELIABILITY.md); a
writable manager removes such leftovers when it opens (Orbax's
`cleanup_tmp_directories`). A committed step that cannot be restored (a truncated or
lost file) is moved aside by `restore_latest` to
`<workdir>/checkpoints_damaged/<step>-<time>` (never deleted; in a bucket, copied
there and then deleted) and the previous step is tried. A step whose stored trees
differ from the configured state's (another model, optimizer or grad_clip_norm) is not
damage: it is refused, every step left in place (validation.check_checkpoint_matches).
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional

import jax
import orbax.checkpoint as ocp
from absl import logging

from xception_jax import paths

VARIABLES, TRAIN, MODEL = "variables", "train", "model"
DAMAGED = "checkpoints_damaged"  # beside the manager's root: where damaged steps go


def create_manager(directory: str, *, max_to_keep: Optional[int] = 3,
                   save_interval_steps: int = 1, asynchronous: bool = True,
                   read_only: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager over the three items, saving asynchronously by default."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, save_interval_steps=0 if read_only else save_interval_steps,
      enable_async_checkpointing=asynchronous, create=not read_only, read_only=read_only,
      # Steps a killed save left unfinished are removed when a writer opens the root.
      cleanup_tmp_directories=not read_only)
  handlers = {VARIABLES: ocp.StandardCheckpointHandler(),
              TRAIN: ocp.StandardCheckpointHandler(),
              MODEL: ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(paths.resolve(directory), options=options,
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


def move_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves a step directory to <root>/../checkpoints_damaged/<step>-<time>; returns
  where. Only process 0 moves; every process then re-reads the step list."""
  source = paths.join(str(manager.directory), str(step))
  target = paths.join(paths.parent(str(manager.directory)), DAMAGED,
                      f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
  if jax.process_index() == 0:
    paths.move(source, target)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(f"checkpoint {step} moved aside")
  manager.reload()
  return target


def restore_latest(manager: ocp.CheckpointManager, restore_step: Callable[[int], Any],
                   check_step: Callable[[int], None] = lambda step: None
                   ) -> tuple[Optional[int], Any]:
  """(step, restore_step(step)) for the latest step that restores, else (None, None).

  A step whose restore raises is first given to `check_step`, which raises (and the
  step is left alone) when the failure is not damage, e.g. another model's
  checkpoint; otherwise it is reported with its path, moved aside and the previous
  step is tried. A moved step is never read again.
  """
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      return step, restore_step(step)
    except Exception as e:  # pylint: disable=broad-except
      check_step(step)
      path = paths.join(str(manager.directory), str(step))
      reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
      target = move_aside(manager, step)
      logging.warning("Checkpoint %s cannot be restored (%s: %s); moved it to %s and "
                      "trying the previous step.", path, type(e).__name__, reason, target)
  return None, None


def latest_step(root: str) -> Optional[int]:
  """The latest finished step under a manager root, as Orbax finds it (None when the
  root does not exist or holds none)."""
  if not paths.isdir(root):
    return None
  manager = create_manager(root, max_to_keep=None, asynchronous=False, read_only=True)
  try:
    return manager.latest_step()
  finally:
    manager.close()


def variables_metadata(root: str, step: int) -> Any:
  """The stored tree of `variables` (shapes and dtypes) at `step`, read from metadata."""
  manager = create_manager(root, max_to_keep=None, asynchronous=False, read_only=True)
  try:
    return manager.item_metadata(step)[VARIABLES]
  finally:
    manager.close()


def train_metadata(root: str, step: int) -> Any:
  """The stored tree of `train` ({'step', 'opt_state'}) at `step`, or None when the
  step has no training state (an exported model)."""
  manager = create_manager(root, max_to_keep=None, asynchronous=False, read_only=True)
  try:
    return manager.item_metadata(step).get(TRAIN)
  finally:
    manager.close()


def _split_root_and_step(path: str) -> tuple[str, Optional[int]]:
  """Accepts a manager root, a step directory inside one, or a workdir with checkpoints/."""
  path = paths.resolve(path)
  if not paths.isdir(path):
    raise FileNotFoundError(f"No checkpoint directory at {path!r}.")
  if paths.isdir(paths.join(path, "checkpoints")):
    return paths.join(path, "checkpoints"), None
  base = paths.basename(path)
  if base.isdigit() and paths.isdir(paths.join(path, VARIABLES)):
    return paths.parent(path), int(base)
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
  return paths.join(directory, str(step))
