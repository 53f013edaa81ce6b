"""Classify image files with a checkpoint of any registered classifier (Xception, its
aligned variants, Inception V3).

    python -m xception_jax.predict --checkpoint=/ckpt/xception_keras cat.jpg dog.png
    python -m xception_jax.predict --checkpoint=WORKDIR --multilabel --threshold=0.5 a.jpg

The checkpoint is anything `checkpointing.load_variables` reads: a training workdir,
a checkpoint root or one of its step directories, or the output of
`python -m xception_jax.convert`. Each image goes through the evaluation pipeline's
own preprocessing (`input_pipeline.preprocessing.preprocess_eval`): decoded (JPEG,
PNG, GIF's first frame, BMP) to RGB with tf.io / tf.image, centrally cropped to
`--crop_fraction` (0.875) of each side (tf.image.central_crop's window), bilinearly
resized to `--image_size` (299) and scaled to [-1, 1] by x / 127.5 - 1.

Single-label mode prints the `--top_k` (5) classes by softmax probability;
`--multilabel` prints every class whose sigmoid probability is >= `--threshold`.

A segmentation checkpoint (model fields `architecture='deeplabv3plus'`) instead writes a
colour-coded mask and an overlay PNG per image into `--output_dir` and prints their
paths (xception_jax/predict_segmentation.py):

    python -m xception_jax.predict --checkpoint=runs/deeplab_demo --output_dir=masks a.png

Class names: `--labels=FILE` (one name per line, as many lines as classes); else, for
a 1000-class head, the ImageNet (ILSVRC 2012) classes in their standard order: the
WordNet ids that tensorflow-datasets ships with its imagenet2012 builder
(`datasets/imagenet2012/labels.txt`, read from the installed package, no download)
with the human-readable names tensorflow-datasets also ships (the standard 1000-name
list in `tensorflow_datasets.datasets.siscore.labels`); else "class <i>".
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np

from xception_jax import predict_segmentation
from xception_jax import paths

IMAGENET_CLASSES = 1000


# ----------------------------------------------------------------------------- labels


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
  """The 1000 ImageNet class names in class-index order: 'tench, Tinca tinca (n01440764)'.

  Read from the installed tensorflow-datasets package (works offline).
  """
  import tensorflow_datasets as tfds

  builder_dir = os.path.dirname(inspect.getfile(tfds.builder_cls("imagenet2012")))
  path = os.path.join(builder_dir, "labels.txt")
  if not os.path.isfile(path):  # Older layouts.
    path = os.fspath(tfds.core.tfds_path("datasets/imagenet2012/labels.txt"))
  with open(path) as f:
    synsets = [line.strip() for line in f if line.strip()]
  if len(synsets) != IMAGENET_CLASSES:
    raise RuntimeError(f"{path} lists {len(synsets)} ImageNet classes, not 1000.")
  try:
    from tensorflow_datasets.datasets.siscore import labels as siscore_labels
    words = list(siscore_labels.IMAGENET_LABELS_LIST)
  except ImportError:
    words = []
  if len(words) != IMAGENET_CLASSES:
    return tuple(synsets)
  return tuple(f"{word} ({synset})" for word, synset in zip(words, synsets))


def class_names(num_classes: int, labels_file: Optional[str] = None) -> list[str]:
  """Names for a head of `num_classes`: the labels file, ImageNet's, or 'class <i>'."""
  if labels_file:
    if not paths.isfile(labels_file):
      raise FileNotFoundError(f"No labels file at {labels_file!r}.")
    names = paths.read_text(labels_file).splitlines()
    while names and not names[-1].strip():
      names.pop()
    if len(names) != num_classes:
      raise ValueError(
          f"{labels_file!r} has {len(names)} lines but the model has {num_classes} "
          "classes; give one name per line, in class-index order.")
    return [name.strip() for name in names]
  if num_classes == IMAGENET_CLASSES:
    return list(imagenet_class_names())
  return [f"class {i}" for i in range(num_classes)]


# ----------------------------------------------------------------------------- images


def preprocess_image(path: str, image_size: int = 299,
                     crop_fraction: float = 0.875) -> np.ndarray:
  """An image file -> float32 [image_size, image_size, 3] in [-1, 1], as at evaluation.

  The evaluation pipeline's own function (`input_pipeline.preprocessing.preprocess_eval`)
  does the work, so predictions see exactly the pixels evaluation sees. Raises
  FileNotFoundError for a missing file and ValueError for one that does not decode.
  """
  import tensorflow as tf

  from input_pipeline import preprocessing

  if not paths.isfile(path):
    raise FileNotFoundError(f"No image file at {path!r}.")
  data = tf.constant(paths.read_bytes(path))
  try:
    image = preprocessing.preprocess_eval(data, image_size=image_size,
                                          crop_fraction=crop_fraction)
  except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
    message = (e.message or str(e)).strip().splitlines()[0]
    raise ValueError(
        f"Cannot decode {path!r} as an image (JPEG, PNG, GIF or BMP): {message}") from None
  return image.numpy().astype(np.float32)


# ----------------------------------------------------------------------------- model


@dataclasses.dataclass(frozen=True)
class Prediction:
  path: str
  classes: tuple[tuple[int, str, float], ...]   # (index, name, probability), best first


@functools.partial(jax.jit, static_argnames=("model", "multilabel"))
def _probabilities(model, variables, images, multilabel):
  logits = model.apply(variables, images, train=False)
  return jax.nn.sigmoid(logits) if multilabel else jax.nn.softmax(logits)


def build_model(fields: Mapping[str, Any], **overrides: Any) -> Any:
  """The checkpoint's model through the architecture registry, as the trainer builds it
  (`factory.create_model`); an override the architecture has no field for (Inception V3
  has no `depthwise_impl`) is left out, since it only picks how the same thing is
  computed."""
  from xception_jax.models import factory

  name = fields.get(factory.ARCHITECTURE) or factory.DEFAULT_ARCHITECTURE
  known = factory.model_fields(name)
  return factory.create_model(fields, **{k: v for k, v in overrides.items() if k in known})


class Predictor:
  """A checkpoint's model and variables with a jitted `probabilities(images)`."""

  def __init__(self, checkpoint: str, *, multilabel: bool = False,
               depthwise_impl: str = "auto"):
    from xception_jax import checkpointing

    variables, fields, step = checkpointing.load_variables(checkpoint)
    self.model = build_model(fields, depthwise_impl=depthwise_impl)
    if not self.model.include_top:
      raise ValueError(
          f"The checkpoint {checkpoint!r} has no classification head (include_top=False): "
          "it computes features, not classes.")
    self.variables, self.step, self.multilabel = variables, step, multilabel

  @property
  def num_classes(self) -> int:
    return self.model.num_classes

  def probabilities(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """[N, S, S, 3] images -> [N, num_classes] softmax (or sigmoid) probabilities."""
    out = [np.asarray(_probabilities(self.model, self.variables, images[i:i + batch_size],
                                     self.multilabel))
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, self.num_classes), np.float32)


def predict(checkpoint: str, paths: Sequence[str], *, image_size: int = 299,
            crop_fraction: float = 0.875, top_k: int = 5, multilabel: bool = False,
            threshold: float = 0.5, labels_file: Optional[str] = None,
            batch_size: int = 32, depthwise_impl: str = "auto") -> list[Prediction]:
  """Top-k softmax classes (or sigmoid classes >= threshold) of each image file."""
  if not paths:
    raise ValueError("Give at least one image file.")
  # Every image is read before the checkpoint, so a bad path fails fast.
  images = np.stack([preprocess_image(p, image_size, crop_fraction) for p in paths])
  predictor = Predictor(checkpoint, multilabel=multilabel, depthwise_impl=depthwise_impl)
  names = class_names(predictor.num_classes, labels_file)
  probabilities = predictor.probabilities(images, batch_size)
  predictions = []
  for path, p in zip(paths, probabilities):
    order = np.argsort(-p, kind="stable")
    if multilabel:
      order = [i for i in order if p[i] >= threshold]
    else:
      order = order[:top_k]
    predictions.append(Prediction(path, tuple((int(i), names[i], float(p[i])) for i in order)))
  return predictions


def format_predictions(predictions: Sequence[Prediction], *, multilabel: bool = False,
                       threshold: float = 0.5) -> str:
  """One block per image: the path, then '  <rank>. <probability>  [<index>] <name>'."""
  lines = []
  for prediction in predictions:
    lines.append(prediction.path)
    for rank, (index, name, probability) in enumerate(prediction.classes, 1):
      lines.append(f"  {rank}. {probability:.6f}  [{index}] {name}")
    if multilabel and not prediction.classes:
      lines.append(f"  (no class with probability >= {threshold})")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def _define_flags() -> None:
  from absl import flags
  flags.DEFINE_string("checkpoint", None, "Checkpoint directory, workdir or step directory.")
  flags.DEFINE_integer("image_size", 299, "Input resolution (the model's training size); "
                       "segmentation: the padded square (default: each image's longer "
                       "side; the run's eval_image_size to match evaluation).")
  flags.DEFINE_float("crop_fraction", 0.875, "Central crop kept of each side.")
  flags.DEFINE_integer("top_k", 5, "Classes printed per image (single-label mode).")
  flags.DEFINE_boolean("multilabel", False,
                       "Sigmoid per class; print every class >= --threshold.")
  flags.DEFINE_float("threshold", 0.5, "Probability threshold of --multilabel.")
  flags.DEFINE_string("labels", None, "Class names, one per line (default: ImageNet "
                      "names for 1000 classes, else numbered classes).")
  flags.DEFINE_integer("batch_size", 32, "Images per forward pass.")
  flags.DEFINE_enum("depthwise_impl", "auto", ["auto", "feature_group", "shift"],
                    "Depthwise implementation (all compute the same; auto is fast on CPU).")
  flags.DEFINE_string("output_dir", None, "Segmentation checkpoints: where the "
                      "<name>_mask.png and <name>_overlay.png files go.")
  flags.mark_flags_as_required(["checkpoint"])


def _main_segmentation(FLAGS, paths: Sequence[str]) -> None:
  """A segmentation checkpoint: mask and overlay PNGs into --output_dir."""
  if not FLAGS.output_dir:
    raise ValueError("This is a segmentation checkpoint: give --output_dir=DIR for the "
                     "mask and overlay PNGs.")
  predictor = predict_segmentation.SegmentationPredictor.from_checkpoint(
      FLAGS.checkpoint, depthwise_impl=FLAGS.depthwise_impl)
  image_size = FLAGS.image_size if FLAGS["image_size"].present else None
  predictions = predict_segmentation.predict_masks(predictor, paths, FLAGS.output_dir,
                                                   image_size)
  print(predict_segmentation.format_masks(predictions, predictor.num_classes), flush=True)


def main(argv: Sequence[str]) -> None:
  from absl import app, flags

  import tensorflow as tf

  from xception_jax.logs import quiet_library_logs

  quiet_library_logs()
  tf.config.set_visible_devices([], "GPU")  # TensorFlow only decodes images here.
  FLAGS = flags.FLAGS
  if len(argv) < 2:
    raise app.UsageError("Give one or more image files after the flags.")
  try:
    if predict_segmentation.is_segmentation(
        predict_segmentation.checkpoint_model_fields(FLAGS.checkpoint)):
      _main_segmentation(FLAGS, argv[1:])
      return
    predictions = predict(
        FLAGS.checkpoint, argv[1:], image_size=FLAGS.image_size,
        crop_fraction=FLAGS.crop_fraction, top_k=FLAGS.top_k, multilabel=FLAGS.multilabel,
        threshold=FLAGS.threshold, labels_file=FLAGS.labels, batch_size=FLAGS.batch_size,
        depthwise_impl=FLAGS.depthwise_impl)
  except (FileNotFoundError, ValueError) as e:
    raise SystemExit(f"Error: {e}") from None
  print(format_predictions(predictions, multilabel=FLAGS.multilabel,
                           threshold=FLAGS.threshold), flush=True)


if __name__ == "__main__":
  from absl import app

  _define_flags()
  app.run(main)
