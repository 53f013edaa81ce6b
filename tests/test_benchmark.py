"""The benchmark command (xception_jax/benchmark.py): its table, its FLOP count, its errors.

No timing is asserted: the machine is shared and benchmarks only print numbers. The
FLOPs per image of the table are checked against XLA's cost analysis of the trainer's
step compiled here without the benchmark's code, and the counting helper against a
hand count for a tiny conv net.
"""
from __future__ import annotations

import functools
import io
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from jax import lax

from xception_jax import benchmark, hardware, optim, partitioning, step_timing, steps
from xception_jax.models import depthwise, factory
from xception_jax.native import blas
from xception_jax.tasks import single_label

TINY = ["--width_multiplier=0.0625", "--num_middle_blocks=1", "--image_size=71",
        "--batch_size=2", "--steps=2", "--warmup=0", "--num_devices=1",
        "--depthwise_impl=feature_group"]


def parse(argv: list[str]) -> benchmark.Options:
  flag_values = flags.FlagValues()
  benchmark.define_flags(flag_values)
  flag_values(["benchmark"] + argv)
  return benchmark.options_from_flags(flag_values)


@pytest.fixture(scope="module")
def tiny_run():
  options = parse(TINY + ["--mode=both"])
  out = io.StringIO()
  results = benchmark.run(options, out=out, progress=False)
  return options, results, out.getvalue()


def _row(table: str, mode: str) -> list[str]:
  rows = [line for line in table.splitlines() if line.startswith(f"| feature_group | {mode} |")]
  assert len(rows) == 1, table
  return [cell.strip() for cell in rows[0].strip("|").split("|")]


def test_table_has_train_and_eval_rows(tiny_run):
  options, results, table = tiny_run
  assert [r.mode for r in results] == ["train", "eval"]
  for mode in ("train", "eval"):
    cells = _row(table, mode)
    assert float(cells[2]) > 0 and float(cells[4]) > 0          # images/s, compile s
    assert cells[7].endswith("%") and float(cells[7][:-1]) > 0  # MFU
    assert float(cells[9]) > 0                                   # peak memory MiB
  assert "estimated:" in table and "FP32 FLOP/cycle" in table     # CPU peak, said so
  assert "process peak RSS" in table
  # The products' engine 'auto' picked on CPU, and its library.
  engine = f"blas ({blas.library_path()})" if blas.available() else "xla"
  assert f"pointwise products: {engine}" in table
  assert options.config.model.width_multiplier == 0.0625
  assert len(results[0].step_seconds) == 2


def trainer_parts(config):
  """(model, optimiser, abstract state, state sharding, data sharding, replicated) as
  train.Trainer builds them on one device (feature_group depthwise, XLA's products: the
  operations XLA's cost analysis counts), without the benchmark's code."""
  mesh = partitioning.create_mesh(1)
  data, replicated = partitioning.data_sharding(mesh), partitioning.replicated(mesh)
  model = factory.create_model(config.model, num_classes=config.num_classes,
                               depthwise_impl="feature_group", pointwise_impl="xla")
  tx = optim.create_optimizer(config, 1000)
  state = jax.eval_shape(functools.partial(steps.create_train_state, model, tx,
                                           image_size=config.image_size), jax.random.key(0))
  return model, tx, state, partitioning.tree_shardings(state, mesh, []), data, replicated


def _independent_cost(config, mode: str) -> float:
  """XLA's cost analysis of the trainer's step, compiled here without the benchmark's
  code (with train.Trainer's shardings on one device, so that the program is the same
  and the session's compilation cache serves it)."""
  model, tx, state, state_sharding, data, replicated = trainer_parts(config)
  b, s = config.batch_size, config.image_size
  batch = {"image": jax.ShapeDtypeStruct((b, s, s, 3), jnp.float32),
           "label": jax.ShapeDtypeStruct((b,), jnp.int32),
           "mask": jax.ShapeDtypeStruct((b,), jnp.float32)}
  if mode == "train":
    fn = jax.jit(functools.partial(
        steps.train_step, model=model, tx=tx, objective=single_label.objective(config),
        schedule=optim.learning_rate_schedule(config, 1000)),
        in_shardings=(state_sharding, data, replicated),
        out_shardings=(state_sharding, replicated), donate_argnums=0)
    lowered = fn.lower(state, batch, jax.random.key(1))
  else:
    fn = jax.jit(single_label.eval_step(config, None, model),
                 in_shardings=(state_sharding, data), out_shardings=(replicated, data))
    lowered = fn.lower(state, batch)
  return lowered.compile().cost_analysis()["flops"] / b


# The independent compilation of the training step costs ~25 s of CPU: `-m slow`.
@pytest.mark.parametrize("mode", [pytest.param("train", marks=pytest.mark.slow), "eval"])
def test_flops_per_image_is_xla_cost_of_the_trainers_step(tiny_run, mode):
  options, results, table = tiny_run
  expected = _independent_cost(options.config, mode)
  result = {r.mode: r for r in results}[mode]
  assert result.flops_per_image == pytest.approx(expected, rel=1e-6)
  printed = float(_row(table, mode)[5]) * 1e9
  assert printed == pytest.approx(expected, rel=1e-3)
  achieved = float(_row(table, mode)[6]) * 1e12
  assert achieved == pytest.approx(expected * result.images_per_second, rel=2e-2)


def test_flops_helper_matches_a_hand_count():
  """A 3x3 'SAME' convolution and a 1x1 projection (a product over channels).

  XLA counts a multiply-add as 2 FLOP and, for a padded window, only the taps that
  fall on the image: along a side of H pixels a 3-tap window has 3H - 2 valid taps."""
  n, h, c_in, c_mid, c_out = 3, 9, 4, 6, 5

  def net(x, k3, w1):
    y = lax.conv_general_dilated(x, k3, (1, 1), "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.einsum("nhwc,cd->nhwd", y, w1)

  args = (jnp.ones((n, h, h, c_in)), jnp.ones((3, 3, c_in, c_mid)), jnp.ones((c_mid, c_out)))
  compiled = jax.jit(net).lower(*args).compile()
  valid_taps = (3 * h - 2) ** 2
  hand = 2 * c_in * c_mid * valid_taps + 2 * h * h * c_mid * c_out
  assert step_timing.flops_per_image(compiled, n, num_devices=1) == hand


def test_cpu_flops_per_cycle():
  assert hardware.cpu_flops_per_cycle({"avx", "avx2", "fma"}, "AuthenticAMD")[0] == 32
  assert hardware.cpu_flops_per_cycle({"avx", "avx2", "fma", "avx512f"}, "GenuineIntel")[0] == 64
  assert hardware.cpu_flops_per_cycle({"avx", "avx2", "fma", "avx512f"}, "AuthenticAMD")[0] == 32
  peak, how = hardware.cpu_peak()
  assert peak > 0 and how.startswith("estimated:")


def test_given_peak_is_used():
  peak, how = hardware.device_peak("float32", 2, given_tflops=1.5)
  assert peak == 3e12 and "--peak_tflops" in how


def test_implementations_are_read_from_the_registry_at_run_time(monkeypatch):
  monkeypatch.setitem(depthwise.DEPTHWISE_IMPLEMENTATIONS, "made_up_kernel",
                      depthwise.depthwise_conv_feature_group)
  options = parse(TINY + ["--depthwise_impl=made_up_kernel,auto"])
  assert options.depthwise_impls == ("made_up_kernel", "auto")


def test_defaults_are_the_cpu_target():
  options = parse([])
  config = options.config
  assert (config.batch_size, config.image_size, config.model.dtype) == (8, 150, "float32")
  assert (config.num_classes, config.optimizer, config.task) == (1000, "sgd", "single_label")
  assert options.modes == ("train", "eval")


def test_config_file_and_variant():
  options = parse(["--config=configs/demo.py:relu", "--mode=train"])
  assert options.config.model.intermediate_activation == "relu"
  assert options.config.num_classes == options.config.embedded.num_classes  # the dataset's
  assert options.config.image_size == 80 and options.modes == ("train",)


def test_remat_policies_are_rows_and_named_in_the_table():
  options = parse(TINY + ["--remat=none,block_save_convs"])
  assert options.remats == ("none", "block_save_convs")
  assert parse(TINY).remats == (None,)  # the config's model.remat
  rows = [step_timing.Result("shift", "train", 2, [0.5], 1.0, 1e9, 2**20, 2**21, remat=r)
          for r in options.remats]
  table = benchmark.format_table(rows, None).splitlines()
  assert table[0].endswith("| remat |")
  assert [line.rsplit("|", 2)[1].strip() for line in table[2:]] == ["none", "block_save_convs"]


def test_remat_reaches_the_compiled_step():
  """The row's policy is the model's: a 'block' step computes more (recomputation)."""
  config = parse(TINY).config
  runners = {p: step_timing.StepRunner(config, "train", "feature_group", progress=False,
                                       remat=p) for p in ("none", "block")}
  assert runners["block"].model.remat == "block" and runners["none"].model.remat == "none"
  assert runners["block"].flops_per_image > runners["none"].flops_per_image


def test_architecture_switch_keeps_shared_fields():
  options = parse(["--architecture=xception65", "--width_multiplier=0.25"])
  model = options.config.model
  assert model.architecture == "xception65" and model.width_multiplier == 0.25
  assert "num_middle_blocks" not in model


@pytest.mark.parametrize("argv, flag", [
    (["--depthwise_impl=nonsense"], "--depthwise_impl"),
    (["--mode=fast"], "--mode"),
    (["--steps=0"], "--steps"),
    (["--warmup=-1"], "--warmup"),
    (["--dtype=float8"], "--dtype"),
    (["--architecture=resnet50"], "--architecture"),
    (["--architecture=inception_v3", "--num_middle_blocks=2"], "--num_middle_blocks"),
    (["--architecture=inception_v3", "--depthwise_impl=shift"], "--depthwise_impl"),
    (["--batch_size=3", "--num_devices=2"], "--batch_size"),
    (["--width_multiplier=0"], "--width_multiplier"),
    (["--peak_tflops=-1"], "--peak_tflops"),
    (["--remat=everything"], "--remat"),
])
def test_bad_options_give_one_line_errors(argv, flag, capsys):
  flag_values = flags.FlagValues()
  benchmark.define_flags(flag_values)
  flag_values(["benchmark"] + argv)
  with pytest.raises(SystemExit) as exit_info:
    benchmark.main(["benchmark"], flag_values=flag_values)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith(f"error: {flag}"), err
  if flag == "--depthwise_impl" and "nonsense" in argv[0]:
    for name in depthwise.DEPTHWISE_IMPLEMENTATIONS:
      assert name in err[0]
