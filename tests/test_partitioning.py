"""Mesh, partition rules and global-batch assembly on 4 simulated CPU devices."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from xception_jax import partitioning


def test_mesh_uses_the_requested_devices():
  assert partitioning.create_mesh().size == len(jax.devices()) == 4
  assert partitioning.create_mesh(1).size == 1
  with pytest.raises(ValueError, match="config.num_devices=5"):
    partitioning.create_mesh(5)


def _state():
  return {"params": {"head": {"kernel": jnp.zeros((16, 8)), "bias": jnp.zeros(8)},
                     "exit_flow": {"kernel": jnp.zeros((3, 3))}},
          "opt_state": ({"trace": {"head": {"kernel": jnp.zeros((16, 8)),
                                            "bias": jnp.zeros(8)}}},),
          "step": jnp.zeros((), jnp.int32)}


def test_rules_shard_the_head_and_its_optimizer_copies():
  mesh = partitioning.create_mesh()
  shardings = partitioning.tree_shardings(_state(), mesh, partitioning.partition_rules(True))
  assert shardings["params"]["head"]["kernel"].spec == P(None, "data")
  assert shardings["params"]["head"]["bias"].spec == P("data")
  assert shardings["opt_state"][0]["trace"]["head"]["kernel"].spec == P(None, "data")
  assert shardings["params"]["exit_flow"]["kernel"].spec == P()
  assert shardings["step"].spec == P()
  replicated = partitioning.tree_shardings(_state(), mesh, partitioning.partition_rules(False))
  assert all(s.spec == P() for s in jax.tree.leaves(replicated))


def test_indivisible_head_is_a_clear_error():
  state = {"head": {"kernel": jnp.zeros((16, 6))}}
  with pytest.raises(ValueError, match="Cannot shard head/kernel .* over 4 devices"):
    partitioning.tree_shardings(state, partitioning.create_mesh(),
                                partitioning.partition_rules(True))


def test_global_batch_round_trip():
  mesh = partitioning.create_mesh()
  sharding = partitioning.data_sharding(mesh)
  local = {"image": np.arange(8 * 3, dtype=np.float32).reshape(8, 3),
           "label": np.arange(8, dtype=np.int32)}
  batch = partitioning.make_global_batch(local, sharding)
  assert batch["image"].sharding.spec == P("data")
  assert len(batch["image"].addressable_shards) == 4
  np.testing.assert_array_equal(partitioning.local_rows(batch["image"]), local["image"])
  np.testing.assert_array_equal(np.asarray(batch["label"]), local["label"])
  doubled = jax.jit(lambda x: 2 * x, out_shardings=sharding)(batch["image"])
  np.testing.assert_array_equal(partitioning.local_rows(doubled), 2 * local["image"])


def test_prefetch_keeps_order_and_yields_every_batch():
  sharding = partitioning.data_sharding(partitioning.create_mesh())
  batches = [{"x": np.full((4, 2), i, np.float32)} for i in range(5)]
  out = list(partitioning.prefetch_to_mesh(iter(batches), sharding, size=2))
  assert [float(b["x"][0, 0]) for b in out] == [0, 1, 2, 3, 4]


def test_batch_size_check_names_the_field():
  mesh = partitioning.create_mesh()
  partitioning.check_batch_size(8, mesh, "batch_size")
  with pytest.raises(ValueError, match="config.eval_batch_size=10 does not divide evenly"):
    partitioning.check_batch_size(10, mesh, "eval_batch_size")
