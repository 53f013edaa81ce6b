"""The paper's two objectives, per example (the caller averages over the batch)."""
import jax
import jax.numpy as jnp
import optax


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array,
                          label_smoothing: float = 0.0) -> jax.Array:
  """Single-label (ImageNet): cross-entropy of softmax(logits) against integer labels."""
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def sigmoid_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Multi-label (JFT): independent logistic regressions against multi-hot labels,
  summed over classes (so the loss does not shrink as the class count grows)."""
  return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, labels), axis=-1)


def pixel_softmax_cross_entropy(logits: jax.Array, labels: jax.Array,
                                ignore_label: int = 255) -> tuple[jax.Array, jax.Array]:
  """Segmentation (DeepLab): softmax cross-entropy per pixel against an integer class map.

  Args:
    logits: [B, H, W, C]; labels: int [B, H, W], `ignore_label` where there is no label
      (VOC's object borders, padding).
  Returns:
    (loss [B, H, W], 0 at ignored pixels; valid [B, H, W] bool). The training loss is
    loss.sum() / valid.sum(): the mean over the labelled pixels of the global batch.
  """
  valid = labels != ignore_label
  safe = jnp.where(valid, labels, 0)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
  return jnp.where(valid, loss, 0.0), valid


def mean_over_valid(values: jax.Array, valid: jax.Array) -> jax.Array:
  """The mean of `values` where `valid` (0 when nothing is valid)."""
  return jnp.sum(jnp.where(valid, values, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


LOSSES = {"single_label": softmax_cross_entropy, "multi_label": sigmoid_cross_entropy}
