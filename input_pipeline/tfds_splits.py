"""Prepared tfds splits: raw-bytes random access, or a message saying how to
prepare them.

`open_tfds_split` returns the split's ArrayRecord data source (tfds
`file_format='array_record'`), or a TFRecord offset index for builds prepared the
old way, and raises `DatasetNotPreparedError` with the `tfds build` command (and
the manual download it needs) when the split is not there.
"""

from __future__ import annotations

import os
from typing import Any

from absl import logging
import tensorflow_datasets as tfds

from input_pipeline import record_readers
from xception_jax import paths


class DatasetNotPreparedError(FileNotFoundError):
  """A tfds dataset is not built in data_dir (the message says how to)."""


def base_name(name: str) -> str:
  """The name before any "/" or ":" ("coco/2017:1.0.0" -> "coco")."""
  return name.split(":")[0].split("/")[0]


def table_lookup(table: dict[str, Any], name: str) -> Any:
  """A per-dataset table's row, by full name ("coco/2017") first, then by the
  name before "/"."""
  full = name.split(":")[0]
  return table.get(full, table.get(base_name(name)))


# Datasets whose archives a person must download; checked before anything else.
MANUAL_FILES: dict[str, tuple[str, ...]] = {
    "imagenet2012": ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"),
}


def open_tfds_split(builder: tfds.core.DatasetBuilder, name: str, split: str):
  """Raw-bytes random access to a prepared tfds split (`len`, `[id]`): its
  ArrayRecord data source, or a TFRecord index for TFRecord builds. Raises
  DatasetNotPreparedError (saying how to build it) when it is not there."""
  try:
    return builder.as_data_source(
        split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
  except NotImplementedError:
    pass  # Not prepared, or prepared as TFRecord.
  try:
    instructions = builder.info.splits[split].file_instructions
  except (KeyError, ValueError, AssertionError) as e:
    raise DatasetNotPreparedError(_not_prepared_message(builder, name)) from e
  spans = [record_readers.FileSpan(os.fspath(f.filename), f.skip, f.take)
           for f in instructions]
  if not spans or not all(paths.isfile(s.path) for s in spans):
    raise DatasetNotPreparedError(_not_prepared_message(builder, name))
  logging.warning(
      "%s (%s) is prepared as TFRecord: indexing %d file(s) for random access "
      "(reads every record header once per start). For large datasets "
      "prepare it as ArrayRecord instead (docs/DATA.md).", name, split,
      len(spans))
  return record_readers.TFRecordIndex(spans)


def _not_prepared_message(builder, name: str) -> str:
  data_dir = os.fspath(builder.data_dir_root)
  manual_dir = paths.join(data_dir, "downloads", "manual")
  files = table_lookup(MANUAL_FILES, name)
  build = (f"tfds build {name} --data_dir={data_dir} --file_format=array_record" +
           (f" --manual_dir={manual_dir}" if files or
            builder.MANUAL_DOWNLOAD_INSTRUCTIONS else ""))
  msg = f"Dataset {name} is not prepared in {data_dir}."
  if files:
    missing = [f for f in files
               if not paths.exists(paths.join(manual_dir, f))]
    if missing:
      msg += (f" It needs a manual download: put {' and '.join(files)} in "
              f"{manual_dir} (missing: {', '.join(missing)}), then build it "
              f"once with: {build}")
    else:
      msg += f" The archives are in {manual_dir}; build it once with: {build}"
  elif builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    msg += (f" It needs a manual download into {manual_dir}:\n"
            f"{builder.MANUAL_DOWNLOAD_INSTRUCTIONS}\nthen build it once with: "
            f"{build}")
  else:
    msg += f" Build it once with: {build}"
  return msg + " (or point config.data_dir at the directory holding it)."
