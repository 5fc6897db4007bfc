"""Would horizontal-flip test-time augmentation pay on a finished multi-label workdir?

  python benchmarks/tta_offline.py runs/best --csv ../shared/data/comp5329-dev/train.csv \\
      --images ../shared/data/comp5329-dev/data --rows 10000:

The best checkpoint predicts its val split and the --rows of --csv twice, on the images and on
their mirror images; the two are averaged in logit space (for late fusion that is the mixing of
the averaged image-branch logits). Prints samples-F1 with the expected-F1 rule and with the
workdir's own decision rule (thresholds.json) for plain, flipped and averaged predictions.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import numpy as np
from jaxmm import inference
from jaxmm.data.pipeline import PreparedSplit
from jaxmm.train import loop, metrics, thresholds
from late_fusion_offline import logit  # a sibling script: benchmarks/ is on sys.path


def mirrored(split: PreparedSplit, folder: str) -> PreparedSplit:
  """The same split over a left-right mirrored copy of its (M,S,S,3) image cache."""
  path = os.path.join(folder, os.path.basename(split.image_cache))
  if not os.path.exists(path):
    np.save(path, np.load(split.image_cache, mmap_mode="r")[:, :, ::-1, :])
  return PreparedSplit(split.ids, path, split.image_index, split.arrays)


def main():
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("workdir")
  ap.add_argument("--csv", required=True)
  ap.add_argument("--images", required=True)
  ap.add_argument("--rows", default=":")
  args = ap.parse_args()
  r = inference.restore(args.workdir)
  if r.config.task != "multilabel":
    raise SystemExit(f"{args.workdir} is a {r.config.task!r} workdir; this script is multi-label")
  val = loop.task_spec(r.config).load_data(r.config, args.workdir).val
  held = inference.split_from_csv(r, args.csv, args.images, labelled=True)
  held = held.take(inference.parse_rows(args.rows, len(held), source=args.csv))
  own = r.thresholds
  with tempfile.TemporaryDirectory() as folder:
    for name, split in (("val", val), (f"{os.path.basename(args.csv)} rows {args.rows}", held)):
      plain, flipped = r.predict(split), r.predict(mirrored(split, folder))
      mean = 1 / (1 + np.exp(-(logit(plain) + logit(flipped)) / 2))
      labels = split.arrays["labels"]
      for tag, p in (("plain", plain), ("mirrored", flipped), ("mean of both", mean)):
        rule_f1, own_f1 = (metrics.samples_f1(labels, thresholds.apply_thresholds(p, rule))
                           for rule in (thresholds.EXPECTED_F1, own))
        print(f"{name:>32} {tag:>13}: samples-F1 {rule_f1:.4f} expected F1, {own_f1:.4f} with "
              f"thresholds.json ({own if np.ndim(own) == 0 else 'per class'})")


if __name__ == "__main__":
  main()
