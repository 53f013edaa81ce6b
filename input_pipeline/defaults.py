"""The input-pipeline config fields and their defaults, in one place.

Optional fields are `config_dict.placeholder`s (None until set) so that the command
line can set them (`--config.data_dir=/data`); a plain None could not be overridden.

Project configs start from `default_data_config()` and override fields:

  config = default_data_config()
  config.dataset = "imagenet2012"
  config.task = "single_label"
  config.image_size = 299
"""

import ml_collections
from ml_collections import config_dict

from xception_jax import host


def default_data_config() -> ml_collections.ConfigDict:
  """Defaults: the embedded multi-label dataset (no download, CPU minutes)."""
  c = ml_collections.ConfigDict()
  # Which data. A tfds name ("imagenet2012", "voc/2012", "coco/2017",
  # "open_images_v4", ...), "embedded_shapes", "folder:/path/to/root" or
  # "tfrecord_multilabel:/path/train-*.tfrecord".
  c.dataset = "embedded_shapes"
  c.data_dir = config_dict.placeholder(str)  # tfds data_dir; None = tfds default (~/tensorflow_datasets).
  c.train_split = "train"
  c.eval_split = "validation"  # "" (or None): no eval stream.
  c.eval_files = config_dict.placeholder(str)  # Eval shards (glob) for "tfrecord_multilabel:".
  c.task = "multi_label"  # "single_label" | "multi_label".
  c.num_classes = config_dict.placeholder(int)  # None: the dataset's; if set, must match it.
  c.class_weights_file = config_dict.placeholder(str)  # One weight per line; multi-label evaluation.

  # Batches (global; each process loads batch_size // process_count).
  c.batch_size = 64
  c.eval_batch_size = 64
  c.image_size = 96  # Model input side S (the paper: 299).

  # Order and augmentation.
  c.seed = 0
  # Train order: a seeded permutation of the whole split per epoch (False: the
  # stored order, e.g. to debug a dataset). input_pipeline/train_stream.py.
  c.shuffle = True
  c.crop_area_range = (0.08, 1.0)  # Fraction of the image area.
  c.crop_aspect_range = (3 / 4, 4 / 3)  # Width / height of the crop.
  c.crop_min_object_covered = 0.1  # Inception's value.
  c.eval_crop_fraction = 0.875  # Central crop kept per side at evaluation.

  # Throughput.
  c.prefetch_batches = 2
  c.cache = False  # Cache the decoded eval rows in RAM (train records are read by id).
  # tf.data threads per dataset (and the autotuner's CPU budget); None = the CPUs this
  # process may run on (its affinity mask: taskset, SLURM --cpus-per-task; xception_jax/host.py).
  c.input_threads = config_dict.placeholder(int)
  # tf.data autotuning. Its optimisation thread can hold up the destruction of a train
  # iterator that ran many epochs by 5-50 s (seen at the end of the demo).
  c.input_autotune = True

  # The embedded dataset (dataset = "embedded_shapes"): generated once into
  # data_dir, reused after.
  c.embedded = ml_collections.ConfigDict(dict(
      num_train=4000,
      num_eval=500,
      image_size=96,  # Stored resolution (the pipeline resizes to image_size).
      num_classes=20,  # <= 24: 4 colours x 6 shapes.
      max_objects=4,
      seed=0,
      zipf_exponent=1.0,  # Class frequency ~ 1 / rank ** zipf_exponent.
  ))
  return c


_DEFAULTS = default_data_config()


def get(config, key: str, fallback: ml_collections.ConfigDict = _DEFAULTS):
  """config[key]; `fallback`'s (the defaults above, or a task's own, e.g.
  segmentation_pipeline.py's) when a (test) config lacks the field."""
  if key in config:
    return config[key]
  return fallback[key]


def input_threads(config) -> int:
  """config.input_threads, or (None) the CPUs this process may run on."""
  threads = get(config, "input_threads")
  return int(threads) if threads else host.available_cpus()
