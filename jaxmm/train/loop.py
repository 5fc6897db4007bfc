"""`fit()`: the training loop, over objects built beforehand (jaxmm.recipes builds them).

grain batches -> jitted train step -> eval at the end of every epoch -> metrics.jsonl +
TensorBoard -> orbax checkpoints (`latest` for resuming, `best` for evaluation and prediction).
`Progress` is the loop's host-side state; it goes into every checkpoint, so a resumed run goes on
at the exact batch where it stopped and writes the same metrics.jsonl.

On several hosts every process runs this loop over its own share of each batch; the metrics
come from replicated arrays, so every process takes the same decisions (best checkpoint, early
stopping, plateau), a stop signal is agreed on (`parallel.any_process`), and only process 0
writes metrics.jsonl and TensorBoard (`workdir.writes_files`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from jaxmm import workdir as workdir_lib
from jaxmm.data import pipeline
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import cpu_kernels, optim, parallel, steps
from jaxmm.train import state as state_lib
from jaxmm.train.setup import RunPlan
from jaxmm.train.writer import MetricWriter

log = logging.getLogger("jaxmm")


@dataclasses.dataclass
class Progress:
  """Where a run stands; saved as the checkpoint's JSON meta."""

  step: int = 0
  epoch: int = 0
  batch_in_epoch: int = 0
  best_metric: float | None = None
  best_step: int | None = None
  early_stopping: dict | None = None
  plateau: dict | None = None
  lr_scale: float = 1.0
  bad_steps: int = 0  # consecutive non-finite steps
  done: bool = False  # early stopping ended the run
  elapsed_s: float = 0.0  # wall-clock, summed over resumptions
  metric_rows: int = 0  # rows of metrics.jsonl at the checkpoint
  pending: list = dataclasses.field(default_factory=list)  # step metrics not yet logged
  cpu_kernels: str = ""  # the train step's CPU kernels once chosen: a resume compiles the same
  extra: dict = dataclasses.field(default_factory=dict)  # recipe results (two-stage)

  def to_meta(self) -> dict:
    meta = dataclasses.asdict(self)
    meta.update(meta.pop("extra"))
    return meta

  @classmethod
  def from_meta(cls, meta: dict) -> Progress:
    names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    return cls(
      **{k: v for k, v in meta.items() if k in names},
      extra={k: v for k, v in meta.items() if k not in names},
    )


@dataclasses.dataclass
class FitResult:
  state: Any
  progress: Progress
  stopped_by_signal: int | None

  def summary(self) -> dict:
    p = self.progress
    return {
      "best_metric": p.best_metric,
      "best_step": p.best_step,
      "step": p.step,
      "stopped_by_signal": self.stopped_by_signal,
    }


class _StopFlag:
  """SIGTERM/SIGINT ask the loop to save a checkpoint and exit cleanly at the next step.

  On several hosts a signal may reach some processes only, or at different steps: at every check
  the processes agree whether any was asked to stop, so all save the same step and stop together.
  """

  def __init__(self):
    self.signum = None  # the signal this process received
    self.stopped_by = None  # the signal the run stops for (SIGTERM when another process got it)
    self._old = {}

  def requested(self) -> bool:
    """Whether the run stops now; every process calls this at the same points (a collective)."""
    if self.stopped_by is None and parallel.any_process(self.signum is not None):
      self.stopped_by = self.signum or int(signal.SIGTERM)
    return self.stopped_by is not None

  def __enter__(self):
    for s in (signal.SIGTERM, signal.SIGINT):
      self._old[s] = signal.signal(s, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.signum is not None:  # asked twice (a second Ctrl-C): stop now, without saving
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
    self.signum = signum

  def __exit__(self, *exc):
    for s, h in self._old.items():
      signal.signal(s, h)


@contextlib.contextmanager
def _saves_written(checkpointer: ckpt_lib.Checkpointer):
  """On leaving, the saves in flight are on disk before the caller reads them or exits; after an
  error too (non-finite losses keep the last good checkpoint)."""
  try:
    yield
  finally:
    checkpointer.wait()


def resume(
  state: state_lib.TrainState, checkpointer: ckpt_lib.Checkpointer, *, sharding=None
) -> tuple[state_lib.TrainState, Progress]:
  """The latest checkpoint's state and progress, or the fresh `state` and a fresh Progress; the
  arrays with `sharding` either way (None: this process's first device; `RunPlan.state_sharding`
  for a run over a mesh), built or read on each host, never copied across hosts."""
  if checkpointer.latest_step() is None:
    return state_lib.place(state, sharding), Progress()
  state, meta = state_lib.restore(state, checkpointer, sharding=sharding)
  progress = Progress.from_meta(meta)
  log.info(
    "resumed from step %d (epoch %d, batch %d)",
    progress.step,
    progress.epoch,
    progress.batch_in_epoch,
  )
  return state, progress


def fit(
  plan: RunPlan,
  state: state_lib.TrainState,
  progress: Progress,
  task,
  train,
  val,
  *,
  workdir: str,
  checkpointer: ckpt_lib.Checkpointer,
  extra_map=None,
  vocab_size: int | None = None,
) -> FitResult:
  """Trains `state` on the `train` split from `progress` on, evaluating on `val` (None: no
  evaluation, no best checkpoint) after every epoch; returns the final state and progress."""
  p = progress
  resuming = bool(p.step)
  writer = MetricWriter(
    workdir,
    resume_step=p.step if resuming else None,
    keep_rows=p.metric_rows if resuming else None,
    writes=workdir_lib.writes_files(),
  )
  mesh = plan.mesh

  def make_step(kernels: str):
    return steps.make_train_step(
      task,
      seed=plan.seed,
      out_shardings=parallel.replicated(mesh) if mesh else None,
      augment=pipeline.device_augmentation(plan.augment, extra_map),
      cpu_kernels=kernels,
    )

  if plan.cpu_kernels != "auto":  # as configured; 'auto' keeps a resumed run's choice
    p.cpu_kernels = plan.cpu_kernels
  elif p.step and not p.cpu_kernels:  # a checkpoint from before the choice: XLA's default then
    p.cpu_kernels = cpu_kernels.DEFAULT
  train_step = make_step(p.cpu_kernels) if p.cpu_kernels else None  # None: chosen on batch 1
  predict_step = steps.make_predict_step(state.model_def, task)
  eval_predict = predict_step
  state = parallel.place(state, plan.state_sharding)  # a no-op for a state from `resume`
  if mesh is not None:
    eval_predict = parallel.parallel_predict_step(predict_step, mesh, plan.eval_batch_size)
  early, plateau = plan.early_stopping(), plan.plateau()
  if p.early_stopping:
    early.load_state_dict(p.early_stopping)
  if plateau is not None and p.plateau:
    plateau.load_state_dict(p.plateau)
  t_start = time.time() - p.elapsed_s  # wall-clock accumulates over resumes
  show_bar = plan.progress_bar and sys.stderr.isatty()  # in a log file: one line per log point
  pbar = tqdm(
    total=plan.total_steps,
    initial=p.step,
    desc="train",
    unit="step",
    disable=not show_bar,
    dynamic_ncols=True,
  )
  pending: list[dict] = list(p.pending)
  l2_checked: list[bool] = []  # the L2 term is compared with the first logged gradients only
  param_norm = float(optax.tree.norm(nnx.state(state.merged_model(), nnx.Param))) if plan.l2 else 0

  def save(which=ckpt_lib.LATEST):
    p.elapsed_s = time.time() - t_start
    p.early_stopping = early.state_dict()
    p.plateau = plateau.state_dict() if plateau is not None else None
    p.metric_rows = writer.num_rows
    p.pending = [{k: float(v) for k, v in m.items()} for m in jax.device_get(pending)]
    state_lib.save(state, checkpointer, p.step, p.to_meta(), which=which)

  def log_train():
    lr = float(plan.lr_schedule(p.step)) * p.lr_scale
    row = _train_row(pending, p, lr)
    if plan.l2 and not l2_checked:
      l2_checked.append(True)
      warning = optim.l2_dominance_warning(plan.l2, param_norm, row["grad_norm"])
      if warning:
        log.warning(warning)
    writer.write(p.step, row, epoch=p.epoch, elapsed_s=round(time.time() - t_start, 2))
    pbar.set_postfix(loss=f"{row['train_loss']:.4f}")
    if not show_bar:
      log.info(
        "step %d/%d: train_loss %.4f, lr %.3g", p.step, plan.total_steps, row["train_loss"], lr
      )

  with _StopFlag() as stop, _saves_written(checkpointer):
    while p.step < plan.total_steps and not p.done:
      ds = pipeline.train_dataset(
        train,
        batch_size=plan.local_batch,
        seed=plan.seed,
        epoch=p.epoch,
        augment=plan.augment,
        extra_map=extra_map,
        shard=plan.shard,
      )
      for batch in pipeline.iterate(
        ds, start=p.batch_in_epoch, num_threads=plan.num_threads, num_workers=plan.num_workers
      ):
        if mesh is not None:
          batch = parallel.shard_batch(batch, mesh)
        if train_step is None:
          p.cpu_kernels, train_step = cpu_kernels.choose(
            make_step, state, batch, run_steps=plan.total_steps - p.step
          )
        state, m = train_step(state, batch)
        pending.append(m)
        p.step += 1
        p.batch_in_epoch += 1
        pbar.update(1)
        if len(pending) >= plan.log_every or p.step >= plan.total_steps:
          log_train()
          pending = []
          _check_finite(p, plan.max_bad_steps)
        if plan.ckpt_every_steps and p.step % plan.ckpt_every_steps == 0:
          save()
        if stop.requested() or p.step >= plan.total_steps:
          break
      # Before the flush: unlogged steps go into the checkpoint. After the last step the run
      # still evaluates and saves (a resumed run has no step left that would evaluate).
      if stop.requested() and p.step < plan.total_steps:
        save()
        break
      if pending:
        log_train()
        pending = []
      epoch_done = p.batch_in_epoch >= plan.steps_per_epoch
      if epoch_done or p.step >= plan.total_steps:
        if val is not None:
          metrics = task.evaluate(eval_predict, state.model, val, vocab_size=vocab_size)
          score = metrics[plan.select_metric]
          improved = early.update(score)
          if plateau is not None:
            p.lr_scale = plateau.update(score)
            state = state.replace(opt=optim.set_lr_scale(state.opt, p.lr_scale))
            state = parallel.place(state, plan.state_sharding)  # the new scale is a host value
          row = writer.write(
            p.step,
            metrics,
            epoch=p.epoch + int(epoch_done),
            elapsed_s=round(time.time() - t_start, 2),
          )
          pbar.set_postfix({plan.select_metric: f"{score:.4f}"})
          log.info("eval %s", json.dumps(row))
          if improved:
            p.best_metric, p.best_step = score, p.step
            save(ckpt_lib.BEST)
          if early.should_stop:
            log.info("early stopping at epoch %d", p.epoch)
            p.done = True
        if epoch_done:
          p.epoch += 1
          p.batch_in_epoch = 0
        save()
  if stop.stopped_by is not None:
    log.warning(
      "signal %d: saved checkpoint at step %d; run the same command to resume",
      stop.stopped_by,
      p.step,
    )
  pbar.close()
  writer.close()
  return FitResult(state=state, progress=p, stopped_by_signal=stop.stopped_by)


def _train_row(pending: list[dict], p: Progress, lr: float) -> dict:
  fetched = jax.device_get(pending)
  losses = np.array([float(m["loss"]) for m in fetched])
  finite = np.array([bool(m["finite"]) for m in fetched])  # bool, or 0./1. from a checkpoint
  for ok in finite:  # consecutive non-finite steps, across log points
    p.bad_steps = 0 if ok else p.bad_steps + 1
  return {
    "train_loss": float(losses[finite].mean()) if finite.any() else float("nan"),
    "grad_norm": float(np.mean([float(m["grad_norm"]) for m in fetched])),
    "nonfinite_steps": int((~finite).sum()),
    "lr": lr,
  }


def _check_finite(p: Progress, max_bad_steps: int) -> None:
  if p.bad_steps >= max_bad_steps:
    raise FloatingPointError(
      f"{p.bad_steps} consecutive steps had a non-finite loss or gradient (last at step "
      f"{p.step}); the updates were skipped and the last good checkpoint is kept. Lower "
      "optim.lr, set optim.clip_norm, or check the data."
    )
