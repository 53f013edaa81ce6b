"""A configured training state's trees beside a checkpoint's stored ones.

validation.check_checkpoint_matches compares the leaf paths and shapes that Orbax's
metadata stores for a step (`variables`' params, `train`'s step and opt_state) with
those the config gives (traced: nothing is compiled or allocated), and names the first
that differs, so that a workdir of another model or optimizer is refused, not taken for
damage.
"""
from __future__ import annotations

from typing import Any


def leaf_shapes(tree: Any) -> dict:
  """{'a/0/b': shape} over the leaves: dict keys, attribute names and indices alike, so
  Orbax's stored metadata (namedtuples as dicts) and a live state compare."""
  import jax  # pylint: disable=import-outside-toplevel
  name = lambda k: str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
  return {"/".join(map(name, p)): tuple(x.shape)
          for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def first_difference(have: dict, want: dict) -> str:
  first = sorted(set(have.items()) ^ set(want.items()))[0][0]
  return (f"{first}: {have.get(first, 'missing')} stored, "
          f"{want.get(first, 'missing')} configured")


def abstract_train(config, params: Any) -> Any:
  """{'step', 'opt_state'} shapes the configured optimizer gives `params` (traced)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from xception_jax import optim  # pylint: disable=import-outside-toplevel
  if "optimizer" not in config:
    return None
  tx = optim.create_optimizer(config, max(int(config.get("num_train_steps", 1)), 1))
  return {"step": jax.ShapeDtypeStruct((), jnp.int32),
          "opt_state": jax.eval_shape(tx.init, params)}
