"""Generates the embedded dataset once, e.g. before a multi-host run.

  python -m input_pipeline.prepare_embedded [--data_dir DIR] [--num_train N]
      [--num_eval N] [--image_size S] [--num_classes C] [--max_objects K]
      [--seed SEED] [--zipf_exponent A]

Prints where the data went and how long generation took. Without flags it makes
the default size (defaults.py: config.embedded); create_datasets would
otherwise generate it on first use in each process.
"""

import argparse
import time

from input_pipeline import embedded_shapes


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data_dir", default=None)
  for key, value in embedded_shapes.DEFAULT_PARAMS.items():
    parser.add_argument(f"--{key}", type=type(value), default=value)
  args = vars(parser.parse_args(argv))
  data_dir = args.pop("data_dir")
  start = time.perf_counter()
  builder = embedded_shapes.prepare(data_dir, **args)
  print(f"embedded_shapes/{builder.builder_config.name}: {builder.data_path} "
        f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  main()
