"""Multi-label tagging: one sigmoid output per label, samples-F1; predictions `ImageID,Labels`
(COMP5329's Kaggle format, label ids) or, for a table, the input's image and text with the label
names.

The label set (head size, names in reports and predictions) is the run's: COMP5329's 18 labels, or
a table's names (data.labels, else the training file's), kept in the workdir's labels.json.
"""

from __future__ import annotations

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxmm.data import comp5329, datasets, table
from jaxmm.data import labels as labels_lib
from jaxmm.tasks import base
from jaxmm.tasks.base import Task
from jaxmm.train import evaluation, losses
from jaxmm.train import metrics as metrics_lib
from jaxmm.train import thresholds as thresholds_lib

LOSSES = ("bce", "weighted_bce", "focal")
LABEL_REDUCTIONS = ("mean", "sum")


class MultilabelTask(Task):
  name = "multilabel"
  metric_names = (
    "samples_f1",
    "micro_f1",
    "macro_f1",
    "weighted_f1",
    "samples_precision",
    "samples_recall",
    "mean_ap",
  )
  label_key = target_key = "labels"
  decision_rules = (thresholds_lib.EXPECTED_F1,)

  def __init__(self, config):
    super().__init__(config)
    self.class_weights = None  # weighted_bce: from the training labels (with_train_data)
    self._labels: labels_lib.LabelSet | None = None
    self._restored = False  # the label set is a trained workdir's (read_workdir)

  @property
  def labels(self) -> labels_lib.LabelSet:
    """The run's label set, in head order: set by load_data or read_workdir; before either, that
    of the configured data (data.labels, or the training file's names, or COMP5329's)."""
    if self._labels is None:
      self._labels = datasets.label_set_of(self.config.data)
    return self._labels

  def read_workdir(self, workdir):
    self._labels = labels_lib.for_workdir(workdir)
    self._restored = True

  def check_config(self):
    if self.config.train.loss not in LOSSES:
      raise ValueError(
        f"train.loss={self.config.train.loss!r} is not a multi-label loss: use one of {LOSSES}"
      )
    reduction = self.config.train.get("label_reduction", "mean")
    if reduction not in LABEL_REDUCTIONS:
      raise ValueError(
        f"train.label_reduction={reduction!r}: use 'mean' (average over the labels) or 'sum'"
      )
    super().check_config()

  def load_data(self, workdir, *, with_images=None):
    data = datasets.prepare_multilabel(
      self.config.data,
      workdir,
      with_images=self._with_images(with_images),
      labels=self._labels if self._restored else None,
      save_labels=self.config.task == self.name,  # not for a pretext run over these images
      task_key=self.task_key,
      text_cfg=self.config.model.get("text"),
    )
    self._labels = data.labels
    return data

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

  has_prior_bias = True

  def output_bias(self, train_split):
    if self.config.model.get("head", {}).get("output_bias", "zeros") != "prior":
      return None
    freq = np.asarray(train_split.arrays["labels"], np.float64).mean(axis=0)
    # a label never (or always) seen gets a finite log-odds: at most 1 example in (n + 1) apart
    eps = 1.0 / (len(train_split) + 1)
    freq = np.clip(freq, eps, 1.0 - eps)
    return np.log(freq / (1.0 - freq)).astype(np.float32)

  def num_outputs(self):
    return len(self.labels)

  def output_names(self):
    return self.labels.names

  def loss(self, logits, batch):
    train = self.config.train
    if train.loss == "focal":
      loss_B = losses.focal_loss(
        logits, batch["labels"], gamma=train.focal_gamma, alpha=train.focal_alpha or None
      )
    else:
      loss_B = losses.sigmoid_bce(logits, batch["labels"], class_weights_L=self.class_weights)
    if train.get("label_reduction", "mean") == "sum":  # torch's reduction='sum' over the labels
      loss_B = loss_B * logits.shape[-1]
    return loss_B

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
    rows = metrics_lib.per_class_metrics(labels, preds, label_set=self.labels)
    result["per_class"] = rows
    return metrics_lib.format_per_class_table(rows)

  # --- other files: COMP5329 CSVs or tables -------------------------------------------------

  def split_from_csv(self, encoder, csv_path, images_dir, *, labelled, skip_bad=False, rows=None):
    options = self.encode_options(csv_path, images_dir, labelled, skip_bad)
    if table.layout_of_file(csv_path) == "table":
      records = base.read_table_file(
        self.config.data, csv_path, images_dir, need="labels" if labelled else None
      )
      records = base.select_rows(records, rows, csv_path)
      labels_lib.check_known(records, self.labels, csv_path, self._origin())
      return datasets.encode_table_records(records, encoder, labels=self.labels, **options)
    if self.labels.ids is None:
      raise ValueError(
        f"{csv_path} is a COMP5329-layout file (label ids), but this run's labels are names "
        f"({self.labels.describe()}): give a table (image, text, labels) instead"
      )
    records = base.select_rows(comp5329.read_comp5329(csv_path), rows, csv_path)
    unlabelled = [r for r in records if not r.labels] if labelled else []
    if unlabelled:
      raise comp5329.CsvFormatError(
        f"{csv_path}:{unlabelled[0].line}: no labels for {unlabelled[0].image_id!r} "
        f"({len(unlabelled)} row(s) without): evaluation needs labels on every row"
      )
    return datasets.encode_records(records, encoder, **options)

  def _origin(self) -> str:
    return "the workdir's labels.json" if self._restored else "the run's training data"

  def csv_is_labelled(self, csv_path):
    if table.layout_of_file(csv_path) == "table":
      return table.Columns.from_config(self.config.data).labels in table.file_columns(csv_path)
    header = comp5329.read_utf8(csv_path).partition("\n")[0]
    return header.strip() == comp5329.HEADER_LABELLED

  def default_images_dir(self, csv_path):
    if table.layout_of_file(csv_path) == "table":  # rows name their images from the file's folder
      return os.path.dirname(os.path.abspath(csv_path))
    return super().default_images_dir(csv_path)

  def decisions(self, probs, thresholds) -> list[tuple[str, ...]]:
    """Each example's predicted label names (at least one), in head order."""
    if probs is None or not len(probs):
      return []
    preds = thresholds_lib.apply_thresholds(probs, thresholds, at_least_one=True)
    return [self.labels.names_of(row) for row in preds]

  def write_predictions(
    self, path, split, probs, thresholds, *, source=None, skipped=None, with_probs=False
  ):
    """COMP5329 data (or no `source`): `ImageID,Labels` with space-separated label ids (names
    joined by data.label_sep for a named label set); a table `source`: its image and text and
    the labels column of names joined by data.label_sep. --probs: one `p:<name>` column per
    label."""
    names = self.decisions(probs, thresholds)
    probs_NxL = np.asarray(probs if names else np.zeros((0, len(self.labels))), np.float32)
    prob_columns = (
      {base.PROB_PREFIX + n: probs_NxL[:, i] for i, n in enumerate(self.labels.names)}
      if with_probs
      else {}
    )
    data, sep = self.config.data, self.config.data.label_sep
    if source is not None and table.layout_of_file(source) == "table":
      written = {table.Columns.from_config(data).labels: [sep.join(row) for row in names]}
      base.write_table_predictions(path, source, data, written, prob_columns, skipped=skipped)
      return
    if self.labels.ids is not None:  # Kaggle's format: COCO ids, space-separated
      id_of = dict(zip(self.labels.names, self.labels.ids))
      written = [" ".join(str(id_of[n]) for n in row) for row in names]
    else:
      written = [sep.join(row) for row in names]
    base.write_id_predictions(
      path, ["ImageID", "Labels"], split.ids, written, prob_columns, skipped=skipped
    )
