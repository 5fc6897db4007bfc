"""Multi-label and binary classification metrics in numpy, matching scikit-learn exactly.

Every multi-label score equals `sklearn.metrics.precision_recall_fscore_support(labels, preds,
average=..., labels=range(L))` with the default `zero_division="warn"` (checked against
scikit-learn 1.9.1), which scores an undefined ratio as 0:

- 'samples': a row with no predicted labels has precision 0; a row with no true labels has
  recall 0; a row with neither has precision = recall = F1 = 0 (not 1). F1 is
  2tp / (2tp + fp + fn), 0 when that denominator is 0. The row scores are averaged.
- 'macro': a class with no support has recall 0 and F1 0 and still counts in the mean (we
  always score all L columns, like `labels=range(L)`); with no predictions its precision is 0.
- 'weighted': per-class scores weighted by support; when no class has support, sklearn falls
  back to the plain mean of the per-class scores (all 0 then).
- 'micro': counts pooled over all cells, 0 where the pooled denominator is 0.
- exact_match is `accuracy_score` on multi-label input: the fraction of rows whose label set
  is predicted exactly.

"F1" in the course reports (Kaggle's Mean F1) is samples_f1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxmm.data import labels as labels_lib

MULTILABEL_KEYS: tuple[str, ...] = (
  "samples_f1",
  "micro_f1",
  "macro_f1",
  "weighted_f1",
  "samples_precision",
  "samples_recall",
  "micro_precision",
  "micro_recall",
  "macro_precision",
  "macro_recall",
  "exact_match",
)


def _as_binary_2d(x, name: str) -> np.ndarray:
  arr = np.asarray(x)
  if arr.ndim != 2:
    raise ValueError(f"{name} must be (N, L); got shape {arr.shape}")
  return arr.astype(bool) if arr.dtype == bool else arr > 0.5


def _check_pair(labels_NxL, preds_NxL) -> tuple[np.ndarray, np.ndarray]:
  labels = _as_binary_2d(labels_NxL, "labels_NxL")
  preds = _as_binary_2d(preds_NxL, "preds_NxL")
  if labels.shape != preds.shape:
    raise ValueError(f"labels {labels.shape} and preds {preds.shape} differ in shape")
  if labels.shape[0] == 0:
    raise ValueError("no examples to score (N = 0)")
  return labels, preds


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
  """num / den with 0 where den == 0 (sklearn's zero_division='warn' value)."""
  num = np.asarray(num, np.float64)
  den = np.asarray(den, np.float64)
  return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _counts(labels: np.ndarray, preds: np.ndarray, axis: int):
  tp = np.sum(labels & preds, axis=axis)
  n_pred = np.sum(preds, axis=axis)
  n_true = np.sum(labels, axis=axis)
  return tp, n_pred, n_true


def _prf(tp, n_pred, n_true):
  precision = _divide(tp, n_pred)
  recall = _divide(tp, n_true)
  f1 = _divide(2 * tp, n_pred + n_true)  # = 2tp / (2tp + fp + fn)
  return precision, recall, f1


def samples_f1(labels_NxL, preds_NxL) -> float:
  """Kaggle's Mean F1: F1 per row, averaged; an empty-vs-empty row scores 0."""
  labels, preds = _check_pair(labels_NxL, preds_NxL)
  _, _, f1_N = _prf(*_counts(labels, preds, axis=1))
  return float(np.mean(f1_N))


def multilabel_metrics(labels_NxL, preds_NxL) -> dict[str, float]:
  """Samples/micro/macro/weighted precision, recall, F1 and exact match over all L columns.

  labels_NxL, preds_NxL: {0,1} (or bool) arrays. Values equal scikit-learn's (module docstring).
  """
  labels, preds = _check_pair(labels_NxL, preds_NxL)
  p_N, r_N, f_N = _prf(*_counts(labels, preds, axis=1))
  tp_L, n_pred_L, n_true_L = _counts(labels, preds, axis=0)
  p_L, r_L, f_L = _prf(tp_L, n_pred_L, n_true_L)
  micro_p, micro_r, micro_f = _prf(tp_L.sum(), n_pred_L.sum(), n_true_L.sum())
  support = n_true_L.astype(np.float64)
  # sklearn ignores all-zero weights and takes the plain mean instead.
  weights = support if support.sum() > 0 else None
  return {
    "samples_f1": float(np.mean(f_N)),
    "micro_f1": float(micro_f),
    "macro_f1": float(np.mean(f_L)),
    "weighted_f1": float(np.average(f_L, weights=weights)),
    "samples_precision": float(np.mean(p_N)),
    "samples_recall": float(np.mean(r_N)),
    "micro_precision": float(micro_p),
    "micro_recall": float(micro_r),
    "macro_precision": float(np.mean(p_L)),
    "macro_recall": float(np.mean(r_L)),
    "exact_match": float(np.mean(np.all(labels == preds, axis=1))),
  }


def average_precision(labels_N, scores_N) -> float:
  """Area under the precision-recall curve as scikit-learn's `average_precision_score`:
  sum over the distinct scores (descending) of (recall step) x (precision there); ties count as
  one threshold. NaN when there is no positive."""
  labels = np.asarray(labels_N).astype(bool).ravel()
  scores = np.asarray(scores_N, np.float64).ravel()
  if labels.shape != scores.shape:
    raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in shape")
  n_pos = int(labels.sum())
  if n_pos == 0:
    return float("nan")
  order = np.argsort(-scores, kind="mergesort")
  scores, labels = scores[order], labels[order]
  # the last index of each run of equal scores: one threshold per distinct score
  last = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
  tp = np.cumsum(labels)[last]
  precision = tp / (last + 1)
  recall_step = np.diff(np.r_[0, tp]) / n_pos
  return float(np.sum(recall_step * precision))


def mean_average_precision(labels_NxL, probs_NxL) -> float:
  """Macro mean of `average_precision` over the labels with a positive in `labels_NxL`: how well
  the scores rank each label's examples first, whatever the threshold (COCO's multi-label mAP)."""
  labels = _as_binary_2d(labels_NxL, "labels_NxL")
  probs = np.asarray(probs_NxL, np.float64)
  if probs.shape != labels.shape:
    raise ValueError(f"labels {labels.shape} and probs {probs.shape} differ in shape")
  aps = [average_precision(labels[:, j], probs[:, j]) for j in range(labels.shape[1])]
  aps = [a for a in aps if not np.isnan(a)]
  return float(np.mean(aps)) if aps else float("nan")


def per_class_metrics(
  labels_NxL,
  preds_NxL,
  label_ids: Sequence[int] | None = None,
  *,
  label_set: labels_lib.LabelSet | None = None,
) -> list[dict]:
  """One dict per column: label_id, name, support, predicted (count), precision, recall, f1.

  label_set: the run's labels (names; COMP5329's COCO ids as label_id, else the column index).
  Without it, COMP5329's 18 labels when L == 18, else names and ids 0..L-1; `label_ids` replaces
  the ids.
  """
  labels, preds = _check_pair(labels_NxL, preds_NxL)
  num_labels = labels.shape[1]
  label_set = label_set or labels_lib.for_outputs(num_labels)
  if len(label_set) != num_labels:
    raise ValueError(f"{len(label_set)} labels for {num_labels} columns")
  if label_ids is None:
    label_ids = label_set.ids or tuple(range(num_labels))
  if len(label_ids) != num_labels:
    raise ValueError(f"{len(label_ids)} label ids for {num_labels} columns")
  tp_L, n_pred_L, n_true_L = _counts(labels, preds, axis=0)
  p_L, r_L, f_L = _prf(tp_L, n_pred_L, n_true_L)
  return [
    dict(
      label_id=int(label_ids[i]),
      name=label_set.names[i],
      support=int(n_true_L[i]),
      precision=float(p_L[i]),
      recall=float(r_L[i]),
      f1=float(f_L[i]),
      predicted=int(n_pred_L[i]),
    )
    for i in range(num_labels)
  ]


def label_text(row: dict) -> str:
  """How a per-class row's label is shown: 'id name' ('3 car', '0 red car': a table's id is its
  column), or the id alone when the name is the id."""
  name, label_id = row.get("name", ""), row["label_id"]
  if not name or name == str(label_id):
    return str(label_id)
  return f"{label_id} {name}"


def format_per_class_table(rows: Sequence[dict]) -> str:
  """Fixed-width text table of `per_class_metrics` rows (one line per label, plus a header)."""
  width = max([5] + [len(r.get("name", "")) for r in rows])
  header = (
    f"{'id':>5} {'label':<{width}} {'support':>8} {'predicted':>9} {'precision':>9} "
    f"{'recall':>7} {'f1':>7}"
  )
  lines = [header, "-" * len(header)]
  for r in rows:
    lines.append(
      f"{r['label_id']:>5d} {r.get('name', ''):<{width}} {r['support']:>8d} {r['predicted']:>9d} "
      f"{r['precision']:>9.4f} {r['recall']:>7.4f} {r['f1']:>7.4f}"
    )
  return "\n".join(lines)


def binary_metrics(labels_N, preds_N) -> dict:
  """Accuracy, precision, recall, F1 of the positive class (0 where undefined, as sklearn),
  and confusion = [[tn, fp], [fn, tp]] (sklearn's `confusion_matrix(labels=[0, 1])`)."""
  labels = np.asarray(labels_N).reshape(-1) > 0.5
  preds = np.asarray(preds_N).reshape(-1) > 0.5
  if labels.shape != preds.shape:
    raise ValueError(f"labels {labels.shape} and preds {preds.shape} differ in shape")
  if labels.size == 0:
    raise ValueError("no examples to score (N = 0)")
  tp = int(np.sum(labels & preds))
  fp = int(np.sum(~labels & preds))
  fn = int(np.sum(labels & ~preds))
  tn = int(np.sum(~labels & ~preds))
  precision, recall, f1 = _prf(np.asarray(tp), np.asarray(tp + fp), np.asarray(tp + fn))
  return {
    "accuracy": (tp + tn) / labels.size,
    "precision": float(precision),
    "recall": float(recall),
    "f1": float(f1),
    "confusion": [[tn, fp], [fn, tp]],
  }
