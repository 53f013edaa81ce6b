"""The benchmark's segmentation branch, through its public entry (flags -> options -> run):
DeepLab v3+'s evaluation step with multi-scale, flipped inference.

No timing is asserted. The FLOPs per image of the table must be XLA's cost analysis of
`segmentation_steps.eval_step` with the config's eval_scales and eval_flip, compiled
here without the benchmark's code (so a benchmark that timed the single-scale step, or
the classification step, fails: their programs cost less).
"""
from __future__ import annotations

import functools
import io
import sys

import jax
import jax.numpy as jnp
import pytest
from absl import flags

from test_benchmark import trainer_parts
from xception_jax import benchmark, segmentation_steps

SCALES = (1.0, 1.5)
ARGV = ["--config=configs/deeplab_demo.py", "--num_classes=5", "--image_size=33",
        "--batch_size=2", "--steps=1", "--warmup=0", "--num_devices=1", "--mode=eval",
        "--depthwise_impl=feature_group", "--num_middle_blocks=1",
        f"--config.eval_scales={SCALES}", "--config.eval_flip=True"]


def _parse(argv, monkeypatch):
  flag_values = flags.FlagValues()
  benchmark.define_flags(flag_values)
  # ml_collections reads the --config.FIELD overrides from sys.argv, as on the command line.
  monkeypatch.setattr(sys, "argv", ["benchmark"] + argv)
  flag_values(["benchmark"] + argv)
  return benchmark.options_from_flags(flag_values)


def _independent_cost(config, scales, flip) -> float:
  model, _, state, state_sharding, data, replicated = trainer_parts(config)
  b, s = config.batch_size, config.image_size
  batch = {"image": jax.ShapeDtypeStruct((b, s, s, 3), jnp.float32),
           "label": jax.ShapeDtypeStruct((b, s, s), jnp.int32),
           "mask": jax.ShapeDtypeStruct((b,), jnp.float32)}
  fn = jax.jit(functools.partial(segmentation_steps.eval_step, model=model,
                                 num_classes=config.num_classes, scales=scales, flip=flip),
               in_shardings=(state_sharding, data), out_shardings=(replicated, replicated))
  return fn.lower(state, batch).compile().cost_analysis()["flops"] / b


# Two compilations of a four-pass DeepLab step: ~40 s of CPU with a cold compilation
# cache (15 s warm), so `-m slow`.
@pytest.mark.slow
def test_segmentation_eval_step_with_scales_and_flip(monkeypatch):
  options = _parse(ARGV, monkeypatch)
  config = options.config
  assert config.task == "segmentation" and config.model.architecture == "deeplabv3plus"
  assert tuple(config.eval_scales) == SCALES and config.eval_flip
  out = io.StringIO()
  (result,) = benchmark.run(options, out=out, progress=False)
  table = out.getvalue()
  assert result.mode == "eval" and result.images_per_second > 0
  assert "task segmentation" in table
  expected = _independent_cost(config, SCALES, True)
  assert result.flops_per_image == pytest.approx(expected, rel=1e-6)
  row = next(l for l in table.splitlines() if l.startswith("| feature_group | eval |"))
  assert float(row.split("|")[6]) * 1e9 == pytest.approx(expected, rel=1e-3)
