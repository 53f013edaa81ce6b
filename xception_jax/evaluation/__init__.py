"""Evaluation: pure functions over arrays (MAP@K, accuracy, mIoU) and streaming evaluators."""

from xception_jax.evaluation.accuracy import top_k_accuracy
from xception_jax.evaluation.accuracy import top_k_correct
from xception_jax.evaluation.accuracy import top_k_hits
from xception_jax.evaluation.class_weights import class_weights_from_frequency
from xception_jax.evaluation.class_weights import load_class_weights
from xception_jax.evaluation.class_weights import save_class_weights
from xception_jax.evaluation.map_at_k import map_at_k
from xception_jax.evaluation.map_at_k import map_at_k_jax
from xception_jax.evaluation.map_at_k import mean_average_precision
from xception_jax.evaluation.mean_iou import StreamingMeanIoU
from xception_jax.evaluation.mean_iou import confusion_matrix
from xception_jax.evaluation.mean_iou import mean_iou
from xception_jax.evaluation.streaming import StreamingMapAtK

__all__ = [
    "StreamingMapAtK",
    "StreamingMeanIoU",
    "class_weights_from_frequency",
    "confusion_matrix",
    "load_class_weights",
    "map_at_k",
    "map_at_k_jax",
    "mean_iou",
    "mean_average_precision",
    "save_class_weights",
    "top_k_accuracy",
    "top_k_correct",
    "top_k_hits",
]
