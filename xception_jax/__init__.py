"""Xception (Chollet, CVPR 2017) in JAX/Flax."""
