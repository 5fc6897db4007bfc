"""The standard recipe: one model of the config's task, trained by one `fit()`.

Everything the config can get wrong is checked before anything is read or written; then the
workdir's config.json, the data, the train state (fresh, or resumed from `latest`), the loop, and
once training ends the tuned thresholds, the task's extras and report.md.
"""

from __future__ import annotations

import json
import logging

from jaxmm import config as config_lib
from jaxmm import report, tasks
from jaxmm import workdir as workdir_lib
from jaxmm.data import word_vectors
from jaxmm.tasks import Task
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import evaluation, loop, parallel, setup, steps, transfer
from jaxmm.train import state as state_lib

log = logging.getLogger("jaxmm")


def checked_task(config) -> Task:
  """The config's task, after every check that needs no file (nothing is written yet)."""
  task = tasks.make(config)
  task.check_config()
  return task


def start(config, workdir: str, task: Task) -> None:
  """What a run does before reading data: joins the other hosts, checks and writes config.json,
  and generates the embedded synthetic data where the config names it."""
  parallel.maybe_initialize_distributed(config.train)  # before anything touches a device
  workdir_lib.write_config(config, workdir)
  config_lib.ensure_synthetic(config.data, task=task.layout)


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains (or resumes) the model of `config` in `workdir`; returns the best val metric, its
  step, the last step and the signal that stopped the run (None when it finished)."""
  task = checked_task(config)
  start(config, workdir, task)
  if config.init.text_from:
    transfer.share_vocab(config.init.text_from, workdir)
  data = task.load_data(workdir)
  return train_on(config, workdir, task, data).summary()


def train_on(config, workdir: str, task: Task, data) -> loop.FitResult:
  """Builds the state, fits it on `data` (PreparedData) and finishes the run."""
  checkpointer = ckpt_lib.Checkpointer(workdir, cleanup_tmp=True)
  vocab_size = len(data.encoder.vocab)
  plan = setup.plan(config, task, len(data.train))
  embedding_init = word_vectors.embedding_matrix_for(
    config, data.encoder, data.train_captions, workdir
  )
  state = state_lib.build(
    config,
    task,
    vocab_size=vocab_size,
    steps_per_epoch=plan.steps_per_epoch,
    total_steps=plan.schedule_steps,
    embedding_init=embedding_init,
    pretrained=checkpointer.latest_step() is None,
  )
  state, progress = loop.resume(ckpt_lib.place_like_restored(state), checkpointer)
  task = task.with_train_data(data.train)
  result = loop.fit(
    plan,
    state,
    progress,
    task,
    data.train,
    data.val,
    workdir=workdir,
    checkpointer=checkpointer,
    extra_map=task.extra_map(vocab_size),
    vocab_size=vocab_size,
  )
  if result.stopped_by_signal is None and data.val is not None:
    predict_step = steps.make_predict_step(state.model_def, task)
    if task.tunes_thresholds:
      finalize_thresholds(config, workdir, task, checkpointer, predict_step, result.state, data.val)
    if checkpointer.latest_step(ckpt_lib.BEST) is not None:

      def best_model_state():
        return state_lib.restore(result.state, checkpointer, which=ckpt_lib.BEST)[0].model

      task.after_training(workdir, predict_step, best_model_state, data.val, vocab_size=vocab_size)
  checkpointer.close()
  if result.stopped_by_signal is None and config.train.report:
    report.try_write_report(workdir)
  return result


def finalize_thresholds(
  config, workdir: str, task: Task, checkpointer, predict_step, state, val_split
) -> None:
  """Tunes the decision threshold(s) on val with the best checkpoint; writes thresholds.json and
  the best checkpoint's val predictions."""
  if checkpointer.latest_step(ckpt_lib.BEST) is None:
    return
  best, _ = state_lib.restore(state, checkpointer, which=ckpt_lib.BEST)
  probs, _ = evaluation.predict_split(
    predict_step,
    best.model,
    val_split,
    batch_size=config.train.eval_batch_size,
    num_threads=config.data.num_threads,
  )
  labels = val_split.arrays[task.label_key]
  report.save_predictions(
    workdir_lib.path(workdir, workdir_lib.PREDICTIONS_FILE), val_split.ids, probs, labels
  )
  thr, value = task.tune_thresholds(probs, labels)
  # The task's first metric at the tuned and at the default threshold(s).
  metric = task.metric_names[0]
  out = {
    "mode": config.train.tune_thresholds or "fixed",
    "thresholds": thr,
    f"val_{metric}": float(value),
    f"val_{metric}_at_default": float(task.report(probs, labels, config.train.threshold)[metric]),
  }
  with open(workdir_lib.path(workdir, workdir_lib.THRESHOLDS_FILE), "w") as f:
    json.dump(out, f, indent=1)
  log.info("thresholds: %s", out)
