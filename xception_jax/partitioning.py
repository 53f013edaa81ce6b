"""Sharding, declared once: a data-parallel device mesh and a few partition rules.

The global batch is split over the mesh's data axes (data parallelism, synchronous as
in the paper's ImageNet runs): `DATA` within a slice and, when there are several slices
(multi-slice TPU, or hosts grouped by `config.num_slices`), `DCN` across them, slice
by slice. The devices of a slice are ordered by physical topology (`jax.make_mesh`,
`mesh_utils`). Parameters, BN statistics and optimiser state are replicated, except
what the rules shard: with `config.shard_head` the classification head (2048 x 17,000
for JFT, larger than the network body) is split over its class axis across the devices
of a slice (DATA) and replicated across slices, and XLA gathers it where needed. The
same code runs on one CPU, on several simulated CPU devices, and on many hosts after
`jax.distributed`.
"""
from __future__ import annotations

import collections
import re
from typing import Any, Callable, Iterable, Iterator, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA = "data"  # the data axis within a slice (ICI); the head is split over it
DCN = "dcn_data"  # the data axis across slices (DCN); only in a mesh of several slices


def _slice_index(device) -> int | None:
  return getattr(device, "slice_index", None)


def slice_groups(devices: Sequence[Any], num_slices: int,
                 slice_of: Callable[[Any], int] | None = None) -> list[list[Any]]:
  """The devices of each slice, slices in order. `slice_of(device)` names a device's
  slice; by default its `slice_index` where the devices span several (multi-slice TPU),
  else (devices reporting one slice_index or none: GPU hosts, CPUs) `num_slices` equal
  blocks of the devices in (process, id) order, so that a slice is a set of whole
  processes (hosts) when there are several."""
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  if slice_of is None and slice_count(devices) > 1:
    slice_of = _slice_index
  if slice_of is None:
    if len(devices) % num_slices:
      raise ValueError(f"config.num_slices={num_slices} does not divide the "
                       f"{len(devices)} devices; use a divisor of {len(devices)}.")
    processes = len({d.process_index for d in devices})
    if processes > 1 and processes % num_slices:
      raise ValueError(f"config.num_slices={num_slices} does not divide the {processes} "
                       f"processes (a slice is a set of whole hosts); use a divisor of "
                       f"{processes}.")
    per = len(devices) // num_slices
    return [devices[i * per:(i + 1) * per] for i in range(num_slices)]
  grouped: dict[int, list[Any]] = collections.defaultdict(list)
  for device in devices:
    grouped[slice_of(device)].append(device)
  groups = [grouped[key] for key in sorted(grouped)]
  if len(groups) != num_slices:
    raise ValueError(f"config.num_slices={num_slices}, but the devices span "
                     f"{len(groups)} slices; set it to {len(groups)} (or -1).")
  if len({len(g) for g in groups}) > 1:
    raise ValueError(f"The slices hold unequal device counts "
                     f"({[len(g) for g in groups]}); config.num_slices={num_slices} "
                     "needs slices of one size.")
  return groups


def slice_count(devices: Sequence[Any]) -> int:
  """The distinct `slice_index` values of `devices` (1 when they carry none): what
  `num_slices=-1` means."""
  if _slice_index(devices[0]) is None:
    return 1
  return len({_slice_index(d) for d in devices})


def _device_array(shape: Sequence[int], devices: Sequence[Any]) -> np.ndarray:
  """Devices in physical-topology order for `shape` (mesh_utils: rings/tori on TPU,
  NVLink islands on GPU; list order on CPU)."""
  split = devices[0].device_kind in ("TPU v5 lite", "TPU v5e")  # as jax.make_mesh
  return mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=split)


def create_mesh(num_devices: int = -1, num_slices: int = -1,
                devices: Sequence[Any] | None = None,
                slice_of: Callable[[Any], int] | None = None) -> Mesh:
  """The data-parallel mesh over all devices (`num_devices=-1`) or the first
  `num_devices` (one process, one slice only).

  One slice: a 1-D mesh (DATA,) in physical-topology order (`jax.make_mesh`).
  Several slices (`num_slices` > 1, or -1 and devices whose `slice_index` differ): a
  hybrid mesh (DCN, DATA), one row per slice, each row in topology order
  (`mesh_utils.create_hybrid_device_mesh`'s layout, built from `slice_groups` so that
  devices reporting one slice can form slices too). `devices` and `slice_of` default
  to `jax.devices()` and `slice_groups`' rule (tests pass their own)."""
  devices = list(jax.devices() if devices is None else devices)
  slices = slice_count(devices) if num_slices in (-1, None) else num_slices
  if slices < 1:
    raise ValueError(f"config.num_slices={num_slices}: must be >= 1, or -1 for the "
                     "devices' own slice count.")
  if num_devices not in (-1, None):
    if slices > 1:
      raise ValueError(f"config.num_devices={num_devices} cannot be combined with "
                       f"{slices} slices (config.num_slices); set num_devices=-1.")
    if jax.process_count() > 1 and num_devices != len(devices):
      raise ValueError("config.num_devices must be -1 (all devices) in multi-process runs.")
    if not 1 <= num_devices <= len(devices):
      raise ValueError(f"config.num_devices={num_devices}, but {len(devices)} devices exist.")
    devices = devices[:num_devices]
  if slices == 1:
    if slice_of is None and slice_count(devices) > 1:
      raise ValueError(f"config.num_slices=1, but the devices span "
                       f"{slice_count(devices)} slices; set it to -1.")
    return jax.make_mesh((len(devices),), (DATA,), axis_types=(AxisType.Auto,),
                         devices=devices)
  return Mesh(hybrid_device_array(devices, slices, slice_of), (DCN, DATA),
              axis_types=(AxisType.Auto, AxisType.Auto))


def hybrid_device_array(devices: Sequence[Any], num_slices: int,
                        slice_of: Callable[[Any], int] | None = None) -> np.ndarray:
  """[slice, device in slice]: each slice's devices in topology order, the layout of
  `mesh_utils.create_hybrid_device_mesh((1, n), (num_slices, 1))` on devices with a
  slice_index (tests/test_partitioning.py compares them)."""
  groups = slice_groups(devices, num_slices, slice_of)
  return np.stack([_device_array((len(group),), group) for group in groups])


def batch_axes(mesh: Mesh) -> str | tuple[str, str]:
  """The mesh axes the global batch is split over: (DCN, DATA), slice-major, or DATA."""
  return (DCN, DATA) if DCN in mesh.axis_names else DATA


def partition_rules(shard_head: bool) -> list[tuple[str, P]]:
  """(regex over a leaf's path 'a/b/c', spec) pairs; the first match wins, else replicated.
  The optimiser's copies of a parameter (momentum, RMS) match through the same names."""
  if not shard_head:
    return []
  return [(r"(^|/)head/kernel$", P(None, DATA)), (r"(^|/)head/bias$", P(DATA))]


def _path_string(path: Sequence[Any]) -> str:
  parts = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return "/".join(parts)


def tree_shardings(tree: Any, mesh: Mesh, rules: Iterable[tuple[str, P]]) -> Any:
  """NamedShardings for every leaf of `tree` (arrays or ShapeDtypeStructs)."""
  rules = [(re.compile(pattern), spec) for pattern, spec in rules]

  def leaf_sharding(path, leaf):
    name = _path_string(path)
    shape = getattr(leaf, "shape", ())
    for pattern, spec in rules:
      if pattern.search(name) and len(spec) <= len(shape):
        for dim, axis in zip(shape, spec):
          if axis is not None and dim % mesh.shape[axis]:
            raise ValueError(
                f"Cannot shard {name} (shape {shape}) over {mesh.shape[axis]} devices: "
                f"{dim} is not divisible. Set config.shard_head=False or pick num_classes "
                f"divisible by {mesh.shape[axis]} (the devices of a slice).")
        return NamedSharding(mesh, spec)
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(leaf_sharding, tree)


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(batch_axes(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_batch_size(batch_size: int, mesh: Mesh, field: str) -> None:
  """Raised before anything is compiled: the global batch must divide over devices."""
  if batch_size % mesh.size:
    raise ValueError(
        f"config.{field}={batch_size} does not divide evenly over {mesh.size} devices; "
        f"use a multiple of {mesh.size}.")


def pad_rows(local_batch: dict[str, np.ndarray], multiple: int) -> dict[str, np.ndarray]:
  """Appends zero rows (mask 0) to every array of a local batch up to a multiple of
  `multiple` rows, so that an eval batch of any size splits over any device count.
  Padding rows count nowhere: every eval metric and evaluator skips mask-0 rows."""
  rows = len(local_batch["mask"])
  extra = -rows % multiple
  if not extra:
    return local_batch
  return {name: np.concatenate([x, np.zeros((extra, *x.shape[1:]), x.dtype)])
          for name, x in local_batch.items()}


def make_global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
  """Assembles each process's rows into global arrays sharded over the data axis."""
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x),
                      local_batch)


def prefetch_to_mesh(batches: Iterator[dict], sharding: NamedSharding,
                     size: int = 2) -> Iterator[dict]:
  """Keeps `size` global batches on the devices ahead of the step that consumes them."""
  queue = collections.deque()
  for batch in batches:
    queue.append(make_global_batch(batch, sharding))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def local_rows(array: jax.Array) -> np.ndarray:
  """The rows of a data-sharded global array that this process contributed, in order."""
  shards = sorted(array.addressable_shards, key=lambda s: s.index[0].start or 0)
  seen, rows = set(), []
  for shard in shards:
    start = shard.index[0].start or 0
    if start not in seen:  # replicas of the same rows appear once
      seen.add(start)
      rows.append(np.asarray(shard.data))
  return np.concatenate(rows, axis=0)
