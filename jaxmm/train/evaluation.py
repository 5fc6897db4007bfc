"""Jitted evaluation over a whole split (no example dropped) and the metrics it reports."""

from __future__ import annotations

import numpy as np

from jaxmm.data import pipeline
from jaxmm.train import metrics as metrics_lib
from jaxmm.train import thresholds as thresholds_lib


def predict_split(
  predict_step, model_state, split: pipeline.PreparedSplit, *, batch_size: int, num_threads: int = 2
) -> tuple[np.ndarray, float | None]:
  """-> (probs_NxL in split order, mean loss over real examples or None if unlabelled)."""
  ds = pipeline.eval_dataset(split, batch_size=batch_size)
  probs, loss_sum, n = [], 0.0, 0
  pending = None
  for batch in pipeline.iterate(ds, num_threads=num_threads):
    out = predict_step(model_state, batch)  # dispatch; fetch the previous batch meanwhile
    if pending is not None:
      loss_sum, n = _collect(pending, probs, loss_sum, n)
    pending = (out, batch["mask"])
  if pending is not None:
    loss_sum, n = _collect(pending, probs, loss_sum, n)
  labelled = any(k in split.arrays for k in ("labels", "label"))
  probs_N = np.concatenate(probs) if probs else np.zeros((0,))
  return probs_N, (loss_sum / max(n, 1) if labelled else None)


def _collect(pending, probs, loss_sum, n):
  (p, loss_B), mask = pending
  keep = np.asarray(mask) > 0
  probs.append(np.asarray(p)[keep])
  return loss_sum + float(np.asarray(loss_B)[keep].sum()), n + int(keep.sum())


def multilabel_report(
  probs_NxL: np.ndarray, labels_NxL: np.ndarray, thresholds, *, prefix: str = "val_"
) -> dict[str, float]:
  """Metrics at the given threshold(s), every row predicting at least one label, and the
  threshold-free mean average precision (`mean_ap`)."""
  preds = thresholds_lib.apply_thresholds(probs_NxL, thresholds, at_least_one=True)
  out = metrics_lib.multilabel_metrics(labels_NxL, preds)
  # threshold-free: moves while the thresholded scores still sit at the label prior
  out["mean_ap"] = metrics_lib.mean_average_precision(labels_NxL, probs_NxL)
  return {prefix + k: v for k, v in out.items()}
