"""The embedded dataset: multi-label images of coloured shapes, generated locally.

`embedded_shapes` is a real `tfds.core.GeneratorBasedBuilder`, so it flows
through exactly the same reading, sharding and preprocessing code as ImageNet,
VOC or COCO, but needs no download: every image is drawn with NumPy from a seed.

Each image holds 1..`max_objects` objects on a noisy, low-saturation textured
background. An object's class is a (colour, shape) pair: 4 colours x 6 shapes
gives at most 24 classes; `num_classes` takes the first ones in `CLASS_NAMES`.
Objects vary in position and scale and may overlap a little (at most 25% of the
smaller bounding box), so every labelled object stays visible. Class frequencies
follow a Zipf law (p(k) ~ 1 / (k + 1) ** zipf_exponent), long-tailed like
social-media tags: class 0 is the most common, the last class the rarest.

Features of an example:
  image:   uint8 [image_size, image_size, 3], stored as PNG (lossless).
  labels:  the sorted distinct classes present (the multi-label target).
  objects: one entry per drawn object: label and bbox (tfds BBox, normalised).
  id:      the example's index in its split before tfds shuffles the records.

Beside the generated records, `class_weights.txt` holds one weight per class
(one per line): the fraction of train images containing the class, normalised
to sum to 1. The evaluator weights per-class AP by it (FastEval14k-style MAP).

Every example is drawn from `numpy.random.default_rng([seed, split, index])`,
so the data are identical on every machine and independent of generation order.
Generation of the default size (4000 + 500 images at 96 px) takes a few seconds.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np
import tensorflow_datasets as tfds

from input_pipeline import embedded_builder
from xception_jax.evaluation import class_weights as weights_io

COLOURS = {
    "red": (215, 35, 35),
    "green": (30, 160, 50),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 25),
}
SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
# Class k is colour k % 4 and shape k // 4: the first 16 classes use four shapes.
CLASS_NAMES = tuple(
    f"{colour}_{shape}" for shape in SHAPES for colour in COLOURS
)
MAX_CLASSES = len(CLASS_NAMES)
CLASS_WEIGHTS_FILENAME = "class_weights.txt"
SPLITS = ("train", "validation")
_SPLIT_CODE = {"train": 0, "validation": 1}

# Object half-size as a fraction of the image side, and the allowed overlap
# (intersection / smaller box area) between two objects' bounding boxes.
_MIN_HALF_SIZE, _MAX_HALF_SIZE = 0.09, 0.2
_MAX_OVERLAP = 0.25
_PLACEMENT_ATTEMPTS = 30


_DESCRIPTION = __doc__.split("\n\n")[1]  # The module docstring's first paragraph.
DEFAULT_PARAMS = dict(
    num_train=4000, num_eval=500, image_size=96, num_classes=20,
    max_objects=4, seed=0, zipf_exponent=1.0)


def config_name(params: dict[str, Any]) -> str:
  """A directory-safe config name that encodes every parameter."""
  zipf = f"{float(params['zipf_exponent']):g}".replace(".", "p")
  return (f"px{params['image_size']}_c{params['num_classes']}"
          f"_n{params['num_train']}-{params['num_eval']}"
          f"_o{params['max_objects']}_z{zipf}_seed{params['seed']}")


def _validate(params: dict[str, Any]) -> None:
  if not 2 <= params["num_classes"] <= MAX_CLASSES:
    raise ValueError(
        f"embedded.num_classes must be in [2, {MAX_CLASSES}] (4 colours x 6 "
        f"shapes), got {params['num_classes']}.")
  if params["image_size"] < 32:
    raise ValueError(
        f"embedded.image_size must be >= 32, got {params['image_size']}.")
  if params["max_objects"] < 1:
    raise ValueError(
        f"embedded.max_objects must be >= 1, got {params['max_objects']}.")
  if params["num_train"] < 1 or params["num_eval"] < 1:
    raise ValueError("embedded.num_train and embedded.num_eval must be >= 1.")


def builder_configs(config_class, defaults: dict[str, Any], title: str,
                    field: str) -> tuple[Callable[..., Any], Any]:
  """(make_builder_config, the default config) for a builder config class whose
  fields are `defaults`' keys; `field` names the config field in error messages."""

  def make(params: dict[str, Any]):
    _validate(params)
    return config_class(
        name=config_name(params), version=tfds.core.Version("1.0.0"),
        description=f"{title}, " + ", ".join(
            f"{k}={v}" for k, v in sorted(params.items())),
        **params)

  default = make(defaults)

  def make_builder_config(**overrides: Any):
    """The builder config for the given parameters (defaults for the others)."""
    unknown = set(overrides) - set(defaults)
    if unknown:
      raise ValueError(
          f"Unknown {field} field(s) {sorted(unknown)}; known: {sorted(defaults)}.")
    params = dict(defaults, **overrides)
    params = {k: (float(v) if k == "zipf_exponent" else int(v))
              for k, v in params.items()}
    if config_name(params) == default.name:
      return default  # tfds rejects a new object with a registered name.
    return make(params)

  return make_builder_config, default


make_builder_config, _DEFAULT_CONFIG = builder_configs(
    embedded_builder.EmbeddedConfig, DEFAULT_PARAMS, "Embedded shapes", "embedded dataset")


def zipf_probabilities(num_classes: int, exponent: float) -> np.ndarray:
  p = 1.0 / np.arange(1, num_classes + 1, dtype=np.float64) ** exponent
  return p / p.sum()


# ----------------------------------------------------------------------------
# Planning (cheap: no pixels) and drawing (vectorised NumPy).


def plan_example(params: dict[str, Any], split: str, index: int) -> dict:
  """The objects and background of one example, from its own random stream."""
  rng = np.random.default_rng(
      [int(params["seed"]), _SPLIT_CODE[split], int(index)])
  size = int(params["image_size"])
  probs = zipf_probabilities(params["num_classes"], params["zipf_exponent"])
  num_objects = int(rng.integers(1, params["max_objects"] + 1))
  classes, centres, half_sizes, boxes = [], [], [], []
  for _ in range(num_objects):
    cls = int(rng.choice(len(probs), p=probs))
    for _ in range(_PLACEMENT_ATTEMPTS):
      r = rng.uniform(_MIN_HALF_SIZE, _MAX_HALF_SIZE) * size
      cy, cx = rng.uniform(r, size - r, size=2)
      box = np.array([cy - r, cx - r, cy + r, cx + r])
      if all(_overlap(box, other) <= _MAX_OVERLAP for other in boxes):
        break
    else:
      continue  # No room: the object is not drawn and not labelled.
    classes.append(cls)
    centres.append((cy, cx))
    half_sizes.append(r)
    boxes.append(box)
  colour_jitter = rng.integers(-15, 16, size=(len(classes), 3))
  return dict(
      classes=np.array(classes, np.int64),
      centres=np.array(centres, np.float64).reshape(-1, 2),
      half_sizes=np.array(half_sizes, np.float64),
      boxes=np.array(boxes, np.float64).reshape(-1, 4),
      colour_jitter=colour_jitter,
      background_seed=int(rng.integers(2**62)),
      size=size,
  )


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
  h = min(a[2], b[2]) - max(a[0], b[0])
  w = min(a[3], b[3]) - max(a[1], b[1])
  if h <= 0 or w <= 0:
    return 0.0
  area = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
  return float(h * w / area)


def shape_mask(shape: str, yy: np.ndarray, xx: np.ndarray, cy: float,
               cx: float, r: float) -> np.ndarray:
  """Boolean mask of a shape of half-size r centred at (cy, cx)."""
  dy, dx = yy - cy, xx - cx
  ady, adx = np.abs(dy), np.abs(dx)
  if shape == "circle":
    return dy * dy + dx * dx <= r * r
  if shape == "square":
    return np.maximum(ady, adx) <= 0.85 * r
  if shape == "triangle":  # Apex up, base at 0.7 r below the centre.
    return (dy <= 0.7 * r) & (1.7 * adx <= dy + r)
  if shape == "cross":
    t = r / 3.0
    return ((adx <= t) & (ady <= r)) | ((ady <= t) & (adx <= r))
  if shape == "ring":
    d2 = dy * dy + dx * dx
    return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
  if shape == "diamond":
    return ady + adx <= 1.15 * r
  raise ValueError(f"unknown shape {shape!r}")


def class_colour_shape(cls: int) -> tuple[str, str]:
  colour, shape = CLASS_NAMES[cls].split("_")
  return colour, shape


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
  """Low-saturation texture: bilinear-upsampled coarse noise plus a grey level."""
  cells = max(2, size // 12)
  coarse_grey = rng.normal(0.0, 28.0, size=(cells + 1, cells + 1, 1))
  coarse_tint = rng.normal(0.0, 8.0, size=(cells + 1, cells + 1, 3))
  coarse = coarse_grey + coarse_tint
  pos = (np.arange(size) + 0.5) * (cells / size)
  i0 = np.minimum(pos.astype(np.int64), cells - 1)
  f = (pos - i0)[:, None, None]
  rows = coarse[i0] * (1 - f) + coarse[i0 + 1] * f  # [size, cells+1, 3]
  fx = (pos - i0)[None, :, None]
  tex = rows[:, i0] * (1 - fx) + rows[:, i0 + 1] * fx  # [size, size, 3]
  level = rng.uniform(85.0, 170.0)
  return level + tex


def render(plan: dict) -> np.ndarray:
  """Draws a planned example: uint8 [size, size, 3]."""
  size = plan["size"]
  rng = np.random.default_rng(plan["background_seed"])
  image = _background(rng, size)
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
  for cls, (cy, cx), r, jitter in zip(plan["classes"], plan["centres"],
                                      plan["half_sizes"],
                                      plan["colour_jitter"]):
    colour, shape = class_colour_shape(int(cls))
    mask = shape_mask(shape, yy, xx, cy, cx, r)
    image[mask] = np.asarray(COLOURS[colour], np.float64) + jitter
  image += rng.normal(0.0, 6.0, size=image.shape)
  return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def visible_masks(plan: dict) -> list[np.ndarray]:
  """Per object, the pixels where it is drawn and not covered by later ones."""
  size = plan["size"]
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
  masks = [shape_mask(class_colour_shape(int(c))[1], yy, xx, cy, cx, r)
           for c, (cy, cx), r in zip(plan["classes"], plan["centres"],
                                      plan["half_sizes"])]
  visible = []
  for i, m in enumerate(masks):
    covered = np.zeros_like(m)
    for later in masks[i + 1:]:
      covered |= later
    visible.append(m & ~covered)
  return visible


def image_labels(plan: dict) -> np.ndarray:
  return np.unique(plan["classes"]).astype(np.int64)


def class_weights_from_plans(plans, num_classes: int) -> np.ndarray:
  """Fraction of images containing each class, normalised to sum to 1."""
  counts = np.zeros(num_classes, np.float64)
  for plan in plans:
    counts[image_labels(plan)] += 1
  return weights_io.class_weights_from_frequency(counts)


class EmbeddedShapes(embedded_builder.EmbeddedBuilder):
  """Locally generated multi-label shapes (see the module docstring)."""

  BUILDER_CONFIGS = [_DEFAULT_CONFIG]
  DEFAULT_PARAMS = DEFAULT_PARAMS
  DESCRIPTION = _DESCRIPTION

  def _features(self, params: dict[str, Any]) -> dict[str, Any]:
    label = tfds.features.ClassLabel(names=list(CLASS_NAMES[:params["num_classes"]]))
    return {"labels": tfds.features.Sequence(label),
            "objects": tfds.features.Sequence({
                "label": label,
                "bbox": tfds.features.BBoxFeature(),
            })}

  def _split_generators(self, dl_manager):
    p = self.params
    # The train plans serve twice: the class weights, then the examples.
    self._train_plans = [plan_example(p, "train", i) for i in range(p["num_train"])]
    weights = class_weights_from_plans(self._train_plans, p["num_classes"])
    # During preparation self.data_dir is the temporary version directory that
    # tfds renames into place, so the file lands beside the records.
    weights_io.save_class_weights(
        os.path.join(self.data_dir, CLASS_WEIGHTS_FILENAME), weights)
    return super()._split_generators(dl_manager)

  def _plan(self, split: str, index: int) -> dict:
    if split == "train":
      return self._train_plans[index]
    return plan_example(self.params, split, index)

  def _example(self, plan: dict, index: int) -> dict[str, Any]:
    return {
        "image": render(plan),
        "labels": image_labels(plan),
        "objects": {
            "label": plan["classes"],
            "bbox": np.clip(plan["boxes"] / plan["size"], 0.0, 1.0).astype(np.float32),
        },
        "id": index,
    }


def builder(data_dir: str | None = None, **params: Any) -> EmbeddedShapes:
  """The builder for these parameters (not prepared yet, see `prepare`)."""
  return EmbeddedShapes(config=make_builder_config(**params), data_dir=data_dir)


def prepare(data_dir: str | None = None, **params: Any) -> EmbeddedShapes:
  """Generates the dataset once (no-op when already there); returns the builder.

  New copies are written as ArrayRecord (random access by record id); copies
  prepared earlier as TFRecord are kept and read through a record-offset index.
  """
  return embedded_builder.prepare_once(builder(data_dir, **params),
                                       file_format="array_record")


def class_weights_path(b: EmbeddedShapes) -> str:
  return os.path.join(os.fspath(b.data_path), CLASS_WEIGHTS_FILENAME)
