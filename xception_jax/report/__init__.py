"""`python -m xception_jax.report WORKDIR... --out=DIR`: runs as the paper shows them.

Reads each run's config.json and TensorBoard event files (runs.py) and writes
  DIR/report.md      the table in the layout of the paper's Tables 1-3 (table.py):
                     top-1/top-5 or MAP@100 at the last evaluation, trainable
                     parameters, forward FLOPs per image at the run's image size
                     (XLA cost analysis, cost.py), median training steps/s;
                     segmentation runs: mean IoU, pixel accuracy, the background-only
                     mean IoU, and a table of every class's IoU
  DIR/<metric>.png   a metric against gradient steps, one line per run (plots.py), as
                     the paper's Figures 6-10; with figures (--figure=NAME:RUN,RUN),
                     DIR/<NAME>_<metric>.png for each group of runs
A progress line per run goes to stderr while it reads.
"""
from __future__ import annotations

import sys
from typing import Mapping, Optional, Sequence

from xception_jax import paths
from xception_jax.report import cost, plots, table
from xception_jax.report.runs import Run, read_run

__all__ = ["Run", "read_run", "read_runs", "default_metrics", "write_report"]


def read_runs(workdirs: Sequence[str], stream=sys.stderr) -> list[Run]:
  """Every run, with a progress line per run."""
  if not workdirs:
    raise ValueError("No run given: python -m xception_jax.report WORKDIR... --out=DIR")
  runs = []
  for i, workdir in enumerate(workdirs):
    print(f"\r[{i + 1}/{len(workdirs)}] reading {workdir}", end="", file=stream, flush=True)
    runs.append(read_run(workdir))
  print(f"\r[{len(runs)}/{len(workdirs)}] read {sum(len(r.scalars) for r in runs)} tags "
        f"from {len(runs)} run(s)", file=stream, flush=True)
  return runs


def default_metrics(runs: Sequence[Run]) -> tuple[str, ...]:
  """The paper's figures' metrics: MAP@K (multi-label), top-1 (single-label) or mean
  IoU (segmentation), and the training loss."""
  metrics = []
  for run in runs:
    tag = ("eval_mean_iou" if run.config.get("task") == "segmentation"
           else table.map_tag(run) or "eval_top_1")
    if tag not in metrics:
      metrics.append(tag)
  return (*metrics, "train_loss")


def _run_cost(run: Run) -> tuple[int, float]:
  return cost.model_cost(run.config, run.workdir)


def write_report(workdirs: Sequence[str], out: str,
                 figures: Optional[Mapping[str, tuple[str, Sequence[str]]]] = None,
                 metrics: Optional[Sequence[str]] = None, stream=sys.stderr) -> str:
  """Writes out/report.md and the plots; returns the report's path.

  figures: {name: (title, run labels or workdir names)}; None plots all runs together.
  metrics: tags to plot (default_metrics when None).
  """
  runs = read_runs(workdirs, stream)
  by_name = {}
  for run in runs:
    by_name[run.label] = by_name[paths.basename(run.workdir)] = run
  groups = {"": ("", runs)} if not figures else {
      name: (title, [_find(by_name, member, name) for member in members])
      for name, (title, members) in figures.items()}
  metrics = tuple(metrics or default_metrics(runs))
  paths.makedirs(out)
  print(f"Computing parameters and FLOPs of {len(runs)} model(s) ...", file=stream, flush=True)
  lines = ["# Report", "", table.markdown_table(runs, _run_cost), "",
           "Values at each run's last evaluation; FLOPs of one image's forward pass at the "
           "run's image size (XLA cost analysis, a multiply-add counts 2); steps/s is the "
           "median of the logged intervals.", ""]
  for name, (title, members) in groups.items():
    for metric in metrics:
      filename = f"{name}_{metric}.png" if name else f"{metric}.png"
      if plots.plot_metric(members, metric, paths.join(out, filename), title):
        lines += [f"![{title or metric}: {plots.metric_title(metric)}]({filename})", ""]
  path = paths.join(out, "report.md")
  paths.write_text(path, "\n".join(lines))
  print(f"Wrote {path}", file=stream, flush=True)
  return path


def _find(by_name: Mapping[str, Run], member: str, figure: str) -> Run:
  if member not in by_name:
    raise ValueError(f"Figure {figure!r} names run {member!r}, which is not among the runs "
                     f"read ({', '.join(sorted(by_name))}).")
  return by_name[member]
