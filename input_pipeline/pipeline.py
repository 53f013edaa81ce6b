"""Train and eval streams for one process: `create_datasets(config, ...)`.

Train stream (train_stream.py). Global step s holds global stream positions
[s * B, (s + 1) * B); position g shows record permutation_e(g % N) of epoch
e = g // N, a seeded bijection of the whole split per epoch, augmented with
stateless random ops seeded by (config.seed, g). Process p of P reads and yields
only rows [p * B / P, (p + 1) * B / P) of every global batch. The batches are
therefore a function of the config alone (not of the process or device count),
and resuming at any step costs the same: records are read by id (random access,
sources.py), nothing before the start is touched.

Eval stream. The process's share of the eval split, in stored order; each row
carries `index`, its position in the split. Every process yields
ceil(ceil(N / P) / B_local) batches; rows past the end of a share are padding
(mask 0, index -1, zero image and label).

Bad data. A train image that fails to decode (or a record that fails to parse)
is replaced by the next decodable record of the same epoch's permutation, with
its own position's augmentation seed; the rest of the stream is unchanged. An
eval image that fails is dropped. Both are counted: `bundle.skipped_images()`,
and logged.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Iterator

from absl import logging
import numpy as np
import tensorflow as tf

from input_pipeline import defaults
from input_pipeline import preprocessing
from input_pipeline import sources
from input_pipeline import train_stream
from xception_jax.evaluation import class_weights as weights_io


def configure_tensorflow() -> None:
  """Keeps TensorFlow off accelerators (JAX owns them) and its threads modest."""
  try:
    tf.config.set_visible_devices([], "GPU")
    tf.config.set_visible_devices([], "TPU")
  except (RuntimeError, ValueError):
    pass  # Already initialised, or no such device type.
  try:
    # Ops outside tf.data (eager glue) need little; tf.data has its own pool.
    tf.config.threading.set_inter_op_parallelism_threads(2)
    tf.config.threading.set_intra_op_parallelism_threads(2)
  except RuntimeError:
    pass  # TensorFlow's runtime is already initialised.


@dataclasses.dataclass
class DataBundle:
  """What the trainer gets from `create_datasets`."""

  train: Iterator[dict[str, np.ndarray]]
  eval_batches: Callable[[], Iterator[dict[str, np.ndarray]]]
  num_train_examples: int
  num_eval_examples: int
  num_classes: int
  class_weights: np.ndarray | None
  task: str
  skipped_images: Callable[[], dict[str, int]]
  num_eval_batches: int
  train_batch_size_local: int
  eval_batch_size_local: int


def local_batch_size(config, field: str, process_count: int) -> int:
  total = int(defaults.get(config, field))
  if total <= 0 or total % process_count:
    raise ValueError(
        f"config.{field} = {total} is not divisible by the process count "
        f"{process_count} (each process loads {field} // process_count).")
  return total // process_count


def _tf_options(config) -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  threads = defaults.input_threads(config)
  options.threading.private_threadpool_size = threads
  options.autotune.cpu_budget = threads
  options.threading.max_intra_op_parallelism = 1
  # Autotuning sizes the parallelism; without it AUTOTUNE means one call per core.
  options.autotune.enabled = bool(defaults.get(config, "input_autotune"))
  options.experimental_optimization.map_parallelization = True
  return options


class Counters:
  """Undecodable images skipped: in the train stream, and by the eval passes."""

  def __init__(self):
    self.train = 0
    self.eval_last_pass = 0
    self.eval_total = 0

  def as_dict(self) -> dict[str, int]:
    return {"train": self.train, "eval_last_pass": self.eval_last_pass,
            "eval_total": self.eval_total}


def create_datasets(config, process_index: int | None = None,
                    process_count: int | None = None,
                    start_step: int = 0) -> DataBundle:
  """Builds this process's train iterator and eval-pass factory.

  Args:
    config: ml_collections.ConfigDict with the fields of
      `input_pipeline.defaults.default_data_config()`.
    process_index, process_count: this process and the process count
      (default: jax.process_index(), jax.process_count()).
    start_step: the train step to start at; the stream then equals the
      start_step=0 stream with its first start_step batches dropped.
  """
  process_index, process_count = check_processes(process_index, process_count,
                                                 start_step)
  # Cheap checks first: nothing is opened before these pass.
  train_b = local_batch_size(config, "batch_size", process_count)
  eval_b = local_batch_size(config, "eval_batch_size", process_count)
  configure_tensorflow()

  source = sources.open_source(config)
  num_classes = source.num_classes
  wanted = defaults.get(config, "num_classes")
  if wanted and int(wanted) != num_classes:
    raise ValueError(
        f"config.num_classes = {wanted} but {source.name} has {num_classes} "
        "classes.")
  class_weights = None
  weights_file = defaults.get(config, "class_weights_file")
  if weights_file:
    class_weights = weights_io.load_class_weights(weights_file, num_classes)
  elif source.task == sources.MULTI_LABEL:
    class_weights = source.class_weights()
  if class_weights is not None and class_weights.shape != (num_classes,):
    raise ValueError(
        f"Class weights have {class_weights.shape[0]} entries, expected "
        f"num_classes = {num_classes} (one weight per line).")

  counters = Counters()
  options = _tf_options(config)
  label_fn = _label_fn(source.task, num_classes)
  image_size = int(defaults.get(config, "image_size"))
  prefetch = int(defaults.get(config, "prefetch_batches"))

  # ---- Train.
  num_train = source.num_examples("train")
  if num_train <= 0:
    raise ValueError(f"{source.name} has no train examples.")
  train = train_stream.TrainStream(
      lookup=source.lookup("train"), parse=source.parse,
      num_examples=num_train,
      augment=train_stream.augment_image(
          preprocessing.preprocess_train, image_size=image_size,
          area_range=tuple(defaults.get(config, "crop_area_range")),
          aspect_range=tuple(defaults.get(config, "crop_aspect_range")),
          min_object_covered=float(
              defaults.get(config, "crop_min_object_covered"))),
      label_fn=label_fn,
      process_index=process_index, process_count=process_count,
      local_batch=train_b, start_step=start_step,
      seed=int(defaults.get(config, "seed")),
      shuffle=bool(defaults.get(config, "shuffle")),
      options=options, prefetch=prefetch,
      on_skip=train_stream.log_skip(counters))

  # ---- Eval.
  crop_fraction = float(defaults.get(config, "eval_crop_fraction"))

  def decode_eval(record):
    example = source.parse(record)
    image = preprocessing.preprocess_eval(
        example.pop("image"), image_size=image_size, crop_fraction=crop_fraction)
    return dict(example, image=image)

  num_eval, num_eval_batches, eval_batches = eval_stream(
      source, decode_eval, label_fn, process_index=process_index,
      process_count=process_count, batch_size=eval_b, options=options,
      prefetch=prefetch, cache=bool(defaults.get(config, "cache")),
      padding=lambda rows: _padding(rows, image_size, num_classes, source.task),
      counters=counters)

  return DataBundle(
      train=train,
      eval_batches=eval_batches,
      num_train_examples=num_train,
      num_eval_examples=num_eval,
      num_classes=num_classes,
      class_weights=class_weights,
      task=source.task,
      skipped_images=counters.as_dict,
      num_eval_batches=num_eval_batches,
      train_batch_size_local=train_b,
      eval_batch_size_local=eval_b,
  )


def _label_fn(task: str, num_classes: int):
  if task == sources.MULTI_LABEL:
    def fn(example):
      labels = example.pop("labels")
      return dict(example, label=preprocessing.multi_hot(labels, num_classes))
  else:
    def fn(example):
      return dict(example, label=preprocessing.single_label(
          example["label"], num_classes))
  return fn


def _padding(rows: int, image_size: int, num_classes: int, task: str):
  label = (np.zeros([rows, num_classes], np.float32)
           if task == sources.MULTI_LABEL else np.zeros([rows], np.int32))
  return eval_padding(rows, image_size, label=label)


def eval_padding(rows: int, image_size: int, **per_row: np.ndarray) -> dict[str, np.ndarray]:
  """`rows` padding rows of an eval batch: zero images, the task's `per_row` fields
  (label, ...), index -1 and mask 0."""
  return {
      "image": np.zeros([rows, image_size, image_size, 3], np.float32),
      **per_row,
      "index": np.full([rows], -1, np.int64),
      "mask": np.zeros([rows], np.float32),
  }


def check_processes(process_index: int | None, process_count: int | None,
                    start_step: int) -> tuple[int, int]:
  """(process_index, process_count), jax's where None; one-line errors for an index
  outside [0, count) or a negative start step."""
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index {process_index} not in [0, {process_count}).")
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}.")
  return process_index, process_count


def eval_stream(source, decode: Callable, finish: Callable, *, process_index: int,
                process_count: int, batch_size: int, options: tf.data.Options,
                prefetch: int, cache: bool, padding: Callable[[int], dict[str, np.ndarray]],
                counters: Counters, clear_errors: tuple[str, ...] = (train_stream.LABEL_ERROR,),
                what: str = "Eval pass"
                ) -> tuple[int, int, Callable[[], Iterator[dict[str, np.ndarray]]]]:
  """This process's share of `source`'s eval split in stored order, for any task.

  Each record is `decode`d and given `index` (its position in the split); records
  that fail are dropped (counted by `eval_pass`); then `finish` (labels), the cache
  after decoding when `cache`, batches of `batch_size`. Returns (examples in the
  split, batches per pass, a function that starts one pass: `eval_pass`).
  """
  num_eval = source.num_examples("eval") if source.has_eval() else 0
  if not num_eval:
    return 0, 0, lambda: iter(())
  num_batches = math.ceil(math.ceil(num_eval / process_count) / batch_size)
  records, num_local = source.records("eval", process_index, process_count, ordered=True)
  offset = sources.share_bounds(num_eval, process_index, process_count)[0]

  def decode_with_index(k, record):
    return dict(decode(record), index=k + offset)

  ds = records.enumerate().map(
      decode_with_index, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.ignore_errors().map(finish, num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=True)
  if cache:
    ds = ds.cache()
  ds = ds.batch(batch_size).prefetch(prefetch).with_options(options)
  return num_eval, num_batches, lambda: eval_pass(
      ds, num_batches, batch_size, num_local, padding, counters, process_index,
      clear_errors, what)


def eval_pass(dataset: tf.data.Dataset, num_batches: int, batch_size: int,
              expected: int, padding: Callable[[int], dict[str, np.ndarray]],
              counters: Counters, process_index: int,
              clear_errors: tuple[str, ...] = (train_stream.LABEL_ERROR,),
              what: str = "Eval pass") -> Iterator[dict[str, np.ndarray]]:
  """One pass over a process's eval share: exactly `num_batches` batches of
  `batch_size` rows, with `mask` (1 real, 0 padding) and int64 `index`; the tail
  and any missing batches are `padding(rows)`. Counts the examples dropped as
  undecodable (`expected` less those seen) into `counters`; raises errors holding
  one of `clear_errors` as a one-line ValueError."""
  real = 0
  yielded = 0
  iterator = dataset.as_numpy_iterator()
  while True:
    try:
      batch = next(iterator)
    except StopIteration:
      break
    except tf.errors.InvalidArgumentError as e:
      train_stream.raise_if_clear(e, clear_errors)
      raise
    rows = len(batch["index"])
    real += rows
    if yielded >= num_batches:
      raise RuntimeError(
          f"Process {process_index}'s eval share has more than "
          f"{num_batches * batch_size} examples (expected {expected}); does "
          "the source ignore split slicing (e.g. under tfds mock_data with "
          "several processes)?")
    batch["mask"] = np.ones([rows], np.float32)
    batch["index"] = batch["index"].astype(np.int64)
    if rows < batch_size:
      pad = padding(batch_size - rows)
      batch = {k: np.concatenate([batch[k], pad[k]]) for k in pad}
    yielded += 1
    yield batch
  while yielded < num_batches:
    yielded += 1
    yield padding(batch_size)
  skipped = max(expected - real, 0)
  counters.eval_last_pass = skipped
  counters.eval_total += skipped
  log = logging.warning if skipped else logging.info
  log("%s (process %d): %d examples, %d undecodable image(s) skipped, "
      "%d batches.", what, process_index, real, skipped, num_batches)
