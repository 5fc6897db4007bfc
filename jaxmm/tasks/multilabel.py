"""Multi-label tagging (COMP5329): one sigmoid output per label, samples-F1, `ImageID,Labels`."""

from __future__ import annotations

import copy
import csv

import jax
import jax.numpy as jnp

from jaxmm.data import comp5329, datasets
from jaxmm.tasks.base import Task
from jaxmm.train import evaluation, losses
from jaxmm.train import metrics as metrics_lib
from jaxmm.train import thresholds as thresholds_lib

LOSSES = ("bce", "weighted_bce", "focal")


class MultilabelTask(Task):
  name = "multilabel"
  metric_names = (
    "samples_f1",
    "micro_f1",
    "macro_f1",
    "weighted_f1",
    "samples_precision",
    "samples_recall",
  )
  label_key = target_key = "labels"
  decision_rules = (thresholds_lib.EXPECTED_F1,)

  def __init__(self, config):
    super().__init__(config)
    self.class_weights = None  # weighted_bce: from the training labels (with_train_data)

  def check_config(self):
    if self.config.train.loss not in LOSSES:
      raise ValueError(
        f"train.loss={self.config.train.loss!r} is not a multi-label loss: use one of {LOSSES}"
      )
    super().check_config()

  def load_data(self, workdir, *, with_images=None):
    return datasets.prepare_comp5329(
      self.config.data, workdir, with_images=self._with_images(with_images)
    )

  def with_train_data(self, train_split):
    if self.config.train.loss != "weighted_bce":
      return self
    task = copy.copy(self)
    task.class_weights = jnp.asarray(
      losses.class_weights_from_frequencies(
        train_split.arrays["labels"], scheme=self.config.train.class_weight_scheme
      ),
      jnp.float32,
    )
    return task

  def num_outputs(self):
    return comp5329.NUM_LABELS

  def loss(self, logits, batch):
    train = self.config.train
    if train.loss == "focal":
      return losses.focal_loss(
        logits, batch["labels"], gamma=train.focal_gamma, alpha=train.focal_alpha or None
      )
    return losses.sigmoid_bce(logits, batch["labels"], class_weights_L=self.class_weights)

  def probs(self, logits):
    return jax.nn.sigmoid(logits)

  def report(self, probs, labels, thresholds):
    return evaluation.multilabel_report(probs, labels, thresholds, prefix="")

  def tune_thresholds(self, probs, labels):
    mode, default = self.config.train.tune_thresholds, self.config.train.threshold
    if mode == "per_class":
      thr, f1 = thresholds_lib.tune_per_class_thresholds(probs, labels)
      return [float(t) for t in thr], f1
    if mode == "global":
      return thresholds_lib.tune_global_threshold(probs, labels)
    if mode == thresholds_lib.EXPECTED_F1:  # nothing to tune: a rule, scored on val
      return mode, self.report(probs, labels, mode)["samples_f1"]
    return float(default), self.report(probs, labels, default)["samples_f1"]

  def details(self, result, probs, labels, thresholds):
    preds = thresholds_lib.apply_thresholds(probs, thresholds, at_least_one=True)
    rows = metrics_lib.per_class_metrics(labels, preds)
    result["per_class"] = rows
    return metrics_lib.format_per_class_table(rows)

  def split_from_csv(self, encoder, csv_path, images_dir, *, labelled, skip_bad=False):
    records = comp5329.read_comp5329(csv_path)
    if labelled and any(not r.labels for r in records):
      raise comp5329.CsvFormatError(f"{csv_path}: evaluation needs labels on every row")
    return datasets.encode_records(
      records, encoder, **self.encode_options(csv_path, images_dir, labelled, skip_bad)
    )

  def csv_is_labelled(self, csv_path):
    header = comp5329.read_utf8(csv_path).partition("\n")[0]
    return header.strip() == comp5329.HEADER_LABELLED

  def write_predictions(self, path, split, probs, thresholds):
    preds = thresholds_lib.apply_thresholds(probs, thresholds, at_least_one=True)
    with open(path, "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["ImageID", "Labels"])
      for image_id, row in zip(split.ids, preds):
        w.writerow([image_id, " ".join(str(label) for label in comp5329.multihot_to_labels(row))])
