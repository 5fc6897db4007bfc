"""Data parallelism over every device jax sees: the batch sharded on its leading axis, the state
replicated, the same pure train step.

A one-axis mesh ('data') spans all devices, across hosts after `jax.distributed.initialize`. jit
with these shardings lets XLA's SPMD partitioner split the batch, all-reduce the gradients and keep
the update replicated; batch-norm statistics and the loss stay global-batch quantities, so N
devices compute what one device does on the whole batch (tests/train/test_parallel.py).
Each process feeds only its own slice of every global batch (`pipeline.train_dataset(shard=...)`).
The train step itself is `steps.make_train_step(..., out_shardings=replicated(mesh))`; its inputs
carry their shardings (`place`, `shard_batch`).

Several processes (hosts): every array is built from each process's own host copy of its values
(`place`, `jax.make_array_from_process_local_data`), never copied from one device to the devices of
another host, which the CPU backend (and GPUs without a cross-host transport) cannot do. Host-side
decisions that every process must take alike (stop on a signal, a step only process 0 may do)
are agreed through `any_process`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, Sharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"
log = logging.getLogger("jaxmm")


def maybe_initialize_distributed(train_cfg) -> None:
  """`jax.distributed.initialize` when train.distributed is set; call before any computation.

  Unset keys (coordinator_address '', num_processes 0, process_id -1) are left to jax, which reads
  JAX_COORDINATOR_ADDRESS or detects SLURM / Open MPI / cloud TPU environments.
  """
  if not train_cfg.distributed:
    return
  kwargs = {
    "coordinator_address": train_cfg.coordinator_address or None,
    "num_processes": train_cfg.num_processes or None,
    "process_id": None if train_cfg.process_id < 0 else train_cfg.process_id,
  }
  if not jax.distributed.is_initialized():
    jax.distributed.initialize(**kwargs)
  log.info(
    "distributed: process %d of %d, %d local / %d global devices",
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def enabled(train_cfg) -> bool:
  """Data-parallel when allowed (train.data_parallel, default on) and there is > 1 device."""
  return bool(train_cfg.data_parallel) and jax.device_count() > 1


def run_mesh(train_cfg) -> Mesh | None:
  """The mesh of a run: all devices when data-parallel (`enabled`), else None (one device)."""
  return make_mesh() if enabled(train_cfg) else None


def make_mesh(devices=None) -> Mesh:
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def per_process_batch(batch_size: int, mesh: Mesh) -> int:
  """The rows of each global batch this process loads; the batch must split over the devices."""
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(
      f"train.batch_size={batch_size} does not divide over {n} devices; use a "
      f"multiple of {n} (e.g. {max(n, batch_size // n * n)}), or set "
      "--config.train.data_parallel=False to train on one device"
    )
  return batch_size // jax.process_count()


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def state_sharding(mesh: Mesh | None) -> Sharding:
  """Where a train state lives: replicated over the mesh, or on this process's first device."""
  return replicated(mesh) if mesh is not None else SingleDeviceSharding(jax.local_devices()[0])


def place(tree: Any, sharding: Sharding) -> Any:
  """Every leaf of `tree` as a committed array of `sharding`, built from this process's own copy
  of its value: all processes must hold the same values (`same_on_all_processes`). Leaves already
  placed so are kept."""

  def put(x):
    if isinstance(x, jax.Array) and x.committed and x.sharding == sharding:
      return x
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

  return jax.tree.map(put, tree)


def same_on_all_processes(tree: Any) -> Any:
  """Process 0's values of `tree` on every process (host arrays), so a fresh state is the same
  everywhere even where its init is not deterministic (word vectors trained by gensim threads).
  With one process: `tree` as it is."""
  if jax.process_count() == 1:
    return tree
  return multihost_utils.broadcast_one_to_all(tree)


def any_process(flag: bool) -> bool:
  """Whether `flag` is true on any process; the same answer on all (a collective: every process
  must call it at the same point)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.any(multihost_utils.process_allgather(np.int32(bool(flag)))))


def on_first_process(fn: Callable[[], Any], what: str) -> Any:
  """`fn()` on process 0 only (writing a shared file), the others waiting for it; returns its
  result there and None elsewhere. Its error stops every process (none waits forever for it)."""
  result, error = None, None
  if jax.process_index() == 0:
    try:
      result = fn()
    except Exception as e:  # re-raised below, after the others have heard of it
      error = e
  if any_process(error is not None):
    if error is not None:
      raise error
    raise RuntimeError(f"process 0 failed while {what}; its output names the error")
  return result


def shard_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process's rows of a global batch -> global arrays sharded on the leading axis."""
  sharding = batch_sharding(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
  )


def shard_full_batch(
  batch: dict[str, np.ndarray], mesh: Mesh, *, split: bool = True
) -> dict[str, jax.Array]:
  """A batch every process holds in full (evaluation) -> global arrays, sharded on the leading
  axis (each device takes its rows) or, with split=False, replicated."""
  sharding = batch_sharding(mesh) if split else replicated(mesh)
  return jax.tree.map(
    lambda x: jax.make_array_from_callback(np.shape(x), sharding, lambda idx: np.asarray(x)[idx]),
    batch,
  )


def parallel_predict_step(predict_step: Callable, mesh: Mesh, eval_batch_size: int) -> Callable:
  """`predict_step(model_state, batch)` over the mesh: batch rows split over the devices when
  they divide evenly (else every device computes the whole batch), outputs replicated so every
  process reads the predictions of the whole batch and computes the same metrics."""
  rep = replicated(mesh)
  jitted = jax.jit(predict_step, out_shardings=(rep, rep))
  split = eval_batch_size % mesh.devices.size == 0

  def step(model_state, batch):
    return jitted(model_state, shard_full_batch(batch, mesh, split=split))

  return step
