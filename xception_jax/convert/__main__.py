"""Converts published weights into a one-step Orbax checkpoint.

    python -m xception_jax.convert --keras=xception_weights_tf_dim_ordering_tf_kernels.h5 \\
        --out=/ckpt/xception_keras
    python -m xception_jax.convert --keras=inception_v3.keras --out=/ckpt/inception_v3_keras
    python -m xception_jax.convert --timm=model.safetensors --arch=xception65 \\
        [--output_stride=16] --out=/ckpt/xception65_timm

A Keras file is recognised as Xception or InceptionV3 from its layers. The
checkpoint's model fields say which network it is, so `main.py
--config.init_from=DIR` and `python -m xception_jax.predict --checkpoint=DIR` read it
as it is. The file is checked completely before anything is written, and an existing
checkpoint is never overwritten.
"""
from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from absl import app, flags, logging

from xception_jax import checkpointing
from xception_jax import paths
from xception_jax.convert import keras as keras_convert
from xception_jax.convert import timm as timm_convert
from xception_jax.convert import count_parameters
from xception_jax.logs import quiet_library_logs
from xception_jax.models import factory

ALIGNED = ("xception41", "xception65", "xception71")

flags.DEFINE_string("keras", None, "Keras Xception or InceptionV3 weights (recognised from "
                    "the file): .h5, .weights.h5 or .keras.")
flags.DEFINE_string("timm", None, "timm aligned Xception state dict (.safetensors).")
flags.DEFINE_enum("arch", None, ALIGNED, "With --timm: the architecture of the file.")
flags.DEFINE_integer("output_stride", 32, "With --timm: 32, 16 or 8 (dilated last stages).")
flags.DEFINE_float("width_multiplier", 1.0,
                   "With --timm: the width of a scaled-down file (tests, CPU demos).")
flags.DEFINE_string("out", None, "New checkpoint directory (must not exist or be empty).")
flags.DEFINE_boolean("include_top", None,
                     "Keep the classifier (default: detect it from the file); "
                     "--noinclude_top converts only the feature extractor.")
flags.mark_flags_as_required(["out"])


def _convert(FLAGS) -> tuple:
  if bool(FLAGS.keras) == bool(FLAGS.timm):
    raise app.UsageError("Give exactly one of --keras=FILE or --timm=FILE.")
  if FLAGS.keras:
    if FLAGS.arch or FLAGS.output_stride != 32 or FLAGS.width_multiplier != 1.0:
      raise app.UsageError(
          "--arch, --output_stride and --width_multiplier go with --timm, not --keras.")
    layers, fmt = keras_convert.read_keras_file(FLAGS.keras)
    model, variables = keras_convert._convert(  # pylint: disable=protected-access
        layers, repr(FLAGS.keras), FLAGS.include_top, {})
    return FLAGS.keras, fmt, model, variables
  if not FLAGS.arch:
    raise app.UsageError(f"--timm needs --arch, one of {list(ALIGNED)}.")
  model, variables = timm_convert.from_timm(FLAGS.timm, FLAGS.arch,
                                            include_top=FLAGS.include_top,
                                            output_stride=FLAGS.output_stride,
                                            width_multiplier=FLAGS.width_multiplier)
  return FLAGS.timm, f"timm {FLAGS.arch} safetensors", model, variables


def main(argv: Sequence[str]) -> None:
  quiet_library_logs()
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  FLAGS = flags.FLAGS
  out = paths.resolve(FLAGS.out)  # local or gs://
  if paths.exists(out) and (not paths.isdir(out) or paths.listdir(out)):
    raise SystemExit(
        f"Refusing to write to {out!r}: it already exists and is not an empty directory "
        "(an existing checkpoint is never overwritten). Choose another --out.")
  try:
    source, fmt, model, variables = _convert(FLAGS)
  except (FileNotFoundError, ValueError) as e:  # KerasFileError, TimmFileError included
    raise SystemExit(f"Error: {e}") from None
  fields = factory.model_to_fields(model)
  logging.info("Read %s (%s): %s %s; %d parameters and %d BN statistics.", source, fmt,
               fields["architecture"],
               f"with a {model.num_classes}-class top" if model.include_top
               else "without the top (pooled features)",
               count_parameters(variables),
               sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["batch_stats"])))
  written = checkpointing.save_variables(out, variables, fields)
  logging.info("Wrote checkpoint %s with model fields %s.", written, fields)
  print(f"Wrote {written}", flush=True)


if __name__ == "__main__":
  app.run(main)
