"""Converts TFRecord shards to ArrayRecord shards (random access by record id).

  python -m input_pipeline.convert_tfrecords IN_GLOB OUT_DIR

Each input file `name.tfrecord` (sorted by name) becomes `OUT_DIR/name.array_record`
holding the same records in the same order, so the global record ids, and hence
the train stream and the eval `index`, are unchanged. Records are copied as bytes
(not parsed). Point the config at the new files:

  config.dataset = "tfrecord_multilabel:OUT_DIR/train-*.array_record"

TFRecord files are also read directly (through a record-offset index built once
by reading each record's header, stored beside them); conversion suits corpora of
millions of records on a local disk. IN_GLOB may be remote (gs://...); OUT_DIR must
be local (the array_record package writes local files only).
"""

from __future__ import annotations

import argparse
import os
import time

from input_pipeline import record_readers
from xception_jax import paths

# One record per chunk: reading record i touches only record i.
WRITER_OPTIONS = "group_size:1"


def output_path(path: str, out_dir: str) -> str:
  name = os.path.basename(path)
  stem = name[:-len(".tfrecord")] if name.endswith(".tfrecord") else name
  return os.path.join(out_dir, stem + ".array_record")


def convert(in_glob: str, out_dir: str) -> list[tuple[str, int]]:
  """Writes one ArrayRecord file per TFRecord file; returns (path, count)s."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  if paths.is_remote(out_dir):
    raise ValueError(f"OUT_DIR {out_dir!r}: ArrayRecord files are written to a local "
                     "directory only; convert locally, then copy them.")
  files = record_readers.data_files(in_glob)
  if not files:
    raise FileNotFoundError(f"No files match {in_glob!r}.")
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for path in files:
    out = output_path(path, out_dir)
    tmp = out + ".incomplete"
    writer = array_record_module.ArrayRecordWriter(tmp, WRITER_OPTIONS)
    offsets, lengths = record_readers.scan_tfrecord(path)
    reader = paths.RangeReader(path)
    for offset, length in zip(offsets, lengths):
      writer.write(reader.read(int(offset), int(length)))
    reader.close()
    count = len(offsets)
    writer.close()
    os.replace(tmp, out)
    written.append((out, count))
  return written


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("in_glob", help="TFRecord files, e.g. '/data/train-*.tfrecord'")
  parser.add_argument("out_dir")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  written = convert(args.in_glob, args.out_dir)
  total = sum(n for _, n in written)
  print(f"Wrote {len(written)} ArrayRecord file(s), {total} records, to "
        f"{args.out_dir} in {time.perf_counter() - start:.1f} s.")


if __name__ == "__main__":
  main()
