"""Input pipelines: ImageNet-style single-label and JFT-style multi-label data.

  import input_pipeline
  bundle = input_pipeline.create_datasets(
      config, process_index=jax.process_index(),
      process_count=jax.process_count(), start_step=0)

See pipeline.py for the streams' contract, sources.py for the accepted
datasets, defaults.py for the config fields and docs/DATA.md for an overview.
"""

from input_pipeline.pipeline import configure_tensorflow

configure_tensorflow()

# Importing registers the "embedded_shapes" tfds builder.
from input_pipeline import embedded_shapes  # pylint: disable=g-import-not-at-top,wrong-import-position
# Segmentation: registers "embedded_shapes_segmentation" and "voc_segmentation".
from input_pipeline.segmentation_pipeline import create_segmentation_datasets  # pylint: disable=wrong-import-position
from input_pipeline.segmentation_pipeline import segmentation_data_config  # pylint: disable=wrong-import-position
from input_pipeline.defaults import default_data_config  # pylint: disable=wrong-import-position
from input_pipeline.pipeline import DataBundle  # pylint: disable=wrong-import-position
from input_pipeline.pipeline import create_datasets  # pylint: disable=wrong-import-position
from input_pipeline.sources import DatasetNotPreparedError  # pylint: disable=wrong-import-position

__all__ = [
    "create_datasets", "DataBundle", "default_data_config",
    "DatasetNotPreparedError", "embedded_shapes", "configure_tensorflow",
    "create_segmentation_datasets", "segmentation_data_config",
]
