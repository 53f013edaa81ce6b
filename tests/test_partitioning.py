"""Mesh, partition rules and global-batch assembly on 4 simulated CPU devices (and
on 8 as two slices, and on 2 jax.distributed processes as two slices: subprocesses)."""
import os
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import mesh_utils
from jax.sharding import PartitionSpec as P

import processes
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


# -- several slices: a hybrid (DCN, DATA) mesh ---------------------------------------

def _interleaved(device) -> int:
  """A slice grouping that list order would not give: even ids, then odd ids."""
  return device.id % 2


def check_two_slices(num_devices: int) -> None:
  """The global batch and every sharding rule on `num_devices` devices as 2 slices
  (even ids, odd ids), checked on real arrays: which device holds which rows and
  which columns of the head. Run in-process on 4 devices and in a subprocess on 8."""
  devices = jax.devices()[:num_devices]
  per = num_devices // 2
  mesh = partitioning.create_mesh(num_slices=2, devices=devices, slice_of=_interleaved)
  assert mesh.axis_names == (partitioning.DCN, partitioning.DATA)
  assert dict(mesh.shape) == {partitioning.DCN: 2, partitioning.DATA: per}
  assert [{d.id % 2 for d in row} for row in mesh.devices] == [{0}, {1}]
  position = {d: (s, j) for (s, j), d in np.ndenumerate(mesh.devices)}

  # The batch: slice s holds rows [s*B/2, (s+1)*B/2), device j of it the j-th block.
  rows = 2 * num_devices
  local = {"image": np.arange(rows * 3, dtype=np.float32).reshape(rows, 3)}
  sharding = partitioning.data_sharding(mesh)
  assert sharding.spec == P((partitioning.DCN, partitioning.DATA))
  batch = partitioning.make_global_batch(local, sharding)["image"]
  held = {}
  for shard in batch.addressable_shards:
    s, j = position[shard.device]
    start = shard.index[0].start
    assert start == (s * per + j) * 2, (shard.device, start)
    np.testing.assert_array_equal(np.asarray(shard.data), local["image"][start:start + 2])
    held[shard.device.id] = start
  assert sorted(held.values()) == list(range(0, rows, 2))
  assert {i % 2 for i, start in held.items() if start < rows // 2} == {0}  # slice 0: even
  np.testing.assert_array_equal(partitioning.local_rows(batch), local["image"])

  # The head: split over DATA within a slice, the same split in both slices.
  classes = 2 * per
  state = {"params": {"head": {"kernel": jnp.arange(3 * classes, dtype=jnp.float32
                                                    ).reshape(3, classes),
                               "bias": jnp.arange(classes, dtype=jnp.float32)},
                      "exit_flow": {"kernel": jnp.ones((3, 3))}},
           "opt_state": ({"trace": {"head": {"kernel": jnp.zeros((3, classes))}}},),
           "step": jnp.zeros((), jnp.int32)}
  shardings = partitioning.tree_shardings(state, mesh, partitioning.partition_rules(True))
  assert shardings["params"]["head"]["kernel"].spec == P(None, partitioning.DATA)
  assert shardings["opt_state"][0]["trace"]["head"]["kernel"].spec == P(None, partitioning.DATA)
  placed = jax.tree.map(jax.device_put, state, shardings)
  for name in ("kernel", "bias"):
    leaf = placed["params"]["head"][name]
    for shard in leaf.addressable_shards:
      _, j = position[shard.device]
      columns = shard.index[-1]
      assert (columns.start, columns.stop) == (2 * j, 2 * j + 2), (name, shard.device)
      np.testing.assert_array_equal(np.asarray(shard.data),
                                    np.asarray(state["params"]["head"][name])[..., columns])
  for leaf in (placed["params"]["exit_flow"]["kernel"], placed["step"]):
    assert all(s.data.shape == leaf.shape for s in leaf.addressable_shards)

  # A step over both: logits of the sharded batch by the sharded head, and a mean.
  head = placed["params"]["head"]
  logits, mean = jax.jit(lambda x, h: (x @ h["kernel"] + h["bias"], x.mean()),
                         out_shardings=(sharding, partitioning.replicated(mesh)))(batch, head)
  expected = local["image"] @ np.asarray(state["params"]["head"]["kernel"]) + np.arange(classes)
  np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-6)
  np.testing.assert_allclose(float(mean), local["image"].mean(), rtol=1e-6)


def test_two_slices_of_two_devices():
  check_two_slices(4)


def test_two_slices_of_four_devices_in_a_subprocess():
  """8 simulated devices as 2 slices of 4 (this session has 4: a fresh process)."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "XLA_FLAGS": processes.xla_flags(8),
         "PYTHONPATH": os.pathsep.join([root, os.path.join(root, "tests")]),
         "JAX_PLATFORMS": "cpu"}
  code = ("import jax; assert jax.device_count() == 8, jax.devices(); "
          "import test_partitioning as t; t.check_two_slices(8); print('ok')")
  result = subprocess.run([sys.executable, "-c", code], env=env, cwd=root,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_slices_without_slice_index_are_blocks_of_the_device_list():
  mesh = partitioning.create_mesh(num_slices=2)
  assert [[d.id for d in row] for row in mesh.devices] == [[0, 1], [2, 3]]
  assert partitioning.batch_axes(mesh) == (partitioning.DCN, partitioning.DATA)
  one = partitioning.create_mesh()
  assert one.axis_names == (partitioning.DATA,)
  assert partitioning.data_sharding(one).spec == P(partitioning.DATA)


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_slices=3), "config.num_slices=3 does not divide the 4 devices"),
    (dict(num_slices=2, num_devices=2), "config.num_devices=2 cannot be combined with 2"),
    (dict(num_slices=0), "config.num_slices=0: must be >= 1"),
    (dict(num_slices=2, slice_of=lambda d: d.id % 3),
     "config.num_slices=2, but the devices span 3 slices"),
    (dict(num_slices=2, slice_of=lambda d: d.id == 0), "unequal device counts"),
])
def test_impossible_slice_layouts_name_the_field(kwargs, message):
  with pytest.raises(ValueError, match=message):
    partitioning.create_mesh(**kwargs)


def test_slice_index_layout_is_mesh_utils_hybrid_mesh():
  """Devices that carry slice_index (multi-slice TPU; stand-ins here, as simulated CPU
  devices carry none): the slice count is found, and the layout is mesh_utils'."""
  fake = [types.SimpleNamespace(id=i, process_index=i // 2, slice_index=(i // 2) % 2,
                                device_kind="cpu", platform="cpu") for i in range(8)]
  assert partitioning.slice_count(fake) == 2
  assert partitioning.slice_count(fake[:2]) == 1
  ours = partitioning.hybrid_device_array(fake, 2)
  reference = mesh_utils.create_hybrid_device_mesh((1, 4), (2, 1), fake)
  assert [[d.id for d in row] for row in ours] == [[0, 1, 4, 5], [2, 3, 6, 7]]
  assert [[d.id for d in row] for row in reference] == [[d.id for d in row] for row in ours]
  with pytest.raises(ValueError, match="config.num_slices=3, but the devices span 2 slices"):
    partitioning.hybrid_device_array(fake, 3)
  # Refused before any mesh is built: one slice asked of two, a device subset of two.
  with pytest.raises(ValueError, match="config.num_slices=1, but the devices span 2 slices"):
    partitioning.create_mesh(num_slices=1, devices=fake)
  with pytest.raises(ValueError, match="config.num_devices=4 cannot be combined with 2 slices"):
    partitioning.create_mesh(num_devices=4, devices=fake)


_TWO_PROCESS_SCRIPT = r'''
import sys
import jax
import numpy as np
jax.distributed.initialize(f"localhost:{sys.argv[1]}", 2, int(sys.argv[2]))
from xception_jax import partitioning
i = jax.process_index()
mesh = partitioning.create_mesh(num_slices=2)  # slices = the two processes (hosts)
assert [{d.process_index for d in row} for row in mesh.devices] == [{0}, {1}], mesh
local = np.arange(4 * 3, dtype=np.float32).reshape(4, 3) + 100 * i
batch = partitioning.make_global_batch({"x": local}, partitioning.data_sharding(mesh))["x"]
assert batch.shape == (8, 3)
assert sorted(s.index[0].start for s in batch.addressable_shards) == [4 * i, 4 * i + 2]
np.testing.assert_array_equal(partitioning.local_rows(batch), local)
total = jax.jit(lambda x: x.sum(), out_shardings=partitioning.replicated(mesh))(batch)
assert float(total) == float(2 * np.arange(12).sum() + 100 * 12), float(total)
head = {"head": {"kernel": np.arange(12, dtype=np.float32).reshape(3, 4)}}
shardings = partitioning.tree_shardings(head, mesh, partitioning.partition_rules(True))
kernel = jax.device_put(head["head"]["kernel"], shardings["head"]["kernel"])
assert sorted(s.index[1].start for s in kernel.addressable_shards) == [0, 2]  # whole head
for n, message in ((3, "does not divide the 4 devices"), (4, "does not divide the 2 processes")):
  try:
    partitioning.create_mesh(num_slices=n)
    raise AssertionError(n)
  except ValueError as e:
    assert message in str(e), e
print("ok", i)
'''


def test_two_processes_as_two_slices(tmp_path):
  """jax.distributed with 2 processes of 2 CPU devices, `num_slices=2`: each process is
  a slice, its rows of the batch stay on its devices, the head is whole in each."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  import socket  # pylint: disable=import-outside-toplevel
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "XLA_FLAGS": processes.xla_flags(2),
         "PYTHONPATH": root, "JAX_PLATFORMS": "cpu"}
  logs = [open(tmp_path / f"process{i}.log", "w+") for i in range(2)]
  procs = [subprocess.Popen([sys.executable, "-c", _TWO_PROCESS_SCRIPT, str(port), str(i)],
                            cwd=root, env=env, stdout=logs[i], stderr=subprocess.STDOUT)
           for i in range(2)]
  codes = processes.wait_all(procs, timeout=180)
  for i, (code, log) in enumerate(zip(codes, logs)):
    log.seek(0)
    output = log.read()
    assert code == 0 and f"ok {i}" in output, output[-3000:]
