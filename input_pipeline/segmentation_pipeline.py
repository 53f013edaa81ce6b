"""Train and eval streams for semantic segmentation: `create_segmentation_datasets`.

The same contract as the classification streams (pipeline.py), with an image
and its class map per example:

Train stream. The classification one (train_stream.TrainStream), with DeepLab's
augmentation and the mask checks as its `augment` and `label_fn`: global step s holds global stream positions [s * B, (s + 1) * B); position g
shows record permutation_e(g % N) of epoch e = g // N, a seeded bijection of
the whole train split per epoch (identity when config.shuffle is False), read
by id (segmentation_sources.py: the tfds ArrayRecord data source, or a TFRecord
offset index). Each example gets DeepLab's augmentation
(segmentation_preprocessing.py: random scale, pad with the ignore label,
random crop of image_size, random flip, the same for the image and its class
map) from stateless ops seeded by (config.seed, g). Process p of P reads and
yields only rows [p * B / P, (p + 1) * B / P) of every global batch. The
batches are therefore a function of (config, step) alone, whatever the
process and device counts, and resuming at any step costs the same (nothing
before it is read). Batches: {"image": float32 [B_local, S, S, 3] in [-1, 1],
"label": int32 [B_local, S, S]} with S = config.image_size and 255 = ignore.

Eval stream. The process's share of the eval split in stored order (read by
id too; cached after decoding when config.cache is set); each image
at full size (downscaled to fit only if a side exceeds the eval size), padded
to E x E with E = config.eval_image_size (default image_size): {"image"
[B, E, E, 3], "label" int32 [B, E, E] (255 in the padding), "size" int32
[B, 2] (true height, width), "index" int64 [B] (position in the split), "mask"
float32 [B] (1 real row, 0 padding row)}. Every process yields
ceil(ceil(N / P) / B_local) batches; padding rows have mask 0, index -1, a zero
image and an all-255 label.

Bad data, as in pipeline.py: a train example whose image or mask fails to
decode is replaced by the next decodable record of the same epoch's
permutation (with its own position's augmentation seed; the rest of the stream
is unchanged); an eval example that fails is dropped; both are counted
(`bundle.skipped_images()`) and logged. A mask value with no class, or a mask
whose size differs from its image, is an error (ValueError naming the dataset).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from input_pipeline import defaults
from input_pipeline import embedded_shapes_segmentation  # pylint: disable=unused-import  (registers the builder)
from input_pipeline import pipeline
from input_pipeline import segmentation_preprocessing
from input_pipeline import segmentation_sources
from input_pipeline.segmentation_defaults import TASK, segmentation_data_config  # pylint: disable=unused-import  (re-exported)
from input_pipeline import train_stream

IGNORE_LABEL = segmentation_preprocessing.IGNORE_LABEL


_SEG_DEFAULTS = segmentation_data_config()


def get(config, key: str):
  """config[key]; the segmentation default when the config lacks the field."""
  return defaults.get(config, key, _SEG_DEFAULTS)


@dataclasses.dataclass
class SegmentationDataBundle(pipeline.DataBundle):
  """`DataBundle` (task 'segmentation', class_weights None) plus these."""

  ignore_label: int
  image_size: int
  eval_image_size: int


# Data errors that are raised, not skipped.
_CLEAR_ERRORS = (segmentation_sources.LABEL_ERROR, segmentation_sources.SIZE_ERROR)


def create_segmentation_datasets(config, process_index: int | None = None,
                                 process_count: int | None = None,
                                 start_step: int = 0) -> SegmentationDataBundle:
  """This process's train iterator and eval-pass factory (module docstring).

  Args:
    config: a ConfigDict with the fields of `segmentation_data_config()`.
    process_index, process_count: default jax.process_index(), jax.process_count().
    start_step: the train step to start at (the stream equals the start_step=0
      stream without its first start_step batches).
  """
  process_index, process_count = pipeline.check_processes(process_index, process_count,
                                                          start_step)
  if get(config, "task") != TASK:
    raise ValueError(f"config.task must be '{TASK}' for segmentation data, got "
                     f"{get(config, 'task')!r}.")
  train_b = pipeline.local_batch_size(config, "batch_size", process_count)
  eval_b = pipeline.local_batch_size(config, "eval_batch_size", process_count)
  image_size = int(get(config, "image_size"))
  eval_size = int(get(config, "eval_image_size") or image_size)
  min_scale, max_scale = float(get(config, "min_scale_factor")), float(
      get(config, "max_scale_factor"))
  scale_step = float(get(config, "scale_factor_step_size"))
  segmentation_preprocessing.scale_factor(  # Checks the fields before any work.
      tf.constant([0, 0], tf.int64), min_scale, max_scale, scale_step)
  pipeline.configure_tensorflow()

  source = segmentation_sources.open_source(config, lambda key: get(config, key))
  segmentation_sources.check_num_classes(source, get(config, "num_classes"))
  counters = pipeline.Counters()
  options = pipeline._tf_options(config)  # pylint: disable=protected-access
  prefetch = int(get(config, "prefetch_batches"))
  cache = bool(get(config, "cache"))

  # ---- Train.
  num_train = source.num_examples("train")
  if num_train <= 0:
    raise ValueError(f"{source.name} has no train examples.")

  def augment(example, seed):
    # The mask's checks run in label_fn (source.check_label): after the stream's
    # filter of undecodable records, so a bad mask is an error, not a skip.
    label, checks = source.label_unchecked(example["mask"], example["image"])
    image, label = segmentation_preprocessing.preprocess_train(
        example["image"], label, seed, crop_size=image_size, min_scale=min_scale,
        max_scale=max_scale, scale_step=scale_step, ignore_label=IGNORE_LABEL)
    return dict(checks, image=image, label=label)

  train = train_stream.TrainStream(
      lookup=source.lookup("train"), parse=source.decode, num_examples=num_train,
      augment=augment, label_fn=source.check_label,
      process_index=process_index, process_count=process_count,
      local_batch=train_b, start_step=start_step,
      seed=int(get(config, "seed")), shuffle=bool(get(config, "shuffle")),
      options=options, prefetch=prefetch,
      on_skip=train_stream.log_skip(counters), clear_errors=_CLEAR_ERRORS)

  # ---- Eval.
  def prepare_eval(example):
    label = source.to_label(example["mask"], example["image"])
    image, label, size = segmentation_preprocessing.preprocess_eval(
        example["image"], label, eval_size=eval_size, ignore_label=IGNORE_LABEL)
    return {"image": image, "label": label, "size": size, "index": example["index"]}

  num_eval, num_eval_batches, eval_batches = pipeline.eval_stream(
      source, source.decode, prepare_eval, process_index=process_index,
      process_count=process_count, batch_size=eval_b, options=options,
      prefetch=prefetch, cache=cache, padding=lambda rows: _padding(rows, eval_size),
      counters=counters, clear_errors=_CLEAR_ERRORS, what="Segmentation eval pass")

  return SegmentationDataBundle(
      train=train,
      eval_batches=eval_batches,
      num_train_examples=num_train,
      num_eval_examples=num_eval,
      num_classes=source.num_classes,
      class_weights=None,
      task=TASK,
      skipped_images=counters.as_dict,
      num_eval_batches=num_eval_batches,
      train_batch_size_local=train_b,
      eval_batch_size_local=eval_b,
      ignore_label=IGNORE_LABEL,
      image_size=image_size,
      eval_image_size=eval_size,
  )


def _padding(rows: int, size: int) -> dict[str, np.ndarray]:
  return pipeline.eval_padding(rows, size,
                               label=np.full([rows, size, size], IGNORE_LABEL, np.int32),
                               size=np.zeros([rows, 2], np.int32))
