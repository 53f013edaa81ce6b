"""Sharding, declared once: a one-axis device mesh and a few partition rules.

The global batch is split over the mesh's `data` axis (data parallelism, synchronous as
in the paper's ImageNet runs). Parameters, BN statistics and optimiser state are
replicated, except what the rules shard: with `config.shard_head` the classification
head (2048 x 17,000 for JFT, larger than the network body) is split over its class
axis on the same devices, and XLA gathers it where needed. The same code runs on one
CPU, on several simulated CPU devices, and on many hosts after `jax.distributed`.
"""
from __future__ import annotations

import collections
import re
from typing import Any, Iterable, Iterator, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


def create_mesh(num_devices: int = -1) -> Mesh:
  """A 1-D mesh over all devices (-1) or the first `num_devices` (one process only)."""
  devices = jax.devices()
  if num_devices not in (-1, None):
    if jax.process_count() > 1 and num_devices != len(devices):
      raise ValueError("config.num_devices must be -1 (all devices) in multi-process runs.")
    if not 1 <= num_devices <= len(devices):
      raise ValueError(f"config.num_devices={num_devices}, but {len(devices)} devices exist.")
    devices = devices[:num_devices]
  return Mesh(np.asarray(devices), (DATA,))


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
                "divisible by the device count.")
        return NamedSharding(mesh, spec)
    return NamedSharding(mesh, P())

  return jax.tree_util.tree_map_with_path(leaf_sharding, tree)


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


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
