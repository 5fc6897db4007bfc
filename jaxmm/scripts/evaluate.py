"""Evaluate a trained workdir.

  python evaluate.py --workdir runs/demo [--csv F [--rows A:B]] [--out F]


Restores the best checkpoint and runs a jitted eval over the workdir's val split, or over any
labelled file of the workdir's task: a table (.jsonl / .csv with image, text and labels or match;
images found from the file's folder) or a CSV in the COMP5329 or S0 matching layout; every example
counts
(the last batch is padded, not dropped). Prints the metrics (with a per-class table or a confusion
matrix) and writes them as JSON. `--report_dir D` also writes
D/report.md with plots for that split. A pretext workdir (configs/pretrain_*.py) reports its
pretext metric: rotation / masked-token accuracy or reconstruction MAE. The output paths are
checked before any work (`--out` elsewhere for a read-only workdir); the workdir is only read.
"""

import json
import os
import sys

from absl import app, flags

from jaxmm import cli

flags.DEFINE_string("workdir", None, "A trained jaxmm workdir.")
flags.DEFINE_string(
  "csv",
  None,
  "A labelled table (.jsonl / .csv) or COMP5329 / S0 CSV (default: the workdir's val split).",
)
flags.DEFINE_string(
  "images",
  None,
  "Folder the images are found in (default: a table's own folder; <csv dir>/data for COMP5329, "
  "<csv dir>/<csv name>_images for matching).",
)
flags.DEFINE_string(
  "rows",
  None,
  "Only these records of --csv, as START:END (0-based, end "
  "excluded), e.g. 10000:12000 to hold out the last 2,000 of the dev train.csv.",
)
flags.DEFINE_string("out", None, "Metrics JSON (default: <workdir>/eval_metrics.json).")
flags.DEFINE_enum("which", "best", ["best", "latest"], "Which checkpoint to evaluate.")
flags.DEFINE_string(
  "thresholds",
  None,
  "Instead of the workdir's thresholds.json: one threshold "
  "for every label (e.g. 0.5), or 'expected_f1' (multi-label: each row's label "
  "set of highest expected F1 under the predicted probabilities).",
)
flags.DEFINE_string("report_dir", None, "Also write report.md and plots/ for this split here.")
flags.DEFINE_bool(
  "skip_bad",
  False,
  "Evaluate without the rows whose image is missing or "
  "unusable (listed on stderr) instead of stopping.",
)
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from jaxmm import config as config_lib
  from jaxmm import inference, report

  config_lib.setup_logging()
  config_lib.setup_compilation_cache()
  if FLAGS.rows and not FLAGS.csv:
    raise app.UsageError("--rows selects records of --csv; pass --csv too")
  from jaxmm import workdir as workdir_lib

  workdir_lib.read_config(FLAGS.workdir)  # no workdir there: say that, not where --out would go
  cli.check_writable(_out(), "--out")  # a read-only workdir: say so now, not after the eval
  if FLAGS.report_dir:
    cli.check_writable_dir(FLAGS.report_dir, "--report_dir")
  restored = inference.restore(FLAGS.workdir, which=FLAGS.which, thresholds=FLAGS.thresholds)
  task = restored.task
  if FLAGS.csv:
    images = FLAGS.images or task.default_images_dir(FLAGS.csv)
    split, skipped = inference.read_split(
      restored,
      FLAGS.csv,
      images,
      labelled=True,
      skip_bad=FLAGS.skip_bad,
      skip_hint="pass --skip_bad to evaluate without them",
      rows=FLAGS.rows,  # read alone: what lies outside is neither decoded nor checked
    )
    if skipped:
      print(
        f"evaluating without {len(skipped.ids)} row(s) of {FLAGS.csv}:\n  "
        + "\n  ".join(skipped.reasons),
        file=sys.stderr,
      )
    if not len(split):
      raise ValueError(
        f"{FLAGS.csv} has no record to evaluate"
        + (" with a usable image" if skipped else " (only its header)")
      )
    source = f"{FLAGS.csv} rows {FLAGS.rows}" if FLAGS.rows else FLAGS.csv
  else:
    _check_data_root(restored.config.data.root)
    split, source = task.load_data(FLAGS.workdir).val, "val split"
  if not task.predicts:  # a pretext task: its targets come from the transform
    result = task.evaluate(
      restored.predict_step, restored.model_state, split, vocab_size=len(restored.encoder.vocab)
    )
    result.update(n_examples=len(split), source=source, step=restored.step, task=task.name)
    print(
      f"{source}: {len(split)} examples, {task.name} pretext task, checkpoint step {restored.step}"
    )
    for k in (f"val_{m}" for m in task.metric_names + ("loss",)):
      print(f"  {k:22s} {result[k]:.4f}")
    _write(result)
    if FLAGS.report_dir:  # training curves only: a pretext task has no probabilities to plot
      print(f"wrote {report.write_report(FLAGS.workdir, FLAGS.report_dir)}")
    return
  probs = restored.predict(split)
  labels = split.arrays[task.label_key]
  result = task.report(probs, labels, restored.thresholds)
  result.update(
    n_examples=len(split), source=source, step=restored.step, thresholds=restored.thresholds
  )
  print(f"{source}: {len(split)} examples, checkpoint step {restored.step}")
  for k in task.metric_names:
    print(f"  {k:18s} {result[k]:.4f}")
  details = task.details(result, probs, labels, restored.thresholds)
  if details:
    print(details)
  _write(result)
  if FLAGS.report_dir:
    path = report.write_report(
      FLAGS.workdir,
      FLAGS.report_dir,
      probs=probs,
      labels=labels,
      thresholds=restored.thresholds,
      source=source if FLAGS.csv is None else f"file {source}",
    )
    print(f"wrote {path}")


def _check_data_root(root: str) -> None:
  """The val split is re-read from the run's data.root: say where it was looked for, and what
  evaluate.py itself takes, when it is not there (train.py's --config flags are not among it)."""
  if os.path.isdir(root):
    return
  relative = (
    ""
    if os.path.isabs(root)
    else f", a path relative to the folder train.py ran in (not {os.path.abspath(root)})"
  )
  raise FileNotFoundError(
    f"the val split is read from the run's data.root={root!r}{relative}, which does not exist: "
    "run evaluate.py where the data is found, or evaluate a labelled file with --csv FILE "
    "[--rows A:B]"
  )


def _out() -> str:
  from jaxmm import workdir as workdir_lib

  return FLAGS.out or workdir_lib.path(FLAGS.workdir, workdir_lib.EVAL_METRICS_FILE)


def _write(result):
  out = _out()
  with open(out, "w") as f:
    json.dump(result, f, indent=1, default=float)
  print(f"wrote {out}")


def run() -> None:
  """The `jaxmm-evaluate` command (and evaluate.py)."""
  cli.run(main)


if __name__ == "__main__":
  run()
