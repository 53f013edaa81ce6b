"""Weight converters into this project's Flax models, one file per source.

    keras.py   Keras `keras.applications.Xception` weights (h5py) -> `Xception`, or
               `keras.applications.InceptionV3` -> `InceptionV3` (keras_inception_v3.py),
               the network recognised from the file
    timm.py    timm `xception41/65/71` state dicts (safetensors) -> `AlignedXception`
    __main__   the command line: python -m xception_jax.convert --keras=FILE --out=DIR
               or --timm=FILE --arch=xception65 [--output_stride=16] --out=DIR

Neither reads a framework's pickles nor imports Keras, TensorFlow or torch.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import numpy as np

from xception_jax.convert.keras import (KerasFileError, detect_architecture, from_keras,
                                        keras_layer_specs, read_keras_file)
from xception_jax.convert.timm import (TimmFileError, convert_state_dict, expected_keys,
                                       from_timm, read_timm_file)


def count_parameters(variables: Mapping[str, Any]) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables.get("params", {})))


__all__ = ["KerasFileError", "TimmFileError", "convert_state_dict", "count_parameters",
           "detect_architecture", "expected_keys",
           "from_keras", "from_timm", "keras_layer_specs", "read_keras_file",
           "read_timm_file"]
