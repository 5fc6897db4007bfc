"""orbax checkpoints: `latest/` for resuming, `best/` for evaluation and prediction.

A checkpoint is the whole training state (model params + batch stats, optimizer state with its
step) as one pytree, plus a JSON `meta` item for everything on the host side (epoch, position in
the epoch, early-stopping and plateau state, best metric, thresholds). orbax writes into a temporary
folder and renames it when complete, so a kill during a save never damages the previous checkpoint.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

LATEST, BEST = "latest", "best"


def _abstract(state_like: Any) -> Any:
  """Restore target on this machine's default device: a checkpoint written on a GPU restores on CPU."""
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state_like)


class Checkpointer:
  """Saves and restores (state, meta) under `workdir/checkpoints/{latest,best}/<step>`."""

  def __init__(self, workdir: str, *, keep_latest: int = 2):
    root = os.path.join(os.path.abspath(workdir), "checkpoints")
    self._managers = {
        LATEST: ocp.CheckpointManager(
            os.path.join(root, LATEST),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep_latest, create=True)),
        BEST: ocp.CheckpointManager(
            os.path.join(root, BEST), options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True)),
    }

  def latest_step(self, which: str = LATEST) -> int | None:
    return self._managers[which].latest_step()

  def save(self, step: int, state: Any, meta: dict, *, which: str = LATEST) -> None:
    mgr = self._managers[which]
    if mgr.latest_step() == step:  # re-saving the same step (e.g. a stop right after an epoch save)
      mgr.delete(step)
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                           meta=ocp.args.JsonSave(meta)))
    mgr.wait_until_finished()

  def restore(self, state_like: Any, *, which: str = LATEST, step: int | None = None
              ) -> tuple[Any, dict]:
    """Restores into the structure of `state_like` (a freshly built state of the same config)."""
    mgr = self._managers[which]
    step = mgr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no {which!r} checkpoint in {mgr.directory}; train first")
    out = mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(_abstract(state_like)), meta=ocp.args.JsonRestore()))
    return out["state"], dict(out["meta"])

  def restore_meta(self, *, which: str = LATEST) -> dict | None:
    mgr = self._managers[which]
    step = mgr.latest_step()
    if step is None:
      return None
    return dict(mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

  def close(self) -> None:
    for mgr in self._managers.values():
      mgr.close()
