"""Xception (Chollet, CVPR 2017) in JAX/Flax."""
from xception_jax import xla_cpu as _xla_cpu

_xla_cpu.apply()  # XLA:CPU options (xla_cpu.py); before any backend is created
