"""The trainer: `train_and_evaluate(config, workdir)`, the project's main job.

Data flows one way: input pipeline (per-process NumPy batches) -> global arrays sharded
over the mesh's data axis -> jitted train/eval steps (steps.py) -> metrics (metrics.py) ->
metric writers (TensorBoard event files in the workdir, and the console).

Checkpoints (checkpointing.py) are written every `checkpoint_every_steps` and at the
end, asynchronously, keeping the last `keep_checkpoints`; a run started again on the
same workdir resumes from the latest one at the same step, with the same data order.
`init_from` starts from another checkpoint (fine-tuning; the head is re-initialised
when its shape differs) and `eval_only` restores, evaluates, prints and exits.

Faults (docs/RELIABILITY.md): the config and workdir are validated first
(validation.py); a SIGTERM makes the loop save at the current step and return
(preemption.py); a checkpoint that cannot be restored is moved aside and the previous
one used (checkpointing.restore_latest); a non-finite training loss stops the run, or,
with `skip_nonfinite_updates`, the update is skipped and counted.
"""
from __future__ import annotations

import functools
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers, periodic_actions
from jax.experimental import multihost_utils

import input_pipeline
from xception_jax import (checkpointing, event_writer, optim, partitioning, paths,
                          preemption, profiling, steps, tasks, validation)
from xception_jax.models import create_model, model_to_fields

def _model(config: ml_collections.ConfigDict, num_classes: int):
  return create_model(config.model, num_classes=num_classes)


BACKBONE = "backbone"  # where a segmentation model (DeepLabV3Plus) keeps its encoder


def _merge_init_from(fresh: Any, loaded: Any, what: str) -> Any:
  """Takes every leaf of `loaded` whose path and shape match `fresh`; leaves of the
  head may differ (fine-tuning to new classes) and keep their fresh initialisation.

  A model with a 'backbone' subtree (DeepLabV3Plus) given a classification checkpoint
  (no 'backbone') takes that checkpoint's network as its backbone: the classifier's
  top-level names are the backbone's. DeepLab's ASPP and decoder live under 'head'."""
  if BACKBONE in fresh and BACKBONE not in loaded:
    logging.info("init_from: the checkpoint's %s become the model's [%r].", what, BACKBONE)
    loaded = {BACKBONE: loaded}
  loaded_leaves = {jax.tree_util.keystr(p): v
                   for p, v in jax.tree_util.tree_leaves_with_path(loaded)}
  reinitialised = []

  def pick(path, leaf):
    name = jax.tree_util.keystr(path)
    other = loaded_leaves.get(name)
    if other is not None and other.shape == leaf.shape:
      return jax.device_put(other, leaf.sharding).astype(leaf.dtype)
    if "'head'" in name:
      reinitialised.append(path)
      return leaf
    found = "missing" if other is None else f"shape {other.shape}, expected {leaf.shape}"
    raise ValueError(
        f"config.init_from: {what}{name} does not match the configured model ({found}). "
        "The model fields in config.model must describe the checkpoint's network.")

  merged = jax.tree_util.tree_map_with_path(pick, fresh)
  if reinitialised:
    modules = dict.fromkeys(_head_module(path) for path in reinitialised)
    logging.info("init_from: re-initialised %d %s leaves under %s (absent from the "
                 "checkpoint or of another shape).", len(reinitialised), what,
                 ", ".join(modules))
  return merged


def _head_module(path) -> str:
  """The module a re-initialised leaf belongs to: ['head'] of a classifier, or the
  head's part (['head']['aspp'], ['head']['decoder']) of DeepLab."""
  keys = [getattr(k, "key", k) for k in path]
  end = min(keys.index("head") + 2, len(keys) - 1) if "head" in keys else len(keys)
  return "".join(f"[{k!r}]" for k in keys[:end])


class Trainer:
  """Holds what one run compiles once: mesh, shardings, model, optimiser, steps."""

  def __init__(self, config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, data: Any,
               task: tasks.Task | None = None):
    self.config = config
    self.data = data
    self.mesh = mesh
    self.task = task = task or tasks.get(config.task)
    self.model = _model(config, data.num_classes)
    total_steps = optim.steps_for(config, data.num_train_examples)
    self.schedule = optim.learning_rate_schedule(config, total_steps)
    self.tx = optim.create_optimizer(config, total_steps)
    self.data_sharding = partitioning.data_sharding(self.mesh)
    replicated = partitioning.replicated(self.mesh)

    init = functools.partial(steps.create_train_state, self.model, self.tx,
                             image_size=config.image_size)
    abstract = jax.eval_shape(init, jax.random.key(0))
    self.state_sharding = partitioning.tree_shardings(
        abstract, self.mesh, partitioning.partition_rules(config.get("shard_head", False)))
    self.abstract_state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
        self.state_sharding)
    self.init = jax.jit(init, out_shardings=self.state_sharding)
    self.train_step = jax.jit(
        functools.partial(steps.train_step, model=self.model, tx=self.tx,
                          schedule=self.schedule, objective=task.objective(config),
                          skip_nonfinite=config.get("skip_nonfinite_updates", False)),
        in_shardings=(self.state_sharding, self.data_sharding, replicated),
        out_shardings=(self.state_sharding, replicated), donate_argnums=0)
    self.eval_step = jax.jit(
        task.eval_step(config, data, self.model),
        in_shardings=(self.state_sharding, self.data_sharding),
        out_shardings=(replicated,
                       self.data_sharding if task.EVAL_OUTPUT_SHARDED else replicated))

  # -- state -------------------------------------------------------------------------
  def initial_state(self, manager) -> steps.TrainState:
    """Latest checkpoint in the workdir, else init_from, else a fresh initialisation."""
    abstract = self.abstract_state
    restore_step = functools.partial(
        checkpointing.restore, manager,
        abstract_variables={"params": abstract.params, "batch_stats": abstract.batch_stats},
        abstract_train={"step": abstract.step, "opt_state": abstract.opt_state})
    check_step = functools.partial(validation.check_checkpoint_matches,
                                   str(manager.directory), expected_params=abstract.params,
                                   expected_train={"step": abstract.step,
                                                   "opt_state": abstract.opt_state})
    latest, restored = checkpointing.restore_latest(manager, restore_step, check_step)
    if latest is not None:
      logging.info("Resuming from %s at step %d.", manager.directory, latest)
      variables, train = restored[checkpointing.VARIABLES], restored[checkpointing.TRAIN]
      return steps.TrainState(step=train["step"], params=variables["params"],
                              batch_stats=variables["batch_stats"],
                              opt_state=train["opt_state"])
    if self.config.get("eval_only") and not self.config.get("init_from"):
      raise FileNotFoundError(
          f"eval_only: no checkpoint in {manager.directory} and no config.init_from; "
          "point --workdir at a trained run or set --config.init_from=CHECKPOINT.")
    state = self.init(jax.random.key(self.config.seed))
    if self.config.get("init_from"):
      variables, _, step = checkpointing.load_variables(
          self.config.init_from, sharding=partitioning.replicated(self.mesh))
      logging.info("Initialising from %s (step %d).", self.config.init_from, step)
      params = _merge_init_from(state.params, variables["params"], "params")
      batch_stats = _merge_init_from(state.batch_stats, variables["batch_stats"],
                                     "batch_stats")
      state = state.replace(params=params, batch_stats=batch_stats,
                            opt_state=jax.jit(self.tx.init, out_shardings=
                                              self.state_sharding.opt_state)(params))
    return state

  def save(self, manager, state: steps.TrainState, force: bool = False) -> None:
    checkpointing.save(manager, int(state.step), variables=state.variables,
                       model_config=model_to_fields(self.model),
                       train={"step": state.step, "opt_state": state.opt_state}, force=force)

  # -- evaluation --------------------------------------------------------------------
  def evaluate(self, state: steps.TrainState, stop=None) -> dict[str, float]:
    """One pass over the eval split: the averages of the task's eval step (loss, ...)
    and its evaluator's metrics over every process (MAP@K, mean IoU, ... with their
    chance levels), each named eval_<name>. Returns {} early when `stop()` becomes True
    (a preemption notice)."""
    if not self.data.num_eval_examples:
      logging.warning("No eval split (config.eval_split=%r): nothing to evaluate.",
                      self.config.eval_split)
      return {}
    evaluator = self.task.evaluator(self.config, self.data)
    totals = None
    for local in self.data.eval_batches():
      if stop is not None and stop():
        logging.warning("Evaluation at step %d interrupted (preemption).", int(state.step))
        return {}
      # Any eval_batch_size on any device count: each process pads its rows to a
      # multiple of its devices (mask 0), as the pipeline pads the pass's last batch.
      local = partitioning.pad_rows(local, len(self.mesh.local_devices))
      batch = partitioning.make_global_batch(local, self.data_sharding)
      metrics, output = self.eval_step(state, batch)
      totals = metrics if totals is None else totals.merge(metrics)
      evaluator.update(local, output)
      preemption.fault_point("eval", int(state.step))
    results = {f"eval_{name}": float(value) for name, value in totals.compute().items()}
    results.update({f"eval_{name}": float(value)
                    for name, value in evaluator.result().items()})
    return results


def _write_config(config: ml_collections.ConfigDict, workdir: str, start_step: int) -> None:
  """config.json for a new run; a resumed run keeps it and adds config_step<N>.json."""
  if jax.process_index() == 0:
    name = "config.json" if start_step == 0 else f"config_step{start_step}.json"
    paths.write_text(paths.join(workdir, name), config.to_json_best_effort(indent=2))


def _create_datasets(config: ml_collections.ConfigDict, task: tasks.Task, start_step: int):
  """This process's data, as the task asks for it. In multi-process runs process 0
  alone generates the embedded dataset while the others wait, so processes sharing a
  data_dir do not race."""
  if jax.process_count() > 1:
    if jax.process_index() == 0:
      if config.dataset == input_pipeline.sources.EMBEDDED_NAME:
        input_pipeline.embedded_shapes.prepare(config.data_dir, **config.embedded.to_dict())
      elif config.dataset == input_pipeline.embedded_shapes_segmentation.NAME:
        input_pipeline.embedded_shapes_segmentation.prepare(
            config.data_dir, **config.embedded_segmentation.to_dict())
    multihost_utils.sync_global_devices("embedded dataset prepared")
  return task.create_datasets(config, process_index=jax.process_index(),
                              process_count=jax.process_count(), start_step=start_step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
  """Trains (or, with eval_only, evaluates) as the config says; returns the last
  evaluation's metrics."""
  input_pipeline.load()  # TensorFlow kept off the accelerators before anything uses it
  validation.validate(config, workdir)
  mesh = partitioning.create_mesh(config.get("num_devices", -1), config.get("num_slices", -1))
  partitioning.check_batch_size(config.batch_size, mesh, "batch_size")
  workdir = paths.resolve(workdir)  # local: absolute; gs://...: as given
  paths.makedirs(workdir)
  writer = event_writer.create_default_writer(workdir,
                                              just_logging=jax.process_index() > 0)
  manager = checkpointing.create_manager(
      paths.join(workdir, "checkpoints"), max_to_keep=config.keep_checkpoints,
      asynchronous=config.get("async_checkpointing", True))
  start_step = manager.latest_step() or 0
  task = tasks.get(config.task)
  data = _create_datasets(config, task, start_step)
  trainer = Trainer(config, mesh, data, task)
  num_steps = optim.steps_for(config, data.num_train_examples)
  logging.info("Model: %d trainable parameters; %s on %d device(s), %d process(es).",
               _count(trainer.abstract_state.params), task.NAME, trainer.mesh.size,
               jax.process_count())

  state = trainer.initial_state(manager)
  step = int(state.step)
  if step != start_step:  # the latest checkpoint was damaged and moved aside
    trainer.data = data = _create_datasets(config, task, step)
  _write_config(config, workdir, step)
  if config.get("eval_only"):
    results = trainer.evaluate(state)
    writer.write_scalars(step, results)
    writer.flush()
    manager.close()
    return results

  report_progress = periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=writer,
      every_secs=config.get("progress_every_secs", 60))
  results: dict[str, float] = {}
  train_metrics = None
  batches = partitioning.prefetch_to_mesh(data.train, trainer.data_sharding,
                                          config.get("prefetch_to_device", 2))
  rng = jax.random.key(config.seed + 1)
  last_log = (time.perf_counter(), step)
  logging.info("Training from step %d to %d.", step, num_steps)
  saved_step = manager.latest_step()
  skipped_total = 0
  with metric_writers.ensure_flushes(writer), preemption.Preemption() as preempt, \
      profiling.StepProfiler.from_config(config, workdir) as profile:
    while step < num_steps:
      if preempt.should_stop(step):
        break
      profile(step, state)
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, metrics = trainer.train_step(state, next(batches), rng)
      preemption.fault_point("train_step", step + 1)
      step += 1
      train_metrics = metrics if train_metrics is None else train_metrics.merge(metrics)
      report_progress(step)
      if step % config.log_every_steps == 0 or step == num_steps:
        scalars = {f"train_{k}": float(v) for k, v in train_metrics.compute().items()}
        skipped_total += int(scalars.get("train_skipped_updates", 0))
        if not np.isfinite(scalars["train_loss"]) and not config.get("skip_nonfinite_updates"):
          raise FloatingPointError(
              f"Training loss is {scalars['train_loss']} at step {step}; the last "
              f"checkpoint is in {manager.directory}. Lower the learning rate or check "
              "the data (or set config.skip_nonfinite_updates=True).")
        elapsed, steps_done = time.perf_counter() - last_log[0], step - last_log[1]
        scalars["train_steps_per_sec"] = steps_done / elapsed
        scalars["train_images_per_sec"] = steps_done * config.batch_size / elapsed
        writer.write_scalars(step, scalars)
        train_metrics, last_log = None, (time.perf_counter(), step)
      if step % config.eval_every_steps == 0 or step == num_steps:
        with report_progress.timed("eval"):
          evaluated = trainer.evaluate(state, stop=preempt.interrupted)
        if evaluated:  # {} when a preemption notice interrupted it
          results = evaluated
          writer.write_scalars(step, results)
        last_log = (time.perf_counter(), step)  # images/s counts training time only
      if step % config.checkpoint_every_steps == 0 or step == num_steps:
        trainer.save(manager, state, force=step == num_steps)
        saved_step = step
        preemption.fault_point("checkpoint_write", step)
        last_log = (time.perf_counter(), step)
    if step < num_steps:  # preempted: a checkpoint at this step, then return
      if saved_step != step:
        trainer.save(manager, state, force=True)
      manager.wait_until_finished()
      manager.close()
      logging.warning("Preempted (%s): checkpoint at step %d written to %s; exiting. "
                      "Run the same command to continue.", preempt.signal_name, step,
                      manager.directory)
      return {**results, "preempted_at_step": step}
    manager.wait_until_finished()  # still under the handler: a late SIGTERM waits too
  manager.close()
  if skipped_total:
    logging.warning("Skipped %d update(s) with a non-finite loss or gradient.", skipped_total)
  if not results:  # resumed at the last step: report the final model anyway
    results = trainer.evaluate(state)
    writer.write_scalars(step, results)
  logging.info("Finished at step %d; checkpoints in %s.", step, manager.directory)
  return results


def _count(tree: Any) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))
