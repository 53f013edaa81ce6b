"""Every experiment of the Xception paper as a named config, in one table.

  python main.py --config=configs/experiments.py:imagenet_inception_v3 --workdir=DIR
  python main.py --config=configs/experiments.py:jft_xception_fc --workdir=DIR \
      --config.dataset=tfrecord_multilabel:/data/jft/train-*.tfrecord ...

Each name is a recipe (configs/imagenet.py or configs/multilabel.py, the paper's
section 4.3) plus the model the experiment trains. docs/EXPERIMENTS.md maps every name
to the paper's table or figure; `python -m xception_jax.report` draws them the way the
paper does. Any field can still be overridden on the command line.

Inception V3 trains with its own recipe on ImageNet (Szegedy et al. 2016, section 8,
and the Xception paper's section 4.3): RMSprop (decay 0.9, epsilon 1.0, momentum 0.9),
learning rate 0.045 decayed by 0.94 every 2 epochs, gradient clipping at norm 2.0,
label smoothing 0.1, weight decay 4e-5, and the same dropout 0.5 as Xception ("both
models include a dropout layer of rate 0.5"). On JFT both networks share the JFT
recipe; Inception V3 keeps its weight decay of 4e-5 (the paper used the same rates on
both datasets).
"""
import re

import ml_collections

from configs import base, imagenet, multilabel

RECIPES = {"imagenet": imagenet.get_config, "jft": multilabel.get_config}
SPECTRUM = (1, 2, 4, 8)  # segments dividing every separable conv's channels (gcd 8)

# name: (recipe, architecture, model variant, where the paper shows it)
EXPERIMENTS = {
    "imagenet_xception": ("imagenet", "xception", "", "Table 1, Table 3, Figure 6"),
    "imagenet_inception_v3": ("imagenet", "inception_v3", "", "Table 1, Table 3, Figure 6"),
    "jft_xception": ("jft", "xception", "", "Table 2, Figure 7"),
    "jft_xception_fc": ("jft", "xception", "fc", "Table 2, Figure 8"),
    "jft_inception_v3": ("jft", "inception_v3", "", "Table 2, Figure 7"),
    "jft_inception_v3_fc": ("jft", "inception_v3", "fc", "Table 2, Figure 8"),
    "imagenet_xception_no_residual": ("imagenet", "xception", "no_residual", "Figure 9"),
    "imagenet_xception_relu": ("imagenet", "xception", "relu", "Figure 10"),
    "imagenet_xception_elu": ("imagenet", "xception", "elu", "Figure 10"),
    **{f"imagenet_xception_segments_{n}": (
        "imagenet", "xception", f"segments={n}",
        "sections 2 and 6: the spectrum (not run in the paper)") for n in SPECTRUM},
}

# Inception V3's own ImageNet recipe (module docstring).
INCEPTION_V3_IMAGENET = dict(
    optimizer="rmsprop", learning_rate=0.045, momentum=0.9, rmsprop_decay=0.9,
    rmsprop_epsilon=1.0, lr_decay_rate=0.94, lr_decay_every_examples=2 * 1_281_167,
    grad_clip_norm=2.0, label_smoothing=0.1, weight_decay=4e-5)
INCEPTION_V3_WEIGHT_DECAY = 4e-5


def inception_v3_model(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Inception V3's fields (xception_jax.models.InceptionV3), taking the recipe's
  shared ones (dropout, FC layers, width, BN, head bias, remat, dtype) from `model`."""
  shared = ("fc_layers", "dropout_rate", "width_multiplier", "bn_momentum", "bn_epsilon",
            "head_bias_init", "remat", "dtype")
  return ml_collections.ConfigDict(
      dict(architecture="inception_v3", **{name: model[name] for name in shared}))


def apply_experiment(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Turns a recipe's config (or configs/demo.py's) into experiment `name`'s model:
  the architecture and the variant; Inception V3 also gets its weight decay."""
  _, architecture, variant, _ = lookup(name)
  if architecture == "inception_v3":
    config.model = inception_v3_model(config.model)
    config.weight_decay = INCEPTION_V3_WEIGHT_DECAY
  base.apply_model_variants(config, variant)
  return config


def lookup(name: str) -> tuple[str, str, str, str]:
  """The table row of `name`; any `imagenet_xception_segments_N` is a spectrum point."""
  if name in EXPERIMENTS:
    return EXPERIMENTS[name]
  match = re.fullmatch(r"imagenet_xception_segments_(\d+)", name)
  if match:
    return ("imagenet", "xception", f"segments={int(match.group(1))}",
            "sections 2 and 6: the spectrum (not run in the paper)")
  raise ValueError(
      f"Unknown experiment {name!r}; use --config=configs/experiments.py:NAME with NAME "
      f"one of {', '.join(EXPERIMENTS)} (docs/EXPERIMENTS.md).")


def get_config(name: str = "") -> ml_collections.ConfigDict:
  recipe, architecture, _, _ = lookup(name)
  config = RECIPES[recipe]()
  apply_experiment(config, name)
  if recipe == "imagenet" and architecture == "inception_v3":
    config.update(INCEPTION_V3_IMAGENET)
  config.experiment = name
  return config
