"""The benchmark on a bare accelerator image: jax, flax, optax, numpy, ml_collections and
absl beside the project, no TensorFlow, tfds or clu (docs/PERFORMANCE.md).

Each run is a fresh Python process: in one, an import finder refuses those packages
(and orbax, grain, tensorboard) and `python -m xception_jax.benchmark` must still print
its table and exit 0, for each task; in another, with everything installed, importing
the benchmark, reading the configs and building every task's steps must leave them out
of sys.modules (the TensorFlow side is imported only by what reads data or writes
summaries). No timing is asserted.
"""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
ABSENT = ("tensorflow", "tensorflow_datasets", "clu", "orbax", "grain", "tensorboard")
TINY = ["--image_size=71", "--batch_size=2", "--steps=1", "--warmup=0", "--mode=both",
        "--num_devices=1", "--width_multiplier=0.0625", "--depthwise_impl=feature_group"]

# Runs the benchmark module as `python -m` does, with ABSENT refused at import.
_BARE = textwrap.dedent("""
    import runpy, sys
    ABSENT = {absent!r}
    class Refuse:
      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
          raise ImportError(f"{{name}} is not installed on this image")
        return None
    sys.meta_path.insert(0, Refuse())
    sys.argv = ["benchmark"] + sys.argv[1:]
    runpy.run_module("xception_jax.benchmark", run_name="__main__", alter_sys=True)
""")


def _python(code: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


# 30-50 s of CPU each (a process, two compilations): all three with `-m slow`; the
# default run checks the steps' imports below (one process for every task).
@pytest.mark.parametrize("task, argv", [
    pytest.param("single_label", ["--config=configs/imagenet.py", "--num_middle_blocks=1",
                                  "--num_classes=10"], marks=pytest.mark.slow),
    pytest.param("multi_label", ["--config=configs/demo.py", "--num_middle_blocks=1"],
                 marks=pytest.mark.slow),
    pytest.param("segmentation", ["--config=configs/deeplab_demo.py", "--num_middle_blocks=1",
                                  "--num_classes=3", "--image_size=33"],
                 marks=pytest.mark.slow),
])
def test_benchmark_runs_without_tensorflow_tfds_or_clu(task, argv):
  done = _python(_BARE.format(absent=ABSENT), *TINY, *argv)
  assert done.returncode == 0, done.stderr[-3000:]
  out = done.stdout
  assert f"task {task}" in out, out
  for mode in ("train", "eval"):
    row = next((l for l in out.splitlines() if l.startswith(f"| feature_group | {mode} |")),
               None)
    assert row is not None, out
    assert float(row.split("|")[3]) > 0  # images/s


def test_the_refusing_finder_refuses():
  """The check above means something: the finder makes those imports fail."""
  code = _BARE.split("sys.argv")[0].format(absent=ABSENT) + textwrap.dedent("""
      for name in ABSENT:
        try:
          __import__(name)
        except ImportError:
          print("refused", name)
  """)
  done = _python(code)
  assert done.returncode == 0, done.stderr
  assert done.stdout.split() == [w for name in ABSENT for w in ("refused", name)]


_BUILD = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from xception_jax import benchmark, step_timing, steps, optim, tasks
    from xception_jax.models import factory
    from configs import deeplab_demo, demo, imagenet

    for config in (imagenet.get_config(), demo.get_config(), deeplab_demo.get_config()):
      config.num_classes = config.num_classes or 3
      config.batch_size, config.image_size = 2, 71
      config.model.width_multiplier, config.model.num_middle_blocks = 0.0625, 1
      task = tasks.get(config.task)
      model = factory.create_model(config.model, num_classes=config.num_classes)
      tx = optim.create_optimizer(config, 10)
      state = jax.eval_shape(lambda k: steps.create_train_state(
          model, tx, k, image_size=config.image_size), jax.random.key(0))
      batch = step_timing.synthetic_batch(config)
      jax.eval_shape(lambda s, b, r: steps.train_step(
          s, b, r, model=model, tx=tx, schedule=optim.learning_rate_schedule(config, 10),
          objective=task.objective(config)), state, batch, jax.random.key(1))
      data = step_timing.SyntheticData(num_classes=config.num_classes)
      jax.eval_shape(task.eval_step(config, data, model), state, batch)
    print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
""")


def test_importing_and_building_the_steps_imports_no_tensorflow_tfds_or_clu():
  done = _python(_BUILD)
  assert done.returncode == 0, done.stderr[-3000:]
  imported = set(json.loads(done.stdout.strip().splitlines()[-1]))
  assert {"jax", "flax", "optax", "ml_collections", "xception_jax", "configs"} <= imported
  assert not imported & set(ABSENT), sorted(imported & set(ABSENT))
