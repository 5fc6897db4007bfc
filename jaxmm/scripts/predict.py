"""Predict for a file: `python predict.py --workdir W --csv FILE --out OUT [--probs]`.

FILE is in the layout of the workdir's task:
- a table (`.jsonl` or `.csv` with columns image, text; the names are the run's data.columns):
  OUT keeps each row's image and text and adds the decision: multi-label runs write the label
  names joined by data.label_sep ('|') in a `labels` column, matching runs 0/1 in `match`. Image
  paths are resolved against the file's folder (or --images). An OUT ending in .jsonl is written
  as JSONL, anything else as CSV;
- COMP5329's CSV: `ImageID,Labels` (space-separated label ids, at least one per row), the Kaggle
  format; S0's matching CSV: `id,label` (1 = the caption matches the image).
`--probs` adds one probability column per label, named `p:<label name>` (`p:match` / `p:label`
for matching), so no label name can collide with an input column.
One row per input row, in input order, using the workdir's best checkpoint (or --which latest) and
tuned threshold(s). `--skip_bad` predicts the rows whose image is usable and writes the others with
no label, listed in <out>.skipped.json. A file with no records gives a file with the header alone.
"""

import json
import sys

from absl import flags

from jaxmm import cli

flags.DEFINE_string("workdir", None, "A trained jaxmm workdir.")
flags.DEFINE_string(
  "csv",
  None,
  "A table (.jsonl / .csv: image, text) or a CSV in the workdir's older layout (labels optional).",
)
flags.DEFINE_string(
  "images",
  None,
  "Folder the images are found in (default: a table's own folder; <csv dir>/data for COMP5329, "
  "<csv dir>/<csv name>_images for matching).",
)
flags.DEFINE_string(
  "thresholds",
  None,
  "Instead of the workdir's thresholds.json: one threshold "
  "for every label (e.g. 0.5), or 'expected_f1' (multi-label: each row's label "
  "set of highest expected F1 under the predicted probabilities).",
)
flags.DEFINE_string("out", "submission.csv", "Where the predictions go (.jsonl: JSON lines).")
flags.DEFINE_bool("probs", False, "Add one probability column per label: p:<label name>.")
flags.DEFINE_enum(
  "which",
  "best",
  ["best", "latest"],
  "Which checkpoint predicts (a damaged 'best' falls back to 'latest' with a warning).",
)
flags.DEFINE_bool(
  "skip_bad",
  False,
  "Rows whose image is missing or unusable get no label "
  "instead of stopping the run; they are listed on stderr and in "
  "<out>.skipped.json.",
)
flags.mark_flags_as_required(["workdir", "csv"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from jaxmm import config as config_lib
  from jaxmm import inference

  config_lib.setup_logging()
  config_lib.setup_compilation_cache()
  cli.check_writable(FLAGS.out, "--out")  # before minutes of work, not after
  skipped_file = f"{FLAGS.out}.skipped.json"
  restored = inference.restore(FLAGS.workdir, which=FLAGS.which, thresholds=FLAGS.thresholds)
  task = restored.task
  if not task.predicts:
    raise ValueError(
      f"{FLAGS.workdir} is a {task.name!r} pretext run: prediction is not defined for a "
      "pretext task. `python evaluate.py --workdir` reports its val metric; transfer its tower "
      "with --config.init.image_from / --config.init.text_from."
    )
  images = FLAGS.images or task.default_images_dir(FLAGS.csv)
  split, skipped = inference.read_split(
    restored,
    FLAGS.csv,
    images,
    labelled=task.csv_is_labelled(FLAGS.csv),
    skip_bad=FLAGS.skip_bad,
    skip_hint="pass --skip_bad to predict the other rows (these get no label and are listed in "
    f"{skipped_file})",
  )
  inference.write_predictions(
    restored, FLAGS.out, FLAGS.csv, split, skipped, with_probs=FLAGS.probs
  )
  if skipped:
    with open(skipped_file, "w") as f:
      json.dump(skipped.to_json(), f, indent=1)
    print(
      f"skipped {len(skipped.ids)} row(s) of {FLAGS.csv} (no label in {FLAGS.out}; listed in "
      f"{skipped_file}):\n  " + "\n  ".join(skipped.reasons),
      file=sys.stderr,
    )
  if not len(split) and not skipped:
    print(
      f"note: {FLAGS.csv} has no records (only its header): {FLAGS.out} holds the header "
      "line alone",
      file=sys.stderr,
    )
  print(
    f"wrote {len(split)} predictions to {FLAGS.out}"
    + (f" and {len(skipped.ids)} row(s) with no label" if skipped else "")
  )


def run() -> None:
  """The `jaxmm-predict` command (and predict.py)."""
  cli.run(main)


if __name__ == "__main__":
  run()
