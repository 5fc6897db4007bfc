"""Thresholds: at_least_one fallback, and tuning on a case whose optimum is known."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from jaxmm.train import metrics, thresholds

# Class 0: positives 0.82, negatives 0.62. Class 1: positives 0.32, negatives 0.12.
PROBS = np.array([[0.82, 0.12], [0.62, 0.32], [0.82, 0.32]])
LABELS = np.array([[1, 0], [0, 1], [1, 1]])


def test_apply_thresholds_at_least_one():
  probs = np.array([[0.2, 0.4, 0.1], [0.6, 0.7, 0.1], [0.5, 0.1, 0.3]])
  preds = thresholds.apply_thresholds(probs, 0.5)
  # Row 0 has nothing above 0.5 -> its argmax; row 2's 0.5 is not above 0.5 -> argmax too.
  np.testing.assert_array_equal(preds, [[0, 1, 0], [1, 1, 0], [1, 0, 0]])
  preds = thresholds.apply_thresholds(probs, 0.5, at_least_one=False)
  np.testing.assert_array_equal(preds, [[0, 0, 0], [1, 1, 0], [0, 0, 0]])
  preds = thresholds.apply_thresholds(probs, np.array([0.1, 0.9, 0.25]), at_least_one=False)
  np.testing.assert_array_equal(preds, [[1, 0, 0], [1, 0, 0], [1, 0, 1]])
  assert preds.dtype == bool
  with pytest.raises(ValueError):
    thresholds.apply_thresholds(probs, np.array([0.5, 0.5]))


def test_global_threshold_known_best():
  # Samples-F1 by threshold: < 0.12 -> 7/9; [0.12, 0.32) -> 8/9; >= 0.32 -> 5/9 (rows left
  # empty fall back to class 0). Ties keep the smallest grid value.
  thr, f1 = thresholds.tune_global_threshold(PROBS, LABELS)
  assert thr == pytest.approx(0.12)
  assert f1 == pytest.approx(8 / 9)
  thr, f1 = thresholds.tune_global_threshold(PROBS, LABELS, grid=[0.05, 0.5, 0.9])
  assert (thr, f1) == (pytest.approx(0.05), pytest.approx(7 / 9))


def test_per_class_thresholds_known_best():
  thr_L, f1 = thresholds.tune_per_class_thresholds(PROBS, LABELS)
  # Starting from the global 0.12, class 0 moves to the first value separating 0.62 from 0.82.
  np.testing.assert_allclose(thr_L, [0.62, 0.12])
  assert f1 == pytest.approx(1.0)
  preds = thresholds.apply_thresholds(PROBS, thr_L)
  np.testing.assert_array_equal(preds, LABELS)
  # From 0.5, class 0 cannot improve until class 1 has moved (row 1 would fall back to class
  # 0), so one round stops at 8/9 and the second reaches the optimum.
  thr_L, f1 = thresholds.tune_per_class_thresholds(PROBS, LABELS, init=0.5, rounds=1)
  np.testing.assert_allclose(thr_L, [0.5, 0.12])
  assert f1 == pytest.approx(8 / 9)
  thr_L, f1 = thresholds.tune_per_class_thresholds(PROBS, LABELS, init=0.5, rounds=2)
  np.testing.assert_allclose(thr_L, [0.62, 0.12])
  assert f1 == pytest.approx(1.0)


@pytest.mark.parametrize("at_least_one", [True, False])
def test_column_scores_match_brute_force(at_least_one):
  rng = np.random.default_rng(0)
  probs = rng.random((25, 4))
  labels = rng.random((25, 4)) < 0.3
  grid = thresholds.DEFAULT_GRID[::7]
  thr_L = rng.uniform(0.3, 0.8, 4)
  preds = probs > thr_L
  for col in range(4):
    fast = thresholds._column_scores(probs, labels, preds, col, grid, at_least_one)
    slow = []
    for t in grid:
      trial = thr_L.copy()
      trial[col] = t
      slow.append(
        metrics.samples_f1(
          labels, thresholds.apply_thresholds(probs, trial, at_least_one=at_least_one)
        )
      )
    np.testing.assert_allclose(fast, slow, atol=1e-12)


def test_tuning_random_is_consistent():
  rng = np.random.default_rng(3)
  labels = rng.random((60, 6)) < 0.3
  probs = np.clip(labels * 0.4 + rng.random((60, 6)) * 0.6, 0, 1)
  g_thr, g_f1 = thresholds.tune_global_threshold(probs, labels)
  thr_L, f1 = thresholds.tune_per_class_thresholds(probs, labels)
  assert f1 >= g_f1
  assert f1 == pytest.approx(metrics.samples_f1(labels, thresholds.apply_thresholds(probs, thr_L)))
  g_preds = thresholds.apply_thresholds(probs, g_thr)
  assert g_f1 == pytest.approx(metrics.samples_f1(labels, g_preds))


def test_binary_threshold_known_best():
  # Positives at 0.3 and 0.8, negatives at 0.1 and 0.25: any threshold in [0.25, 0.3) is exact;
  # the grid's smallest such value is 0.25.
  thr, acc = thresholds.tune_binary_threshold([0.3, 0.8, 0.1, 0.25], [1, 1, 0, 0])
  assert (thr, acc) == (pytest.approx(0.25), 1.0)
  # An unseparable case: the best threshold keeps 3 of 4 right.
  thr, acc = thresholds.tune_binary_threshold(
    [0.9, 0.6, 0.7, 0.2], [1, 0, 1, 0], grid=[0.1, 0.5, 0.65, 0.8]
  )
  assert (thr, acc) == (pytest.approx(0.65), 1.0)
  thr, acc = thresholds.tune_binary_threshold(
    [0.9, 0.7, 0.6, 0.2], [1, 0, 1, 0], grid=[0.1, 0.5, 0.65, 0.8]
  )
  assert (thr, acc) == (pytest.approx(0.5), 0.75)
  with pytest.raises(ValueError):
    thresholds.tune_binary_threshold([0.5], [1, 0])


def _expected_f1(p_L, pred_L):
  """E[F1] of a fixed prediction over all 2^L label vectors, labels independent."""
  total = 0.0
  for y in itertools.product([0, 1], repeat=len(p_L)):
    y = np.array(y, bool)
    prob = np.prod(np.where(y, p_L, 1 - p_L))
    den = pred_L.sum() + y.sum()
    total += prob * (2 * np.sum(y & pred_L) / den if den else 1.0)
  return total


def test_expected_f1_predictions_match_brute_force_over_all_label_sets():
  rng = np.random.default_rng(0)
  probs = rng.uniform(size=(40, 5)) ** 2  # many rows with no probability above 0.5
  preds = thresholds.expected_f1_predictions(probs)
  assert preds.any(axis=1).all()  # at least one label per row
  subsets = [np.array(s, bool) for s in itertools.product([0, 1], repeat=5) if any(s)]
  for p_L, pred_L in zip(probs, preds):
    best = max(_expected_f1(p_L, s) for s in subsets)
    assert _expected_f1(p_L, pred_L) == pytest.approx(best, abs=1e-12)


def test_expected_f1_predictions_adapt_the_number_of_labels():
  preds = thresholds.expected_f1_predictions(
    np.array(
      [
        [0.95, 0.30, 0.30, 0.05],  # one confident label: 0.30s would cost more than they add
        [0.45, 0.40, 0.40, 0.05],  # nothing above 0.5, three near-even labels: take all three
        [0.60, 0.50, 0.45, 0.40],
      ]
    )
  )  # four near-even labels: all four (0.5 would keep one)
  np.testing.assert_array_equal(preds, [[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])


def test_expected_f1_is_a_thresholds_value_everywhere_thresholds_go():
  probs = np.random.default_rng(1).uniform(size=(20, 4))
  np.testing.assert_array_equal(
    thresholds.apply_thresholds(probs, thresholds.EXPECTED_F1),
    thresholds.expected_f1_predictions(probs),
  )
  with pytest.raises(ValueError, match="'expected_f1'; got 'expected-f1'"):
    thresholds.apply_thresholds(probs, "expected-f1")
