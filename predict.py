"""Predict for a CSV: `python predict.py --workdir W --csv test.csv --images D --out sub.csv`.

COMP5329 workdirs write `ImageID,Labels` (space-separated label ids, at least one per row);
matching workdirs write `id,label` (1 = the caption matches the image). One row per input row, in
input order, using the workdir's best checkpoint and tuned threshold(s).
"""

import csv
import os

from absl import app, flags

flags.DEFINE_string("workdir", None, "A trained jaxmm workdir.")
flags.DEFINE_string("csv", None, "A CSV in the workdir's task layout (labels optional).")
flags.DEFINE_string("images", None, "Folder of the CSV's images (default: <csv dir>/data, or "
                    "<csv dir>/<csv name>_images for matching).")
flags.DEFINE_string("thresholds", None, "Instead of the workdir's thresholds.json: one threshold "
                    "for every label (e.g. 0.5), or 'expected_f1' (multi-label: each row's label "
                    "set of highest expected F1 under the predicted probabilities).")
flags.DEFINE_string("out", "submission.csv", "Where the submission goes.")
flags.mark_flags_as_required(["workdir", "csv"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from jaxmm import config as config_lib
  from jaxmm import inference

  config_lib.setup_logging()
  config_lib.setup_compilation_cache()
  restored = inference.restore(FLAGS.workdir, thresholds=FLAGS.thresholds)
  task = restored.task
  if not task.predicts:
    raise SystemExit(
        f"error: {FLAGS.workdir} is a {task.name!r} pretext run: prediction is not defined for a "
        "pretext task. `python evaluate.py --workdir` reports its val metric; transfer its tower "
        "with --config.init.image_from / --config.init.text_from.")
  images = FLAGS.images or task.default_images_dir(FLAGS.csv)
  split = inference.split_from_csv(restored, FLAGS.csv, images,
                                   labelled=task.csv_is_labelled(FLAGS.csv))
  probs = restored.predict(split)
  task.write_predictions(FLAGS.out, split, probs, restored.thresholds)
  print(f"wrote {len(split)} predictions to {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
