"""input_pipeline/defaults.py: the data config fields and their defaults."""

import input_pipeline
from input_pipeline import embedded_shapes


def test_default_data_config_fields():
  c = input_pipeline.default_data_config()
  assert set(c.keys()) == {
      "dataset", "data_dir", "train_split", "eval_split", "eval_files", "task",
      "num_classes", "class_weights_file", "batch_size", "eval_batch_size",
      "image_size", "seed", "shuffle", "crop_area_range",
      "crop_aspect_range", "crop_min_object_covered", "eval_crop_fraction",
      "prefetch_batches", "cache", "input_threads", "input_autotune", "embedded",
      "record_index_dir"}
  assert (c.dataset, c.task) == ("embedded_shapes", "multi_label")
  assert tuple(c.crop_area_range) == (0.08, 1.0)
  assert tuple(c.crop_aspect_range) == (3 / 4, 4 / 3)
  assert c.eval_crop_fraction == 0.875 and c.crop_min_object_covered == 0.1
  assert c.embedded.to_dict() == embedded_shapes.DEFAULT_PARAMS
  # Each call is a fresh object: configs may mutate it freely.
  c.embedded.num_train = 1
  assert input_pipeline.default_data_config().embedded.num_train == 4000


def test_input_autotune_reaches_the_tf_data_options():
  from input_pipeline import pipeline  # pylint: disable=import-outside-toplevel
  c = input_pipeline.default_data_config()
  assert c.input_autotune is True
  assert pipeline._tf_options(c).autotune.enabled is True  # pylint: disable=protected-access
  c.input_autotune = False
  assert pipeline._tf_options(c).autotune.enabled is False  # pylint: disable=protected-access
