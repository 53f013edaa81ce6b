"""Xception training throughput on one GPU against timm's `legacy_xception`, one run.

  python benchmarks/bench_gpu.py --image_size=299 --batch_size=128 --steps=20 \
      --out=gpu.json [--budget_s=480]

Needs only jax, flax, optax (the model, `xception_jax.models`) and, for the
comparison, torch and timm: no TensorFlow, ml_collections or clu, so it runs on the
lent accelerator machines as their image comes (`python -m xception_jax.benchmark`
needs the configs, which import the input pipeline and TensorFlow).

Measured, in this order (the most wanted first; `--budget_s` skips what would not
start in time), each a training step (forward, backward, SGD with momentum 0.9,
softmax cross-entropy, BatchNorm statistics, dropout 0.5), full-width Xception,
1000 classes, parameters in float32:
  JAX   compute dtype bfloat16 and float32 x depthwise_impl feature_group / shift,
        at --batch_size; then bfloat16 feature_group at 2x and 4x the batch (the
        largest that fits).
  timm  legacy_xception, channels_last, SGD: AMP (bfloat16 autocast) eager, AMP under
        torch.compile, float32 eager (PyTorch's default TF32 convolutions).
Each: compile time, then images/s over --steps steps after --warmup steps (the
device synchronised before and after), XLA's FLOPs per image for the JAX step and
MFU = achieved FLOP/s over the GPU's dense peak (bfloat16 989.4 TFLOP/s on an
H100 SXM / H200; float32 steps against the TF32 peak, 494.7, since XLA and cuDNN run
float32 convolutions on TF32 tensor cores by default). timm's MFU uses the JAX
step's FLOPs per image (the same network). Results print as they come and go to
--out as JSON.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import traceback

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # Share with torch.

import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import optax  # pylint: disable=wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xception_jax.models import Xception  # pylint: disable=wrong-import-position

PEAK_TFLOPS = {"bfloat16": 989.4, "float32": 494.7}  # Dense, H100 SXM / H200.
# A training step as 3x the forward's FLOPs (16.8 GFLOP per image at 299 by XLA's cost
# analysis of the forward; shared/DESIGN.md), for an MFU that does not depend on how XLA
# counts the grouped convolutions' gradients.
FORWARD_GFLOP_299 = 16.8
START = time.perf_counter()
RESULTS: list[dict] = []


def _report(args, row: dict) -> None:
  RESULTS.append(row)
  print("RESULT " + json.dumps(row), flush=True)
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"device": _device_line(), "results": RESULTS}, f, indent=1)


def _device_line() -> str:
  d = jax.devices()[0]
  return f"{d.device_kind} ({d.platform}), jax {jax.__version__}"


def _mfu_3x(images_per_s: float, size: int, dtype: str) -> float:
  flops = 3 * FORWARD_GFLOP_299 * 1e9 * (size / 299) ** 2
  return round(flops * images_per_s / (PEAK_TFLOPS[dtype] * 1e12), 4)


def jax_step(args, dtype: str, impl: str, batch: int) -> dict:
  model = Xception(num_classes=1000, dropout_rate=0.5, depthwise_impl=impl,
                   dtype=jnp.dtype(dtype))
  size = args.image_size
  rng = jax.random.PRNGKey(0)
  images = jax.random.normal(rng, (batch, size, size, 3), jnp.float32)
  labels = jax.random.randint(rng, (batch,), 0, 1000)
  variables = jax.jit(functools.partial(model.init, train=False))(
      rng, jnp.zeros((1, size, size, 3)))
  tx = optax.sgd(0.045, momentum=0.9)
  state = (variables["params"], variables["batch_stats"],
           tx.init(variables["params"]))

  def step(state, images, labels, rng):
    params, stats, opt = state

    def loss_fn(p):
      logits, new = model.apply({"params": p, "batch_stats": stats}, images, train=True,
                                mutable=["batch_stats"], rngs={"dropout": rng})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, new["batch_stats"]

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return (optax.apply_updates(params, updates), stats, opt), loss

  t0 = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=0).lower(state, images, labels, rng).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0)) / batch
  for _ in range(args.warmup):
    state, loss = compiled(state, images, labels, rng)
  jax.block_until_ready(loss)
  t0 = time.perf_counter()
  for _ in range(args.steps):
    state, loss = compiled(state, images, labels, rng)
  jax.block_until_ready(loss)
  seconds = (time.perf_counter() - t0) / args.steps
  ips = batch / seconds
  peak = jax.devices()[0].memory_stats() or {}
  return {"framework": "jax", "dtype": dtype, "depthwise_impl": impl, "batch": batch,
          "image_size": size, "compile_s": round(compile_s, 1),
          "images_per_s": round(ips, 1), "gflop_per_image": round(flops / 1e9, 2),
          "mfu": round(flops * ips / (PEAK_TFLOPS[dtype] * 1e12), 4),
          "mfu_3x_forward": _mfu_3x(ips, size, dtype),
          "peak_bytes_in_use_gib": round(peak.get("peak_bytes_in_use", 0) / 2**30, 1),
          "loss": float(loss)}


def timm_step(args, mode: str, batch: int, flops_per_image: float | None) -> dict:
  import timm  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  torch.backends.cudnn.benchmark = True
  size = args.image_size
  model = timm.create_model("legacy_xception", num_classes=1000, drop_rate=0.5)
  model = model.cuda().to(memory_format=torch.channels_last).train()
  opt = torch.optim.SGD(model.parameters(), lr=0.045, momentum=0.9)
  images = torch.randn(batch, 3, size, size, device="cuda").to(
      memory_format=torch.channels_last)
  labels = torch.randint(0, 1000, (batch,), device="cuda")
  amp = mode.startswith("amp")
  net = torch.compile(model) if mode == "amp_compile" else model

  def step():
    opt.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
      loss = torch.nn.functional.cross_entropy(net(images), labels)
    loss.backward()
    opt.step()
    return loss

  t0 = time.perf_counter()
  step()
  torch.cuda.synchronize()
  compile_s = time.perf_counter() - t0
  for _ in range(args.warmup):
    loss = step()
  torch.cuda.synchronize()
  t0 = time.perf_counter()
  for _ in range(args.steps):
    loss = step()
  torch.cuda.synchronize()
  ips = batch * args.steps / (time.perf_counter() - t0)
  dtype = "bfloat16" if amp else "float32"
  row = {"framework": "timm", "mode": mode, "dtype": dtype, "batch": batch,
         "image_size": size, "first_step_s": round(compile_s, 1),
         "images_per_s": round(ips, 1),
         "peak_bytes_in_use_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1),
         "loss": float(loss), "torch": torch.__version__, "timm": timm.__version__}
  row["mfu_3x_forward"] = _mfu_3x(ips, size, dtype)
  if flops_per_image:
    row["mfu_with_jax_flops"] = round(flops_per_image * ips / (PEAK_TFLOPS[dtype] * 1e12), 4)
  del model, net, opt
  torch.cuda.empty_cache()
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image_size", type=int, default=299)
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=20)
  parser.add_argument("--warmup", type=int, default=3)
  parser.add_argument("--budget_s", type=float, default=1e9,
                      help="Start no measurement after this many seconds.")
  parser.add_argument("--out", default="")
  args = parser.parse_args()
  print(f"device: {_device_line()}", flush=True)
  b = args.batch_size
  flops = {}
  plan = [("jax", "bfloat16", "feature_group", b), ("timm", "amp_eager", None, b),
          ("jax", "bfloat16", "shift", b), ("timm", "amp_compile", None, b),
          ("jax", "float32", "feature_group", b), ("timm", "fp32_eager", None, b),
          ("jax", "float32", "shift", b), ("jax", "bfloat16", "feature_group", 2 * b),
          ("jax", "bfloat16", "feature_group", 4 * b)]
  for framework, what, impl, batch in plan:
    elapsed = time.perf_counter() - START
    if elapsed > args.budget_s:
      print(f"skipped (budget): {framework} {what} {impl or ''} batch {batch}", flush=True)
      continue
    print(f"[{elapsed:5.0f} s] {framework} {what} {impl or ''} batch {batch} ...",
          flush=True)
    try:
      if framework == "jax":
        row = jax_step(args, what, impl, batch)
        flops.setdefault(what, row["gflop_per_image"] * 1e9)
      else:
        dtype = "float32" if what.startswith("fp32") else "bfloat16"
        row = timm_step(args, what, batch, flops.get(dtype) or flops.get("bfloat16"))
      _report(args, row)
    except Exception as e:  # pylint: disable=broad-except
      print(f"FAILED {framework} {what} {impl} {batch}: {type(e).__name__}: "
            f"{str(e).splitlines()[0][:300] if str(e) else ''}", flush=True)
      traceback.print_exc(limit=2)
  print(f"done in {time.perf_counter() - START:.0f} s", flush=True)


if __name__ == "__main__":
  main()
