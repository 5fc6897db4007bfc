"""Reports a person can read: PNG plots and a `report.md` for a trained workdir.

`write_report(workdir)` reads what training leaves there (metrics.jsonl, config.json,
thresholds.json, val_predictions.npz) and writes `report.md` and `plots/*.png`: loss, validation
scores and learning rate per epoch, per-class F1 bars, a threshold sweep, and a confusion matrix for
the binary (matching) task. evaluate.py passes the predictions of any labelled CSV instead.
The pictures themselves are drawn by jaxmm/plots.py.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import numpy as np

from jaxmm import plots
from jaxmm.data import labels as labels_lib
from jaxmm.train import metrics as metrics_lib
from jaxmm.train import thresholds as thresholds_lib
from jaxmm.train.writer import read_metrics
from jaxmm.workdir import METRICS_FILE, PLOTS_DIR, PREDICTIONS_FILE, REPORT_FILE

log = logging.getLogger("jaxmm")

# Hyperparameters worth a line in the report (config.json has them all).
_KEY_CONFIG = (
  "task",
  "seed",
  "data.root",
  "data.image_size",
  "data.max_len",
  "data.stem",
  "data.val_size",
  "data.augment.crop",
  "data.augment.hflip",
  "data.augment.vflip",
  "model.name",
  "model.mode",
  "model.image.name",
  "model.image.num_filters",
  "model.text.name",
  "model.text.embed_dim",
  "model.text.hidden_size",
  "model.text.num_layers",
  "model.text.bidirectional",
  "model.head.hidden",
  "model.head.dropout",
  "optim.name",
  "optim.lr",
  "optim.weight_decay",
  "optim.schedule",
  "optim.warmup_epochs",
  "optim.clip_norm",
  "train.batch_size",
  "train.epochs",
  "train.max_steps",
  "train.loss",
  "train.early_stopping_patience",
  "train.select_metric",
  "train.tune_thresholds",
)
_BINARY = (("accuracy", "accuracy"), ("precision", "precision"), ("recall", "recall"), ("f1", "F1"))
_SUMMARY = (
  ("samples_f1", "samples F1"),
  ("micro_f1", "micro F1"),
  ("macro_f1", "macro F1"),
  ("weighted_f1", "weighted F1"),
  ("samples_precision", "samples precision"),
  ("samples_recall", "samples recall"),
  ("exact_match", "exact match"),
  ("mean_ap", "mean average precision (no threshold)"),
)


def save_predictions(path: str, ids: Sequence[str], probs, labels) -> None:
  """Keeps a split's probabilities beside the run, so its report can be redrawn without a model."""
  np.savez_compressed(
    path,
    ids=np.asarray(ids, dtype=str),
    probs=np.asarray(probs, np.float32),
    labels=np.asarray(labels, np.float32),
  )


def try_write_report(workdir: str, **kwargs) -> str | None:
  """`write_report`, but a failure only logs a warning: a plot must never lose a trained run."""
  try:
    return write_report(workdir, **kwargs)
  except Exception as e:  # noqa: BLE001 -- anything from matplotlib or a half-written workdir
    log.warning(
      "could not write the report for %s (%s: %s); the run itself is complete",
      workdir,
      type(e).__name__,
      e,
    )
    return None


def write_report(
  workdir: str,
  out_dir: str | None = None,
  *,
  probs=None,
  labels=None,
  thresholds=None,
  source: str | None = None,
  confusion=None,
) -> str:
  """Writes `out_dir/report.md` and `out_dir/plots/*.png` (out_dir defaults to workdir).

  probs/labels: (N, L) multi-label or (N,) binary predictions of a labelled split; by default the
  workdir's val_predictions.npz; per-class rows are named by the workdir's labels.json (COMP5329's
  18 labels for a workdir without one). thresholds: scalar or (L,); by default thresholds.json's.
  confusion: [[tn, fp], [fn, tp]] of the matching task, drawn when given (or computed from
  binary probs). Returns the report's path.
  """
  out_dir = out_dir or workdir
  plots_dir = os.path.join(out_dir, PLOTS_DIR)
  os.makedirs(plots_dir, exist_ok=True)
  config = _load_json(os.path.join(workdir, "config.json")) or {}
  tuned = _load_json(os.path.join(workdir, "thresholds.json"))
  rows = (
    read_metrics(os.path.join(workdir, METRICS_FILE))
    if os.path.exists(os.path.join(workdir, METRICS_FILE))
    else []
  )
  if probs is None and os.path.exists(os.path.join(workdir, PREDICTIONS_FILE)):
    with np.load(os.path.join(workdir, PREDICTIONS_FILE)) as z:
      probs, labels = z["probs"], z["labels"]
    source = source or "val split"
  if thresholds is None:
    thresholds = tuned["thresholds"] if tuned else _get(config, "train.threshold", 0.5)
  select = _get(config, "train.select_metric", "val_samples_f1")
  lower, labels_task = _selection(config, select)
  threshold = _get(config, "train.threshold", 0.5) if labels_task else None
  train_rows = [r for r in rows if "train_loss" in r]
  eval_rows = [r for r in rows if any(k in r for k, _ in plots.VAL_CURVES) or "val_loss" in r]
  spe = plots.steps_per_epoch(eval_rows)

  figures: list[tuple[str, str]] = []  # (file, caption)

  def add(name, caption, draw, *args, **kw):
    draw(*args, os.path.join(plots_dir, name), **kw)
    figures.append((name, caption))

  if train_rows or eval_rows:
    add(
      "loss.png",
      "Training and validation loss",
      plots.plot_loss,
      train_rows,
      eval_rows,
      spe,
      loss_name=_get(config, "train.loss", "loss"),
    )
  if eval_rows:
    add(
      "val_scores.png",
      "Validation scores per epoch",
      plots.plot_val_scores,
      eval_rows,
      spe,
      select_metric=select,
      threshold=threshold,
      lower_is_better=lower,
    )
  if any(r.get("lr") is not None for r in train_rows):
    add("lr.png", "Learning rate", plots.plot_lr, train_rows, spe)

  per_class, at_thresholds = None, None
  if probs is not None:
    probs, labels = np.asarray(probs), np.asarray(labels)
    if probs.ndim == 2:  # multi-label
      preds = thresholds_lib.apply_thresholds(probs, thresholds, at_least_one=True)
      label_set = labels_lib.for_outputs(probs.shape[1], workdir)
      per_class = metrics_lib.per_class_metrics(labels, preds, label_set=label_set)
      at_thresholds = metrics_lib.multilabel_metrics(labels, preds)
      add(
        "per_class_f1.png",
        "Per-class F1",
        plots.plot_per_class_f1,
        per_class,
        title=f"Per-class F1 on the {source or 'evaluated split'} "
        f"(threshold {_thresholds_text(thresholds)})",
      )
      add(
        "threshold_sweep.png",
        "Threshold sweep",
        plots.plot_threshold_sweep,
        probs,
        labels,
        chosen=thresholds,
        default=_get(config, "train.threshold", 0.5),
      )
    elif confusion is None:  # binary: one probability per pair
      thr = float(np.mean(thresholds))
      at_thresholds = metrics_lib.binary_metrics(labels, probs.reshape(-1) > thr)
      confusion = at_thresholds["confusion"]
  if confusion is None and eval_rows and "val_confusion" in eval_rows[-1]:
    confusion = eval_rows[-1]["val_confusion"]
  if confusion is None and eval_rows and "val_tn" in eval_rows[-1]:  # the matching task's rows
    r = eval_rows[-1]
    confusion = [[r["val_tn"], r["val_fp"]], [r["val_fn"], r["val_tp"]]]
  if confusion is not None:
    add("confusion_matrix.png", "Confusion matrix", plots.plot_confusion_matrix, confusion)

  text = _markdown(
    workdir,
    config,
    tuned,
    rows,
    train_rows,
    eval_rows,
    spe,
    select,
    source,
    thresholds,
    per_class,
    at_thresholds,
    figures,
    lower=lower,
    threshold=threshold,
  )
  path = os.path.join(out_dir, REPORT_FILE)
  with open(path, "w") as f:
    f.write(text)
  log.info("wrote %s (%d plots in %s)", path, len(figures), plots_dir)
  return path


# --- helpers ----------------------------------------------------------------------------------


def _load_json(path: str):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _get(config: dict, dotted: str, default=None):
  node = config
  for k in dotted.split("."):
    if not isinstance(node, dict) or k not in node:
      return default
    node = node[k]
  return node


def _thresholds_text(thresholds) -> str:
  if isinstance(thresholds, str):
    return "none: each row's label set of highest expected F1"
  thr = np.asarray(thresholds, np.float64)
  if thr.ndim == 0:
    return f"{float(thr):.2f}"
  return f"per class, {thr.min():.2f}-{thr.max():.2f}"


def _cell(text: str) -> str:
  """Text for a Markdown table cell (a label name may hold a '|')."""
  return text.replace("|", "\\|")


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  if isinstance(v, (list, tuple)):
    return "[" + ", ".join(_fmt(x) for x in v) + "]"
  return str(v)


def _selection(config: dict, select: str) -> tuple[bool, bool]:
  """-> (does `select` improve downwards, does the task predict labels at a threshold)."""
  from jaxmm import tasks  # deferred: the task registry pulls in the model stack

  task = tasks.TASKS.get(_get(config, "task", "multilabel"))
  if task is None:
    return select == "val_loss", True
  return select in task.lower_is_better, task.predicts


def _markdown(
  workdir,
  config,
  tuned,
  rows,
  train_rows,
  eval_rows,
  spe,
  select,
  source,
  thresholds,
  per_class,
  at_thresholds,
  figures,
  *,
  lower=False,
  threshold=0.5,
) -> str:
  name = os.path.basename(os.path.normpath(workdir))
  split = source or "evaluated split"
  thr = _thresholds_text(thresholds)
  out = [f"# Report: {name}", "", f"Workdir `{os.path.abspath(workdir)}`."]
  if source:
    out.append(
      f"Scores, per-class results and the threshold sweep: the best checkpoint's "
      f"predictions on the {source}, a label predicted when its probability > {thr}."
    )
  out += ["", "## Best result (validation, during training)", "", "| | |", "|---|---|"]
  scores = [r.get(select) for r in eval_rows]
  if any(s is not None for s in scores):
    pick = np.nanargmin if lower else np.nanargmax
    best = eval_rows[int(pick([np.nan if s is None else s for s in scores]))]
    where = f"epoch {best['epoch']}, step {best['step']}" if spe else f"step {best['step']}"
    label = select.removeprefix("val_").replace("_", " ").replace("f1", "F1")
    at = f"; threshold {threshold:g}" if threshold is not None else ""
    out.append(
      f"| best val {label} (picks the checkpoint) | **{best[select]:.4f}** ({where}{at}) |"
    )
    for key, label in _SUMMARY + _BINARY + (("loss", "loss"),):
      if best.get(f"val_{key}") is not None and f"val_{key}" != select:
        out.append(f"| val {label} at that epoch | {best[f'val_{key}']:.4f} |")
  if tuned:
    # thresholds.json holds the task's first metric (samples_f1, or accuracy for matching).
    key = next((k for k in tuned if k.startswith("val_") and not k.endswith("_at_default")), None)
    out.append(f"| tuned threshold ({tuned['mode']}) | {_thresholds_text(tuned['thresholds'])} |")
    if key:
      label = key.removeprefix("val_").replace("_", " ").replace("f1", "F1")
      out.append(
        f"| val {label} at the tuned threshold | **{tuned[key]:.4f}** "
        f"(at {_get(config, 'train.threshold', 0.5):g}: "
        f"{tuned[key + '_at_default']:.4f}) |"
      )
  if rows:
    last = rows[-1]
    total = f"{last['step']} steps" + (f" ({last['step'] / spe:g} epochs)" if spe else "")
    out.append(f"| trained | {total} in {last.get('elapsed_s', 0) / 60:.1f} min |")
    bad = sum(r.get("nonfinite_steps", 0) for r in train_rows)
    out.append(f"| non-finite steps (skipped) | {bad} |")
  out.append("")
  if at_thresholds is not None:
    out += [f"## Scores on the {split} (threshold {thr})", "", "| metric | value |", "|---|---|"]
    out += [
      f"| {label} | {at_thresholds[key]:.4f} |" for key, label in _SUMMARY if key in at_thresholds
    ]
    out += [
      f"| {k} | {at_thresholds[k]:.4f} |"
      for k in ("accuracy", "precision", "recall", "f1")
      if k in at_thresholds
    ]
    out.append("")
  if per_class:
    out += [
      f"## Per-class results ({split}, threshold {thr})",
      "",
      "Support: examples with the label; predicted: examples given it.",
      "",
      "| label | name | support | predicted | precision | recall | F1 |",
      "|---:|---|---:|---:|---:|---:|---:|",
    ]
    out += [
      f"| {r['label_id']} | {_cell(r['name'])} | {r['support']} | "
      f"{r['predicted']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} |"
      for r in per_class
    ]
    out.append("")
  if figures:
    out += ["## Plots", ""]
    for file, caption in figures:
      out += [f"### {caption}", "", f"![{caption}]({PLOTS_DIR}/{file})", ""]
  out += ["## Configuration (key hyperparameters)", "", "| key | value |", "|---|---|"]
  out += [
    f"| `{k}` | {_fmt(_get(config, k))} |" for k in _KEY_CONFIG if _get(config, k) is not None
  ]
  out += ["", "Every value: `config.json`; every logged number: `metrics.jsonl`.", ""]
  return "\n".join(out)
