"""model.remat (xception_jax/models/remat.py): the same numbers, other memory.

Reference: the network without rematerialisation ('none'). Under every policy a
training step's loss, gradients and updated BatchNorm statistics equal it (XLA may
order a recomputed block's sums differently: equal to float32 rounding), for Xception
(with dropout, and the native depthwise kernel's custom VJP where it is built) and the
aligned Xception (feature_group depthwise). And the field is not silently ignored: the
traced forward holds one checkpoint per block carrying the policy's function, the
residuals the backward pass keeps shrink as the policy's name says (counted from
`jax.vjp`'s residuals, no private API), and XLA's memory analysis of the compiled step
differs from 'none'.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from xception_jax import validation
from xception_jax.models import factory, remat
from xception_jax.models.aligned_xception import AlignedXception
from xception_jax.models.deeplab import backbone_blocks
from xception_jax.native import loader

POLICIES = tuple(remat.REMAT_POLICIES)
XCEPTION = dict(architecture="xception", width_multiplier=0.0625, num_middle_blocks=1,
                dropout_rate=0.5, depthwise_impl="native" if loader.available() else "shift")
ALIGNED = dict(base.aligned_model_config("xception41").to_dict(), width_multiplier=0.0625,
               depthwise_impl="feature_group")
del ALIGNED["architecture"]
# name: (fields, image size, blocks): Xception's 3 entry + 1 middle + 1 exit modules;
# the aligned Xception-41's 3 entry, 1 middle (of 8) and 2 exit blocks.
MODELS = {"xception": (XCEPTION, 71, 5), "aligned_xception": (ALIGNED, 32, 6)}
# The compiled steps (four per model, ~25-40 s of compilation each model on 2 cores):
# Xception's in the default run, the aligned Xception's with the `slow` tests.
COMPILED_MODELS = ["xception", pytest.param("aligned_xception", marks=pytest.mark.slow)]


def _model(name: str, **fields):
  fields = dict(MODELS[name][0], **fields)
  if name == "xception":
    return factory.create_model(fields, num_classes=5)
  return AlignedXception(backbone_blocks("xception41", num_middle_blocks=1), num_classes=5,
                         **fields)


def _setup(name: str, policy: str):
  model = _model(name, remat=policy)
  size = MODELS[name][1]
  images = jax.random.uniform(jax.random.key(0), (2, size, size, 3), minval=-1, maxval=1)
  labels = jnp.array([1, 3])
  variables = model.init(jax.random.key(1), images, train=False)

  def loss_fn(params, batch_stats):
    logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                  train=True, mutable=["batch_stats"],
                                  rngs={"dropout": jax.random.key(2)})
    loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))
    return loss, updates["batch_stats"]

  return model, images, variables, loss_fn


@functools.cache
def _step(name: str, policy: str):
  """(loss, new batch_stats, grads) of one training step, and the compiled step."""
  _, _, variables, loss_fn = _setup(name, policy)
  args = (variables["params"], variables["batch_stats"])
  compiled = jax.jit(jax.value_and_grad(loss_fn, has_aux=True)).lower(*args).compile()
  (loss, batch_stats), grads = compiled(*args)
  return (loss, batch_stats, grads), compiled


@pytest.mark.parametrize("name", COMPILED_MODELS)
@pytest.mark.parametrize("policy", POLICIES[1:])
def test_loss_gradients_and_batch_stats_equal_no_remat(name, policy):
  (ref_loss, ref_stats, ref_grads), _ = _step(name, "none")
  (loss, stats, grads), _ = _step(name, policy)
  # The forward is not recomputed: loss and statistics come out equal (bitwise here).
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(stats), jax.tree.leaves(ref_stats)):
    np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=f"batch_stats{jax.tree_util.keystr(path)}")
  # Gradients: the recomputed blocks may sum in another order. Some gradients are zero in
  # exact arithmetic (the bias of a depthwise BN whose shift the next BN removes) and
  # come out as rounding noise; so the absolute tolerance is relative to the largest
  # gradient of the network, the relative one to each element.
  assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)
  largest = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(ref_grads))
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6 * largest,
                               err_msg=f"grads{jax.tree_util.keystr(path)}")
  diff = sum(float(jnp.sum((a - b) ** 2)) for a, b in zip(jax.tree.leaves(grads),
                                                          jax.tree.leaves(ref_grads)))
  norm = sum(float(jnp.sum(b ** 2)) for b in jax.tree.leaves(ref_grads))
  assert diff ** 0.5 < 1e-5 * norm ** 0.5


def _checkpoints(jaxpr) -> list:
  """The policies of every checkpoint (remat) equation, nested jaxprs included."""
  found = []
  for eqn in jaxpr.eqns:
    if "policy" in eqn.params and "prevent_cse" in eqn.params:
      found.append(eqn.params["policy"])
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          found += _checkpoints(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          found += _checkpoints(sub)
  return found


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("policy", POLICIES)
def test_every_block_is_checkpointed_with_the_policy(name, policy):
  model, images, variables, _ = _setup(name, policy)
  jaxpr = jax.make_jaxpr(lambda v: model.apply(v, images, train=True,
                                               mutable=["batch_stats"],
                                               rngs={"dropout": jax.random.key(2)}))(variables)
  found = _checkpoints(jaxpr.jaxpr)
  expected = 0 if policy == "none" else MODELS[name][2]
  assert len(found) == expected
  assert all(p is remat.REMAT_POLICIES[policy] for p in found)


def _residual_bytes(name: str, policy: str, depthwise_impl: str) -> int:
  """Bytes the backward pass keeps from the forward: jax.vjp's residuals (traced only)."""
  fields, size, _ = MODELS[name]
  _, _, variables, loss_fn = _setup(name, policy)
  if fields["depthwise_impl"] != depthwise_impl:
    model = _model(name, remat=policy, depthwise_impl=depthwise_impl)
    images = jnp.zeros((2, size, size, 3))

    def loss_fn(params, batch_stats):  # pylint: disable=function-redefined
      logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                    train=True, mutable=["batch_stats"],
                                    rngs={"dropout": jax.random.key(2)})
      return jnp.sum(logits), updates["batch_stats"]

  vjp = jax.eval_shape(lambda p, s: jax.vjp(lambda q: loss_fn(q, s), p, has_aux=True)[1],
                       variables["params"], variables["batch_stats"])
  return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(vjp))


def test_each_policy_keeps_what_its_name_says():
  # feature_group: the depthwise convolutions are conv_general_dilated, kept by
  # 'block_save_convs' and recomputed by 'block_save_products'.
  kept = {p: _residual_bytes("aligned_xception", p, "feature_group") for p in POLICIES}
  assert kept["none"] > kept["block_save_convs"] > kept["block_save_products"] > kept["block"]
  # shift (elementwise products): no convolution in the blocks to keep, so the two
  # saving policies keep the same (the pointwise products), still less than 'none'.
  kept = {p: _residual_bytes("xception", p, "shift") for p in POLICIES}
  assert kept["none"] > kept["block_save_convs"] == kept["block_save_products"] > kept["block"]


@pytest.mark.parametrize("name", COMPILED_MODELS)
def test_xla_memory_analysis_of_the_step_differs_from_no_remat(name):
  temp = {p: _step(name, p)[1].memory_analysis().temp_size_in_bytes for p in POLICIES}
  assert all(temp[p] != temp["none"] for p in POLICIES[1:]), temp


def test_validation_knows_the_models_policies():
  assert validation.REMAT_POLICIES == POLICIES
  assert base.get_config().model.remat == "none"
  with pytest.raises(ValueError, match="remat must be one of"):
    factory.create_model(dict(XCEPTION, remat="everything"), num_classes=5).init(
        jax.random.key(0), jnp.zeros((1, 71, 71, 3)))
