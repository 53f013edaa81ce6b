"""Trains or evaluates Xception as a config says.

  python main.py --config=configs/demo.py --workdir=runs/demo
  python main.py --config=configs/imagenet.py --workdir=/ckpt/imagenet
  python main.py --config=configs/multilabel.py --workdir=/ckpt/jft
  python main.py --config=configs/imagenet.py:no_residual --workdir=... --config.batch_size=512

Multi-host: start one process per host (or per GPU) with --distributed (detected on TPU
VMs and SLURM: every GPU of every node is used, xception_jax/cluster.py) or with
--coordinator_address, --num_processes and --process_id. docs/SCALING.md has the recipes.

A bad config, file or workdir prints one line to stderr and exits with status 2 (with
--debug: the traceback). A SIGTERM saves a checkpoint at the current step and exits
with status 0 (docs/RELIABILITY.md).
"""
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # before TensorFlow loads

import jax  # pylint: disable=wrong-import-position
from absl import app, flags, logging  # pylint: disable=wrong-import-position
from ml_collections import config_flags  # pylint: disable=wrong-import-position

from xception_jax import logs  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the config.")
config_flags.DEFINE_config_file("config", None, "A config file in configs/ (FILE[:variant]).",
                                lock_config=True)
flags.DEFINE_bool("distributed", False,
                  "Call jax.distributed.initialize() before anything else (multi-host).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.DEFINE_string("local_device_ids", "auto",
                    "Multi-host: the local GPUs this process uses: 'auto' (under SLURM, every "
                    "GPU of a one-task node or of a task's own binding; xception_jax/"
                    "cluster.py), 'slurm' (JAX's default: GPU SLURM_LOCALID) or a list "
                    "like 0,1,2,3.")
flags.DEFINE_integer("initialization_timeout", 300,
                     "Multi-host: seconds to wait for every process to join the job.")
flags.DEFINE_bool("debug", False, "Show the traceback of a configuration error.")
flags.mark_flags_as_required(["config", "workdir"])


def _initialize_distributed() -> None:
  """jax.distributed from the flags and the scheduler; a job that cannot form is one
  line on stderr and exit status 2."""
  from xception_jax import cluster  # pylint: disable=import-outside-toplevel
  try:
    kwargs, why = cluster.initialize_arguments(
        os.environ, coordinator_address=FLAGS.coordinator_address,
        num_processes=FLAGS.num_processes, process_id=FLAGS.process_id,
        device_ids_flag=FLAGS.local_device_ids,
        initialization_timeout=FLAGS.initialization_timeout)
    logging.info("%s", cluster.describe(kwargs, why, os.environ))
    if FLAGS.coordinator_address and FLAGS.process_id:  # process 0 serves the coordinator
      cluster.wait_for_coordinator(FLAGS.coordinator_address, FLAGS.initialization_timeout)
    jax.distributed.initialize(**kwargs)
  except (ValueError, TypeError, RuntimeError) as e:  # JAX's own refusals, one line each
    if FLAGS.debug:
      raise
    message = (str(e).strip().splitlines() or [""])[0]
    print(f"error: jax.distributed could not form the job: {message} (flags "
          "--coordinator_address/--num_processes/--process_id/--local_device_ids, or run "
          "under srun; docs/SCALING.md)", file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logs.quiet_library_logs()
  if FLAGS.distributed or FLAGS.coordinator_address:
    _initialize_distributed()
  logging.info("JAX process %d of %d; local devices: %s", jax.process_index(),
               jax.process_count(), jax.local_devices())
  # Imported after jax.distributed: the library creates devices and meshes.
  from xception_jax import train  # pylint: disable=import-outside-toplevel
  from xception_jax.validation import ConfigError  # pylint: disable=import-outside-toplevel
  try:
    results = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (ConfigError, ValueError, FileNotFoundError, FloatingPointError) as e:
    if FLAGS.debug:
      raise
    message = (str(e).strip().splitlines() or [""])[0]
    print(f"error: {message} (--debug shows the traceback)", file=sys.stderr)
    sys.exit(2 if isinstance(e, ConfigError) else 1)
  if jax.process_index() == 0:
    print(json.dumps({"workdir": FLAGS.workdir, **results}, indent=2, sort_keys=True))


if __name__ == "__main__":
  jax.config.config_with_absl()
  app.run(main)
