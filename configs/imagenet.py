"""Single-label ImageNet, the paper's recipe (section 4.3).

  python main.py --config=configs/imagenet.py --workdir=DIR
  python main.py --config=configs/imagenet.py:no_residual,relu --workdir=DIR  # ablations

SGD, momentum 0.9, learning rate 0.045 decayed by 0.94 every 2 epochs, weight decay
1e-5, dropout 0.5 before the logits, 299x299, no auxiliary tower. The paper does not
state its batch size; 0.045 is not scaled unless `lr_base_batch_size` is set.
Needs imagenet2012 prepared by tensorflow-datasets (manual download; docs/DATA.md).
"""
from configs import base


def get_config(variant: str = ""):
  config = base.get_config()
  config.dataset = "imagenet2012"
  config.task = "single_label"
  config.num_classes = 1000
  config.train_split = "train"
  config.eval_split = "validation"
  config.image_size = 299
  config.batch_size = 1024
  config.eval_batch_size = 1000
  config.crop_area_range = (0.05, 1.0)  # Inception's distorted bounding box
  config.crop_aspect_range = (0.75, 1.33)

  config.model.dropout_rate = 0.5
  config.model.dtype = "bfloat16"

  config.optimizer = "sgd"
  config.learning_rate = 0.045
  config.lr_decay_rate = 0.94
  config.lr_decay_every_examples = 2 * 1_281_167  # 2 epochs
  config.weight_decay = 1e-5

  config.num_train_steps = -1
  config.num_epochs = 100.0
  config.eval_every_steps = 2500
  config.checkpoint_every_steps = 2500
  base.apply_model_variants(config, variant)
  return config
