"""The TF-IDF + logistic-regression text baseline on COMP5329 dev, and where its errors are.

  python benchmarks/text_baseline.py --root ../shared/data/comp5329-dev

The same protocol as configs/best.py: fit on records 0..8999, thresholds on 9000..9999, report on
the held-out 10000..11999 (also: fit on all of 0..9999 at threshold 0.5, the plain baseline).
Then, per label, the held-out samples-F1 if that one label were predicted perfectly (everything
else the baseline's): how much a better image model could add through each label.

On a folder in the plain table layout (train.jsonl / .csv and a labelled test.jsonl / .csv), the
baseline of configs/own_data.py's split: fit on train less own_data's random 10% val split, the
global threshold from that val split, scored on test (also: the expected-F1 rule):

  python benchmarks/text_baseline.py --table DIR

Needs scikit-learn (a dev dependency).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from jaxmm.data import comp5329, datasets, labels, table
from jaxmm.train import metrics, thresholds


def fit_predict(train_text, y, texts, c):
  vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
  clf = OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000))
  clf.fit(vec.fit_transform(train_text), y)
  return [clf.predict_proba(vec.transform(t)) for t in texts]


def table_baseline(root: str, c: float, test_file: str | None = None) -> None:
  """TF-IDF + LR on a table folder, with configs/own_data.py's train/val split."""
  from jaxmm.configs import own_data

  cfg = own_data.get_config().data
  train_file = table.find_split_file(root, "train")
  train = table.read_table(train_file, need="labels")
  test_file = test_file or table.find_split_file(root, "test")
  if test_file is None:
    raise SystemExit(f"{root}: no test.jsonl or test.csv to score on")
  test = table.read_table(test_file, need="labels")
  fit, val = datasets.split_records(train, cfg)
  label_set = labels.for_training(cfg, None, train, train_file)[0]  # own_data's label set
  known = set(label_set.names)

  def xy(rows):
    return [r.caption for r in rows], label_set.multihot_batch(
      [[n for n in r.labels if n in known] for r in rows]
    )

  (x_fit, y_fit), (x_val, y_val), (x_test, y_test) = xy(fit), xy(val), xy(test)
  p_val, p_test = fit_predict(x_fit, y_fit, [x_val, x_test], c)
  t, _ = thresholds.tune_global_threshold(p_val, y_val)
  f1 = metrics.samples_f1(y_test, thresholds.apply_thresholds(p_test, t))
  ef1 = metrics.samples_f1(y_test, thresholds.expected_f1_predictions(p_test))
  print(
    f"TF-IDF (1-2 grams) + LR C={c} on {root}: fit {len(fit)} rows, global threshold {t:.2f} "
    f"from {len(val)} val rows (own_data's split): test samples-F1 {f1:.4f} ({len(test)} rows); "
    f"expected-F1 rule: {ef1:.4f}"
  )


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--root", help="a COMP5329 folder (the held-out protocol above)")
  ap.add_argument("--table", help="a table-layout folder with train.* and a labelled test.*")
  ap.add_argument("--test", help="with --table: the labelled file to score (default DIR/test.*)")
  ap.add_argument("--C", type=float, default=10.0)
  args = ap.parse_args()
  if args.table:
    return table_baseline(args.table, args.C, args.test)
  if not args.root:
    ap.error("give --root (COMP5329 folder) or --table (table-layout folder)")
  recs = comp5329.read_comp5329(os.path.join(args.root, "train.csv"))
  text = [r.caption for r in recs]
  y = np.stack([comp5329.labels_to_multihot(r.labels) for r in recs])
  tr, va, ho = slice(0, 9000), slice(9000, 10000), slice(10000, 12000)
  p_val, p_ho = fit_predict(text[tr], y[tr], [text[va], text[ho]], args.C)
  t, _ = thresholds.tune_global_threshold(p_val, y[va])
  pred = thresholds.apply_thresholds(p_ho, t)
  f1 = metrics.samples_f1(y[ho], pred)
  print(
    f"TF-IDF (1-2 grams) + LR C={args.C}, fit 0..8999, global threshold {t:.2f} from "
    f"9000..9999: held-out samples-F1 {f1:.4f}"
  )
  ef1 = metrics.samples_f1(y[ho], thresholds.expected_f1_predictions(p_ho))
  print(
    f"same model, no threshold: each row's label set of highest expected F1: held-out "
    f"samples-F1 {ef1:.4f}"
  )
  (p_all,) = fit_predict(text[:10000], y[:10000], [text[ho]], args.C)
  print(
    f"fit 0..9999, threshold 0.5: held-out samples-F1 "
    f"{metrics.samples_f1(y[ho], thresholds.apply_thresholds(p_all, 0.5)):.4f}"
  )
  print(f"{'label':>5s} {'support':>7s} {'F1':>5s} {'samples-F1 if this label were perfect':>40s}")
  per_class = metrics.per_class_metrics(y[ho], pred)
  for j, row in enumerate(per_class):
    oracle = pred.copy()
    oracle[:, j] = y[ho][:, j]
    print(
      f"{row['label_id']:5d} {int(y[ho][:, j].sum()):7d} {row['f1']:5.2f} "
      f"{metrics.samples_f1(y[ho], oracle) - f1:+40.4f}"
    )


if __name__ == "__main__":
  main()
