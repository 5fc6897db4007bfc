"""The standard recipe: one model of the config's task, trained by one `fit()`.

Everything the config can get wrong is checked before anything is read or written; then the
workdir's config.json, the data, the train state (fresh, or resumed from `latest`), the loop, and
once training ends the tuned thresholds, the task's extras and report.md.

On several hosts every process runs all of it (each reads the data, builds the same state and
takes part in every checkpoint save and restore), and process 0 alone writes the workdir's files
while the others wait for it (`parallel.on_first_process`).
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


def start(config, workdir: str, task: Task, vocab_from: str | None = None) -> None:
  """What a run does before reading data: joins the other hosts, checks and writes config.json,
  drops what a run that stopped before its first checkpoint derived from its data (the
  vocabulary, the label set: the data may have been corrected since), generates the embedded
  synthetic data where the config names it and takes the vocabulary of init.text_from, else of
  the workdir `vocab_from`. Process 0 writes; the others wait for it."""
  parallel.maybe_initialize_distributed(config.train)  # before anything touches a device
  workdir_lib.check_config(config, workdir)  # on every process: a refused config stops them all

  def prepare():
    workdir_lib.write_config(config, workdir)
    for path in workdir_lib.clear_untrained(workdir):
      log.info("%s: left by a run that stopped before its first checkpoint; derived anew", path)
    config_lib.ensure_synthetic(config.data, task=task.layout)
    for source in (config.init.text_from, vocab_from):
      if source and transfer.share_vocab(source, workdir):
        break

  parallel.on_first_process(prepare, "preparing the workdir")


def train_and_evaluate(config, workdir: str, vocab_from: str | None = None) -> dict:
  """Trains (or resumes) the model of `config` in `workdir`; returns the best val metric, its
  step, the last step and the signal that stopped the run (None when it finished). A fresh run
  encodes captions with the vocabulary of the workdir `vocab_from` when that has one."""
  task = checked_task(config)
  start(config, workdir, task, vocab_from)
  data = task.load_data(workdir)
  return train_on(config, workdir, task, data).summary()


def train_on(config, workdir: str, task: Task, data) -> loop.FitResult:
  """Builds the state, fits it on `data` (PreparedData) and finishes the run."""
  checkpointer = ckpt_lib.Checkpointer(workdir, cleanup_tmp=True)
  vocab_size = len(data.encoder.vocab)
  plan = setup.plan(config, task, len(data.train))
  # Process 0's vectors (their cache is a workdir file); a fresh state is process 0's everywhere.
  embedding_init = parallel.on_first_process(
    lambda: word_vectors.embedding_matrix_for(config, data.encoder, data.train_captions, workdir),
    "building the word vectors",
  )
  state = state_lib.build(
    config,
    task,
    vocab_size=vocab_size,
    steps_per_epoch=plan.steps_per_epoch,
    total_steps=plan.schedule_steps,
    embedding_init=embedding_init,
    output_bias=task.output_bias(data.train),
    pretrained=checkpointer.latest_step() is None,
  )
  state, progress = loop.resume(state, checkpointer, sharding=plan.state_sharding)
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
  finished = result.stopped_by_signal is None
  best = None
  if finished and data.val is not None and checkpointer.latest_step(ckpt_lib.BEST) is not None:
    # On every process (orbax restores together), to this process's first device: what follows
    # is process 0's work alone.
    best, _ = state_lib.restore(result.state, checkpointer, which=ckpt_lib.BEST)
  checkpointer.close()
  if finished:
    parallel.on_first_process(
      lambda: finish(config, workdir, task, best, data.val, vocab_size=vocab_size),
      "finishing the run",
    )
  return result


def finish(config, workdir: str, task: Task, best, val_split, *, vocab_size: int) -> None:
  """The files of a finished run: thresholds.json and val_predictions.npz from the `best` state
  (None: no val split or no best checkpoint), the task's extras, report.md."""
  if best is not None:
    predict_step = steps.make_predict_step(best.model_def, task)
    if task.tunes_thresholds:
      finalize_thresholds(config, workdir, task, predict_step, best.model, val_split)
    task.after_training(workdir, predict_step, lambda: best.model, val_split, vocab_size=vocab_size)
  if config.train.report:
    report.try_write_report(workdir)


def finalize_thresholds(
  config, workdir: str, task: Task, predict_step, best_model_state, val_split
) -> None:
  """Tunes the decision threshold(s) on val with the best model; writes thresholds.json and the
  best model's val predictions."""
  probs, _ = evaluation.predict_split(
    predict_step,
    best_model_state,
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
