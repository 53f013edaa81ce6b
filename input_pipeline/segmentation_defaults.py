"""The segmentation data config fields and their defaults (no TensorFlow).

configs/deeplab_voc.py builds on `segmentation_data_config()`; importing it must not
import TensorFlow or tfds, so that a config can be read (by the benchmark, on an
accelerator image without them) without the input pipeline. segmentation_pipeline.py
re-exports it; embedded_shapes_segmentation.py takes its name and parameters from here.
"""
import ml_collections
from ml_collections import config_dict

from input_pipeline.defaults import default_data_config

TASK = "segmentation"
EMBEDDED_NAME = "embedded_shapes_segmentation"  # the tfds builder's name
EMBEDDED_PARAMS = dict(
    num_train=1000, num_eval=200, image_size=64, num_classes=8,
    max_objects=3, seed=0, zipf_exponent=0.0)


def segmentation_data_config() -> ml_collections.ConfigDict:
  """The data fields of a segmentation run: default_data_config() plus these."""
  c = default_data_config()
  c.task = TASK
  # "embedded_shapes_segmentation" (generated locally), "voc_segmentation"
  # (manual download, voc_segmentation.py), "oxford_iiit_pet" (tfds).
  c.dataset = EMBEDDED_NAME
  c.train_split = "train"
  c.eval_split = "validation"  # VOC: "validation"; oxford_iiit_pet: "test".
  c.batch_size = 16
  c.eval_batch_size = 16
  c.image_size = 64  # Train crop side (DeepLab: 513).
  c.eval_image_size = config_dict.placeholder(int)  # Padded eval side; None: image_size (VOC: 513).
  # DeepLab's random scale: a factor in {min, min + step, ..., max} (step 0: continuous).
  c.min_scale_factor = 0.5
  c.max_scale_factor = 2.0
  c.scale_factor_step_size = 0.25
  c.embedded_segmentation = ml_collections.ConfigDict(dict(EMBEDDED_PARAMS))
  return c
