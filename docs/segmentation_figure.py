"""Makes docs/deeplab_demo.png: validation images of the embedded segmentation data,
each beside the overlay `xception_jax.predict` writes and the ground truth's colours.

  python docs/segmentation_figure.py runs/deeplab_demo [--data_dir=runs/tensorflow_datasets]

The first `--count` validation images are written as PNG files and go through
`xception_jax.predict_segmentation.predict_masks` (what `python -m xception_jax.predict
--checkpoint=... --output_dir=...` runs); each row of the figure is image | overlay |
ground truth in VOC's colours, enlarged `--zoom` times (nearest neighbour).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from input_pipeline import embedded_shapes_segmentation  # noqa: E402
from xception_jax import predict_segmentation  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("checkpoint")
  parser.add_argument("--data_dir", default="runs/tensorflow_datasets")
  parser.add_argument("--out", default="docs/deeplab_demo.png")
  parser.add_argument("--count", type=int, default=4)
  parser.add_argument("--zoom", type=int, default=2)
  args = parser.parse_args()

  import tensorflow as tf
  from PIL import Image

  builder = embedded_shapes_segmentation.prepare(args.data_dir)
  examples = list(builder.as_dataset(split="validation").take(args.count).as_numpy_iterator())
  predictor = predict_segmentation.SegmentationPredictor.from_checkpoint(args.checkpoint)
  with tempfile.TemporaryDirectory() as tmp:
    paths = []
    for i, example in enumerate(examples):
      paths.append(os.path.join(tmp, f"validation{i}.png"))
      tf.io.write_file(paths[-1], tf.io.encode_png(example["image"]))
    predictions = predict_segmentation.predict_masks(predictor, paths, tmp)
    print(predict_segmentation.format_masks(predictions, predictor.num_classes))
    rows = []
    for example, prediction in zip(examples, predictions):
      shown = np.asarray(Image.open(prediction.overlay_path))
      truth = predict_segmentation.colour_mask(example["segmentation_mask"][..., 0])
      gap = np.full((shown.shape[0], 4, 3), 255, np.uint8)
      rows.append(np.concatenate([example["image"], gap, shown, gap, truth], axis=1))
  gap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
  grid = np.concatenate([x for row in rows for x in (row, gap)][:-1], axis=0)
  grid = grid.repeat(args.zoom, axis=0).repeat(args.zoom, axis=1)
  Image.fromarray(grid).save(args.out, optimize=True)
  print(f"{args.out}: {grid.shape[1]} x {grid.shape[0]}, {os.path.getsize(args.out):,} bytes")


if __name__ == "__main__":
  main()
