"""orbax checkpoints: `latest/` for resuming, `best/` for evaluation and prediction.

A checkpoint is the whole training state (model params + batch stats, optimizer state with its
step) as one pytree, plus a JSON `meta` item for everything on the host side (epoch, position in
the epoch, early-stopping and plateau state, best metric, thresholds). orbax writes into a temporary
folder and renames it when complete, so a kill during a save never damages the previous checkpoint;
a step folder that is damaged anyway (disk trouble, a hand edit) is skipped on restore with a
warning, and the step before it is used. Readers (evaluate.py, predict.py) open a workdir read-only:
they create, clean and delete nothing in it.

Saves are asynchronous: `save` returns once the arrays are copied off the devices (the train step
may then reuse their buffers) and orbax writes them in a background thread. Every read (`restore`,
`restore_meta`) and `close` first waits for the saves in flight, and so does the next save; the
loop waits before it returns, so a run never exits with a save unfinished. On several hosts every
process calls every method (orbax's saves and restores are collective); process 0 writes the
files.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import warnings
import zlib
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging as absl_logging
from jax.sharding import Sharding

from jaxmm.train import parallel

LATEST, BEST = "latest", "best"
log = logging.getLogger("jaxmm")


def _abstract(state_like: Any, sharding: Sharding | None) -> Any:
  """Restore target with `sharding` (None: this process's first device, so a checkpoint written
  on a GPU restores on CPU). Each process reads the parts its own devices hold."""
  sharding = sharding or parallel.state_sharding(None)
  return jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), state_like
  )


def place_like_restored(state: Any, sharding: Sharding | None = None) -> Any:
  """A fresh `state` placed as `restore(..., sharding=sharding)` returns one: committed to
  `sharding` (None: this process's first device), from process 0's values on every process.

  jit compiles uncommitted and committed arguments into different programs: placed alike, a fresh
  run and its resumption (or evaluate.py) share one persistent-cache entry instead of compiling
  twice.
  """
  return parallel.place(
    parallel.same_on_all_processes(state), sharding or parallel.state_sharding(None)
  )


def _remove_interrupted_saves(root: str) -> None:
  for which in (LATEST, BEST):
    folder = os.path.join(root, which)
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
      if ".orbax-checkpoint-tmp" in name:
        log.info("removing %s: a save that was interrupted", os.path.join(folder, name))
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)


@functools.cache
def _save_replicas_whole() -> None:
  """jax.Arrays saved by the one device holding replica 0 of each shard, not split among the
  replicas: orbax's replica-parallel default slices every replicated array with a jax op of its
  own shape, and compiling those took 5 s at the first save of the demo's state over 4 CPU
  devices (0.3 s without); our states are small enough for one writer."""
  # orbax warns "Type handler registry ... overriding jax.Array" at every run: the override is
  # the point, so the warning is kept off stderr.
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(use_replica_parallel=False), override=True
    )
  finally:
    absl_logging.set_verbosity(verbosity)


def _barrier_prefix(folder: str) -> str:
  """A manager's own name for orbax's barriers between processes: `latest` and `best` save the
  same step at once, and orbax's barrier names alone would then collide."""
  return f"jaxmm{zlib.crc32(folder.encode()):08x}"


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


# How often restore lists the steps anew when one is deleted while it is read (a run training in
# the same workdir replaced it): each time the newest step is read first.
_RELISTS = 5


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
    # Here, before any manager exists (orbax's own cleanup can finish after close()); by process 0
    # alone on several hosts, like every file operation.
    if cleanup_tmp and jax.process_index() == 0:
      _remove_interrupted_saves(root)
    _save_replicas_whole()
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
            max_to_keep=keep[which],
            create=True,
            cleanup_tmp_directories=cleanup_tmp,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
              barrier_sync_key_prefix=_barrier_prefix(folder)
            ),
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
    mgr.wait_until_finished()  # the steps below include one still being written
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
    if not saved:
      raise RuntimeError(f"orbax declined to save step {step} in {mgr.directory}")

  def wait(self) -> None:
    """Returns once every save in flight is written; raises the error of one that failed."""
    for mgr in self._managers.values():
      mgr.wait_until_finished()

  def restore(
    self,
    state_like: Any,
    *,
    which: str = LATEST,
    step: int | None = None,
    sharding: Sharding | None = None,
  ) -> tuple[Any, dict]:
    """Restores into the structure of `state_like` (a freshly built state of the same config),
    its arrays with `sharding` (None: this process's first device).

    A step deleted while it is read (a run training in the same workdir keeps newer ones) is no
    damage: the steps are listed anew. Raises FileNotFoundError when there is no step,
    CheckpointDamagedError when none restores.
    """
    self.wait()
    mgr = self._managers.get(which)
    folder = self._dirs[which]
    candidates = (sorted(mgr.all_steps(), reverse=True) if step is None else [step]) if mgr else []
    if not candidates:
      raise FileNotFoundError(f"no {which!r} checkpoint in {folder}; train first")
    args = ocp.args.Composite(
      state=ocp.args.StandardRestore(_abstract(state_like, sharding)),
      meta=ocp.args.JsonRestore(),
    )
    failed, tried = [], set()
    for _ in range(_RELISTS):
      vanished = False
      for s in (c for c in candidates if c not in tried):
        tried.add(s)
        out, error = _restore_step(mgr, s, args)
        if error is None:
          if failed:
            log.warning(
              "checkpoint step(s) %s in %s could not be restored (%s); using step %d",
              [f for f, _ in failed],
              folder,
              _short(failed[0][1]),
              s,
            )
          return out["state"], dict(out["meta"])
        vanished = not os.path.isdir(os.path.join(folder, str(s)))
        if vanished:  # deleted while read: a run is training here and kept newer steps
          break
        failed.append((s, error))
      if not vanished:
        break  # every step was read: none restores
      mgr.reload()  # the steps as the training run left them now
      candidates = sorted(mgr.all_steps(), reverse=True) if step is None else []
    if not failed:
      raise FileNotFoundError(
        f"the {which!r} checkpoint in {folder} was replaced while it was read: a run is saving "
        "there; try again"
      )
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
    self.wait()
    mgr = self._managers.get(which)
    step = mgr.latest_step() if mgr else None
    if step is None:
      return None
    return dict(mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

  def close(self) -> None:
    self.wait()
    for mgr in self._managers.values():
      mgr.close()


def _restore_step(mgr, step: int, args) -> tuple[Any, Exception | None]:
  """(orbax's restore of `step`, None), or (None, its error) with what it printed kept from the
  reader's terminal."""
  with _StderrCapture() as captured:
    try:
      return mgr.restore(step, args=args), None
    except Exception as e:  # orbax/tensorstore raise many types for a damaged folder
      captured.settle()
      return None, e


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
    _drop_orbax_leftovers()
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


def _drop_orbax_leftovers() -> None:
  """A failed restore leaves orbax's read coroutines and futures, each holding its TensorStore
  error, to be collected later; Python and asyncio then print every one ("Exception ignored in:
  <coroutine ...>", "exception was never retrieved", "was never awaited": thousands of lines in a
  notebook, long after the one error that matters). Those of orbax are dropped; any other goes
  where it went."""
  previous = sys.unraisablehook
  if getattr(previous, "drops_orbax_leftovers", False):
    return

  def hook(unraisable):
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None and _ORBAX_PATH in code.co_filename:
      return
    previous(unraisable)

  hook.drops_orbax_leftovers = True
  sys.unraisablehook = hook
  logging.getLogger("asyncio").addFilter(_not_from_orbax)
  for name in _ORBAX_READERS:
    warnings.filterwarnings("ignore", f"coroutine '{name}' was never awaited", RuntimeWarning)


_ORBAX_PATH = f"{os.sep}orbax{os.sep}"
_ORBAX_READERS = ("_read_array_index_and_device_put", "_read_shard")  # orbax's read coroutines


def _not_from_orbax(record: logging.LogRecord) -> bool:
  """A logging filter: False for a record whose exception was raised in orbax's code or is a
  TensorStore read error (raised in C++: no Python frame of orbax's)."""
  if not record.exc_info:
    return True
  if any(k in str(record.exc_info[1]) for k in ("OCDBT database", "TensorStore")):
    return False
  tb = record.exc_info[2]
  while tb is not None:
    if _ORBAX_PATH in tb.tb_frame.f_code.co_filename:
      return False
    tb = tb.tb_next
  return True


def _short(e: Exception, n: int = 300) -> str:
  """The first line of an error, cut at `n` characters (TensorStore's run to kilobytes)."""
  text = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
  return text if len(text) <= n else text[:n] + "..."
