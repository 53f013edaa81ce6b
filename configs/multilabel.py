"""Sigmoid multi-label JFT-style training, the paper's recipe (section 4.3).

  python main.py --config=configs/multilabel.py --workdir=DIR \
      --config.dataset=tfrecord_multilabel:/data/jft/train-*.tfrecord \
      --config.eval_files=/data/jft/fasteval-*.tfrecord \
      --config.class_weights_file=/data/jft/class_weights.txt
  python main.py --config=configs/multilabel.py:fc ...            # "with FC layers"
  python main.py --config=configs/multilabel.py:open_images_v4 ...  # a tfds source

RMSprop, momentum 0.9, learning rate 0.001 decayed by 0.9 every 3,000,000 samples,
no dropout, weight decay 1e-5, sigmoid cross-entropy over 17,000 classes; evaluation is
the weighted MAP@100 of xception_jax.evaluation on the held-out split (FastEval14k's
role). The paper trained asynchronously; this trainer is synchronous.
The TFRecord format of the user's own corpus is in docs/DATA.md.
"""
import math

from configs import base

TFDS_SOURCES = ("open_images_v4", "coco/2017", "voc/2012")


def get_config(variant: str = ""):
  config = base.get_config()
  config.dataset = "tfrecord_multilabel:/data/jft/train-*.tfrecord"
  config.eval_files = "/data/jft/fasteval-*.tfrecord"
  config.task = "multi_label"
  config.num_classes = 17_000
  config.image_size = 299
  config.batch_size = 1024
  config.eval_batch_size = 1000
  config.crop_area_range = (0.05, 1.0)
  config.crop_aspect_range = (0.75, 1.33)

  config.model.dropout_rate = 0.0
  config.model.dtype = "bfloat16"
  config.model.head_bias_init = -math.log(17_000)  # start near the labels' base rate

  config.optimizer = "rmsprop"
  config.learning_rate = 0.001
  config.momentum = 0.9
  config.lr_decay_rate = 0.9
  config.lr_decay_every_examples = 3_000_000
  config.weight_decay = 1e-5

  config.num_train_steps = 1_000_000
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 2_000
  config.map_k = 100

  model_variants = []
  for token in filter(None, (t.strip() for t in variant.split(","))):
    if token in TFDS_SOURCES:
      config.dataset = token
      config.eval_files = None
      config.num_classes = None  # the dataset's own label count
      config.eval_split = "validation"
      config.model.head_bias_init = -math.log(600)
    else:
      model_variants.append(token)
  base.apply_model_variants(config, ",".join(model_variants))
  return config
