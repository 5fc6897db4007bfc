"""Predict labels for a CSV: `python predict.py --workdir W --csv test.csv --images D --out sub.csv`.

Writes `ImageID,Labels` (space-separated label ids, at least one per row), one row per input row,
in input order, using the workdir's best checkpoint and tuned thresholds.
"""

import csv
import os

from absl import app, flags

flags.DEFINE_string("workdir", None, "A trained jaxmm workdir.")
flags.DEFINE_string("csv", None, "A COMP5329-layout CSV (labels optional).")
flags.DEFINE_string("images", None, "Folder of the CSV's images (default: <csv dir>/data).")
flags.DEFINE_string("out", "submission.csv", "Where the submission goes.")
flags.mark_flags_as_required(["workdir", "csv"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from jaxmm import config as config_lib
  from jaxmm import inference
  from jaxmm.data import comp5329
  from jaxmm.train import thresholds as thresholds_lib

  config_lib.setup_logging()
  config_lib.setup_compilation_cache()
  restored = inference.restore(FLAGS.workdir)
  images = FLAGS.images or os.path.join(os.path.dirname(FLAGS.csv), "data")
  with open(FLAGS.csv, encoding="utf-8") as f:
    labelled = f.readline().strip().lstrip("\ufeff") == comp5329.HEADER_LABELLED
  split = inference.split_from_csv(restored, FLAGS.csv, images, labelled=labelled)
  probs = restored.predict(split)
  preds = thresholds_lib.apply_thresholds(probs, restored.thresholds, at_least_one=True)
  with open(FLAGS.out, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["ImageID", "Labels"])
    for image_id, row in zip(split.ids, preds):
      w.writerow([image_id, " ".join(str(l) for l in comp5329.multihot_to_labels(row))])
  print(f"wrote {len(split)} predictions to {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
