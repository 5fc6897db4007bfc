"""Decision thresholds for multi-label probabilities, tuned for samples-F1 (Kaggle's Mean F1).

A label is predicted when its probability is strictly above its threshold. With
`at_least_one=True` a row with no label above threshold gets its argmax label, because a
Kaggle submission needs at least one label per image; tuning scores exactly those predictions.
Ties between thresholds keep the smallest (global) or the current one (per class), so results
are deterministic.
"""

from __future__ import annotations

import numpy as np

from jaxmm.train import metrics as metrics_lib

DEFAULT_GRID = np.round(np.arange(0.05, 0.96, 0.01), 2)
# Stands in for thresholds (train.tune_thresholds, thresholds.json): each row's label set of
# highest expected F1 (`expected_f1_predictions`) instead of a cut on each probability.
EXPECTED_F1 = "expected_f1"


def _check(probs_NxL, labels_NxL=None):
  probs = np.asarray(probs_NxL, np.float64)
  if probs.ndim != 2 or probs.shape[0] == 0:
    raise ValueError(f"probs must be (N, L) with N > 0; got shape {probs.shape}")
  if labels_NxL is None:
    return probs
  labels = np.asarray(labels_NxL) > 0.5
  if labels.shape != probs.shape:
    raise ValueError(f"labels {labels.shape} and probs {probs.shape} differ in shape")
  return probs, labels


def apply_thresholds(probs_NxL, thresholds, *, at_least_one: bool = True) -> np.ndarray:
  """(N, L) bool predictions: probs > thresholds (scalar or (L,)), argmax fallback if empty.

  thresholds = EXPECTED_F1 ('expected_f1') picks each row's label set of highest expected F1
  instead (always at least one label).
  """
  probs = _check(probs_NxL)
  if isinstance(thresholds, str):
    if thresholds != EXPECTED_F1:
      raise ValueError(f"thresholds must be numbers or {EXPECTED_F1!r}; got {thresholds!r}")
    return expected_f1_predictions(probs)
  thr = np.asarray(thresholds, np.float64)
  if thr.ndim not in (0, 1) or (thr.ndim == 1 and thr.shape[0] != probs.shape[1]):
    raise ValueError(f"thresholds must be a scalar or ({probs.shape[1]},); got {thr.shape}")
  preds = probs > thr
  if at_least_one:
    empty_N = ~preds.any(axis=1)
    preds[empty_N, np.argmax(probs[empty_N], axis=1)] = True
  return preds


def tune_global_threshold(
  probs_NxL, labels_NxL, grid=DEFAULT_GRID, *, at_least_one: bool = True
) -> tuple[float, float]:
  """(threshold, samples_f1): the grid value with the best samples-F1 (smallest on ties)."""
  probs, labels = _check(probs_NxL, labels_NxL)
  grid = np.asarray(grid, np.float64).reshape(-1)
  scores = [
    metrics_lib.samples_f1(labels, apply_thresholds(probs, t, at_least_one=at_least_one))
    for t in grid
  ]
  best = int(np.argmax(scores))
  return float(grid[best]), float(scores[best])


def _column_scores(probs, labels, preds, col, grid, at_least_one) -> np.ndarray:
  """Samples-F1 for every grid threshold on column `col`, other columns fixed: (G,)."""
  others = np.delete(np.arange(probs.shape[1]), col)
  tp_N = np.sum(labels[:, others] & preds[:, others], axis=1)
  n_pred_N = np.sum(preds[:, others], axis=1)
  n_true_N = np.sum(labels, axis=1)
  y_N = labels[:, col]
  on_GxN = probs[None, :, col] > grid[:, None]
  tp_GxN = tp_N + (on_GxN & y_N)
  n_pred_GxN = n_pred_N + on_GxN
  if at_least_one:
    # An empty row falls back to its argmax label, whatever the thresholds.
    top_N = np.argmax(probs, axis=1)
    empty_GxN = n_pred_GxN == 0
    tp_GxN = np.where(empty_GxN, labels[np.arange(len(top_N)), top_N], tp_GxN)
    n_pred_GxN = np.where(empty_GxN, 1, n_pred_GxN)
  den = n_pred_GxN + n_true_N
  f1_GxN = np.where(den > 0, 2 * tp_GxN / np.where(den > 0, den, 1), 0.0)
  return f1_GxN.mean(axis=1)


def tune_per_class_thresholds(
  probs_NxL, labels_NxL, grid=DEFAULT_GRID, init=None, rounds: int = 2, *, at_least_one: bool = True
) -> tuple[np.ndarray, float]:
  """(thresholds_L, samples_f1) by coordinate ascent on samples-F1.

  Starts from `init` (scalar or (L,)) or, by default, the best global threshold; each round
  visits every column and moves its threshold only on a strict improvement.
  """
  probs, labels = _check(probs_NxL, labels_NxL)
  grid = np.asarray(grid, np.float64).reshape(-1)
  num_labels = probs.shape[1]
  if init is None:
    init, _ = tune_global_threshold(probs, labels, grid, at_least_one=at_least_one)
  thr_L = np.broadcast_to(np.asarray(init, np.float64), (num_labels,)).copy()
  best = metrics_lib.samples_f1(labels, apply_thresholds(probs, thr_L, at_least_one=at_least_one))
  for _ in range(rounds):
    improved = False
    for col in range(num_labels):
      preds = probs > thr_L
      scores_G = _column_scores(probs, labels, preds, col, grid, at_least_one)
      g = int(np.argmax(scores_G))
      if scores_G[g] > best + 1e-12:
        thr_L[col], best, improved = grid[g], float(scores_G[g]), True
    if not improved:
      break
  return thr_L, float(best)


def tune_binary_threshold(probs_N, labels_N, grid=DEFAULT_GRID) -> tuple[float, float]:
  """(threshold, accuracy): the grid value where `probs > threshold` is most accurate (smallest
  on ties), for a one-probability task such as matching."""
  probs = np.asarray(probs_N, np.float64).reshape(-1)
  labels = np.asarray(labels_N).reshape(-1) > 0.5
  if probs.shape != labels.shape or probs.size == 0:
    raise ValueError(f"probs {probs.shape} and labels {labels.shape} must be equal, non-empty")
  grid = np.asarray(grid, np.float64).reshape(-1)
  acc_G = ((probs[None, :] > grid[:, None]) == labels[None, :]).mean(axis=1)
  best = int(np.argmax(acc_G))
  return float(grid[best]), float(acc_G[best])


def _count_distributions(p_NxK) -> np.ndarray:
  """(N, K+1, K+1): [:, k, a] = P(exactly a of the first k labels are true), labels independent."""
  n, k_max = p_NxK.shape
  dist = np.zeros((n, k_max + 1, k_max + 1))
  dist[:, 0, 0] = 1.0
  for k in range(k_max):
    q = p_NxK[:, k : k + 1]
    dist[:, k + 1] = dist[:, k] * (1 - q)
    dist[:, k + 1, 1:] += dist[:, k, :-1] * q
  return dist


def expected_f1_predictions(probs_NxL) -> np.ndarray:
  """(N, L) bool: per row, the label set with the highest expected F1 under the probabilities.

  Treats the labels of a row as independent with the given marginals. The best set is always
  the k most probable labels for some k (Lewis 1995; Nan Ye et al., ICML 2012, "Optimizing
  F-measures: a tale of two approaches"); for each k >= 1 the expected F1
  E[2 TP / (k + |true|)] is exact, from the distributions of TP (true labels among the top k)
  and of the true labels outside it. Unlike a threshold, the number of labels adapts to each
  row: one confident label alone, or several uncertain ones. Needs calibrated probabilities.
  """
  probs = _check(probs_NxL)
  n, num_labels = probs.shape
  order = np.argsort(-probs, axis=1, kind="stable")
  sorted_p = np.take_along_axis(probs, order, axis=1)
  top = _count_distributions(sorted_p)  # [:, k, a]: a true among the k most probable
  rest = _count_distributions(sorted_p[:, ::-1])  # [:, m, b]: b true among the m least probable
  expected = np.full((n, num_labels + 1), -np.inf)
  for k in range(1, num_labels + 1):
    a = np.arange(k + 1)[:, None]
    b = np.arange(num_labels - k + 1)[None, :]
    f1_ab = 2 * a / (k + a + b)
    expected[:, k] = np.einsum(
      "na,nb,ab->n", top[:, k, : k + 1], rest[:, num_labels - k, : num_labels - k + 1], f1_ab
    )
  best_k = np.argmax(expected, axis=1)  # >= 1: k = 0 is never chosen (at least one label)
  preds = np.zeros((n, num_labels), bool)
  ranks = np.arange(num_labels)[None, :]
  np.put_along_axis(preds, order, ranks < best_k[:, None], axis=1)
  return preds
