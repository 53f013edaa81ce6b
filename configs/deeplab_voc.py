"""DeepLab v3+ on PASCAL VOC 2012: the paper's recipe on the aligned Xception-65.

  python main.py --config=configs/deeplab_voc.py --workdir=/ckpt/deeplab_voc \
      --config.data_dir=/data/tfds --config.init_from=/ckpt/xception65_timm
  python main.py --config=configs/deeplab_voc.py:train ...   # without SBD (train split)

Chen et al. (ECCV 2018) and tensorflow/models research/deeplab: crop 513 x 513, output
stride 16 with ASPP rates (6, 12, 18), batch 16, SGD with momentum 0.9, base learning
rate 0.007 with the poly schedule (power 0.9) over 30,000 steps, weight decay 4e-5,
BatchNorm decay 0.9997, random scale 0.5-2.0 in steps of 0.25 and left-right flips,
evaluation on val at 513 x 513 (padded) with a single scale (`eval_scales`, `eval_flip`
give DeepLab's multi-scale, flipped inference: (0.5, 0.75, 1.0, 1.25, 1.5, 1.75) and
True for its best numbers, with `eval_output_stride=8`: the model trained at output
stride 16 evaluated at 8, rates 12/24/36, the same parameters; the model zoo's
xception65: 82.20% at 16 single scale, 83.58% at 8 with those scales and flip):

  python main.py --config=configs/deeplab_voc.py --workdir=/ckpt/deeplab_voc \
      --config.eval_only=True --config.eval_output_stride=8 \
      --config.eval_scales='(0.5,0.75,1.0,1.25,1.5,1.75)' --config.eval_flip=True

As TF DeepLab's code (model.py, train_utils.py): bilinear resizing with align_corners
geometry, the decoder's stride-4 features before the ReLU, head BN epsilon 1e-5 and
TF's head initialisers, no weight decay on depthwise kernels; `config.model` and
`weight_decay_depthwise` below switch each back (docs/MODELS.md).

Data: `voc_segmentation` (input_pipeline/voc_segmentation.py; the archives go in the
manual dir, docs/DATA.md). Its `train_aug` split (10,582 images, SBD's extra masks)
exists only when SegmentationClassAug.zip is there too: the variant ':train' uses the
1,464 images of VOC's own train split instead.

The backbone starts from an ImageNet-trained aligned Xception through init_from: a
classification checkpoint of `architecture='xception65'` (trained here, or converted
from timm with `python -m xception_jax.convert --timm=... --arch=xception65`) becomes
the model's backbone and the ASPP and decoder start fresh (xception_jax/train.py). The
model zoo's xception65 reaches 82.20% mIoU on val at output stride 16 after COCO
pre-training as well (this recipe has no COCO stage).
"""
import ml_collections
from ml_collections import config_dict

from configs import base
from input_pipeline.segmentation_defaults import segmentation_data_config

# Segmentation data fields the classification base lacks.
_SEGMENTATION_FIELDS = ("min_scale_factor", "max_scale_factor", "scale_factor_step_size",
                        "embedded_segmentation")


def deeplab_model_config(backbone: str = "xception65") -> ml_collections.ConfigDict:
  """The DeepLabV3Plus fields (xception_jax/models/deeplab.py), DeepLab v3+'s values."""
  return ml_collections.ConfigDict(dict(
      architecture="deeplabv3plus",
      backbone=backbone,                # 'xception41' | 'xception65' | 'xception71'
      output_stride=16,                 # or 8 (rates doubled)
      atrous_rates=config_dict.placeholder(tuple),  # None: (6, 12, 18) at 16, x2 at 8
      aspp_depth=256,
      decoder_projection_depth=48,
      decoder_depth=256,
      dropout_rate=0.1,                 # after the ASPP projection (keep_prob 0.9)
      intermediate_activation=config_dict.placeholder(str),
      segments=config_dict.placeholder(int),
      depthwise_impl="auto",
      pointwise_impl="auto",
      width_multiplier=1.0,             # scales the backbone and the head alike
      bn_momentum=0.9997,               # DeepLab's BN decay
      bn_epsilon=1e-3,                  # the backbone's (its ImageNet checkpoint's)
      head_bn_epsilon=1e-5,             # ASPP and decoder (TF DeepLab's)
      head_init="deeplab",              # TF's truncated normals | 'glorot_uniform'
      align_corners=True,               # TF's resize geometry | False: half-pixel
      decoder_features_before_relu=True,  # TF's pre-ReLU stride-4 map | False: after
      remat="none",                     # the backbone's blocks (models/remat.py)
      dtype="float32",
  ))


def segmentation_config() -> ml_collections.ConfigDict:
  """base.get_config() with the segmentation data fields and a DeepLab model."""
  config = base.get_config()
  data = segmentation_data_config()
  for field in _SEGMENTATION_FIELDS:
    config[field] = data[field]
  config.eval_image_size = config_dict.placeholder(int)
  config.task = "segmentation"
  config.model = deeplab_model_config()
  config.lr_schedule = "poly"
  config.lr_poly_power = 0.9
  config.eval_scales = (1.0,)
  config.eval_flip = False
  # None: evaluate at the model's output_stride; 8 (or 16): the same parameters at that
  # stride, ASPP rates scaled with it (DeepLab's best row: trained at 16, evaluated at 8).
  config.eval_output_stride = config_dict.placeholder(int)
  config.weight_decay_depthwise = False  # TF DeepLab's regularize_depthwise=False
  config.shard_head = False
  return config


def get_config(variant: str = ""):
  config = segmentation_config()
  config.dataset = "voc_segmentation"
  config.train_split = "train" if variant == "train" else "train_aug"
  config.eval_split = "validation"
  config.num_classes = None             # the dataset's: 21 (background + 20)
  config.image_size = 513               # train crop
  config.eval_image_size = 513          # val images padded to 513 x 513
  config.min_scale_factor = 0.5
  config.max_scale_factor = 2.0
  config.scale_factor_step_size = 0.25
  config.batch_size = 16
  config.eval_batch_size = 16

  config.optimizer = "sgd"
  config.momentum = 0.9
  config.learning_rate = 0.007
  config.weight_decay = 4e-5
  config.num_train_steps = 30_000
  config.log_every_steps = 100
  config.eval_every_steps = 5_000
  config.checkpoint_every_steps = 2_000
  if variant not in ("", "train"):
    raise ValueError(f"Unknown config variant {variant!r}; known: '' (train_aug), 'train'.")
  return config
