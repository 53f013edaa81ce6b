"""Training-step throughput of Xception: images/s of the jitted SGD step.

  python benchmarks/bench_train_step.py                         # full width, 150px, batch 8
  python benchmarks/bench_train_step.py --impls=feature_group,shift --image_size=299 \
      --batch_size=64 --dtype=bfloat16                          # on an accelerator

Prints one line per depthwise implementation: compile time, then the median of
--repeats timings of --steps steps each (after one warm-up step). Compare figures only
within one run: machines differ from day to day. Records go to docs/PERFORMANCE.md.
"""
import functools
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

sys.path.insert(0, ".")
from xception_jax import steps  # pylint: disable=wrong-import-position
from xception_jax.models import Xception  # pylint: disable=wrong-import-position

flags.DEFINE_list("impls", ["feature_group", "shift"], "Depthwise implementations.")
flags.DEFINE_integer("image_size", 150, "Input side.")
flags.DEFINE_integer("batch_size", 8, "Global batch.")
flags.DEFINE_float("width_multiplier", 1.0, "Model width.")
flags.DEFINE_integer("num_middle_blocks", 8, "Middle-flow modules.")
flags.DEFINE_integer("num_classes", 1000, "Classes.")
flags.DEFINE_string("dtype", "float32", "Compute dtype.")
flags.DEFINE_integer("steps", 5, "Steps per timing.")
flags.DEFINE_integer("repeats", 3, "Timings (the median is printed).")
FLAGS = flags.FLAGS


def measure(impl: str) -> tuple[float, float]:
  model = Xception(num_classes=FLAGS.num_classes, width_multiplier=FLAGS.width_multiplier,
                   num_middle_blocks=FLAGS.num_middle_blocks, depthwise_impl=impl,
                   dtype=jnp.dtype(FLAGS.dtype), dropout_rate=0.5)
  tx = optax.sgd(0.045, momentum=0.9)
  state = jax.jit(functools.partial(steps.create_train_state, model, tx,
                                    image_size=FLAGS.image_size))(jax.random.key(0))
  step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx,
                                   schedule=lambda s: 0.045, task="single_label"),
                 donate_argnums=0)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.uniform(-1, 1, (FLAGS.batch_size, FLAGS.image_size,
                                                    FLAGS.image_size, 3)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, FLAGS.num_classes, FLAGS.batch_size))}
  key = jax.random.key(1)
  start = time.perf_counter()
  state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - start
  timings = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
      state, metrics = step(state, batch, key)
    jax.block_until_ready(metrics)
    timings.append((time.perf_counter() - start) / FLAGS.steps)
  return compile_s, FLAGS.batch_size / statistics.median(timings)


def main(_):
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"device {jax.devices()[0].device_kind}; image {FLAGS.image_size}, batch "
        f"{FLAGS.batch_size}, width {FLAGS.width_multiplier}, {FLAGS.dtype}")
  for impl in FLAGS.impls:
    compile_s, images_per_s = measure(impl)
    print(f"depthwise_impl={impl:14s} compile+first step {compile_s:6.1f} s   "
          f"{images_per_s:8.2f} images/s")


if __name__ == "__main__":
  app.run(main)
