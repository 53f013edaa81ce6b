"""Side by side in one process: our trainer's steps against timm's `legacy_xception`.

  python benchmarks/bench_vs_timm.py                                 # the CPU targets
  python benchmarks/bench_vs_timm.py --impls=shift,feature_group --repeats=5
  python benchmarks/bench_vs_timm.py --targets=train:299 --batch_size=128 \
      --dtype=bfloat16 --torch_amp --torch_compile --impls=all       # on a GPU

Targets (issue 19's CPU goals by default): `train:150`, `train:299` and `eval:299`, at
--batch_size (8), full-width Xception with 1000 classes. Ours: the step
`python -m xception_jax.benchmark` measures (step_timing.StepRunner: configs/imagenet.py's
model and SGD recipe, steps.train_step / steps.eval_step) for each depthwise
implementation of --impls ('all': every one registered in models/depthwise.py now).
timm: `legacy_xception` (the same network), channels_last, torch.set_num_threads =
our cores; training is one SGD step (momentum 0.9, weight decay 1e-5) on the
cross-entropy, evaluation the forward under torch.inference_mode. Same batch, size and
dtype. On CUDA, --torch_amp runs under autocast(bfloat16) and --torch_compile wraps the
model in torch.compile.

The runners are compiled and warmed up first; then --repeats rounds each time --steps
steps of every runner in turn (ours per implementation, then timm), so that load from
other jobs falls on all alike. Printed per target: images/s (batch / median step time
over all rounds; and the range of the rounds' medians), the ratio ours / timm and its
range over the rounds. Each round's line (stderr) gives the load average: other jobs
on the machine slow PyTorch's threads far more than XLA's (docs/performance/cpu.md), so
only rounds on a quiet machine give the ratio a user would see.

Needs torch and timm, which the project does not depend on; without them it prints
the install command and exits with status 2.
"""
from __future__ import annotations

import copy
import os
import statistics
import sys
import time

INSTALL = ("pip install torch==2.14.1 torchvision==0.29.1 && "
           "pip install timm==1.0.31 --no-deps")

from absl import app, flags  # pylint: disable=wrong-import-position

flags.DEFINE_bool("before", False,
                  "Also time 'ours before': the model as it was before issue 19's layers "
                  "(depthwise shift, flax BatchNorm, XLA max-pool), in the same rounds.")
flags.DEFINE_list("impls", ["shift", "feature_group"],
                  "Our depthwise implementations ('all': every registered one).")
flags.DEFINE_list("targets", ["train:150", "train:299", "eval:299"], "MODE:IMAGE_SIZE list.")
flags.DEFINE_integer("batch_size", 8, "Batch.")
flags.DEFINE_integer("num_classes", 1000, "Classes.")
flags.DEFINE_string("dtype", "float32", "Our compute dtype (float32 or bfloat16).")
flags.DEFINE_integer("repeats", 3, "Rounds of interleaved timing.")
flags.DEFINE_integer("steps", 3, "Timed steps per runner per round.")
flags.DEFINE_integer("warmup", 1, "Untimed steps per runner after compilation.")
flags.DEFINE_integer("threads", None, "torch threads; default the cores of this process.")
flags.DEFINE_string("torch_device", None, "'cpu' or 'cuda'; default cuda if available.")
flags.DEFINE_bool("torch_amp", False, "timm under autocast(bfloat16) (CUDA).")
flags.DEFINE_bool("torch_compile", False, "timm wrapped in torch.compile.")
FLAGS = flags.FLAGS


class TimmRunner:
  """timm's legacy_xception step with the interface of step_timing.StepRunner."""

  def __init__(self, torch, timm, mode: str, image_size: int):
    self.torch, self.mode = torch, mode
    device = FLAGS.torch_device or ("cuda" if torch.cuda.is_available() else "cpu")
    self.device = torch.device(device)
    model = timm.create_model("legacy_xception", pretrained=False,
                              num_classes=FLAGS.num_classes)
    model = model.to(self.device, memory_format=torch.channels_last)
    self.module = model
    self.model = torch.compile(model) if FLAGS.torch_compile else model
    generator = torch.Generator().manual_seed(0)
    self.images = (torch.rand(FLAGS.batch_size, 3, image_size, image_size,
                              generator=generator) * 2 - 1).to(
                                  self.device, memory_format=torch.channels_last)
    self.labels = torch.randint(0, FLAGS.num_classes, (FLAGS.batch_size,),
                                generator=generator).to(self.device)
    self.optimizer = torch.optim.SGD(model.parameters(), lr=0.045, momentum=0.9,
                                     weight_decay=1e-5)
    self.amp = FLAGS.torch_amp and self.device.type == "cuda"
    start = time.perf_counter()
    self.run()
    self.compile_seconds = time.perf_counter() - start

  def _autocast(self):
    return self.torch.autocast(self.device.type, dtype=self.torch.bfloat16,
                               enabled=self.amp)

  def run(self) -> None:
    torch = self.torch
    if self.mode == "train":
      self.module.train()
      self.optimizer.zero_grad(set_to_none=True)
      with self._autocast():
        loss = torch.nn.functional.cross_entropy(self.model(self.images), self.labels)
      loss.backward()
      self.optimizer.step()
    else:
      self.module.eval()
      with torch.inference_mode(), self._autocast():
        self.model(self.images)
    if self.device.type == "cuda":
      torch.cuda.synchronize()

  def time_steps(self, n: int) -> list[float]:
    from xception_jax import step_timing  # pylint: disable=import-outside-toplevel
    return step_timing.time_calls(self.run, n)


def _import_torch():
  try:
    import timm  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    print(f"bench_vs_timm needs torch and timm ({e}); install them with:\n  {INSTALL}",
          file=sys.stderr)
    sys.exit(2)
  return torch, timm


def _targets() -> list[tuple[str, int]]:
  targets = []
  for target in FLAGS.targets:
    mode, _, size = target.partition(":")
    if mode not in ("train", "eval") or not size.isdigit():
      raise app.UsageError(f"--targets: {target!r} is not MODE:IMAGE_SIZE with MODE "
                           "train or eval (e.g. train:150).")
    targets.append((mode, int(size)))
  return targets


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  targets = _targets()
  torch, timm = _import_torch()
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import jax  # pylint: disable=import-outside-toplevel
  from xception_jax import benchmark, logs, step_timing  # pylint: disable=import-outside-toplevel
  logs.quiet_library_logs()

  known = benchmark.implementations()
  impls = [i for i in known if i != "auto"] if FLAGS.impls == ["all"] else FLAGS.impls
  for impl in impls:
    if impl not in known:
      raise app.UsageError(f"--impls: unknown implementation {impl!r}; valid: {list(known)}.")
  cores = len(os.sched_getaffinity(0))
  torch.set_num_threads(FLAGS.threads or cores)
  print(benchmark.environment())
  print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), timm "
        f"{timm.__version__}; batch {FLAGS.batch_size}, {FLAGS.num_classes} classes, ours "
        f"{FLAGS.dtype}, timm {'AMP bfloat16' if FLAGS.torch_amp else 'float32'}"
        f"{', torch.compile' if FLAGS.torch_compile else ''}, channels_last; "
        f"{FLAGS.repeats} rounds x {FLAGS.steps} steps after {FLAGS.warmup} warm-up",
        flush=True)

  rows = []
  for mode, size in targets:
    config = benchmark.default_config()
    config.batch_size, config.image_size = FLAGS.batch_size, size
    config.num_classes = FLAGS.num_classes
    config.model.dtype = FLAGS.dtype
    config.num_devices = 1
    runners = {}
    if FLAGS.before:
      before = copy.deepcopy(config)
      with before.unlocked():
        before.model.bn_impl, before.model.max_pool_impl = "flax", "xla"
      runners["ours before (shift, flax BN, xla pool)"] = step_timing.StepRunner(
          before, mode, "shift")
    runners.update({f"ours {impl}": step_timing.StepRunner(config, mode, impl)
                    for impl in impls})
    print(f"timm {mode} step at {size}: first step ...", file=sys.stderr, flush=True)
    runners["timm legacy_xception"] = TimmRunner(torch, timm, mode, size)
    for runner in runners.values():
      for _ in range(FLAGS.warmup):
        runner.run()
    seconds = {name: [] for name in runners}
    rounds = {name: [] for name in runners}
    for r in range(FLAGS.repeats):
      for name, runner in runners.items():
        times = runner.time_steps(FLAGS.steps)
        seconds[name] += times
        rounds[name].append(FLAGS.batch_size / statistics.median(times))
      print(f"{mode}:{size} round {r + 1}: " + ", ".join(
          f"{name} {rounds[name][-1]:.2f}" for name in runners) + " images/s; load "
            f"average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    speed = {name: FLAGS.batch_size / statistics.median(s) for name, s in seconds.items()}
    timm_speed = speed["timm legacy_xception"]
    for name in runners:
      per_round = [a / b for a, b in zip(rounds[name], rounds["timm legacy_xception"])]
      rows.append((f"{mode} {size}", name, speed[name], min(rounds[name]),
                   max(rounds[name]), speed[name] / timm_speed, min(per_round),
                   max(per_round)))
    del runners
    jax.clear_caches()

  print("| target | runner | images/s | rounds' range | ours / timm | per round |")
  print("|---|---|---|---|---|---|")
  for target, name, value, low, high, ratio, ratio_low, ratio_high in rows:
    print(f"| {target} | {name} | {value:.2f} | {low:.2f}-{high:.2f} | {ratio:.2f}x | "
          f"{ratio_low:.2f}-{ratio_high:.2f}x |")
  print(f"load average now: {os.getloadavg()[0]:.1f} on {cores} cores. Other jobs slow "
        "PyTorch's threads more than XLA's: trust only rounds run on a quiet machine.")


if __name__ == "__main__":
  app.run(main)
