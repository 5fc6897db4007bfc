"""Image-caption matching (S0): does the caption describe the image? 2-way softmax CE, or one
logit + BCE; probabilities are P(match) per pair, a match predicted above the threshold.

Data: S0's layout (`id,caption,image_id,label` CSVs + `<split>_images/`) or a table with a
`match` column; predictions `id,label`, or for a table its image and text and `match`.
"""

from __future__ import annotations

import csv
import os

import jax
import numpy as np

from jaxmm.data import comp5329, datasets, matching, table
from jaxmm.tasks import base
from jaxmm.tasks.base import Task
from jaxmm.train import losses
from jaxmm.train import metrics as metrics_lib
from jaxmm.train import thresholds as thresholds_lib

LOSSES = ("ce", "bce")


class MatchingTask(Task):
  name = "matching"
  metric_names = ("accuracy", "precision", "recall", "f1")
  label_key = target_key = "label"

  def check_config(self):
    train, model = self.config.train, self.config.model
    if train.loss not in LOSSES:
      raise ValueError(
        f"train.loss={train.loss!r} is not a matching loss: use 'ce' "
        "(2-way softmax) or 'bce' (one logit + threshold)"
      )
    if train.contrastive_weight and not model.head.interaction_dim:
      raise ValueError(
        "train.contrastive_weight needs the interaction projections: set "
        "model.head.interaction_dim > 0 (e.g. 256)"
      )
    if train.contrastive_weight and model.mode != "fused":
      raise ValueError(
        "train.contrastive_weight pairs the image and text towers: it needs "
        f"model.mode='fused' (got {model.mode!r}); set "
        "--config.train.contrastive_weight=0"
      )
    if train.tune_thresholds in ("per_class", thresholds_lib.EXPECTED_F1):
      raise ValueError(
        f"train.tune_thresholds={train.tune_thresholds!r} needs classes; "
        "matching has one threshold: use 'global' or ''"
      )
    super().check_config()

  def load_data(self, workdir, *, with_images=None):
    return datasets.prepare_pairs(
      self.config.data,
      workdir,
      with_images=self._with_images(with_images),
      task_key=self.task_key,
      text_cfg=self.config.model.get("text"),
    )

  def num_outputs(self):
    return 2 if self.config.train.loss == "ce" else 1

  def output_names(self):
    return ("match",)  # probs: P(match) of each pair

  def forward(self, model, batch, rngs):
    weight = self.config.train.contrastive_weight
    if not weight:
      return super().forward(model, batch, rngs)
    logits, pair = model(batch, rngs=rngs, with_pair=True)
    positive = batch["label"] * batch.get("mask", 1.0)
    return logits, weight * losses.in_batch_contrastive(
      *pair, positive, temperature=self.config.train.contrastive_temperature
    )

  def loss(self, logits, batch):
    if self.config.train.loss == "ce":
      return losses.softmax_ce(logits, batch["label"])
    return losses.binary_bce(logits, batch["label"])

  def probs(self, logits):
    if self.config.train.loss == "ce":
      return jax.nn.softmax(logits.astype("float32"), axis=-1)[:, 1]
    return jax.nn.sigmoid(logits.astype("float32")[:, 0])

  def report(self, probs, labels, thresholds):
    m = metrics_lib.binary_metrics(labels, np.asarray(probs) > float(thresholds))
    (tn, fp), (fn, tp) = m.pop("confusion")
    return {**m, "tn": tn, "fp": fp, "fn": fn, "tp": tp}

  def tune_thresholds(self, probs, labels):
    if self.config.train.tune_thresholds in ("global", "per_class"):
      return thresholds_lib.tune_binary_threshold(probs, labels)
    default = self.config.train.threshold
    return float(default), self.report(probs, labels, default)["accuracy"]

  def details(self, result, probs, labels, thresholds):
    return (
      f"  confusion (rows true 0/1, cols predicted 0/1): "
      f"[[{result['tn']}, {result['fp']}], [{result['fn']}, {result['tp']}]]"
    )

  def split_from_csv(self, encoder, csv_path, images_dir, *, labelled, skip_bad=False, rows=None):
    options = self.encode_options(csv_path, images_dir, labelled, skip_bad)
    if table.layout_of_file(csv_path) == "table":
      records = base.read_table_file(
        self.config.data, csv_path, images_dir, need="match" if labelled else None
      )
      records = base.select_rows(records, rows, csv_path)
      return datasets.encode_table_records(records, encoder, labels=None, **options)
    records = base.select_rows(matching.read_matching(csv_path), rows, csv_path)
    if labelled and any(r.label is None for r in records):
      raise comp5329.CsvFormatError(f"{csv_path}: evaluation needs the label column")
    return datasets.encode_matching_records(records, encoder, **options)

  def csv_is_labelled(self, csv_path):
    if table.layout_of_file(csv_path) == "table":
      return table.Columns.from_config(self.config.data).match in table.file_columns(csv_path)
    header = comp5329.read_utf8(csv_path).partition("\n")[0]
    return tuple(next(csv.reader([header]), ())) == matching.HEADER_LABELLED

  def default_images_dir(self, csv_path):
    """S0's layout: `<csv dir>/<csv stem>_images`; a table's rows name their images from the
    file's folder."""
    folder = os.path.dirname(os.path.abspath(csv_path))
    if table.layout_of_file(csv_path) == "table":
      return folder
    stem = os.path.splitext(os.path.basename(csv_path))[0]
    return os.path.join(folder, f"{stem}_images")

  def write_predictions(
    self, path, split, probs, thresholds, *, source=None, skipped=None, with_probs=False
  ):
    """S0 data (or no `source`): `id,label`; a table `source`: its image and text and `match`.
    --probs adds `p:label` / `p:match`, the probability of a match."""
    p_N = np.asarray(probs if probs is not None else np.zeros(0), np.float32).reshape(-1)
    decisions = [str(int(p)) for p in p_N > float(thresholds)]
    if source is not None and table.layout_of_file(source) == "table":
      column = table.Columns.from_config(self.config.data).match
      prob_columns = {base.PROB_PREFIX + column: p_N} if with_probs else {}
      base.write_table_predictions(
        path, source, self.config.data, {column: decisions}, prob_columns, skipped=skipped
      )
      return
    prob_columns = {base.PROB_PREFIX + "label": p_N} if with_probs else {}
    base.write_id_predictions(
      path, ["id", "label"], split.ids, decisions, prob_columns, skipped=skipped
    )
