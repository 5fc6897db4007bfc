"""orbax checkpoints: `latest/` for resuming, `best/` for evaluation and prediction.

A checkpoint is the whole training state (model params + batch stats, optimizer state with its
step) as one pytree, plus a JSON `meta` item for everything on the host side (epoch, position in
the epoch, early-stopping and plateau state, best metric, thresholds). orbax writes into a temporary
folder and renames it when complete, so a kill during a save never damages the previous checkpoint;
a step folder that is damaged anyway (disk trouble, a hand edit) is skipped on restore with a
warning, and the step before it is used. Readers (evaluate.py, predict.py) open a workdir read-only:
they create, clean and delete nothing in it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging

LATEST, BEST = "latest", "best"
log = logging.getLogger("jaxmm")


def _abstract(state_like: Any) -> Any:
  """Restore target on this machine's default device: a checkpoint written on a GPU restores on
  CPU."""
  # local_devices: under multi-host data parallelism, devices()[0] belongs to process 0 only.
  sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state_like
  )


def place_like_restored(state: Any) -> Any:
  """`state` committed to the default device, as `restore` returns it.

  jit compiles uncommitted and committed arguments into different programs: placed alike, a fresh
  run and its resumption (or evaluate.py) share one persistent-cache entry instead of compiling
  twice.
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


def _read_only_manager(folder: str) -> ocp.CheckpointManager:
  # orbax warns "Given directory is read only" for every read-only manager: noise on the stderr
  # of evaluate.py and predict.py, where a warning should mean something.
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    return ocp.CheckpointManager(
      folder,
      options=ocp.CheckpointManagerOptions(
        create=False, read_only=True, save_interval_steps=0, max_to_keep=None
      ),
    )
  finally:
    absl_logging.set_verbosity(verbosity)


class CheckpointDamagedError(RuntimeError):
  """No step of one checkpoint folder could be restored; `folders` are the step folders tried."""

  def __init__(self, message: str, folders: list[str]):
    super().__init__(message)
    self.folders = folders


class Checkpointer:
  """Saves and restores (state, meta) under `workdir/checkpoints/{latest,best}/<step>`."""

  def __init__(
    self, workdir: str, *, keep_latest: int = 2, cleanup_tmp: bool = False, read_only: bool = False
  ):
    """cleanup_tmp: delete the temporary folders of saves that a kill interrupted. Only the
    training run may ask for it: a reader (evaluate.py beside a running training) would delete
    the trainer's save in flight.

    read_only: for readers. Nothing is created (orbax would make empty checkpoints/ folders in
    a workdir that evaluate.py only reads, or in a mistyped one), saved or deleted; a missing
    folder reads as one without steps.
    """
    if read_only and cleanup_tmp:
      raise ValueError("a read-only Checkpointer cannot clean up interrupted saves")
    root = os.path.join(os.path.abspath(workdir), "checkpoints")
    if cleanup_tmp:  # here, before any manager exists: orbax's own cleanup can finish after close()
      _remove_interrupted_saves(root)
    self._read_only = read_only
    self._dirs = {LATEST: os.path.join(root, LATEST), BEST: os.path.join(root, BEST)}
    keep = {LATEST: keep_latest, BEST: 1}
    self._managers = {}
    for which, folder in self._dirs.items():
      if read_only:
        if os.path.isdir(folder):
          self._managers[which] = _read_only_manager(folder)
      else:
        self._managers[which] = ocp.CheckpointManager(
          folder,
          options=ocp.CheckpointManagerOptions(
            max_to_keep=keep[which], create=True, cleanup_tmp_directories=cleanup_tmp
          ),
        )

  def directory(self, which: str) -> str:
    return self._dirs[which]

  def all_steps(self, which: str = LATEST) -> list[int]:
    mgr = self._managers.get(which)
    return sorted(mgr.all_steps()) if mgr else []

  def latest_step(self, which: str = LATEST) -> int | None:
    mgr = self._managers.get(which)
    return mgr.latest_step() if mgr else None

  def save(self, step: int, state: Any, meta: dict, *, which: str = LATEST) -> None:
    if self._read_only:
      raise RuntimeError(f"{self._dirs[which]} was opened read-only: nothing can be saved there")
    mgr = self._managers[which]
    # Steps at or past this one are a future this run no longer has: the same step saved again
    # (a stop right after an epoch save), or steps after a damaged one that restore skipped.
    # orbax would silently skip a save below its latest step.
    for s in mgr.all_steps():
      if s >= step:
        mgr.delete(s)
    saved = mgr.save(
      step,
      args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
    )
    mgr.wait_until_finished()
    if not saved:
      raise RuntimeError(f"orbax declined to save step {step} in {mgr.directory}")

  def restore(
    self, state_like: Any, *, which: str = LATEST, step: int | None = None
  ) -> tuple[Any, dict]:
    """Restores into the structure of `state_like` (a freshly built state of the same config).

    Raises FileNotFoundError when there is no step, CheckpointDamagedError when none restores.
    """
    mgr = self._managers.get(which)
    folder = self._dirs[which]
    candidates = (sorted(mgr.all_steps(), reverse=True) if step is None else [step]) if mgr else []
    if not candidates:
      raise FileNotFoundError(f"no {which!r} checkpoint in {folder}; train first")
    args = ocp.args.Composite(
      state=ocp.args.StandardRestore(_abstract(state_like)), meta=ocp.args.JsonRestore()
    )
    failed = []
    for s in candidates:
      with _StderrCapture() as captured:
        try:
          out = mgr.restore(s, args=args)
        except Exception as e:  # orbax/tensorstore raise many types for a damaged or foreign folder
          failed.append((s, e))
          captured.settle()
          continue
      if failed:
        log.warning(
          "checkpoint step(s) %s in %s could not be restored (%s); using step %d",
          [f for f, _ in failed],
          folder,
          _short(failed[0][1]),
          s,
        )
      return out["state"], dict(out["meta"])
    for s, e in failed:  # the orbax / TensorStore error is long: the log keeps it, the message not
      log.debug("step %d of %s: %s", s, folder, _short(e, 2000))
    folders = [os.path.join(folder, str(s)) for s, _ in failed]
    raise CheckpointDamagedError(
      f"no {which!r} checkpoint in {folder} could be restored (tried steps "
      f"{[s for s, _ in failed]}: {', '.join(folders)}): a file in them is damaged (truncated, "
      "edited), or they hold a model of another config. Copy them back from a backup; if the "
      "config changed since they were written (train.allow_config_change), the model no longer "
      "matches them: use a new --workdir.",
      folders,
    ) from failed[0][1]

  def restore_meta(self, *, which: str = LATEST) -> dict | None:
    mgr = self._managers.get(which)
    step = mgr.latest_step() if mgr else None
    if step is None:
      return None
    return dict(mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

  def close(self) -> None:
    for mgr in self._managers.values():
      mgr.close()


class _StderrCapture:
  """File descriptor 2 into a temporary file for the duration of a restore.

  orbax runs a restore's TensorStore reads in an asyncio loop that it closes at the first error;
  the reads still in flight then complete on TensorStore's threads and print "Event loop is closed"
  tracebacks straight to file descriptor 2, around the one-line message a reader should see. A
  restore that works gives back what it printed; a failed one's output goes to the debug log.
  """

  def __enter__(self):
    import tempfile

    sys.stderr.flush()
    self._sink = tempfile.TemporaryFile()
    self._saved = os.dup(2)
    os.dup2(self._sink.fileno(), 2)
    self._failed = False
    return self

  def settle(self, wait_s: float = 1.0) -> None:
    """A failed restore: waits for its reads still in flight, still capturing."""
    import time

    self._failed = True
    time.sleep(wait_s)

  def __exit__(self, *exc):
    sys.stderr.flush()
    os.dup2(self._saved, 2)
    os.close(self._saved)
    self._sink.seek(0)
    text = self._sink.read().decode("utf-8", "replace")
    self._sink.close()
    if text and self._failed:
      log.debug("output of the failed restore: %s", text[-2000:])
    elif text:
      sys.stderr.write(text)


def _short(e: Exception, n: int = 300) -> str:
  """The first line of an error, cut at `n` characters (TensorStore's run to kilobytes)."""
  text = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
  return text if len(text) <= n else text[:n] + "..."
