"""The Markdown table of a set of runs, in the layout of the paper's Tables 1-3.

Table 1 (ImageNet): top-1 and top-5 accuracy; Table 2 (JFT): FastEval14k MAP@100;
Table 3: parameter count and training steps per second. One row per run, with the
values at the run's last evaluation; single-label, multi-label and segmentation runs
get separate tables (segmentation: mean IoU, pixel accuracy and the background-only
mean IoU, then a second table of every class's IoU). Steps/s is the median of the logged `train_steps_per_sec` (the first interval
includes compilation).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from xception_jax.report.runs import Run

Cost = Callable[[Run], tuple[int, float]]
CLASS_IOU = "eval_iou/class_"  # the trainer's per-class IoU tags: eval_iou/class_<c>


def si(value: float) -> str:
  """13_618_940 -> '13.62 M', 1.68e10 -> '16.80 G'."""
  for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
    if abs(value) >= factor:
      return f"{value / factor:.2f} {prefix}"
  return f"{value:.0f}"


def _number(value: Optional[float], digits: int) -> str:
  return "n/a" if value is None else f"{value:.{digits}f}"


def steps_per_sec(run: Run) -> Optional[float]:
  _, values = run.series("train_steps_per_sec")
  return float(np.median(values)) if values.size else None


def map_tag(run: Run) -> Optional[str]:
  """The run's MAP@K tag (eval_map_at_100 for map_k=100), if it logged one."""
  tag = f"eval_map_at_{run.config.get('map_k', 100)}"
  return tag if tag in run.scalars else None


def markdown_table(runs: Sequence[Run], cost: Cost) -> str:
  """One table per task among `runs` (multi-label: MAP@K; single-label: top-1/5)."""
  task = lambda r: r.config.get("task")
  multi = [r for r in runs if task(r) == "multi_label"]
  segmentation = [r for r in runs if task(r) == "segmentation"]
  single = [r for r in runs if task(r) not in ("multi_label", "segmentation")]
  tables = []
  if single:
    rows = ["| Run | Top-1 accuracy | Top-5 accuracy | Parameters | FLOPs / image | "
            "Steps/s | Steps |", "|---|---:|---:|---:|---:|---:|---:|"]
    for run in single:
      rows.append(_row(run, [_number(run.last("eval_top_1"), 3),
                             _number(run.last("eval_top_5"), 3)], cost))
    tables.append("\n".join(rows))
  if multi:
    k = multi[0].config.get("map_k", 100)
    rows = [f"| Run | MAP@{k} | MAP@{k}, random scores | Parameters | FLOPs / image | "
            "Steps/s | Steps |", "|---|---:|---:|---:|---:|---:|---:|"]
    for run in multi:
      tag = map_tag(run)
      value = run.last(tag) if tag else None
      chance = run.last(f"{tag}_random_scores") if tag else None
      rows.append(_row(run, [_number(value, 4), _number(chance, 4)], cost))
    tables.append("\n".join(rows))
  if segmentation:
    rows = ["| Run | Mean IoU | Pixel accuracy | Mean IoU, background everywhere | "
            "Parameters | FLOPs / image | Steps/s | Steps |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for run in segmentation:
      rows.append(_row(run, [_number(run.last("eval_mean_iou"), 4),
                             _number(run.last("eval_pixel_accuracy"), 4),
                             _number(run.last("eval_mean_iou_majority_class"), 4)], cost))
    tables += ["\n".join(rows), per_class_table(segmentation)]
  return "\n\n".join(tables)


def per_class_table(runs: Sequence[Run]) -> str:
  """Every class's IoU at each run's last evaluation (n/a: a class the run never saw)."""
  count = max((int(tag.rsplit("_", 1)[-1]) + 1 for run in runs for tag in run.scalars
               if tag.startswith(CLASS_IOU)), default=0)
  rows = ["| Run | " + " | ".join(f"IoU class {c}" for c in range(count)) + " |",
          "|---|" + "---:|" * count]
  for run in runs:
    values = [run.last(f"{CLASS_IOU}{c}") for c in range(count)]
    rows.append("| " + " | ".join([run.label] + [
        "n/a" if v is None or v != v else f"{v:.3f}" for v in values]) + " |")
  return "\n".join(rows)


def _row(run: Run, metrics: list[str], cost: Cost) -> str:
  params, flops = cost(run)
  steps = max((max(points) for points in run.scalars.values() if points), default=0)
  rate = steps_per_sec(run)
  cells = [run.label, *metrics, f"{params:,}", si(flops),
           "n/a" if rate is None else f"{rate:.2f}", str(steps)]
  return "| " + " | ".join(cells) + " |"
