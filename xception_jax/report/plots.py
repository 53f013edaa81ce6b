"""PNG plots like the paper's Figures 6-10: one metric against gradient steps, one
line per run, labelled by the run (config.experiment, else its workdir's name)."""
from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

from xception_jax import paths  # pylint: disable=wrong-import-position
from xception_jax.report.runs import Run  # pylint: disable=wrong-import-position

FIGSIZE = (6.4, 4.0)  # inches; at DPI, 640 x 400 pixels
DPI = 100
TITLES = {"train_loss": "training loss", "eval_top_1": "top-1 accuracy (eval)",
          "eval_top_5": "top-5 accuracy (eval)", "eval_loss": "loss (eval)",
          "eval_precision_at_1": "precision@1 (eval)",
          "eval_precision_at_5": "precision@5 (eval)",
          "eval_mean_iou": "mean IoU (eval)", "eval_pixel_accuracy": "pixel accuracy (eval)"}


def metric_title(tag: str) -> str:
  if tag.startswith("eval_map_at_"):
    return f"MAP@{tag.rsplit('_', 1)[-1]} (eval)"
  return TITLES.get(tag, tag)


def plot_metric(runs: Sequence[Run], tag: str, path: str, title: str = "") -> bool:
  """Writes the plot of `tag` for `runs` to `path`; False (no file) when no run
  logged the tag."""
  curves = [(run.label, *run.series(tag)) for run in runs]
  curves = [c for c in curves if c[1].size]
  if not curves:
    return False
  figure, axes = plt.subplots(figsize=FIGSIZE, dpi=DPI)
  for label, steps, values in curves:
    axes.plot(steps, values, marker="o" if steps.size < 12 else None, markersize=3,
              label=label)
  axes.set_xlabel("gradient steps")
  axes.set_ylabel(metric_title(tag))
  if title:
    axes.set_title(title, fontsize=10)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=8)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=DPI)
  paths.write_bytes(path, buffer.getvalue())  # local or gs://
  plt.close(figure)
  return True
