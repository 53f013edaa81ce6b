"""The XLA:CPU options set at import (xception_jax/xla_cpu.py): which flags, when, and
that the convolutions they reroute compute the same values and gradients."""
import os
import subprocess
import sys

import numpy as np

from xception_jax import xla_cpu

FLAG = xla_cpu.DEFAULT_FLAGS[0]
KNOWN = xla_cpu.KNOWN_JAXLIB[0]


def test_appends_the_defaults_to_xla_flags():
  environ = {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
  assert xla_cpu.apply(environ, KNOWN) == [FLAG]
  assert environ["XLA_FLAGS"] == f"--xla_cpu_enable_fast_math=false {FLAG}"
  assert xla_cpu.apply(environ, KNOWN) == []          # once
  empty = {}
  xla_cpu.apply(empty, KNOWN)
  assert empty["XLA_FLAGS"] == FLAG


def test_a_flag_the_user_set_is_left_alone():
  environ = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=-dot"}
  assert xla_cpu.apply(environ, KNOWN) == []
  assert environ["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=-dot"


def test_disabled_by_environment_and_on_unmeasured_jaxlib():
  assert xla_cpu.apply({xla_cpu.DISABLE_ENV: "0"}, KNOWN) == []
  environ = {}
  assert xla_cpu.apply(environ, "0.0.1") == []        # XLA aborts on unknown flags
  assert "XLA_FLAGS" not in environ


def test_left_out_when_float64_is_on_everywhere():
  assert xla_cpu.apply({xla_cpu.X64_ENV: "1"}, KNOWN) == []
  assert xla_cpu.apply({xla_cpu.X64_ENV: "True"}, KNOWN) == []
  assert xla_cpu.apply({xla_cpu.X64_ENV: "0"}, KNOWN) == [FLAG]


def test_in_effect_reads_xla_flags():
  assert xla_cpu.in_effect({"XLA_FLAGS": f"--a=1 {FLAG}"}) == [FLAG]
  assert xla_cpu.in_effect({"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=-dot"}) == []
  assert xla_cpu.in_effect({}) == []


def test_one_warning_for_a_float64_model_under_the_flag(monkeypatch, caplog):
  monkeypatch.setattr(xla_cpu, "_warned", False)
  monkeypatch.setenv("XLA_FLAGS", FLAG)
  with caplog.at_level("WARNING", logger=xla_cpu.__name__):
    assert not xla_cpu.warn_if_float64(np.float32)
    assert not xla_cpu.warn_if_float64(None)
    assert xla_cpu.warn_if_float64(np.float64)
    assert not xla_cpu.warn_if_float64("float64")   # once per process
  assert len(caplog.records) == 1
  assert "150x slower" in caplog.text and f"{xla_cpu.DISABLE_ENV}=0" in caplog.text
  monkeypatch.setattr(xla_cpu, "_warned", False)
  monkeypatch.setenv("XLA_FLAGS", "")
  assert not xla_cpu.warn_if_float64(np.float64)   # the flag is not in effect


_CONV = """
import os, sys, jax, jax.numpy as jnp, numpy as np
import xception_jax
x = jax.random.normal(jax.random.key(0), (2, 9, 11, 5))
w = jax.random.normal(jax.random.key(1), (3, 3, 5, 7))
def f(x, w):
  y = jax.lax.conv_general_dilated(x, w, (2, 2), "VALID",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jnp.sum(jnp.sin(y))
v, (gx, gw) = jax.value_and_grad(f, argnums=(0, 1))(x, w)
np.savez(sys.argv[1], v=v, gx=gx, gw=gw, flags=os.environ.get("XLA_FLAGS", ""))
"""


def test_convolution_and_gradients_equal_with_and_without(tmp_path):
  """In fresh processes (XLA reads the flags once): the package's default and
  XLA's own give the same convolution, input and kernel gradients."""
  results = {}
  for name, extra in (("default", {}), ("xla", {xla_cpu.DISABLE_ENV: "0"})):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(extra, JAX_PLATFORMS="cpu")
    out = tmp_path / f"{name}.npz"
    subprocess.run([sys.executable, "-c", _CONV, str(out)], env=env, check=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    results[name] = np.load(out)
  if xla_cpu.flags_to_add({}):
    assert FLAG in str(results["default"]["flags"])
  assert FLAG not in str(results["xla"]["flags"])
  for key in ("v", "gx", "gw"):
    np.testing.assert_allclose(results["default"][key], results["xla"][key],
                               rtol=1e-5, atol=1e-5)
