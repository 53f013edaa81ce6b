"""Where a training step's time goes, op by op: a JAX profiler trace of the jitted SGD
step, its XLA:CPU thunks matched to the HLO and their `op_name` metadata, grouped by
what they compute.

  python benchmarks/profile_train_step.py                          # full width, 150, batch 8
  python benchmarks/profile_train_step.py --image_size=299 --top=40
  python benchmarks/profile_train_step.py --bn_impl=flax --max_pool_impl=xla   # the reference layers

On XLA:CPU every executed thunk (a fusion, a dot, a convolution, a copy...) is one trace
event named after its HLO instruction. The HLO module of the compiled step gives each
instruction's `op_name` (the Flax module path, `transpose(...)` for the backward pass),
from which the event is attributed to a category: depthwise, pointwise, BatchNorm,
max-pool, entry 3x3 convolutions, strided shortcuts, head, optimizer and the rest.
Events of one step can overlap when XLA runs independent thunks concurrently, so the
per-step sum can exceed the step's wall time; the wall time is printed beside it.
Prints two tables: per category (forward and backward together) and the top thunks.
"""
from __future__ import annotations

import collections
import functools
import glob
import gzip
import json
import os
import re
import sys
import tempfile
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
flags.DEFINE_float("width_multiplier", 1.0, "Model width.")
flags.DEFINE_integer("num_middle_blocks", 8, "Middle-flow modules.")
flags.DEFINE_string("depthwise_impl", "shift", "Depthwise implementation.")
flags.DEFINE_string("bn_impl", "auto", "BatchNorm implementation ('flax', 'fused', 'auto').")
flags.DEFINE_string("max_pool_impl", "auto", "Max-pool implementation ('xla', 'shift', 'auto').")
flags.DEFINE_integer("steps", 3, "Profiled steps (after two warm-up steps).")
flags.DEFINE_integer("top", 25, "Rows of the top-thunk table.")
flags.DEFINE_string("mode", "train", "'train' (SGD step) or 'eval' (forward, train=False).")
FLAGS = flags.FLAGS

_OP_NAME = re.compile(r'op_name="([^"]*)"')
_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?(?: calls=%?([\w.\-]+))?")


def hlo_op_names(hlo_text: str) -> dict[str, str]:
  """instruction name -> op_name; a fusion without metadata gets its body's op_names."""
  names, calls, bodies, current = {}, {}, collections.defaultdict(list), None
  for line in hlo_text.splitlines():
    header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$", line)
    if header and "=" not in line.split("{")[0]:
      current = header.group(1)
      continue
    match = re.match(r"^\s*(?:ROOT )?%?([\w.\-]+) = ", line)
    if not match:
      continue
    name = match.group(1)
    op = _OP_NAME.search(line)
    called = re.search(r"calls=%?([\w.\-]+)", line)
    if op:
      names[name] = op.group(1)
      if current:
        bodies[current].append(op.group(1))
    if called:
      calls[name] = called.group(1)
  for name, body in calls.items():
    if name not in names and bodies.get(body):
      names[name] = collections.Counter(bodies[body]).most_common(1)[0][0]
  return names


def category(op_name: str) -> str:
  """What an op computes, from its Flax path. Forward and backward are counted together:
  the backward ops of a custom VJP (depthwise 'shift', BatchNorm 'fused', max-pool
  'shift') carry the forward's op_name, without autodiff's `transpose(...)`."""
  path = op_name
  if "Xception" not in path:
    return "optimizer/loss/other"
  if "_bn" in path or "BatchNorm" in path or "batch_norm" in path:
    return "BatchNorm"
  if "max_pool" in path or "reduce_window" in path or "select_and_scatter" in path:
    return "max-pool"
  if "/depthwise" in path:
    return "depthwise"
  if "/pointwise" in path:
    return "pointwise (1x1 dot)"
  if "/shortcut" in path:
    return "strided 1x1 shortcut"
  if re.search(r"entry_flow/conv[12]", path):
    return "entry 3x3 conv"
  if "/head" in path or "/fc" in path:
    return "head"
  return "other in model (ReLU, add, mean, casts)"


def build(mode: str):
  model = Xception(num_classes=1000, width_multiplier=FLAGS.width_multiplier,
                   num_middle_blocks=FLAGS.num_middle_blocks,
                   depthwise_impl=FLAGS.depthwise_impl, bn_impl=FLAGS.bn_impl,
                   max_pool_impl=FLAGS.max_pool_impl, dropout_rate=0.5)
  tx = optax.sgd(0.045, momentum=0.9)
  state = jax.jit(functools.partial(steps.create_train_state, model, tx,
                                    image_size=FLAGS.image_size))(jax.random.key(0))
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.uniform(-1, 1, (FLAGS.batch_size, FLAGS.image_size,
                                                    FLAGS.image_size, 3)), jnp.float32),
           "label": jnp.asarray(rng.integers(0, 1000, FLAGS.batch_size))}
  key = jax.random.key(1)
  if mode == "train":
    fn = jax.jit(functools.partial(steps.train_step, model=model, tx=tx,
                                   schedule=lambda s: 0.045, objective=single_label.objective(ml_collections.ConfigDict())),
                 donate_argnums=0)
    args = (state, batch, key)
    run = lambda a: (fn(*a)[0], a[1], a[2])
    out = lambda a: a[0].params
  else:
    fn = jax.jit(lambda v, x: model.apply(v, x, train=False))
    args = (state.variables, batch["image"])
    run = lambda a: (a[0], a[1], fn(a[0], a[1]))
    out = lambda a: a[2]
  hlo = fn.lower(*args).compile().as_text()
  return args, run, out, hlo


def main(_):
  print(f"jax {jax.__version__}, backend {jax.default_backend()}; {FLAGS.mode}, image "
        f"{FLAGS.image_size}, batch {FLAGS.batch_size}, width {FLAGS.width_multiplier}, "
        f"depthwise {FLAGS.depthwise_impl}, bn {FLAGS.bn_impl}, max-pool {FLAGS.max_pool_impl}")
  args, run, out, hlo = build(FLAGS.mode)
  names = hlo_op_names(hlo)
  for _ in range(2):
    args = run(args)
  jax.block_until_ready(out(args))
  trace_dir = tempfile.mkdtemp(prefix="xception_profile_")
  start = time.perf_counter()
  with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
    for _ in range(FLAGS.steps):
      args = run(args)
      jax.block_until_ready(out(args))
  wall_ms = (time.perf_counter() - start) / FLAGS.steps * 1e3
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
  events = json.load(gzip.open(path))["traceEvents"]
  per_thunk = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and event["name"] in names:
      per_thunk[event["name"]] += event.get("dur", 0) / 1e3 / FLAGS.steps
  per_category = collections.Counter()
  for name, ms in per_thunk.items():
    per_category[category(names[name])] += ms
  total = sum(per_thunk.values())
  print(f"\nstep wall time {wall_ms:.0f} ms ({FLAGS.batch_size / wall_ms * 1e3:.2f} images/s); "
        f"sum of thunk times {total:.0f} ms/step over {len(per_thunk)} thunks\n")
  print(f"{'category':44s} {'ms/step':>9s} {'share':>7s}")
  for kind, ms in per_category.most_common():
    print(f"{kind:44s} {ms:9.1f} {ms / total:7.1%}")
  print(f"\n{'thunk':28s} {'ms/step':>9s} {'share':>7s}  op_name")
  for name, ms in per_thunk.most_common(FLAGS.top):
    op = names[name].split("/", 1)[-1]
    print(f"{name:28s} {ms:9.1f} {ms / total:7.1%}  {op[-90:]}")


if __name__ == "__main__":
  app.run(main)
