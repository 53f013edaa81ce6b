"""Fields every config shares, with the defaults the paper's recipes start from.

Not a runnable config on its own: imagenet.py, multilabel.py and demo.py build on it.
Every field can be overridden on the command line (`--config.batch_size=512`,
`--config.model.residual=False`); `placeholder` fields are unset (None) by default.
"""
import ml_collections
from ml_collections import config_dict

from input_pipeline.defaults import default_data_config


def model_config() -> ml_collections.ConfigDict:
  """The Xception fields (xception_jax.models.Xception), the paper's defaults."""
  return ml_collections.ConfigDict(dict(
      architecture="xception",          # or xception41/65/71: the ':xception65' variant
      residual=True,                    # Figure 9's ablation: False
      intermediate_activation=config_dict.placeholder(str),  # None | 'relu' | 'elu' (Fig. 10)
      segments=config_dict.placeholder(int),  # None: depthwise; 1: regular conv; divisors between
      order="depthwise_pointwise",      # or 'pointwise_depthwise' (Figure 4's extreme Inception)
      depthwise_impl="auto",            # 'feature_group' | 'shift' | 'native' | 'auto' (native, else shift, on CPU)
      pointwise_impl="auto",            # 'xla' | 'blas' | 'auto' (blas, MKL's sgemm, on CPU when it loads)
      fc_layers=(),                     # (4096, 4096) for the JFT "with FC" runs
      dropout_rate=0.0,
      width_multiplier=1.0,
      num_middle_blocks=8,
      bn_momentum=0.99,
      bn_epsilon=1e-3,
      head_bias_init=0.0,
      remat="none",                     # 'block' | 'block_save_convs' | 'block_save_products' (models/remat.py)
      dtype="float32",                  # compute dtype; 'bfloat16' on accelerators
  ))


ALIGNED_ARCHITECTURES = ("xception41", "xception65", "xception71")
# Fields an aligned Xception shares with Xception: a variant carries their values over.
_SHARED_MODEL_FIELDS = ("intermediate_activation", "segments", "depthwise_impl",
                        "pointwise_impl", "dropout_rate", "width_multiplier", "head_bias_init", "remat",
                        "dtype")


def aligned_model_config(architecture: str) -> ml_collections.ConfigDict:
  """DeepLab v3+'s aligned Xception (xception_jax.models.AlignedXception), timm's BN."""
  return ml_collections.ConfigDict(dict(
      architecture=architecture,
      output_stride=32,                 # 16 or 8: atrous last stages (dense prediction)
      intermediate_activation=config_dict.placeholder(str),
      segments=config_dict.placeholder(int),
      depthwise_impl="auto",
      pointwise_impl="auto",
      dropout_rate=0.0,
      width_multiplier=1.0,
      bn_momentum=0.9,                  # timm's PyTorch momentum 0.1
      bn_epsilon=1e-3,
      head_bias_init=0.0,
      remat="none",                     # rematerialisation of each block (models/remat.py)
      dtype="float32",
  ))


def get_config() -> ml_collections.ConfigDict:
  config = default_data_config()        # dataset, batches, augmentation (docs/DATA.md)
  config.model = model_config()

  # Optimisation (xception_jax/optim.py).
  config.optimizer = "sgd"              # 'sgd' | 'rmsprop'
  config.learning_rate = 0.045
  config.lr_base_batch_size = config_dict.placeholder(int)  # lr *= batch_size / this
  config.warmup_steps = 0
  config.lr_decay_rate = 0.94
  config.lr_decay_every_examples = 2 * 1_281_167
  config.momentum = 0.9
  config.rmsprop_decay = 0.9
  config.rmsprop_epsilon = 1.0
  config.rmsprop_initial_scale = 1.0
  config.weight_decay = 1e-5
  config.weight_decay_depthwise = True  # False: no decay on depthwise kernels (DeepLab's)
  config.label_smoothing = 0.0
  config.grad_clip_norm = config_dict.placeholder(float)
  config.skip_nonfinite_updates = False  # True: skip (and count) steps with a NaN/inf loss or gradient

  # Loop (xception_jax/train.py).
  config.num_train_steps = -1           # -1: num_epochs decides
  config.num_epochs = 100.0
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 3           # >= 1; None keeps every checkpoint
  config.async_checkpointing = True
  config.progress_every_secs = 60.0
  config.prefetch_to_device = 2
  config.map_k = 100
  config.init_from = config_dict.placeholder(str)  # a checkpoint to fine-tune from
  config.eval_only = False
  # Profiler trace (xception_jax/profiling.py): (first, last) traces the train steps
  # from step first to step last into WORKDIR/plugins/profile (TensorBoard's Profile
  # tab); e.g. (10, 15): five steps after compilation. None: no trace.
  config.profile_steps = config_dict.placeholder(tuple)
  config.profile_all_processes = False  # True: every process traces (process_<i>/ for i > 0)

  # Sharding (xception_jax/partitioning.py).
  config.num_devices = -1               # -1: every device of every process
  config.shard_head = False             # split the classification head over devices
  # Slices the mesh spans: the batch is split across them (a DCN data axis) and within
  # each (the head too, with shard_head). -1: the devices' own slice_index count
  # (multi-slice TPU; 1 elsewhere); N > 1 where devices report one slice (GPU hosts):
  # N groups of whole processes. Needs num_devices = -1 when > 1.
  config.num_slices = -1
  return config


def apply_model_variants(config: ml_collections.ConfigDict, variant: str) -> None:
  """Comma-separated switches of the paper's experiments, e.g. 'no_residual,relu', or an
  aligned Xception depth ('xception65'), which replaces the model fields by that
  network's, keeping the values of the fields both share (width, dtype, dropout...)."""
  for token in filter(None, (t.strip() for t in variant.split(","))):
    if token in ALIGNED_ARCHITECTURES:
      model = aligned_model_config(token)
      for field in _SHARED_MODEL_FIELDS:
        model[field] = config.model[field]
      config.model = model
    elif token == "no_residual":
      config.model.residual = False
    elif token in ("relu", "elu"):
      config.model.intermediate_activation = token
    elif token == "fc":
      config.model.fc_layers = (4096, 4096)
    elif token == "pointwise_first":
      config.model.order = "pointwise_depthwise"
    elif token.startswith("segments="):
      config.model.segments = int(token.split("=", 1)[1])
    else:
      raise ValueError(
          f"Unknown config variant {token!r}; known: no_residual, relu, elu, fc, "
          "pointwise_first, segments=N, xception41, xception65, xception71 "
          "(comma-separated).")
