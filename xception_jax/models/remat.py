"""Rematerialisation: trading compute for memory in the backward pass (`model.remat`).

A training step keeps, for the backward pass, the activations the forward computed.
With a policy other than 'none', each residual block (an Xception or aligned-Xception
module, an Inception module) is wrapped in `flax.linen.remat` (`jax.checkpoint`): only
what the policy names is kept from inside the block, the rest is computed again, block
by block, during the backward pass. The numbers are those of 'none' (the same
operations run; tests/test_remat.py), the memory and the time differ
(docs/performance/cpu.md has a CPU run of each).

  'none'                 no rematerialisation (the default).
  'block'                keep only each block's input (`nothing_saveable`): the whole
                         block runs twice, the least memory.
  'block_save_convs'     keep the outputs of the block's convolutions and matrix
                         products (`jax.checkpoint_policies.dots_saveable`: XLA's
                         `conv_general_dilated` and `dot_general`, and the pointwise
                         products by name, whichever engine runs them), recompute the rest:
                         BatchNorm, ReLU, max-pooling, and the depthwise convolutions
                         unless they run as `feature_group` (a `conv_general_dilated`).
  'block_save_products'  keep only the outputs of matrix products without batch
                         dimensions (`dots_with_no_batch_dims_saveable`, and the named
                         pointwise products): the pointwise 1x1 convolutions, which
                         models/pointwise.py writes as products over the channel
                         axis; convolutions of any kind (depthwise, the
                         Inception modules' nn.Conv) are recomputed.

Blocks hold no dropout (the classifier head does) and take no `train` argument (the
BatchNorms are built with it), so nothing needs `static_argnums`; BatchNorm's
`batch_stats` updates pass through `nn.remat` as a mutable collection, and the
depthwise kernels' custom VJPs (models/depthwise.py) are recomputed as any operation.
"""
from __future__ import annotations

from typing import Callable, Optional

import flax.linen as nn
import jax

from xception_jax.models import pointwise

# The pointwise products are named (models/pointwise.py): with pointwise_impl 'blas' they
# are custom calls, which the dot policies alone would not keep.
_PRODUCTS = jax.checkpoint_policies.save_only_these_names(pointwise.CHECKPOINT_NAME)
REMAT_POLICIES: dict[str, Optional[Callable[..., bool]]] = {
    "none": None,
    "block": jax.checkpoint_policies.nothing_saveable,
    "block_save_convs": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_saveable, _PRODUCTS),
    "block_save_products": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable, _PRODUCTS),
}


def check_remat(policy: str) -> None:
  if policy not in REMAT_POLICIES:
    raise ValueError(f"remat must be one of {list(REMAT_POLICIES)}; got {policy!r}.")


def remat_block(block: type[nn.Module], policy: str) -> type[nn.Module]:
  """`block` itself for 'none'; else `block` under `nn.remat` with the policy. The
  wrapped class has the same fields and variables (names, shapes) as `block`."""
  check_remat(policy)
  if policy == "none":
    return block
  return nn.remat(block, policy=REMAT_POLICIES[policy], prevent_cse=True)
