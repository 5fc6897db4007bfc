"""Late fusion of finished workdirs without retraining: what would mixing their logits give?

  python benchmarks/late_fusion_offline.py runs/text runs/image \\
      --csv ../shared/data/comp5329-dev/train.csv --rows 10000:

Each workdir's best checkpoint predicts its own val split and the held-out rows of --csv. The
per-class logistic mixing of their logits (jaxmm.train.two_stage.fit_logit_mixing, as
model.name='late_fusion' fits it) and the thresholds are fitted on val (the first workdir's val
split; all must share it); the held-out samples-F1 is printed for the mixture, the plain mean of
the probabilities and each member, with per-class / global / 0.5 thresholds, and with no threshold:
each row's label set of highest expected F1 (thresholds.expected_f1_predictions).
`--stack C [C ...]` adds, per C, a second-level model for comparison: per class, a logistic
regression (scikit-learn, inverse L2 strength C) on all members' logits of all classes, fitted on
val.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from jaxmm import inference
from jaxmm.train import loop, metrics, thresholds, two_stage


def member_probs(workdir: str, csv_path: str, images: str, rows: str):
  r = inference.restore(workdir)
  val = loop.task_spec(r.config).load_data(r.config, workdir).val
  held = inference.split_from_csv(r, csv_path, images, labelled=True)
  held = held.take(inference.parse_rows(rows, len(held), source=csv_path))
  return r.predict(val), r.predict(held), val, held


def logit(p):
  p = np.clip(p, 1e-6, 1 - 1e-6)
  return np.log(p / (1 - p))


def _stack(zv_NxMxL, zh_NxMxL, yv_NxL, c: float):
  """Per class, a logistic regression on every member's logits of every class, fitted on val."""
  from sklearn.linear_model import LogisticRegression
  xv, xh = zv_NxMxL.reshape(len(zv_NxMxL), -1), zh_NxMxL.reshape(len(zh_NxMxL), -1)
  pv, ph = np.zeros(yv_NxL.shape), np.zeros((len(xh), yv_NxL.shape[1]))
  for j in range(yv_NxL.shape[1]):
    clf = LogisticRegression(C=c, max_iter=1000).fit(xv, yv_NxL[:, j])
    pv[:, j], ph[:, j] = clf.predict_proba(xv)[:, 1], clf.predict_proba(xh)[:, 1]
  return pv, ph


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("workdirs", nargs="+")
  ap.add_argument("--csv", required=True)
  ap.add_argument("--images", default=None, help="default: <csv dir>/data")
  ap.add_argument("--rows", default=":")
  ap.add_argument("--stack", type=float, nargs="*", default=[], metavar="C")
  args = ap.parse_args()
  images = args.images or os.path.join(os.path.dirname(args.csv), "data")
  members = [member_probs(w, args.csv, images, args.rows) for w in args.workdirs]
  val, held = members[0][2], members[0][3]
  for w, m in zip(args.workdirs, members):
    if m[2].ids != val.ids:
      raise SystemExit(f"{w}: its val split differs from {args.workdirs[0]}'s; use one data.* setup")
  yv, yh = val.arrays["labels"], held.arrays["labels"]
  zv = np.stack([logit(m[0]) for m in members], 1)
  zh = np.stack([logit(m[1]) for m in members], 1)
  mix, bias = two_stage.fit_logit_mixing(zv, yv)
  sig = lambda z: 1 / (1 + np.exp(-z))
  rows = [("late fusion (fitted mixing)", sig((zv * mix).sum(1) + bias), sig((zh * mix).sum(1) + bias)),
          ("mean of probabilities", np.mean([m[0] for m in members], 0),
           np.mean([m[1] for m in members], 0))]
  for c in args.stack:
    rows.append((f"second-level logistic regression, C={c}", *_stack(zv, zh, yv, c)))
  rows += [(w, m[0], m[1]) for w, m in zip(args.workdirs, members)]
  print(f"val {len(val)} examples, held-out {len(held)} ({args.csv} rows {args.rows}); "
        f"mean mixing weight per member: {np.round(mix.mean(1), 3).tolist()}")
  print(f"{'model':50s} {'per-class':>9s} {'global':>7s} {'0.5':>7s} {'exp-F1':>7s}   "
        "(held-out samples-F1)")
  for name, pv, ph in rows:
    per_class, _ = thresholds.tune_per_class_thresholds(pv, yv)
    glob, _ = thresholds.tune_global_threshold(pv, yv)
    f1 = [metrics.samples_f1(yh, thresholds.apply_thresholds(ph, t)) for t in (per_class, glob, 0.5)]
    f1.append(metrics.samples_f1(yh, thresholds.expected_f1_predictions(ph)))
    print(f"{name[-50:]:50s} {f1[0]:9.4f} {f1[1]:7.4f} {f1[2]:7.4f} {f1[3]:7.4f}")


if __name__ == "__main__":
  main()
