"""`train_and_evaluate(config, workdir)`: the training loop behind `train.py`.

files -> PreparedSplits -> grain batches -> jitted train step -> eval every epoch -> metrics.jsonl +
TensorBoard -> orbax checkpoints (latest for resuming, best for evaluate/predict). Running the same
command again resumes from `latest` at the exact batch where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time

import jax
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from jaxmm import config as config_lib
from jaxmm import report
from jaxmm.data import pipeline, word_vectors
from jaxmm.data.pipeline import AugmentConfig
from jaxmm.models import registry
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import evaluation, optim, parallel, steps, tasks, transfer
from jaxmm.train.writer import MetricWriter

THRESHOLDS_FILE = "thresholds.json"
log = logging.getLogger("jaxmm")


class _StopFlag:
  """SIGTERM/SIGINT ask the loop to save a checkpoint and exit cleanly at the next step."""

  def __init__(self):
    self.signum = None
    self._old = {}

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


def task_spec(config) -> tasks.TaskSpec:
  return tasks.task_by_name(config.get("task", "multilabel"))


def build_task_for_inference(config):
  """The jitted task for prediction only: label statistics (class weights) do not matter there."""
  return task_spec(config).step_task(config)


def build_task(config, train_split):
  return task_spec(config).step_task(config, train_split)


def build_state(config, *, vocab_size: int, steps_per_epoch: int, total_steps: int,
                model_fn=None, embedding_init=None, pretrained: bool = False):
  """-> (graphdefs, state) of a fresh model + optimizer.

  `model_fn(config, num_outputs, vocab_size, rngs)` replaces the registry's model (two-stage
  training trains a bare head this way). embedding_init (word vectors) and pretrained
  (model.image.weights, init.*_from) only matter to a fresh training run: a restored checkpoint
  overwrites them.
  """
  spec = task_spec(config)
  build = model_fn or (lambda c, n, v, r: spec.build_model(c, n, v, r,
                                                           embedding_init=embedding_init))
  model = registry.init_in_one_program(
      lambda: build(config, spec.num_outputs(config), vocab_size, nnx.Rngs(config.seed)))
  if pretrained and model_fn is None:
    transfer.init_from_config(model, config)
  tx = optim.make_optimizer(transfer.resolve_freeze(config.optim, model),
                            steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                            params=nnx.state(model, nnx.Param))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  return steps.split_state(model, optimizer)


def _fresh_meta() -> dict:
  return {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_metric": None, "best_step": None,
          "early_stopping": None, "plateau": None, "lr_scale": 1.0, "bad_steps": 0, "done": False,
          "elapsed_s": 0.0, "metric_rows": 0, "pending": []}


def train_and_evaluate(config, workdir: str, *, data=None, model_fn=None) -> dict:
  """Trains (or resumes) the model of `config` in `workdir`; returns the best val metrics.

  `data` (PreparedData) and `model_fn` (see build_state) replace the configured dataset and model;
  `train.two_stage=True` runs S1's towers-then-head recipe (jaxmm.train.two_stage).
  """
  if config.train.get("two_stage") and data is None:
    from jaxmm.train import two_stage
    return two_stage.train_two_stage(config, workdir)
  spec = task_spec(config)
  spec.check_config(config)
  os.makedirs(workdir, exist_ok=True)
  parallel.maybe_initialize_distributed(config.train)  # before anything touches a device
  config_lib.check_workdir_config(config, workdir)
  if config.data.get("synthetic") and config.data.synthetic.generate:
    config_lib.ensure_synthetic(config.data, task=spec.layout(config))
  if data is None:
    if config.get("init", {}).get("text_from"):
      transfer.share_vocab(config.init.text_from, workdir)
    data = spec.load_data(config, workdir)
  tc = config.train
  spe = pipeline.steps_per_epoch(len(data.train), tc.batch_size)
  if spe == 0:
    raise ValueError(f"{len(data.train)} training examples give no full batch of "
                     f"train.batch_size={tc.batch_size}; lower the batch size")
  # The schedule always spans the configured epochs; max_steps only cuts the run short (smoke runs).
  schedule_steps = tc.epochs * spe
  total_steps = min(tc.max_steps, schedule_steps) if tc.max_steps else schedule_steps
  ckpt = ckpt_lib.Checkpointer(workdir, cleanup_tmp=True)
  vocab_size = len(data.encoder.vocab)
  extra_map = spec.extra_map(config, vocab_size)  # pretext targets (None for other tasks)
  embedding_init = word_vectors.embedding_matrix_for(config, data.encoder, data.train_captions,
                                                     workdir)
  graphdefs, state = build_state(config, vocab_size=vocab_size, steps_per_epoch=spe,
                                 total_steps=schedule_steps, model_fn=model_fn,
                                 embedding_init=embedding_init,
                                 pretrained=ckpt.latest_step() is None)
  state = ckpt_lib.place_like_restored(state)
  task = build_task(config, data.train)
  schedule = optim.make_schedule(config.optim, steps_per_epoch=spe, total_steps=schedule_steps)
  meta = _fresh_meta()
  if ckpt.latest_step() is not None:
    state, meta = ckpt.restore(state)
    log.info("resumed from step %d (epoch %d, batch %d)", meta["step"], meta["epoch"],
             meta["batch_in_epoch"])
  # The checkpoint's row count and unlogged step metrics make the resumed metrics.jsonl exact.
  resuming = bool(meta["step"])
  writer = MetricWriter(workdir, resume_step=meta["step"] if resuming else None,
                        keep_rows=meta.get("metric_rows") if resuming else None)
  # Data parallel over all devices (jaxmm.train.parallel): each process loads `local_batch` rows of
  # every global batch; the state is replicated after the (single-device) restore.
  mesh = parallel.make_mesh() if parallel.enabled(tc) else None
  train_step = steps.make_train_step(graphdefs, task, seed=config.seed,
                                     out_shardings=parallel.replicated(mesh) if mesh else None)
  predict_step = steps.make_predict_step(graphdefs[0], task)
  local_batch, shard, eval_predict = tc.batch_size, (0, 1), predict_step
  if mesh is not None:
    local_batch = parallel.per_process_batch(tc.batch_size, mesh)
    shard = (jax.process_index(), jax.process_count())
    state = parallel.replicate(state, mesh)
    eval_predict = parallel.parallel_predict_step(predict_step, mesh, tc.eval_batch_size)
  mode = spec.select_mode(config)  # 'min' for val_mae / val_loss
  early = optim.EarlyStopping(tc.early_stopping_patience or 10**9, mode=mode)
  plateau = (optim.ReduceOnPlateau(config.optim.plateau_factor, config.optim.plateau_patience,
                                   mode=mode) if config.optim.plateau_patience else None)
  if meta["early_stopping"]:
    early.load_state_dict(meta["early_stopping"])
  if plateau is not None and meta["plateau"]:
    plateau.load_state_dict(meta["plateau"])
  aug = config.data.augment
  augment = AugmentConfig(crop=aug.crop, hflip=aug.hflip, vflip=aug.vflip,
                          crop_scale=tuple(aug.crop_scale),
                          color_jitter=aug.get("color_jitter", 0.0),
                          word_swap=aug.get("word_swap", 0.0))

  def save(which=ckpt_lib.LATEST):
    meta["elapsed_s"] = time.time() - t_start
    meta["early_stopping"] = early.state_dict()
    meta["plateau"] = plateau.state_dict() if plateau is not None else None
    meta["metric_rows"] = writer.num_rows
    meta["pending"] = [{k: float(v) for k, v in m.items()} for m in jax.device_get(pending)]
    ckpt.save(meta["step"], state, meta, which=which)

  def evaluate_now():
    return evaluate_split(spec, eval_predict, state, data.val, config, vocab_size=vocab_size)

  def log_train(pending):
    lr = float(schedule(meta["step"])) * meta["lr_scale"]
    _log_train(writer, pending, meta, pbar, time.time() - t_start, lr)

  t_start = time.time() - meta.get("elapsed_s", 0.0)  # wall-clock accumulates over resumes
  pbar = tqdm(total=total_steps, initial=meta["step"], desc="train", unit="step",
              disable=not tc.progress_bar, dynamic_ncols=True)
  pending: list[dict] = list(meta.get("pending") or [])
  with _StopFlag() as stop:
    while meta["step"] < total_steps and not meta["done"]:
      ds = pipeline.train_dataset(data.train, batch_size=local_batch, seed=config.seed,
                                  epoch=meta["epoch"], augment=augment, extra_map=extra_map,
                                  shard=shard)
      it = pipeline.iterate(ds, start=meta["batch_in_epoch"], num_threads=config.data.num_threads,
                            num_workers=config.data.num_workers)
      for batch in it:
        if mesh is not None:
          batch = parallel.shard_batch(batch, mesh)
        state, m = train_step(state, batch)
        pending.append(m)
        meta["step"] += 1
        meta["batch_in_epoch"] += 1
        pbar.update(1)
        if len(pending) >= tc.log_every or meta["step"] >= total_steps:
          log_train(pending)
          pending = []
          _check_finite(meta, tc)
        if tc.ckpt_every_steps and meta["step"] % tc.ckpt_every_steps == 0:
          save()
        if stop.signum is not None or meta["step"] >= total_steps:
          break
      if stop.signum is not None:  # before the flush: unlogged steps go into the checkpoint
        save()
        log.warning("signal %d: saved checkpoint at step %d; run the same command to resume",
                    stop.signum, meta["step"])
        break
      if pending:
        log_train(pending)
        pending = []
      epoch_done = meta["batch_in_epoch"] >= spe
      if epoch_done or meta["step"] >= total_steps:
        if data.val is not None:
          val = evaluate_now()
          improved = early.update(val[tc.select_metric])
          if plateau is not None:
            meta["lr_scale"] = plateau.update(val[tc.select_metric])
            state = (state[0], optim.set_lr_scale(state[1], meta["lr_scale"]))
            if mesh is not None:
              state = parallel.replicate(state, mesh)
          row = writer.write(meta["step"], val, epoch=meta["epoch"] + int(epoch_done),
                             elapsed_s=round(time.time() - t_start, 2))
          pbar.set_postfix({tc.select_metric: f"{val[tc.select_metric]:.4f}"})
          log.info("eval %s", json.dumps(row))
          if improved:
            meta["best_metric"], meta["best_step"] = val[tc.select_metric], meta["step"]
            save(ckpt_lib.BEST)
          if early.should_stop:
            log.info("early stopping at epoch %d", meta["epoch"])
            meta["done"] = True
        if epoch_done:
          meta["epoch"] += 1
          meta["batch_in_epoch"] = 0
        save()
  pbar.close()
  if stop.signum is None and data.val is not None:
    if spec.tunes_thresholds:
      finalize_thresholds(config, workdir, ckpt, predict_step, state, data.val)
    if ckpt.latest_step(ckpt_lib.BEST) is not None:
      best = lambda: steps.model_state_of(ckpt.restore(state, which=ckpt_lib.BEST)[0])
      spec.after_training(config, workdir, predict_step, best, data.val, vocab_size=vocab_size)
  writer.close()
  ckpt.close()
  if stop.signum is None and config.train.get("report", True):
    report.try_write_report(workdir)
  return {"best_metric": meta["best_metric"], "best_step": meta["best_step"], "step": meta["step"],
          "stopped_by_signal": stop.signum}


def evaluate_split(spec, predict_step, state, split, config, *, vocab_size=None) -> dict:
  """The task's val metrics on `split` (TaskSpec.evaluate), prefixed 'val_', plus val_loss."""
  return spec.evaluate(predict_step, steps.model_state_of(state), split, config,
                       vocab_size=vocab_size)


def _log_train(writer, pending, meta, pbar, elapsed, lr):
  fetched = jax.device_get(pending)
  losses = np.array([float(m["loss"]) for m in fetched])
  finite = np.array([bool(m["finite"]) for m in fetched])  # bool, or 0./1. from a checkpoint
  for ok in finite:  # consecutive non-finite steps, across log points
    meta["bad_steps"] = 0 if ok else meta["bad_steps"] + 1
  row = {"train_loss": float(losses[finite].mean()) if finite.any() else float("nan"),
         "grad_norm": float(np.mean([float(m["grad_norm"]) for m in fetched])),
         "nonfinite_steps": int((~finite).sum()), "lr": lr}
  writer.write(meta["step"], row, epoch=meta["epoch"], elapsed_s=round(elapsed, 2))
  pbar.set_postfix(loss=f"{row['train_loss']:.4f}")


def _check_finite(meta, tc):
  if meta["bad_steps"] >= tc.max_bad_steps:
    raise FloatingPointError(
        f"{meta['bad_steps']} consecutive steps had a non-finite loss or gradient (last at step "
        f"{meta['step']}); the updates were skipped and the last good checkpoint is kept. Lower "
        "optim.lr, set optim.clip_norm, or check the data.")


def finalize_thresholds(config, workdir, ckpt, predict_step, state, val_split):
  """Tunes the decision threshold(s) on val with the best checkpoint and stores them beside it."""
  if ckpt.latest_step(ckpt_lib.BEST) is None:
    return
  best_state, best_meta = ckpt.restore(state, which=ckpt_lib.BEST)
  probs, _ = evaluation.predict_split(predict_step, steps.model_state_of(best_state), val_split,
                                      batch_size=config.train.eval_batch_size,
                                      num_threads=config.data.num_threads)
  spec = task_spec(config)
  labels = val_split.arrays[spec.label_key]
  report.save_predictions(os.path.join(workdir, report.PREDICTIONS_FILE), val_split.ids, probs,
                          labels)
  mode = config.train.tune_thresholds
  thr, value = spec.tune_thresholds(probs, labels, mode, config.train.threshold)
  # The selection metric of the task at the tuned and at the default threshold(s).
  metric = spec.metric_names[0]
  out = {"mode": mode or "fixed", "thresholds": thr, f"val_{metric}": float(value),
         f"val_{metric}_at_default": float(
             spec.report(probs, labels, config.train.threshold)[metric])}
  with open(os.path.join(workdir, THRESHOLDS_FILE), "w") as f:
    json.dump(out, f, indent=1)
  log.info("thresholds: %s", out)
