"""The paper's comparisons at small scale, by one command, on CPU.

  python -m xception_jax.study --out=runs/study

Trains every run below with the trainer (xception_jax.train.train_and_evaluate) into
OUT/<run>, on the embedded multi-label dataset with configs/demo.py's recipe (tiny
width, 80x80 images, sigmoid cross-entropy, RMSprop, weighted MAP@100) and the same
number of steps for every run, then writes the report over them (OUT/report.md and
the plots OUT/*.png, xception_jax.report). The runs take their models from
configs/experiments.py:

  xception               Xception (depthwise, no intermediate activation, residual)
  inception_v3           the baseline (Table 1-3, Figures 6-8)
  xception_no_residual   Figure 9
  xception_relu / _elu   Figure 10 (activation between depthwise and pointwise)
  xception_segments_N    the spectrum (sections 2 and 6): N = 1 is a regular
                         convolution, then 2, 4, 8 segments; `xception` is depthwise

Running the command again resumes: finished runs are only evaluated again. On CPU the
runs with 2, 4 or 8 segments are the slow ones (grouped convolutions through
`feature_group_count`, XLA:CPU's slow path; segments=1 is a regular convolution and
depthwise has the fast shift-and-multiply kernel).
`--runs=a,b` picks runs; `--steps` and `--eval_every` set the length. docs/RESULTS.md
holds the table and plots of one full run and the machine it ran on.
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Optional, Sequence

from absl import app, flags, logging

RUNS = {  # study run: the experiment of configs/experiments.py whose model it trains
    "xception": "imagenet_xception",
    "inception_v3": "imagenet_inception_v3",
    "xception_no_residual": "imagenet_xception_no_residual",
    "xception_relu": "imagenet_xception_relu",
    "xception_elu": "imagenet_xception_elu",
    "xception_segments_1": "imagenet_xception_segments_1",
    "xception_segments_2": "imagenet_xception_segments_2",
    "xception_segments_4": "imagenet_xception_segments_4",
    "xception_segments_8": "imagenet_xception_segments_8",
}
# The plots, as in the paper's figures: name -> (title, runs).
FIGURES = {
    "xception_vs_inception_v3": ("Xception vs Inception V3 (Figures 6-8)",
                                 ("xception", "inception_v3")),
    "residual": ("Residual connections (Figure 9)", ("xception", "xception_no_residual")),
    "activation": ("Activation between depthwise and pointwise (Figure 10)",
                   ("xception", "xception_relu", "xception_elu")),
    "spectrum": ("Segments of the spatial convolution (the spectrum, section 6)",
                 ("xception_segments_1", "xception_segments_2", "xception_segments_4",
                  "xception_segments_8", "xception")),
}
DEFAULT_STEPS = 300
METRICS = ("eval_map_at_100", "train_loss")


def run_config(name: str, steps: int, eval_every: int,
               overrides: Optional[Mapping[str, Any]] = None):
  """configs/demo.py with run `name`'s model and the study's length."""
  from configs import demo, experiments  # pylint: disable=import-outside-toplevel
  if name not in RUNS:
    raise ValueError(f"Unknown study run {name!r}; known: {', '.join(RUNS)}.")
  config = experiments.apply_experiment(demo.get_config(), RUNS[name])
  config.experiment = name
  config.num_train_steps = steps
  config.eval_every_steps = eval_every
  config.log_every_steps = max(1, min(25, steps // 10))
  config.checkpoint_every_steps = steps
  config.progress_every_secs = 120.0
  config.update_from_flattened_dict(dict(overrides or {}))
  return config


def run_study(out: str, steps: int = DEFAULT_STEPS, eval_every: Optional[int] = None,
              runs: Sequence[str] = tuple(RUNS),
              overrides: Optional[Mapping[str, Any]] = None) -> str:
  """Trains every run of `runs` into out/<run> and writes the report; returns the
  report's path."""
  from xception_jax import paths, report, train  # pylint: disable=import-outside-toplevel
  if steps <= 0:
    raise ValueError(f"--steps must be positive; got {steps}.")
  eval_every = eval_every or max(1, steps // 6)
  configs = {name: run_config(name, steps, eval_every, overrides) for name in runs}
  for i, (name, config) in enumerate(configs.items()):
    start = time.perf_counter()
    logging.info("Study run %d of %d: %s (%s).", i + 1, len(configs), name, RUNS[name])
    results = train.train_and_evaluate(config, paths.join(out, name))
    logging.info("%s: MAP@100 %.4f after %d steps, %.0f s.", name,
                 results.get("eval_map_at_100", float("nan")), steps,
                 time.perf_counter() - start)
  figures = {key: (title, [r for r in members if r in configs])
             for key, (title, members) in FIGURES.items()}
  figures = {key: value for key, value in figures.items() if len(value[1]) > 1}
  return report.write_report([paths.join(out, name) for name in configs], out,
                             figures=figures, metrics=METRICS)


FLAGS = flags.FLAGS
flags.DEFINE_string("out", None, "Directory for the runs and the report.")
flags.DEFINE_integer("steps", DEFAULT_STEPS, "Training steps of every run.")
flags.DEFINE_integer("eval_every", None, "Steps between evaluations (default steps / 6).")
flags.DEFINE_list("runs", list(RUNS), "Study runs to train (default: all).")
flags.DEFINE_string("data_dir", None, "tfds data_dir of the embedded dataset "
                    "(default: configs/demo.py's).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  from xception_jax import logs  # pylint: disable=import-outside-toplevel
  logs.quiet_library_logs()
  overrides = {"data_dir": FLAGS.data_dir} if FLAGS.data_dir else None
  path = run_study(FLAGS.out, FLAGS.steps, FLAGS.eval_every, FLAGS.runs, overrides)
  print(f"Report: {path}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["out"])
  app.run(main)
