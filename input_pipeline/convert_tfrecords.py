"""Converts TFRecord shards to ArrayRecord shards (random access by record id).

  python -m input_pipeline.convert_tfrecords IN_GLOB OUT_DIR
  python -m input_pipeline.convert_tfrecords IN_GLOB OUT_DIR --task_index=I --num_tasks=N

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
import sys
import time


from input_pipeline import record_readers
from xception_jax import paths

# One record per chunk: reading record i touches only record i.
WRITER_OPTIONS = "group_size:1"


def output_path(path: str, out_dir: str) -> str:
  name = os.path.basename(path)
  stem = name[:-len(".tfrecord")] if name.endswith(".tfrecord") else name
  return os.path.join(out_dir, stem + ".array_record")


def convert(in_glob: str, out_dir: str, task_index: int = 0, num_tasks: int = 1,
            progress=None) -> list[tuple[str, int]]:
  """Writes one ArrayRecord file per TFRecord file; returns (path, count)s.

  task_index, num_tasks: convert only the files task_index, task_index + num_tasks, ...
  of the sorted list, so that N tasks (a SLURM array, N machines) share a corpus; the
  output names, and therefore the record ids, are those of a single conversion.
  progress: a stream for one line per file written (None: quiet)."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  if not (isinstance(num_tasks, int) and num_tasks >= 1
          and isinstance(task_index, int) and 0 <= task_index < num_tasks):
    raise ValueError(f"--task_index={task_index} --num_tasks={num_tasks}: need "
                     "num_tasks >= 1 and 0 <= task_index < num_tasks.")
  if paths.is_remote(out_dir):
    raise ValueError(f"OUT_DIR {out_dir!r}: ArrayRecord files are written to a local "
                     "directory only; convert locally, then copy them.")
  files = record_readers.data_files(in_glob)
  if not files:
    raise FileNotFoundError(f"No files match {in_glob!r}.")
  os.makedirs(out_dir, exist_ok=True)
  written = []
  mine = files[task_index::num_tasks]
  for i, path in enumerate(mine):
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
    if progress is not None:
      print(f"[{i + 1}/{len(mine)}] {out}: {count} records", file=progress, flush=True)
  return written


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("in_glob", help="TFRecord files, e.g. '/data/train-*.tfrecord'")
  parser.add_argument("out_dir")
  parser.add_argument("--task_index", type=int, default=0,
                      help="this task's number in [0, num_tasks)")
  parser.add_argument("--num_tasks", type=int, default=1,
                      help="tasks sharing the conversion; each takes every num_tasks-th file")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  try:
    written = convert(args.in_glob, args.out_dir, args.task_index, args.num_tasks,
                      progress=sys.stderr)
  except (ValueError, FileNotFoundError) as error:
    parser.exit(2, f"error: {error}\n")
  total = sum(n for _, n in written)
  print(f"Wrote {len(written)} ArrayRecord file(s), {total} records, to "
        f"{args.out_dir} in {time.perf_counter() - start:.1f} s.")


if __name__ == "__main__":
  main()
