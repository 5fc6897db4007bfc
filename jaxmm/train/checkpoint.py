"""orbax checkpoints: `latest/` for resuming, `best/` for evaluation and prediction.

A checkpoint is the whole training state (model params + batch stats, optimizer state with its
step) as one pytree, plus a JSON `meta` item for everything on the host side (epoch, position in
the epoch, early-stopping and plateau state, best metric, thresholds). orbax writes into a temporary
folder and renames it when complete, so a kill during a save never damages the previous checkpoint;
a step folder that is damaged anyway (disk trouble, a hand edit) is skipped on restore with a
warning, and the step before it is used.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

LATEST, BEST = "latest", "best"
log = logging.getLogger("jaxmm")


def _abstract(state_like: Any) -> Any:
  """Restore target on this machine's default device: a checkpoint written on a GPU restores on CPU."""
  # local_devices: under multi-host data parallelism, devices()[0] belongs to process 0 only.
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state_like)


def place_like_restored(state: Any) -> Any:
  """`state` committed to the default device, as `restore` returns it.

  jit compiles uncommitted and committed arguments into different programs: placed alike, a fresh
  run and its resumption (or evaluate.py) share one persistent-cache entry instead of compiling twice.
  """
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.device_put(state, sharding)


def _remove_interrupted_saves(root: str) -> None:
  for which in (LATEST, BEST):
    folder = os.path.join(root, which)
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
      if ".orbax-checkpoint-tmp" in name:
        log.info("removing %s: a save that was interrupted", os.path.join(folder, name))
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


class Checkpointer:
  """Saves and restores (state, meta) under `workdir/checkpoints/{latest,best}/<step>`."""

  def __init__(self, workdir: str, *, keep_latest: int = 2, cleanup_tmp: bool = False):
    """cleanup_tmp: delete the temporary folders of saves that a kill interrupted. Only the
    training run may ask for it: a reader (evaluate.py beside a running training) would delete
    the trainer's save in flight."""
    root = os.path.join(os.path.abspath(workdir), "checkpoints")
    if cleanup_tmp:  # here, before any manager exists: orbax's own cleanup can finish after close()
      _remove_interrupted_saves(root)
    opts = dict(create=True, cleanup_tmp_directories=cleanup_tmp)
    self._managers = {
        LATEST: ocp.CheckpointManager(
            os.path.join(root, LATEST),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep_latest, **opts)),
        BEST: ocp.CheckpointManager(
            os.path.join(root, BEST), options=ocp.CheckpointManagerOptions(max_to_keep=1, **opts)),
    }

  def latest_step(self, which: str = LATEST) -> int | None:
    return self._managers[which].latest_step()

  def save(self, step: int, state: Any, meta: dict, *, which: str = LATEST) -> None:
    mgr = self._managers[which]
    # Steps at or past this one are a future this run no longer has: the same step saved again
    # (a stop right after an epoch save), or steps after a damaged one that restore skipped.
    # orbax would silently skip a save below its latest step.
    for s in mgr.all_steps():
      if s >= step:
        mgr.delete(s)
    saved = mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                   meta=ocp.args.JsonSave(meta)))
    mgr.wait_until_finished()
    if not saved:
      raise RuntimeError(f"orbax declined to save step {step} in {mgr.directory}")

  def restore(self, state_like: Any, *, which: str = LATEST, step: int | None = None
              ) -> tuple[Any, dict]:
    """Restores into the structure of `state_like` (a freshly built state of the same config)."""
    mgr = self._managers[which]
    candidates = sorted(mgr.all_steps(), reverse=True) if step is None else [step]
    if not candidates:
      raise FileNotFoundError(f"no {which!r} checkpoint in {mgr.directory}; train first")
    args = ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(state_like)),
                              meta=ocp.args.JsonRestore())
    failed = []
    for s in candidates:
      try:
        out = mgr.restore(s, args=args)
      except Exception as e:  # orbax/tensorstore raise many types for a damaged or foreign folder
        failed.append((s, e))
        continue
      if failed:
        log.warning("checkpoint step(s) %s in %s could not be restored (%s); using step %d",
                    [f for f, _ in failed], mgr.directory, _short(failed[0][1]), s)
      return out["state"], dict(out["meta"])
    raise RuntimeError(
        f"no {which!r} checkpoint in {mgr.directory} could be restored (tried steps "
        f"{[f for f, _ in failed]}; first error: {_short(failed[0][1])}). If the config changed "
        "since they were written (train.allow_config_change), the model no longer matches them: "
        "use a new --workdir.") from failed[0][1]

  def restore_meta(self, *, which: str = LATEST) -> dict | None:
    mgr = self._managers[which]
    step = mgr.latest_step()
    if step is None:
      return None
    return dict(mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

  def close(self) -> None:
    for mgr in self._managers.values():
      mgr.close()


def _short(e: Exception, n: int = 300) -> str:
  text = f"{type(e).__name__}: {e}"
  return text if len(text) <= n else text[:n] + "..."
