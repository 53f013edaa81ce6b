"""Training-step throughput of Xception per depthwise implementation (kept for old commands).

  python benchmarks/bench_train_step.py                       # full width, 150px, batch 8
  python benchmarks/bench_train_step.py --impls=feature_group,shift --image_size=299

A thin wrapper over the benchmark command, `python -m xception_jax.benchmark
--mode=train --depthwise_impl=feature_group,shift` (docs/performance/cpu.md): the old
flags --impls and --steps/--repeats map onto --depthwise_impl and --steps (timed steps
= steps x repeats); every other flag of the command is accepted as it is.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from absl import app, flags  # pylint: disable=wrong-import-position

from xception_jax import benchmark  # pylint: disable=wrong-import-position


def translate(argv: list[str]) -> list[str]:
  """The old flags in the benchmark command's terms; train mode and both kernels."""
  out, steps, repeats = [argv[0], "--mode=train"], 5, 3
  impls = "feature_group,shift"
  for arg in argv[1:]:
    name, _, value = arg.partition("=")
    if name == "--impls":
      impls = value
    elif name == "--steps":
      steps = int(value)
    elif name == "--repeats":
      repeats = int(value)
    else:
      out.append(arg)
  return out + [f"--depthwise_impl={impls}", f"--steps={steps * repeats}"]


if __name__ == "__main__":
  benchmark.define_flags()
  app.run(benchmark.main, argv=translate(sys.argv))
