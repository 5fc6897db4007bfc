"""What differs between the tasks jaxmm trains: data, head size, loss, metrics, thresholds, output.

`config.task` names a TaskSpec; the loop, evaluate.py and predict.py ask it instead of knowing the
task, so a new task is one more class: the pretext tasks ('rotation', 'mlm', 'autoencoder') live
in jaxmm/train/pretext_tasks.py and register themselves in TASKS.
"""

from __future__ import annotations

import csv
import os

import jax
import numpy as np

from jaxmm.data import comp5329, datasets, matching
from jaxmm.models import registry
from jaxmm.train import evaluation, losses, metrics as metrics_lib, steps
from jaxmm.train import thresholds as thresholds_lib


# train.tune_thresholds: '' keeps train.threshold; 'expected_f1' (multi-label) is a decision rule.
TUNE_MODES = ("", "global", "per_class", thresholds_lib.EXPECTED_F1)


class TaskSpec:
  name: str
  metric_names: tuple[str, ...]  # what `report` returns (the loop prefixes them with 'val_')
  label_key: str
  lower_is_better: tuple[str, ...] = ("val_loss",)  # selection metrics that improve downwards
  tunes_thresholds = True  # the loop writes thresholds.json after training
  pretext = False  # pretext tasks have no predictions (predict.py) and no thresholds

  def prepare(self, cfg_data, workdir, *, with_images: bool) -> datasets.PreparedData:
    raise NotImplementedError

  def load_data(self, config, workdir) -> datasets.PreparedData:
    """train/val of the configured dataset (what the loop and evaluate.py call)."""
    return self.prepare(config.data, workdir, with_images=config.model.mode != "text")

  def layout(self, config) -> str:
    """The dataset layout this task reads: 'multilabel' (COMP5329) or 'matching' (S0)."""
    return self.name

  def num_outputs(self, config) -> int:
    raise NotImplementedError

  def build_model(self, config, num_outputs: int, vocab_size: int, rngs, *, embedding_init=None):
    return registry.build_model(config.model, num_outputs=num_outputs, vocab_size=vocab_size,
                                rngs=rngs, embedding_init=embedding_init)

  def extra_map(self, config, vocab_size: int):
    """A grain RandomMap applied to train and eval examples (pretext transforms), or None."""
    return None

  def select_mode(self, config) -> str:
    """'max' or 'min': the direction in which train.select_metric improves."""
    return "min" if config.train.select_metric in self.lower_is_better else "max"

  def evaluate(self, predict_step, model_state, split, config, *, vocab_size=None) -> dict:
    """The task's metrics on `split` at train.threshold, prefixed 'val_', plus val_loss."""
    probs, loss = evaluation.predict_split(predict_step, model_state, split,
                                           batch_size=config.train.eval_batch_size,
                                           num_threads=config.data.num_threads)
    out = {f"val_{k}": v for k, v in
           self.report(probs, split.arrays[self.label_key], config.train.threshold).items()}
    out["val_loss"] = loss
    return out

  def after_training(self, config, workdir, predict_step, best_model_state, val_split, *,
                     vocab_size=None) -> None:
    """Extra outputs once training ends (the autoencoder's PNG grid); best_model_state() restores
    the best checkpoint's model state."""

  def step_task(self, config, train_split=None) -> steps.Task:
    """The jitted part: loss and probabilities (`train_split` lets losses use label statistics)."""
    raise NotImplementedError

  def report(self, probs, labels, thresholds) -> dict:
    raise NotImplementedError

  def tune_thresholds(self, probs, labels, mode: str, default) -> tuple[object, float]:
    """-> (thresholds, the selection metric at them) for thresholds.json."""
    raise NotImplementedError

  def split_from_csv(self, config, encoder, csv_path: str, images_dir: str, *, labelled: bool,
                     skip_bad: bool = False):
    raise NotImplementedError

  def csv_is_labelled(self, csv_path: str) -> bool:
    raise NotImplementedError

  def write_predictions(self, path: str, split, probs, thresholds) -> None:
    raise NotImplementedError

  def check_config(self, config) -> None:
    registry.check_model_config(config.model)
    tune = config.train.get("tune_thresholds", "")
    if tune not in TUNE_MODES:
      raise ValueError(f"train.tune_thresholds={tune!r} is not one of {TUNE_MODES}")
    select = config.train.select_metric
    known = [f"val_{m}" for m in self.metric_names] + ["val_loss"]
    if select not in known:
      raise ValueError(f"train.select_metric={select!r} is not reported by task {self.name!r}; "
                       f"use one of {known}")


class MultilabelTask(TaskSpec):
  """COMP5329: 18 sigmoid outputs, samples-F1, `ImageID,Labels` predictions."""

  name = "multilabel"
  metric_names = ("samples_f1", "micro_f1", "macro_f1", "weighted_f1", "samples_precision",
                  "samples_recall")
  label_key = "labels"

  def prepare(self, cfg_data, workdir, *, with_images):
    return datasets.prepare_comp5329(cfg_data, workdir, with_images=with_images)

  def num_outputs(self, config):
    return comp5329.NUM_LABELS

  def step_task(self, config, train_split=None):
    cw = None
    if config.train.loss == "weighted_bce" and train_split is not None:
      cw = losses.class_weights_from_frequencies(train_split.arrays["labels"],
                                                 scheme=config.train.class_weight_scheme)
    return steps.multilabel_task(config.train.loss, class_weights=cw,
                                 focal_gamma=config.train.focal_gamma,
                                 focal_alpha=config.train.focal_alpha or None)

  def report(self, probs, labels, thresholds):
    return evaluation.multilabel_report(probs, labels, thresholds, prefix="")

  def tune_thresholds(self, probs, labels, mode, default):
    if mode == "per_class":
      thr, f1 = thresholds_lib.tune_per_class_thresholds(probs, labels)
      return [float(t) for t in np.asarray(thr)], f1
    if mode == "global":
      return thresholds_lib.tune_global_threshold(probs, labels)
    if mode == thresholds_lib.EXPECTED_F1:  # nothing to tune: a rule, scored on val
      return mode, self.report(probs, labels, mode)["samples_f1"]
    return float(default), self.report(probs, labels, default)["samples_f1"]

  def split_from_csv(self, config, encoder, csv_path, images_dir, *, labelled, skip_bad=False):
    records = comp5329.read_comp5329(csv_path)
    if labelled and any(not r.labels for r in records):
      raise comp5329.CsvFormatError(f"{csv_path}: evaluation needs labels on every row")
    return datasets.encode_records(records, encoder, images_dir=images_dir,
                                   image_size=config.data.image_size,
                                   cache_dir=config.data.get("cache_dir") or None,
                                   skip_bad=skip_bad, skipped=[], labelled=labelled,
                                   with_images=config.model.mode != "text")

  def csv_is_labelled(self, csv_path):
    with open(csv_path, encoding="utf-8") as f:
      return f.readline().strip().lstrip("\ufeff") == comp5329.HEADER_LABELLED

  def write_predictions(self, path, split, probs, thresholds):
    preds = thresholds_lib.apply_thresholds(probs, thresholds, at_least_one=True)
    with open(path, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["ImageID", "Labels"])
      for image_id, row in zip(split.ids, preds):
        w.writerow([image_id, " ".join(str(l) for l in comp5329.multihot_to_labels(row))])


class MatchingTask(TaskSpec):
  """S0 matching: does the caption describe the image? 2-way softmax CE or 1 logit + BCE.

  probs are P(match) per pair; a pair is predicted a match when P(match) > threshold.
  """

  name = "matching"
  metric_names = ("accuracy", "precision", "recall", "f1")
  label_key = "label"
  LOSSES = ("ce", "bce")

  def prepare(self, cfg_data, workdir, *, with_images):
    return datasets.prepare_matching(cfg_data, workdir, with_images=with_images)

  def num_outputs(self, config):
    return 2 if config.train.loss == "ce" else 1

  def check_config(self, config):
    if config.train.loss not in self.LOSSES:
      raise ValueError(f"train.loss={config.train.loss!r} is not a matching loss: use 'ce' "
                       "(2-way softmax) or 'bce' (one logit + threshold)")
    if config.train.get("contrastive_weight") and not config.model.head.get("interaction_dim"):
      raise ValueError("train.contrastive_weight needs the interaction projections: set "
                       "model.head.interaction_dim > 0 (e.g. 256)")
    if config.train.get("contrastive_weight") and config.model.mode != "fused":
      raise ValueError("train.contrastive_weight pairs the image and text towers: it needs "
                       f"model.mode='fused' (got {config.model.mode!r}); set "
                       "--config.train.contrastive_weight=0")
    if config.train.tune_thresholds in ("per_class", thresholds_lib.EXPECTED_F1):
      raise ValueError(f"train.tune_thresholds={config.train.tune_thresholds!r} needs classes; "
                       "matching has one threshold: use 'global' or ''")
    super().check_config(config)

  def step_task(self, config, train_split=None):
    if config.train.loss == "ce":
      loss = lambda logits, b: losses.softmax_ce(logits, b["label"])
      probs = lambda logits: jax.nn.softmax(logits.astype("float32"), axis=-1)[:, 1]
    else:
      loss = lambda logits, b: losses.binary_bce(logits, b["label"])
      probs = lambda logits: jax.nn.sigmoid(logits.astype("float32")[:, 0])
    weight = config.train.get("contrastive_weight", 0.0)
    forward = None
    if weight:
      temperature = config.train.get("contrastive_temperature", 0.1)

      def forward(model, batch, rngs):
        logits, pair = model(batch, rngs=rngs, with_pair=True)
        positive = batch["label"] * batch.get("mask", 1.0)
        return logits, weight * losses.in_batch_contrastive(*pair, positive,
                                                            temperature=temperature)
    return steps.Task("matching", loss, probs, "label", forward=forward)

  def report(self, probs, labels, thresholds):
    m = metrics_lib.binary_metrics(labels, np.asarray(probs) > float(thresholds))
    (tn, fp), (fn, tp) = m.pop("confusion")
    return {**m, "tn": tn, "fp": fp, "fn": fn, "tp": tp}

  def tune_thresholds(self, probs, labels, mode, default):
    if mode in ("global", "per_class"):
      return thresholds_lib.tune_binary_threshold(probs, labels)
    return float(default), self.report(probs, labels, default)["accuracy"]

  def split_from_csv(self, config, encoder, csv_path, images_dir, *, labelled, skip_bad=False):
    records = matching.read_matching(csv_path)
    if labelled and any(r.label is None for r in records):
      raise comp5329.CsvFormatError(f"{csv_path}: evaluation needs the label column")
    return datasets.encode_matching_records(
        records, encoder, images_dir=images_dir, image_size=config.data.image_size,
        cache_dir=config.data.get("cache_dir") or None, skip_bad=skip_bad, skipped=[],
        labelled=labelled, with_images=config.model.mode != "text")

  def csv_is_labelled(self, csv_path):
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
      return tuple(next(csv.reader(f), ())) == matching.HEADER_LABELLED

  def write_predictions(self, path, split, probs, thresholds):
    preds = np.asarray(probs).reshape(-1) > float(thresholds)
    with open(path, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["id", "label"])
      for pair_id, p in zip(split.ids, preds):
        w.writerow([pair_id, int(p)])


TASKS: dict[str, TaskSpec] = {t.name: t for t in (MultilabelTask(), MatchingTask())}
# The pretext tasks (rotation, mlm, autoencoder) register themselves; imported here so that
# every caller of task_by_name sees them.
from jaxmm.train import pretext_tasks  # noqa: E402,F401  (circular: it imports TaskSpec)


def task_by_name(name: str) -> TaskSpec:
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
  return TASKS[name]


def default_images_dir(config, csv_path: str) -> str:
  """Where a CSV's images are when --images is not given: COMP5329 `<dir>/data`, S0
  `<dir>/<csv stem>_images`."""
  folder = os.path.dirname(os.path.abspath(csv_path))
  if task_by_name(config.get("task", "multilabel")).layout(config) == "matching":
    stem = os.path.splitext(os.path.basename(csv_path))[0]
    return os.path.join(folder, f"{stem}_images")
  return os.path.join(folder, "data")
