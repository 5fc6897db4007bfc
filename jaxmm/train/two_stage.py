"""S1's two-stage recipe: each tower trained alone, features extracted once, the head trained on them.

`train.two_stage=True` turns a concat-fusion config into:
  1. `<workdir>/stage1_image` and `<workdir>/stage1_text`: ordinary image-only and text-only runs
     of the same config (each resumes like any run);
  2. their best towers go into the fused model, and one jitted pass extracts the [image; text]
     features of every train and val example (no augmentation);
  3. `<workdir>/stage2_head` trains the fusion head alone on those feature arrays for
     `train.head_epochs` epochs (cheap: no tower runs);
  4. towers + head are saved as `<workdir>`'s own best/latest checkpoint with tuned thresholds, so
     evaluate.py and predict.py use the result like any other run.

With model.name='late_fusion' (fusion.LateFusionClassifier) step 1 is the same, each stage-1 run
keeping its own head; steps 2-3 become one fit of the per-class mixing of the two branches' logits
on the val split (logistic regression, `fit_logit_mixing`), then step 4.
"""

from __future__ import annotations

import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxmm import config as config_lib
from jaxmm.data import datasets, pipeline
from jaxmm.data.pipeline import PreparedSplit
from jaxmm.models.fusion import MLPHead
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import loop, steps
from jaxmm.train.writer import MetricWriter

log = logging.getLogger("jaxmm")


class FeatureHead(nnx.Module):
  """The fusion head over precomputed features: `batch['features']` -> logits. Its `head` has the
  structure of ConcatFusionClassifier.head, so its weights drop straight into the fused model."""

  def __init__(self, in_features: int, head_cfg, num_outputs: int, *, rngs: nnx.Rngs):
    self.feature_dropout = nnx.Dropout(head_cfg.feature_dropout)
    self.head = MLPHead(in_features, tuple(head_cfg.hidden), num_outputs, dropout=head_cfg.dropout,
                        norm=head_cfg.norm or None, rngs=rngs)

  def __call__(self, batch, *, rngs: nnx.Rngs | None = None):
    return self.head(self.feature_dropout(batch["features"], rngs=rngs), rngs=rngs)


def _sub_config(config, **updates):
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


def _check(config):
  if config.model.name not in ("concat_fusion", "late_fusion") or config.model.mode != "fused":
    raise ValueError("train.two_stage needs model.name='concat_fusion' or 'late_fusion' and "
                     f"model.mode='fused' (got {config.model.name!r}, {config.model.mode!r})")
  if config.model.name == "late_fusion" and config.task != "multilabel":
    raise ValueError("train.two_stage with model.name='late_fusion' fits per-label sigmoid "
                     f"mixings: it needs task='multilabel' (got {config.task!r}); use "
                     "model.name='concat_fusion' for two-stage matching")
  if config.model.head.get("interaction_dim"):
    raise ValueError("train.two_stage cannot train head.interaction_dim projections (they sit "
                     "between the towers); set --config.model.head.interaction_dim=0")


def _restore_model(config, workdir: str, vocab_size: int, model_fn=None):
  """The best (else latest) model of the run in `workdir`, merged."""
  graphdefs, state = loop.build_state(config, vocab_size=vocab_size, steps_per_epoch=1,
                                      total_steps=1, model_fn=model_fn)
  ckpt = ckpt_lib.Checkpointer(workdir)
  which = ckpt_lib.BEST if ckpt.latest_step(ckpt_lib.BEST) is not None else ckpt_lib.LATEST
  state, _ = ckpt.restore(state, which=which)
  ckpt.close()
  return nnx.merge(graphdefs[0], state[0])


def extract_features(model, split: PreparedSplit, *, batch_size: int, num_threads: int,
                     method: str = "features"):
  """`model.<method>(batch)` (eval mode) for every example of `split`, in order, float32: the
  [image; text] features (N, D) by default."""
  graphdef, model_state = nnx.split(model)

  @jax.jit
  def features(model_state, batch):
    m = nnx.merge(graphdef, model_state)
    m.eval()
    return getattr(m, method)(batch)

  out = []
  for batch in pipeline.iterate(pipeline.eval_dataset(split, batch_size=batch_size),
                                num_threads=num_threads):
    feats = np.asarray(features(model_state, batch))
    out.append(feats[np.asarray(batch["mask"]) > 0])
  return np.concatenate(out).astype(np.float32)


STAGES = ("text", "image")


def _stage_dir(workdir: str, mode: str) -> str:
  return os.path.join(workdir, f"stage1_{mode}")


def _train_stage1(config, workdir: str, mode: str) -> dict:
  """One tower alone in `<workdir>/stage1_<mode>` (resumes; returns at once when complete)."""
  stage_dir = _stage_dir(workdir, mode)
  log.info("two-stage: training the %s tower alone in %s", mode, stage_dir)
  os.makedirs(stage_dir, exist_ok=True)
  text_vocab = os.path.join(_stage_dir(workdir, "text"), datasets.VOCAB_FILE)
  # The image run reads captions too (they are in every batch): it shares the text run's ids.
  # Started alone (train.py --stage=image), it fits the same vocabulary from the same records.
  if mode == "image" and os.path.exists(text_vocab):
    shutil.copy(text_vocab, stage_dir)
  return loop.train_and_evaluate(_sub_config(config, **{"model.mode": mode}), stage_dir)


def train_stage1_only(config, workdir: str, mode: str) -> dict:
  """`train.py --stage=text|image`: only that stage-1 run of a two-stage config, so the two towers
  can train at once (two processes, devices or machines sharing `workdir`); the run without
  --stage afterwards finds both complete and goes on with stage 2."""
  _check(config)
  if mode not in STAGES:
    raise ValueError(f"--stage must be one of {STAGES}, got {mode!r}")
  os.makedirs(workdir, exist_ok=True)
  config_lib.check_workdir_config(config, workdir)
  return _train_stage1(config, workdir, mode)


def train_two_stage(config, workdir: str) -> dict:
  _check(config)
  spec = loop.task_spec(config)
  spec.check_config(config)
  os.makedirs(workdir, exist_ok=True)
  config_lib.check_workdir_config(config, workdir)
  ckpt = ckpt_lib.Checkpointer(workdir)
  done = ckpt.restore_meta(which=ckpt_lib.BEST)
  if done and done.get("done"):
    ckpt.close()
    log.info("two-stage run in %s is complete", workdir)
    return {"best_metric": done["best_metric"], "best_step": done["best_step"],
            "step": done["step"]}

  # 1. Each tower alone. The text run fits the vocabulary; every later stage reuses it.
  stage_dirs = {m: _stage_dir(workdir, m) for m in STAGES}
  stage1 = {mode: _train_stage1(config, workdir, mode) for mode in STAGES}
  shutil.copy(os.path.join(stage_dirs["text"], datasets.VOCAB_FILE), workdir)

  # 2. The fused model with both trained towers; features extracted once.
  data = spec.prepare(config.data, workdir, with_images=True)
  vocab_size = len(data.encoder.vocab)
  graphdefs, state = loop.build_state(config, vocab_size=vocab_size, steps_per_epoch=1,
                                      total_steps=1)
  model = nnx.merge(graphdefs[0], state[0])
  late = config.model.name == "late_fusion"
  for mode in ("image", "text"):
    trained = _restore_model(_sub_config(config, **{"model.mode": mode}), stage_dirs[mode],
                             vocab_size)
    if late:  # the whole unimodal classifier, head included, is the branch
      nnx.update(getattr(model, f"{mode}_only"), nnx.state(trained))
    else:
      nnx.update(getattr(model, mode), nnx.state(getattr(trained, mode)))
  kw = dict(batch_size=config.train.eval_batch_size, num_threads=config.data.num_threads)
  if late:
    mix = _fit_mixing(model, data.val, spec, **kw)
    head_result = {"best_metric": None, "best_step": 0, "mix": mix}
    return _finish(config, workdir, ckpt, spec, data, graphdefs, model, state, stage1,
                   head_result, epoch=0)
  feats = {name: extract_features(model, split, **kw)
           for name, split in (("train", data.train), ("val", data.val))}
  log.info("two-stage: features %s (train) %s (val)", feats["train"].shape, feats["val"].shape)

  def as_split(split, f):
    return PreparedSplit(ids=split.ids, image_cache=None, image_index=None,
                         arrays={"features": f, spec.label_key: split.arrays[spec.label_key]})

  feature_data = datasets.PreparedData(train=as_split(data.train, feats["train"]),
                                       val=as_split(data.val, feats["val"]),
                                       encoder=data.encoder, skipped=data.skipped)

  # 3. The head alone, on the features.
  in_features = feats["train"].shape[1]
  head_cfg = _sub_config(config, **{"train.epochs": config.train.head_epochs,
                                    "train.tune_thresholds": ""})
  head_dir = os.path.join(workdir, "stage2_head")
  head_fn = lambda c, n, v, r: FeatureHead(in_features, c.model.head, n, rngs=r)
  head_result = loop.train_and_evaluate(head_cfg, head_dir, data=feature_data, model_fn=head_fn)
  head_model = _restore_model(head_cfg, head_dir, vocab_size, model_fn=head_fn)
  nnx.update(model.head, nnx.state(head_model.head))
  return _finish(config, workdir, ckpt, spec, data, graphdefs, model, state, stage1, head_result,
                 epoch=config.train.head_epochs)


def fit_logit_mixing(branch_logits_NxBxL: np.ndarray, labels_NxL: np.ndarray, *,
                     l2: float = 1e-3, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
  """Per class, the logistic regression of the label on the branches' logits: returns mix (B, L)
  and bias (L,) maximising the val likelihood minus an L2 penalty (l2 * N on the weights, 1e-4 * N
  on the bias). Newton's method with step halving, so every step lowers the penalised loss: plain
  Newton diverges on a class that one branch separates perfectly."""
  n, num_branches, num_labels = branch_logits_NxBxL.shape
  mix = np.zeros((num_branches, num_labels))
  bias = np.zeros(num_labels)
  reg = np.full(num_branches + 1, l2 * n)
  reg[-1] = 1e-4 * n  # a class absent from val still gets a finite bias

  def loss(x, y, w):
    z = x @ w
    return (np.logaddexp(0.0, z) - y * z).sum() + 0.5 * (reg * w * w).sum()

  for c in range(num_labels):
    x = np.concatenate([branch_logits_NxBxL[:, :, c], np.ones((n, 1))], 1).astype(np.float64)
    y = labels_NxL[:, c].astype(np.float64)
    w = np.full(num_branches + 1, 1.0 / num_branches)  # start: the mean of the logits
    w[-1] = 0.0
    current = loss(x, y, w)
    for _ in range(iters):
      p = 0.5 * (1.0 + np.tanh(0.5 * (x @ w)))  # the logistic function, overflow-free
      grad = x.T @ (p - y) + reg * w
      hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(reg)
      step = np.linalg.solve(hess, grad)
      t = 1.0
      while t > 1e-10 and loss(x, y, w - t * step) > current:
        t *= 0.5
      w, previous = w - t * step, current
      current = loss(x, y, w)
      if previous - current < 1e-10 * max(1.0, abs(current)):
        break
    mix[:, c], bias[c] = w[:-1], w[-1]
  return mix.astype(np.float32), bias.astype(np.float32)


def _fit_mixing(model, val: PreparedSplit, spec, **kw) -> list:
  """2. (late fusion) The per-class mixing of the two branches' logits, fitted on val: the towers
  saw val only for early stopping, so their val logits are not overfit the way train logits are."""
  logits = extract_features(model, val, method="branch_logits", **kw)
  mix, bias = fit_logit_mixing(logits, val.arrays[spec.label_key])
  model.mix[...] = jnp.asarray(mix)
  model.bias[...] = jnp.asarray(bias)
  log.info("two-stage: late-fusion weights fitted on %d val examples; mean image %.3f, text %.3f",
           len(val), mix[0].mean(), mix[1].mean())
  return mix.tolist()


def _finish(config, workdir, ckpt, spec, data, graphdefs, model, state, stage1, head_result, *,
            epoch: int):
  """4. The assembled model is this workdir's checkpoint; thresholds tuned on it."""
  state = (nnx.state(model), state[1])
  meta = loop._fresh_meta()
  meta.update(step=head_result["best_step"] or 0, best_step=head_result["best_step"],
              best_metric=head_result["best_metric"], done=True,
              two_stage={"image": stage1["image"], "text": stage1["text"], "head": head_result})
  predict_step = steps.make_predict_step(graphdefs[0], loop.build_task(config, data.train))
  writer = MetricWriter(workdir)
  val = loop.evaluate_split(spec, predict_step, state, data.val, config)
  writer.write(meta["step"], val, epoch=epoch)
  writer.close()
  meta["best_metric"] = val[config.train.select_metric]
  ckpt.save(meta["step"], state, meta, which=ckpt_lib.BEST)
  ckpt.save(meta["step"], state, meta, which=ckpt_lib.LATEST)
  loop.finalize_thresholds(config, workdir, ckpt, predict_step, state, data.val)
  ckpt.close()
  with open(os.path.join(workdir, "two_stage.json"), "w") as f:
    json.dump(meta["two_stage"], f, indent=1, default=float)
  log.info("two-stage: fused %s = %.4f (image alone %s, text alone %s)",
           config.train.select_metric, meta["best_metric"], stage1["image"]["best_metric"],
           stage1["text"]["best_metric"])
  return {"best_metric": meta["best_metric"], "best_step": meta["best_step"],
          "step": meta["step"]}
