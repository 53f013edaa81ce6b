"""Makes docs/deeplab_demo.png: validation images of the embedded segmentation data,
each beside what `xception_jax.predict` writes for it and the ground truth.

  python docs/segmentation_figure.py runs/deeplab_demo [--data_dir=runs/tensorflow_datasets]

The first `--count` validation images are written as PNG files and go through
`xception_jax.predict_segmentation.predict_masks` (what `python -m xception_jax.predict
--checkpoint=... --output_dir=...` runs). Columns, titled: the image; the overlay
predict.py writes; the predicted classes and the ground truth, both in VOC's colours;
the pixels where they differ (white, padding and ignored pixels never occur here). A
legend names each class's colour; each row's title gives the image's pixel accuracy.
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

COLUMNS = ("image", "overlay (predict.py)", "predicted classes", "ground truth",
           "wrong pixels")


def _panels(example: dict, prediction) -> list[np.ndarray]:
  from PIL import Image
  truth = example["segmentation_mask"][..., 0]
  wrong = (prediction.classes != truth)
  return [example["image"], np.asarray(Image.open(prediction.overlay_path)),
          predict_segmentation.colour_mask(prediction.classes),
          predict_segmentation.colour_mask(truth),
          np.repeat((wrong * 255).astype(np.uint8)[..., None], 3, axis=-1)]


def draw(examples: list[dict], predictions: list, class_names: list[str], out: str,
         step: int) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.patches import Patch

  rows, cols = len(examples), len(COLUMNS)
  fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows + 0.9),
                           squeeze=False)
  for r, (example, prediction) in enumerate(zip(examples, predictions)):
    truth = example["segmentation_mask"][..., 0]
    accuracy = float((prediction.classes == truth).mean())
    for c, panel in enumerate(_panels(example, prediction)):
      ax = axes[r, c]
      ax.imshow(panel, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(COLUMNS[c], fontsize=9)
    axes[r, 0].set_ylabel(f"validation {r}\n{accuracy:.1%} right", fontsize=8)
  palette = predict_segmentation.voc_palette(len(class_names)) / 255.0
  handles = [Patch(facecolor=palette[i], edgecolor="black", linewidth=0.5, label=name)
             for i, name in enumerate(class_names)]
  fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, frameon=False)
  fig.suptitle(f"DeepLab v3+ demo, checkpoint step {step}: embedded validation images",
               fontsize=10)
  fig.tight_layout(rect=(0, 0.07, 1, 0.97))
  fig.savefig(out, dpi=80)
  plt.close(fig)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("checkpoint")
  parser.add_argument("--data_dir", default="runs/tensorflow_datasets")
  parser.add_argument("--out", default="docs/deeplab_demo.png")
  parser.add_argument("--count", type=int, default=6)
  args = parser.parse_args()
  if args.count < 1:
    parser.error(f"--count must be >= 1; got {args.count}.")

  import tensorflow as tf

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
    names = builder.info.metadata["class_names"]
    draw(examples, predictions, names, args.out, predictor.step)
  print(f"{args.out}: {os.path.getsize(args.out):,} bytes")


if __name__ == "__main__":
  main()
