"""python -m xception_jax.report WORKDIR... --out=DIR [--figure=NAME:RUN,RUN] [--metrics=TAG,TAG]"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

from absl import app, flags  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Directory for report.md and the PNG plots.")
flags.DEFINE_multi_string("figure", [], "NAME:RUN,RUN,... a plot of these runs only "
                          "(labels or workdir names); repeatable. Default: all runs in one.")
flags.DEFINE_list("metrics", [], "Tags to plot (default: MAP@100 or top-1, and train_loss).")


def main(argv):
  from xception_jax import report  # pylint: disable=import-outside-toplevel
  figures = {}
  for spec in FLAGS.figure:
    name, sep, members = spec.partition(":")
    if not sep or not members:
      raise app.UsageError(f"--figure={spec!r}: expected NAME:RUN,RUN,...")
    figures[name] = (name, [m for m in members.split(",") if m])
  try:
    path = report.write_report(argv[1:], FLAGS.out, figures or None, FLAGS.metrics or None)
  except (ValueError, FileNotFoundError) as e:  # a run that cannot be read: one line
    print(f"\nerror: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"Report: {path}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["out"])
  app.run(main)
