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


LOSSES = {"single_label": softmax_cross_entropy, "multi_label": sigmoid_cross_entropy}
