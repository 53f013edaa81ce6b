"""Before/after of the pure-JAX CPU layers, side by side in one run, beside timm.

  python benchmarks/bench_cpu_layers.py                              # train, 150, batch 8
  python benchmarks/bench_cpu_layers.py --image_size=299             # train, 299
  python benchmarks/bench_cpu_layers.py --image_size=299 --mode=eval # eval forward, 299

Times full-width Xception (1000 classes, float32, depthwise_impl as given) with the
reference layers (bn_impl='flax', max_pool_impl='xla') and with each --layers setting,
and, when torch and timm are importable, timm's `legacy_xception` (channels_last,
torch.set_num_threads(--torch_threads), SGD with momentum; `torch.no_grad()` for eval)
before and after the JAX runs. Prints images/s: the median of --repeats timings of
--steps steps each, after one warm-up step. torch/timm are benchmark-only:
`pip install torch==2.14.1 torchvision==0.29.1 && pip install timm==1.0.31 --no-deps`.
"""
from __future__ import annotations

import functools
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags

sys.path.insert(0, ".")
from xception_jax import steps  # pylint: disable=wrong-import-position
from xception_jax.tasks import single_label  # pylint: disable=wrong-import-position
from xception_jax.models import Xception  # pylint: disable=wrong-import-position

flags.DEFINE_integer("image_size", 150, "Input side.")
flags.DEFINE_integer("batch_size", 8, "Global batch.")
flags.DEFINE_string("mode", "train", "'train' (SGD step) or 'eval' (forward, train=False).")
flags.DEFINE_string("depthwise_impl", "shift", "Depthwise implementation of every JAX run.")
flags.DEFINE_list("layers", ["fused:shift"], "bn_impl:max_pool_impl pairs to time beside "
                  "the reference flax:xla.")
flags.DEFINE_integer("steps", 3, "Steps per timing.")
flags.DEFINE_integer("repeats", 3, "Timings (the median is printed).")
flags.DEFINE_integer("torch_threads", 2, "torch.set_num_threads for timm.")
FLAGS = flags.FLAGS


def _timed(run) -> float:
  run()
  timings = []
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
      run()
    timings.append((time.perf_counter() - start) / FLAGS.steps)
  return FLAGS.batch_size / statistics.median(timings)


def jax_images_per_s(bn_impl: str, max_pool_impl: str) -> tuple[float, float]:
  model = Xception(num_classes=1000, depthwise_impl=FLAGS.depthwise_impl, bn_impl=bn_impl,
                   max_pool_impl=max_pool_impl, dropout_rate=0.5)
  tx = optax.sgd(0.045, momentum=0.9)
  size = FLAGS.image_size
  state = jax.jit(functools.partial(steps.create_train_state, model, tx,
                                    image_size=size))(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.uniform(-1, 1, (FLAGS.batch_size, size, size, 3)),
                                jnp.float32),
           "label": jnp.asarray(rng.integers(0, 1000, FLAGS.batch_size))}
  holder = {"state": state}
  if FLAGS.mode == "train":
    step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx,
                                     schedule=lambda s: 0.045, objective=single_label.objective(ml_collections.ConfigDict())),
                   donate_argnums=0)
    key = jax.random.key(1)

    def run():
      holder["state"], metrics = step(holder["state"], batch, key)
      jax.block_until_ready(metrics)
  else:
    forward = jax.jit(lambda variables, x: model.apply(variables, x, train=False))
    run = lambda: jax.block_until_ready(forward(state.variables, batch["image"]))
  start = time.perf_counter()
  run()
  compile_s = time.perf_counter() - start
  return compile_s, _timed(run)


def timm_images_per_s() -> float | None:
  try:
    import timm  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  torch.set_num_threads(FLAGS.torch_threads)
  model = timm.create_model("legacy_xception", pretrained=False).to(
      memory_format=torch.channels_last)
  size = FLAGS.image_size
  x = torch.randn(FLAGS.batch_size, 3, size, size).to(memory_format=torch.channels_last)
  y = torch.randint(0, 1000, (FLAGS.batch_size,))
  if FLAGS.mode == "train":
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.045, momentum=0.9)

    def run():
      optimizer.zero_grad()
      torch.nn.functional.cross_entropy(model(x), y).backward()
      optimizer.step()
  else:
    model.eval()

    def run():
      with torch.no_grad():
        model(x)
  return _timed(run)


def main(_):
  print(f"jax {jax.__version__}, backend {jax.default_backend()}; {FLAGS.mode}, image "
        f"{FLAGS.image_size}, batch {FLAGS.batch_size}, float32, depthwise "
        f"{FLAGS.depthwise_impl}", flush=True)
  timm_before = timm_images_per_s()
  if timm_before is None:
    print("timm/torch not importable: no timm column (pip install torch==2.14.1 "
          "torchvision==0.29.1 && pip install timm==1.0.31 --no-deps)")
  else:
    print(f"timm legacy_xception              {timm_before:8.2f} images/s", flush=True)
  results = []
  for pair in ["flax:xla"] + list(FLAGS.layers):
    bn_impl, max_pool_impl = pair.split(":")
    compile_s, ips = jax_images_per_s(bn_impl, max_pool_impl)
    results.append((pair, ips))
    print(f"jax bn={bn_impl:6s} max_pool={max_pool_impl:6s} compile {compile_s:5.1f} s "
          f"{ips:8.2f} images/s  ({ips / results[0][1]:.2f}x reference)", flush=True)
  timm_after = timm_images_per_s()
  if timm_after is not None:
    timm_mean = (timm_before + timm_after) / 2
    print(f"timm legacy_xception (again)      {timm_after:8.2f} images/s")
    for pair, ips in results:
      print(f"ratio to timm (mean of its two runs), {pair:14s} {ips / timm_mean:.2f}x")


if __name__ == "__main__":
  app.run(main)
