"""Every check of a config and a workdir, in one place, before any compilation or data.

`validate(config, workdir)` raises `ConfigError` (a ValueError) with ONE line: the
field, the value, and what is allowed or how to fix it. main.py prints that line and
exits with status 2 (a traceback only with `--debug`).

The checks are data, to be read and extended:
  RULES       one row per scalar field: (field path, test, what is allowed, or a
              callable saying it when the list is known only at run time). A row whose
              field the config lacks is skipped, so configs of other models and tasks
              share the table; add a row for a new field (tests/test_validation_rules.py
              checks that every row names a field of configs/base.py or a DeepLab
              config, and that a bad value for it is refused).
  CHECKS      functions over the whole config (cross-field rules, files and globs,
              names); each returns an error line or None.
  model       the model itself judges its fields: `create_model` refuses unknown
              names, and tracing `model.init` (jax.eval_shape: no compilation, no
              arrays) runs the model's own checks (image size, dropout, order, ...).
  workdir     must be a directory this process can write, and its checkpoints must
              hold this model's parameter shapes and this optimizer's state tree
              (else refused, checkpoints untouched): workdir_checks.py.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Optional, Union

import ml_collections

from xception_jax import paths, tasks


from xception_jax.errors import ConfigError
# The workdir's checks (workdir_checks.py); check_checkpoint_matches is also train.py's.
from xception_jax.workdir_checks import (check_checkpoint_matches, check_workdir,
                                         checkpoint_num_classes, latest_checkpoint_step)


# -- tests used by the table ---------------------------------------------------------

def _number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def at_least(lo: float, integer: bool = True) -> Callable[[Any], bool]:
  return lambda v: (_int(v) if integer else _number(v)) and v >= lo


def between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False
            ) -> Callable[[Any], bool]:
  def test(v):
    return (_number(v) and (v > lo if lo_open else v >= lo)
            and (v < hi if hi_open else v <= hi))
  return test


def positive(v) -> bool:
  return _number(v) and v > 0


def optional(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
  return lambda v: v is None or test(v)


def one_of(*choices) -> Callable[[Any], bool]:
  return lambda v: v in choices


def boolean(v) -> bool:
  return isinstance(v, bool)


def increasing_pair(lo: float, hi: float) -> Callable[[Any], bool]:
  """(a, b) with lo < a <= b <= hi."""
  def test(v):
    try:
      a, b = v
    except (TypeError, ValueError):
      return False
    return _number(a) and _number(b) and lo < a <= b <= hi
  return test


def step_window(v) -> bool:
  """(first, last): integers with 0 <= first < last."""
  return (isinstance(v, (tuple, list)) and len(v) == 2 and all(_int(x) for x in v)
          and 0 <= v[0] < v[1])


OPTIMIZERS = ("sgd", "rmsprop")
SCHEDULES = ("exponential", "poly")
HEAD_INITS = ("deeplab", "glorot_uniform")   # models/deeplab.py's HEAD_INITS
REMAT_POLICIES = ("none", "block", "block_save_convs", "block_save_products")  # models/remat.py's


def positive_numbers(v) -> bool:
  """A non-empty sequence of numbers > 0 (e.g. inference scales)."""
  return (isinstance(v, (tuple, list)) and len(v) > 0
          and all(positive(x) for x in v))

# (field, test, what is allowed). Fields absent from a config are skipped.
RULES: list[tuple[str, Callable[[Any], bool], Union[str, Callable[[], str]]]] = [
    # Data (input_pipeline/defaults.py).
    ("task", lambda v: v in tasks.names(),
     lambda: f"a known task, one of {tasks.names()} (xception_jax/tasks/)"),
    ("num_classes", optional(at_least(1)), "None (the dataset's) or an integer >= 1"),
    ("batch_size", at_least(1), "an integer >= 1 (the global batch)"),
    ("eval_batch_size", at_least(1), "an integer >= 1 (the global batch)"),
    ("image_size", at_least(1), "an integer >= the model's minimum input"),
    ("seed", at_least(0), "an integer >= 0"),
    ("shuffle", boolean, "True (a permutation of the whole split per epoch) or False"),
    ("crop_area_range", increasing_pair(0.0, 1.0), "(lo, hi) with 0 < lo <= hi <= 1"),
    ("crop_aspect_range", increasing_pair(0.0, math.inf), "(lo, hi) with 0 < lo <= hi"),
    ("crop_min_object_covered", between(0.0, 1.0), "a number in [0, 1]"),
    ("eval_crop_fraction", between(0.0, 1.0, lo_open=True), "a number in (0, 1]"),
    ("prefetch_batches", at_least(0), "an integer >= 0"),
    ("input_threads", optional(at_least(1)),
     "None (the CPUs this process may run on) or an integer >= 1"),
    ("cache", boolean, "True or False"),
    ("record_index_dir", optional(lambda v: isinstance(v, str) and bool(v)),
     "None (offset indexes beside the TFRecord files) or a directory, local or gs://"),
    ("embedded.num_train", at_least(1), "an integer >= 1"),
    ("embedded.num_eval", at_least(0), "an integer >= 0"),
    ("embedded.image_size", at_least(8), "an integer >= 8"),
    ("embedded.num_classes", between(1, 24), "an integer in [1, 24] (4 colours x 6 shapes)"),
    ("embedded.max_objects", at_least(1), "an integer >= 1"),
    ("embedded.zipf_exponent", at_least(0.0, integer=False), "a number >= 0"),
    # Segmentation data (input_pipeline/segmentation_pipeline.py).
    ("eval_image_size", optional(at_least(1)), "None (image_size) or an integer >= 1"),
    ("min_scale_factor", positive, "a number > 0"),
    ("max_scale_factor", positive, "a number > 0 (>= min_scale_factor)"),
    ("scale_factor_step_size", at_least(0.0, integer=False), "a number >= 0 (0: continuous)"),
    ("eval_scales", positive_numbers, "a non-empty tuple of numbers > 0, e.g. (1.0,)"),
    ("eval_flip", boolean, "True or False"),
    ("eval_output_stride", optional(lambda v: _int(v) and v in (8, 16)),
     "None (the model's output_stride), 8 or 16"),
    # Model fields the paper's networks share (the model checks the rest itself).
    ("model.dropout_rate", between(0.0, 1.0, hi_open=True), "a number in [0, 1)"),
    ("model.width_multiplier", positive, "a number > 0"),
    ("model.num_middle_blocks", at_least(0), "an integer >= 0"),
    ("model.bn_momentum", between(0.0, 1.0, hi_open=True), "a number in [0, 1)"),
    ("model.bn_epsilon", positive, "a number > 0"),
    ("model.segments", optional(at_least(1)), "None (depthwise) or an integer >= 1"),
    ("model.remat", one_of(*REMAT_POLICIES),
     f"one of {REMAT_POLICIES} (xception_jax/models/remat.py)"),
    # DeepLab v3+'s fidelity switches (models/deeplab.py).
    ("model.head_bn_epsilon", positive, "a number > 0 (TF DeepLab: 1e-5)"),
    ("model.head_init", one_of(*HEAD_INITS), f"one of {HEAD_INITS}"),
    ("model.align_corners", boolean, "True (TF DeepLab's geometry) or False (half-pixel)"),
    ("model.decoder_features_before_relu", boolean,
     "True (TF DeepLab's pre-ReLU BN output) or False"),
    # Optimisation (xception_jax/optim.py).
    ("optimizer", one_of(*OPTIMIZERS), f"one of {OPTIMIZERS}"),
    ("learning_rate", at_least(0.0, integer=False), "a number >= 0"),
    ("lr_base_batch_size", optional(at_least(1)), "None or an integer >= 1"),
    ("warmup_steps", at_least(0), "an integer >= 0"),
    ("lr_schedule", one_of(*SCHEDULES), f"one of {SCHEDULES}"),
    ("lr_poly_power", positive, "a number > 0 (DeepLab: 0.9)"),
    ("lr_decay_rate", between(0.0, 1.0, lo_open=True), "a number in (0, 1] (1: no decay)"),
    ("lr_decay_every_examples", positive, "a number > 0"),
    ("momentum", between(0.0, 1.0, hi_open=True), "a number in [0, 1)"),
    ("rmsprop_decay", between(0.0, 1.0, hi_open=True), "a number in [0, 1)"),
    ("rmsprop_epsilon", positive, "a number > 0"),
    ("rmsprop_initial_scale", at_least(0.0, integer=False), "a number >= 0"),
    ("weight_decay", at_least(0.0, integer=False), "a number >= 0"),
    ("weight_decay_depthwise", boolean, "True or False (DeepLab: False)"),
    ("label_smoothing", between(0.0, 1.0, hi_open=True), "a number in [0, 1)"),
    ("grad_clip_norm", optional(positive), "None or a number > 0"),
    ("skip_nonfinite_updates", boolean, "True or False"),
    # Loop (xception_jax/train.py).
    ("num_train_steps", lambda v: _int(v) and (v == -1 or v >= 1),
     "an integer >= 1, or -1 to let num_epochs decide"),
    ("log_every_steps", at_least(1), "an integer >= 1"),
    ("eval_every_steps", at_least(1), "an integer >= 1"),
    ("checkpoint_every_steps", at_least(1), "an integer >= 1"),
    ("keep_checkpoints", optional(at_least(1)), "an integer >= 1, or None to keep all"),
    ("async_checkpointing", boolean, "True or False"),
    ("progress_every_secs", positive, "a number > 0"),
    ("prefetch_to_device", at_least(0), "an integer >= 0"),
    ("map_k", at_least(1), "an integer >= 1"),
    ("eval_only", boolean, "True or False"),
    ("profile_steps", optional(step_window),
     "None or (first, last): integer steps with 0 <= first < last"),
    ("profile_all_processes", boolean, "True or False"),
    # Sharding (xception_jax/partitioning.py).
    ("num_devices", lambda v: _int(v) and (v == -1 or v >= 1),
     "an integer >= 1, or -1 for every device"),
    ("shard_head", boolean, "True or False"),
    ("num_slices", lambda v: _int(v) and (v == -1 or v >= 1),
     "an integer >= 1, or -1 for the devices' own slice count"),
]


def _get(config, path: str, default=KeyError):
  node = config
  for part in path.split("."):
    if not hasattr(node, "keys") or part not in node:
      return default
    node = node[part]
  return node


def _fail(field: str, value: Any, allowed: Union[str, Callable[[], str]]) -> ConfigError:
  """allowed: what the field may be (a callable for a list known only at run time)."""
  allowed = allowed() if callable(allowed) else allowed
  return ConfigError(f"config.{field} = {value!r}: must be {allowed}.")


# -- whole-config checks -------------------------------------------------------------

def _check_epochs(config) -> Optional[str]:
  if _get(config, "num_train_steps", None) == -1:
    epochs = _get(config, "num_epochs", None)
    if not (_number(epochs) and epochs > 0):
      return (f"config.num_epochs = {epochs!r}: must be > 0 when num_train_steps = -1 "
              "(or set num_train_steps >= 1).")
  return None


def _check_scale_factors(config) -> Optional[str]:
  lo, hi = _get(config, "min_scale_factor", None), _get(config, "max_scale_factor", None)
  if _number(lo) and _number(hi) and hi < lo:
    return (f"config.max_scale_factor = {hi!r}: must be >= config.min_scale_factor = "
            f"{lo!r} (the training scale range); raise it or lower min_scale_factor.")
  return None


def _check_dataset(config) -> Optional[str]:
  """Dataset names, folders and globs exist (nothing is opened or generated here)."""
  from input_pipeline import sources  # pylint: disable=import-outside-toplevel
  dataset = _get(config, "dataset", None)
  if dataset is None:
    return None
  if not isinstance(dataset, str) or not dataset:
    return f"config.dataset = {dataset!r}: a dataset name (see input_pipeline/sources.py)."
  if dataset.startswith(sources.TFRECORD_PREFIX):
    pattern = dataset[len(sources.TFRECORD_PREFIX):]
    unreachable = paths.check_reachable(pattern, f"config.dataset = {dataset!r}")
    if unreachable:
      return unreachable
    if not paths.glob(pattern):
      return (f"config.dataset = {dataset!r}: no file matches {pattern!r}; give the glob "
              "of your TFRecord shards (docs/DATA.md).")
    return None
  if dataset.startswith(sources.FOLDER_PREFIX):
    root = paths.resolve(dataset[len(sources.FOLDER_PREFIX):])
    unreachable = paths.check_reachable(root, f"config.dataset = {dataset!r}")
    if unreachable:
      return unreachable
    if not paths.isdir(root):
      return (f"config.dataset = {dataset!r}: no directory {root!r}; expected "
              "root/<split>/<class name>/<images>.")
    return None
  if sources._base_name(dataset) == sources.EMBEDDED_NAME:  # pylint: disable=protected-access
    return None
  import difflib  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  known = tfds.list_builders(with_community_datasets=False)
  base = sources._base_name(dataset)  # pylint: disable=protected-access
  if base not in known:
    close = difflib.get_close_matches(base, known, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return (f"config.dataset = {dataset!r}: unknown dataset{hint}; use a tfds name, "
            f"'{sources.EMBEDDED_NAME}', '{sources.FOLDER_PREFIX}/root' or "
            f"'{sources.TFRECORD_PREFIX}/path/train-*.tfrecord'.")
  return None


def _unreachable(config, *fields: str) -> Optional[str]:
  """The first of these path fields whose bucket cannot be reached (one line)."""
  for field in fields:
    value = _get(config, field, None)
    if value and isinstance(value, str):
      message = paths.check_reachable(value, f"config.{field} = {value!r}")
      if message:
        return message
  return None


def _check_files(config) -> Optional[str]:
  unreachable = _unreachable(config, "eval_files", "class_weights_file", "data_dir",
                             "init_from", "record_index_dir")
  if unreachable:
    return unreachable
  eval_files = _get(config, "eval_files", None)
  if eval_files and str(_get(config, "dataset", "")).startswith("tfrecord_multilabel:"):
    if not paths.glob(eval_files):
      return (f"config.eval_files = {eval_files!r}: no file matches; give the glob of "
              "the eval shards, or None for no evaluation.")
  weights = _get(config, "class_weights_file", None)
  if weights and not paths.isfile(weights):
    return (f"config.class_weights_file = {weights!r}: no such file; one weight per line "
            "or JSON/CSV of class id to weight (docs/EVALUATION.md).")
  data_dir = _get(config, "data_dir", None)
  if data_dir and paths.exists(data_dir) and not paths.isdir(data_dir):
    return f"config.data_dir = {data_dir!r}: is a file; give a directory."
  init_from = _get(config, "init_from", None)
  if init_from:
    if not paths.isdir(init_from):
      return (f"config.init_from = {init_from!r}: no such directory; give a workdir, a "
              "checkpoint root or one of its step directories.")
  return None


# Fields that were removed, and what replaces them: a config still setting one is
# refused rather than silently ignored.
REMOVED = {
    "shuffle_buffer_size": (
        "removed: the train stream shuffles the whole split every epoch "
        "(input_pipeline/train_stream.py); delete the line, or set config.shuffle = "
        "False for the stored order"),
}


def _check_removed(config) -> Optional[str]:
  for field, why in REMOVED.items():
    value = _get(config, field, KeyError)
    if value is not KeyError:
      return f"config.{field} = {value!r}: {why}."
  return None


def _check_slices(config) -> Optional[str]:
  """Several slices use every device: num_devices picks devices of one process only."""
  slices, devices = _get(config, "num_slices", -1), _get(config, "num_devices", -1)
  if _int(slices) and slices > 1 and devices not in (-1, None):
    return (f"config.num_devices = {devices!r}: must be -1 when config.num_slices = "
            f"{slices} (a mesh of several slices uses every device).")
  return None


CHECKS: list[Callable[[Any], Optional[str]]] = [_check_epochs, _check_scale_factors,
                                                 _check_removed, _check_slices,
                                                 _check_dataset, _check_files]


# -- the model, through its own factory ----------------------------------------------

def _abstract_params(config, num_classes: int):
  """Parameter shapes of the configured model, by tracing init (no compilation)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from xception_jax.models import create_model  # pylint: disable=import-outside-toplevel
  model = create_model(config.model, num_classes=num_classes)
  size = int(config.image_size)
  images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                             images)
  return variables["params"]


def _check_model(config, num_classes: int):
  if "model" not in config:
    return None
  try:
    return _abstract_params(config, num_classes)
  except (ValueError, TypeError) as e:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise ConfigError(f"config.model: {message}") from e


# -- entry point ---------------------------------------------------------------------

def validate(config: ml_collections.ConfigDict, workdir: Optional[str] = None) -> None:
  """Raises ConfigError (one line) for the first impossible field, file or workdir."""
  for field, test, allowed in RULES:
    value = _get(config, field)
    if value is not KeyError and not test(value):
      raise _fail(field, value, allowed)
  for check in CHECKS:
    message = check(config)
    if message:
      raise ConfigError(message)
  if workdir is not None:
    check_workdir(workdir)
  root = paths.join(workdir, "checkpoints") if workdir else None
  step = latest_checkpoint_step(root) if root else None
  num_classes = _get(config, "num_classes", None)
  if not num_classes and step is not None:
    num_classes = checkpoint_num_classes(root, step)
  params = _check_model(config, int(num_classes or 2))
  if step is not None and params is not None:
    from xception_jax import state_trees  # pylint: disable=import-outside-toplevel
    check_checkpoint_matches(root, step, params, state_trees.abstract_train(config, params))
