"""The embedded default: a small Xception on the locally generated multi-label dataset.

  python main.py --config=configs/demo.py --workdir=runs/demo

No download: the "embedded_shapes" tfds builder draws its images (shapes x colours,
long-tailed labels) on first use into data_dir. The JFT recipe of configs/multilabel.py
(sigmoid cross-entropy, RMSprop with momentum 0.9, decay 0.9, weighted MAP@100) with a
tiny model, small images and a learning rate and decay interval suited to a short run,
evaluated against a random-score baseline. A few minutes on 2 CPU cores.
"""
import math

from configs import base, multilabel


def get_config(variant: str = ""):
  config = multilabel.get_config()
  config.dataset = "embedded_shapes"
  config.eval_files = None
  config.data_dir = "runs/tensorflow_datasets"
  config.num_classes = None            # the dataset's (config.embedded.num_classes)
  config.image_size = 80
  config.batch_size = 32
  config.eval_batch_size = 100
  config.crop_area_range = (0.5, 1.0)  # keep most objects in the crop
  config.crop_aspect_range = (3 / 4, 4 / 3)
  config.cache = True
  config.input_autotune = False         # exits promptly; same throughput on 2 cores

  config.model.width_multiplier = 0.125
  config.model.num_middle_blocks = 2
  config.model.bn_momentum = 0.9      # BN statistics settle within a short run
  config.model.head_bias_init = -math.log(config.embedded.num_classes)
  config.model.dtype = "float32"

  config.learning_rate = 0.003
  config.lr_decay_every_examples = 20_000

  config.num_train_steps = 1500
  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.progress_every_secs = 30.0
  base.apply_model_variants(config, variant)
  return config
