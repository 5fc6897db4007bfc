"""S1's two-stage recipe: each tower trained alone, features extracted once, the head trained on
them.

`train.two_stage=True` turns a concat-fusion config into:
  1. `<workdir>/stage1_image` and `<workdir>/stage1_text`: standard image-only and text-only runs
     of the same config (each resumes like any run);
  2. their best towers go into the fused model, and one jitted pass extracts the [image; text]
     features of every train and val example (no augmentation);
  3. `<workdir>/stage2_head`: `fit()` of the fusion head alone on those feature arrays for
     `train.head_epochs` epochs (cheap: no tower runs);
  4. towers + head are saved as `<workdir>`'s own best/latest checkpoint with tuned thresholds, so
     evaluate.py and predict.py use the result like any other run.

With model.name='late_fusion' (fusion.LateFusionClassifier) step 1 is the same, each stage-1 run
keeping its own head; steps 2-3 become one fit of the per-class mixing of the two branches' logits
on the val split (logistic regression, jaxmm.recipes.late_fusion), then step 4.

On several hosts every process runs every step alike (features are extracted on each host's own
first device); process 0 writes the files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import jax
import numpy as np
from flax import nnx

from jaxmm import report, tasks
from jaxmm import workdir as workdir_lib
from jaxmm.data import pipeline
from jaxmm.data.pipeline import PreparedSplit
from jaxmm.models.fusion import MLPHead
from jaxmm.recipes import late_fusion, standard
from jaxmm.tasks.multilabel import MultilabelTask
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import loop, parallel, setup, steps
from jaxmm.train import state as state_lib
from jaxmm.train.writer import MetricWriter

log = logging.getLogger("jaxmm")
STAGES = ("text", "image")
HEAD_DIR = "stage2_head"


class FeatureHead(nnx.Module):
  """The fusion head over precomputed features: `batch['features']` -> logits. Its `head` has the
  structure of ConcatFusionClassifier.head, so its weights drop straight into the fused model."""

  def __init__(self, in_features: int, head_cfg, num_outputs: int, *, rngs: nnx.Rngs):
    self.feature_dropout = nnx.Dropout(head_cfg.feature_dropout)
    self.head = MLPHead(
      in_features,
      tuple(head_cfg.hidden),
      num_outputs,
      dropout=head_cfg.dropout,
      norm=head_cfg.norm or None,
      rngs=rngs,
    )

  def __call__(self, batch, *, rngs: nnx.Rngs | None = None):
    return self.head(self.feature_dropout(batch["features"], rngs=rngs), rngs=rngs)


def sub_config(config, **updates):
  """A copy of `config` with dotted-key `updates`, as a single-stage run."""
  sub = config.copy_and_resolve_references()
  sub.unlock()
  sub.train.two_stage = False
  for key, value in updates.items():
    node = sub
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return sub


def check_config(config) -> None:
  if config.model.name not in ("concat_fusion", "late_fusion") or config.model.mode != "fused":
    raise ValueError(
      "train.two_stage needs model.name='concat_fusion' or 'late_fusion' and "
      f"model.mode='fused' (got {config.model.name!r}, {config.model.mode!r})"
    )
  if config.model.name == "late_fusion" and not isinstance(tasks.make(config), MultilabelTask):
    raise ValueError(
      "train.two_stage with model.name='late_fusion' fits per-label sigmoid "
      f"mixings: it needs task='multilabel' (got {config.task!r}); use "
      "model.name='concat_fusion' for two-stage matching"
    )
  if config.model.head.interaction_dim:
    raise ValueError(
      "train.two_stage cannot train head.interaction_dim projections (they sit "
      "between the towers); set --config.model.head.interaction_dim=0"
    )
  standard.checked_task(config)
  for mode in STAGES:
    standard.checked_task(sub_config(config, **{"model.mode": mode}))


def _stage_dir(workdir: str, mode: str) -> str:
  return os.path.join(workdir, f"stage1_{mode}")


def _train_stage1(config, workdir: str, mode: str) -> dict:
  """One tower alone in `<workdir>/stage1_<mode>` (resumes; returns at once when complete)."""
  stage_dir = _stage_dir(workdir, mode)
  log.info("two-stage: training the %s tower alone in %s", mode, stage_dir)
  os.makedirs(stage_dir, exist_ok=True)
  # The image run reads captions too (they are in every batch): it shares the text run's ids.
  # Started alone (train.py --stage=image), it fits the same vocabulary from the same records.
  vocab_from = _stage_dir(workdir, "text") if mode == "image" else None
  return standard.train_and_evaluate(
    sub_config(config, **{"model.mode": mode}), stage_dir, vocab_from=vocab_from
  )


def train_stage1_only(config, workdir: str, mode: str) -> dict:
  """`train.py --stage=text|image`: only that stage-1 run of a two-stage config, so the two towers
  can train at once (two processes, devices or machines sharing `workdir`); the run without
  --stage afterwards finds both complete and goes on with stage 2."""
  if mode not in STAGES:
    raise ValueError(f"--stage must be one of {STAGES}, got {mode!r}")
  check_config(config)
  _write_config(config, workdir)
  return _train_stage1(config, workdir, mode)


def _write_config(config, workdir: str) -> None:
  parallel.maybe_initialize_distributed(config.train)  # before anything touches a device
  workdir_lib.check_config(config, workdir)

  def prepare():
    workdir_lib.write_config(config, workdir)
    workdir_lib.clear_untrained(workdir)  # as start(): a failed stage 2 left them

  parallel.on_first_process(prepare, "writing the workdir's config")


def _restore_model(state: state_lib.TrainState, workdir: str) -> nnx.Module:
  """The best (else latest) model of the run in `workdir`, restored into `state`'s structure."""
  checkpointer = ckpt_lib.Checkpointer(workdir)
  which = ckpt_lib.BEST if checkpointer.latest_step(ckpt_lib.BEST) is not None else ckpt_lib.LATEST
  state, _ = state_lib.restore(state, checkpointer, which=which)
  checkpointer.close()
  return state.merged_model()


def extract_features(
  model, split: PreparedSplit, *, batch_size: int, num_threads: int, method: str = "features"
):
  """`model.<method>(batch)` (eval mode) for every example of `split`, in order, float32: the
  [image; text] features (N, D) by default."""
  graphdef, model_state = nnx.split(model)

  @jax.jit
  def features(model_state, batch):
    m = nnx.merge(graphdef, model_state)
    m.eval()
    return getattr(m, method)(batch)

  out = []
  for batch in pipeline.iterate(
    pipeline.eval_dataset(split, batch_size=batch_size), num_threads=num_threads
  ):
    feats = np.asarray(features(model_state, batch))
    out.append(feats[np.asarray(batch["mask"]) > 0])
  return np.concatenate(out).astype(np.float32)


def train_and_evaluate(config, workdir: str) -> dict:
  check_config(config)
  task = tasks.make(config)
  _write_config(config, workdir)
  checkpointer = ckpt_lib.Checkpointer(workdir)
  done = checkpointer.restore_meta(which=ckpt_lib.BEST)
  if done and done.get("done"):
    checkpointer.close()
    log.info("two-stage run in %s is complete", workdir)
    return {
      "best_metric": done["best_metric"],
      "best_step": done["best_step"],
      "step": done["step"],
      "stopped_by_signal": None,
    }

  # 1. Each tower alone. The text run fits the vocabulary; every later stage reuses it.
  stage1 = {mode: _train_stage1(config, workdir, mode) for mode in STAGES}
  if any(r["stopped_by_signal"] for r in stage1.values()):
    checkpointer.close()
    return next(r for r in stage1.values() if r["stopped_by_signal"])
  parallel.on_first_process(
    lambda: shutil.copy(os.path.join(_stage_dir(workdir, "text"), workdir_lib.VOCAB_FILE), workdir),
    "copying the vocabulary",
  )

  # 2. The fused model with both trained towers; features extracted once.
  data = task.load_data(workdir, with_images=True)
  vocab_size = len(data.encoder.vocab)
  state = state_lib.build(config, task, vocab_size=vocab_size)
  model = state.merged_model()
  late = config.model.name == "late_fusion"
  for mode in ("image", "text"):
    sub = sub_config(config, **{"model.mode": mode})
    trained = _restore_model(
      state_lib.build(sub, tasks.make(sub), vocab_size=vocab_size), _stage_dir(workdir, mode)
    )
    if late:  # the whole unimodal classifier, head included, is the branch
      nnx.update(getattr(model, f"{mode}_only"), nnx.state(trained))
    else:
      nnx.update(getattr(model, mode), nnx.state(getattr(trained, mode)))
  kw = dict(batch_size=config.train.eval_batch_size, num_threads=config.data.num_threads)
  if late:
    logits = extract_features(model, data.val, method="branch_logits", **kw)
    mix = late_fusion.fit_into(model, logits, data.val.arrays[task.label_key])
    head = {"best_metric": None, "best_step": 0, "mix": mix}
    return _finish(config, workdir, checkpointer, task, data, model, state, stage1, head, epoch=0)
  head = _train_head(config, workdir, task, data, model, **kw)
  return _finish(
    config,
    workdir,
    checkpointer,
    task,
    data,
    model,
    state,
    stage1,
    head,
    epoch=config.train.head_epochs,
  )


def _train_head(config, workdir, task, data, model, **kw) -> dict:
  """3. The fusion head alone, fitted on the towers' features; copied into `model.head`."""
  feats = {
    name: extract_features(model, split, **kw)
    for name, split in (("train", data.train), ("val", data.val))
  }
  log.info("two-stage: features %s (train) %s (val)", feats["train"].shape, feats["val"].shape)

  def as_split(split, f):
    return PreparedSplit(
      ids=split.ids,
      image_cache=None,
      image_index=None,
      arrays={"features": f, task.label_key: split.arrays[task.label_key]},
    )

  train, val = as_split(data.train, feats["train"]), as_split(data.val, feats["val"])
  head_cfg = sub_config(
    config, **{"train.epochs": config.train.head_epochs, "train.tune_thresholds": ""}
  )
  head_dir = os.path.join(workdir, HEAD_DIR)
  head_task = tasks.make(head_cfg).with_train_data(train)
  plan = setup.plan(head_cfg, head_task, len(train))
  head_model = FeatureHead(
    feats["train"].shape[1], head_cfg.model.head, task.num_outputs(), rngs=nnx.Rngs(head_cfg.seed)
  )
  state = state_lib.with_optimizer(
    head_model, head_cfg, steps_per_epoch=plan.steps_per_epoch, total_steps=plan.schedule_steps
  )
  checkpointer = ckpt_lib.Checkpointer(head_dir, cleanup_tmp=True)
  state, progress = loop.resume(state, checkpointer, sharding=plan.state_sharding)
  result = loop.fit(
    plan, state, progress, head_task, train, val, workdir=head_dir, checkpointer=checkpointer
  )
  checkpointer.close()
  nnx.update(model.head, nnx.state(_restore_model(result.state, head_dir).head))
  return result.summary()


def _finish(
  config, workdir, checkpointer, task, data, model, state, stage1, head, *, epoch: int
) -> dict:
  """4. The assembled model is this workdir's checkpoint; thresholds tuned on it."""
  state = state.replace(model=nnx.state(model))
  progress = loop.Progress(
    step=head["best_step"] or 0,
    best_step=head["best_step"],
    done=True,
    extra={"two_stage": {"image": stage1["image"], "text": stage1["text"], "head": head}},
  )
  predict_step = steps.make_predict_step(state.model_def, task.with_train_data(data.train))
  writer = MetricWriter(workdir, writes=workdir_lib.writes_files())
  val = task.evaluate(predict_step, state.model, data.val)  # on this process's first device
  writer.write(progress.step, val, epoch=epoch)
  writer.close()
  progress.best_metric = val[config.train.select_metric]
  # Saved as a training run's state is: replicated over the run's mesh (orbax saves together).
  placed = state_lib.place(state, parallel.state_sharding(parallel.run_mesh(config.train)))
  for which in (ckpt_lib.BEST, ckpt_lib.LATEST):
    state_lib.save(placed, checkpointer, progress.step, progress.to_meta(), which=which)
  checkpointer.close()

  def write_files():
    standard.finalize_thresholds(config, workdir, task, predict_step, state.model, data.val)
    with open(workdir_lib.path(workdir, workdir_lib.TWO_STAGE_FILE), "w") as f:
      json.dump(progress.extra["two_stage"], f, indent=1, default=float)
    if config.train.report:  # the fused model's: per-class table and threshold sweep on val
      report.try_write_report(workdir)

  parallel.on_first_process(write_files, "writing the two-stage results")
  log.info(
    "two-stage: fused %s = %.4f (image alone %s, text alone %s)",
    config.train.select_metric,
    progress.best_metric,
    stage1["image"]["best_metric"],
    stage1["text"]["best_metric"],
  )
  return {
    "best_metric": progress.best_metric,
    "best_step": progress.best_step,
    "step": progress.step,
    "stopped_by_signal": None,
  }
