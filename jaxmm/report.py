"""Reports a person can read: PNG plots and a `report.md` for a trained workdir.

`write_report(workdir)` reads what training leaves there (metrics.jsonl, config.json,
thresholds.json, val_predictions.npz) and writes `report.md` and `plots/*.png`: loss, validation
scores and learning rate per epoch, per-class F1 bars, a threshold sweep, and a confusion matrix for
the binary (matching) task. evaluate.py passes the predictions of any labelled CSV instead.

Plots use matplotlib's object API (`Figure`, Agg canvas): no pyplot, no global backend switch, so
importing this module never changes how a user's own plots show.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import numpy as np

from jaxmm.data.comp5329 import LABEL_NAMES
from jaxmm.train import metrics as metrics_lib
from jaxmm.train import thresholds as thresholds_lib
from jaxmm.train.writer import METRICS_FILE, read_metrics

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
PREDICTIONS_FILE = "val_predictions.npz"
log = logging.getLogger("jaxmm")

# Validation curves, in legend order: (metrics.jsonl key, legend label).
_VAL_CURVES = (("val_samples_f1", "samples F1 (Kaggle's Mean F1)"), ("val_micro_f1", "micro F1"),
               ("val_macro_f1", "macro F1"), ("val_f1", "F1"), ("val_accuracy", "accuracy"))
# Hyperparameters worth a line in the report (config.json has them all).
_KEY_CONFIG = (
    "task", "seed", "data.root", "data.image_size", "data.max_len", "data.stem",
    "data.val_size", "data.augment.crop", "data.augment.hflip", "data.augment.vflip",
    "model.name", "model.mode", "model.image.name", "model.image.num_filters", "model.text.name",
    "model.text.embed_dim", "model.text.hidden_size", "model.text.num_layers",
    "model.text.bidirectional", "model.head.hidden", "model.head.dropout", "optim.name",
    "optim.lr", "optim.weight_decay", "optim.schedule", "optim.warmup_epochs", "optim.clip_norm",
    "train.batch_size", "train.epochs", "train.max_steps", "train.loss",
    "train.early_stopping_patience", "train.select_metric", "train.tune_thresholds")
_SUMMARY = (("samples_f1", "samples F1"), ("micro_f1", "micro F1"), ("macro_f1", "macro F1"),
            ("weighted_f1", "weighted F1"), ("samples_precision", "samples precision"),
            ("samples_recall", "samples recall"), ("exact_match", "exact match"))


def save_predictions(path: str, ids: Sequence[str], probs, labels) -> None:
  """Keeps a split's probabilities beside the run, so its report can be redrawn without a model."""
  np.savez_compressed(path, ids=np.asarray(ids, dtype=str), probs=np.asarray(probs, np.float32),
                      labels=np.asarray(labels, np.float32))


def try_write_report(workdir: str, **kwargs) -> str | None:
  """`write_report`, but a failure only logs a warning: a plot must never lose a trained run."""
  try:
    return write_report(workdir, **kwargs)
  except Exception as e:  # noqa: BLE001 -- anything from matplotlib or a half-written workdir
    log.warning("could not write the report for %s (%s: %s); the run itself is complete",
                workdir, type(e).__name__, e)
    return None


def write_report(workdir: str, out_dir: str | None = None, *, probs=None, labels=None,
                 thresholds=None, source: str | None = None, confusion=None) -> str:
  """Writes `out_dir/report.md` and `out_dir/plots/*.png` (out_dir defaults to workdir).

  probs/labels: (N, 18) multi-label or (N,) binary predictions of a labelled split; by default the
  workdir's val_predictions.npz. thresholds: scalar or (18,); by default thresholds.json's.
  confusion: [[tn, fp], [fn, tp]] of the matching task, drawn when given (or computed from
  binary probs). Returns the report's path.
  """
  out_dir = out_dir or workdir
  plots = os.path.join(out_dir, PLOTS_DIR)
  os.makedirs(plots, exist_ok=True)
  config = _load_json(os.path.join(workdir, "config.json")) or {}
  tuned = _load_json(os.path.join(workdir, "thresholds.json"))
  rows = (read_metrics(os.path.join(workdir, METRICS_FILE))
          if os.path.exists(os.path.join(workdir, METRICS_FILE)) else [])
  if probs is None and os.path.exists(os.path.join(workdir, PREDICTIONS_FILE)):
    with np.load(os.path.join(workdir, PREDICTIONS_FILE)) as z:
      probs, labels = z["probs"], z["labels"]
    source = source or "val split"
  if thresholds is None:
    thresholds = tuned["thresholds"] if tuned else _get(config, "train.threshold", 0.5)
  select = _get(config, "train.select_metric", "val_samples_f1")
  train_rows = [r for r in rows if "train_loss" in r]
  eval_rows = [r for r in rows if any(k in r for k, _ in _VAL_CURVES) or "val_loss" in r]
  spe = _steps_per_epoch(eval_rows)

  figures: list[tuple[str, str]] = []  # (file, caption)

  def add(name, caption, draw, *args, **kw):
    draw(*args, os.path.join(plots, name), **kw)
    figures.append((name, caption))

  if train_rows or eval_rows:
    add("loss.png", "Training and validation loss", plot_loss, train_rows, eval_rows, spe,
        loss_name=_get(config, "train.loss", "loss"))
  if eval_rows:
    add("val_scores.png", "Validation scores per epoch", plot_val_scores, eval_rows, spe,
        select_metric=select, threshold=_get(config, "train.threshold", 0.5))
  if any(r.get("lr") is not None for r in train_rows):
    add("lr.png", "Learning rate", plot_lr, train_rows, spe)

  per_class, at_thresholds = None, None
  if probs is not None:
    probs, labels = np.asarray(probs), np.asarray(labels)
    if probs.ndim == 2:  # multi-label
      preds = thresholds_lib.apply_thresholds(probs, thresholds, at_least_one=True)
      per_class = metrics_lib.per_class_metrics(labels, preds)
      at_thresholds = metrics_lib.multilabel_metrics(labels, preds)
      add("per_class_f1.png", "Per-class F1", plot_per_class_f1, per_class,
          title=f"Per-class F1 on the {source or 'evaluated split'}")
      add("threshold_sweep.png", "Threshold sweep", plot_threshold_sweep, probs, labels,
          chosen=thresholds, default=_get(config, "train.threshold", 0.5))
    elif confusion is None:  # binary: one probability per pair
      thr = float(np.mean(thresholds))
      at_thresholds = metrics_lib.binary_metrics(labels, probs.reshape(-1) > thr)
      confusion = at_thresholds["confusion"]
  if confusion is None and eval_rows and "val_confusion" in eval_rows[-1]:
    confusion = eval_rows[-1]["val_confusion"]
  if confusion is not None:
    add("confusion_matrix.png", "Confusion matrix", plot_confusion_matrix, confusion)

  text = _markdown(workdir, config, tuned, rows, train_rows, eval_rows, spe, select, source,
                   thresholds, per_class, at_thresholds, figures)
  path = os.path.join(out_dir, REPORT_FILE)
  with open(path, "w") as f:
    f.write(text)
  log.info("wrote %s (%d plots in %s)", path, len(figures), plots)
  return path


# --- plots ------------------------------------------------------------------------------------


def _figure(width: float = 7.0, height: float = 4.2):
  from matplotlib.figure import Figure  # deferred: matplotlib costs ~1 s to import
  fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
  return fig, fig.subplots()


def _save(fig, path: str) -> None:
  fig.savefig(path)


def _x(rows, spe):
  return np.array([r["step"] / spe if spe else r["step"] for r in rows], np.float64)


def _xlabel(ax, spe) -> None:
  from matplotlib.ticker import MaxNLocator
  ax.set_xlabel("epoch" if spe else "step")
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no "epoch 1.25" ticks
  ax.grid(alpha=0.3)


def _legend_below(fig, ax, ncols: int = 3) -> None:
  """The legend under the axes: it never hides a curve."""
  fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=ncols,
             fontsize=8, frameon=False)


def plot_loss(train_rows, eval_rows, spe, path: str, *, loss_name: str = "loss") -> None:
  """Train loss at every log point (thin), its per-epoch mean and the val loss at epoch ends."""
  fig, ax = _figure()
  tr = [r for r in train_rows if r.get("train_loss") is not None]
  if tr:
    ax.plot(_x(tr, spe), [r["train_loss"] for r in tr], color="tab:blue", alpha=0.35, lw=1,
            label="train (each log point)")
  means = _epoch_means(train_rows, spe)
  if means:
    ax.plot(*zip(*means), "o-", color="tab:blue", label="train (mean of the epoch, at its end)")
  ev = [r for r in eval_rows if r.get("val_loss") is not None]
  if ev:
    ax.plot(_x(ev, spe), [r["val_loss"] for r in ev], "s-", color="tab:orange", label="validation")
  ax.set_ylabel(f"loss ({loss_name})")
  ax.set_title("Loss")
  _xlabel(ax, spe)
  _legend_below(fig, ax)
  _save(fig, path)


def plot_val_scores(eval_rows, spe, path: str, *, select_metric: str = "val_samples_f1",
                    threshold: float = 0.5) -> None:
  """Validation F1 (samples/micro/macro) per epoch; the best epoch of `select_metric` marked."""
  fig, ax = _figure()
  x = _x(eval_rows, spe)
  for key, label in _VAL_CURVES:
    ys = [r.get(key) for r in eval_rows]
    if any(y is not None for y in ys):
      ax.plot(x, [np.nan if y is None else y for y in ys], "o-", ms=4, label=label)
  scores = [r.get(select_metric) for r in eval_rows]
  if any(s is not None for s in scores):
    best = int(np.nanargmax([np.nan if s is None else s for s in scores]))
    name = select_metric.removeprefix("val_").replace("_", " ").replace("f1", "F1")
    where = f"epoch {x[best]:g}" if spe else f"step {x[best]:g}"
    ax.plot([x[best]], [scores[best]], "*", ms=16, color="gold", mec="black", zorder=5,
            label=f"best {name}: {scores[best]:.4f} ({where}, the checkpoint kept)")
  ax.set_ylabel("score")
  ax.set_title(f"Validation scores per epoch (labels predicted above {threshold:g})")
  _xlabel(ax, spe)
  _legend_below(fig, ax, ncols=2)
  _save(fig, path)


def plot_lr(train_rows, spe, path: str) -> None:
  fig, ax = _figure(7.0, 3.2)
  rows = [r for r in train_rows if r.get("lr") is not None]
  ax.plot(_x(rows, spe), [r["lr"] for r in rows], color="tab:green")
  ax.set_ylabel("learning rate")
  ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
  ax.set_ylim(bottom=0)
  ax.set_title("Learning rate (schedule x plateau scale)")
  _xlabel(ax, spe)
  _save(fig, path)


def plot_per_class_f1(per_class: Sequence[dict], path: str, *, title: str = "Per-class F1"
                      ) -> None:
  """Horizontal bars, one per label ('id name (n=support)'), first label at the top."""
  fig, ax = _figure(7.5, 0.32 * len(per_class) + 1.6)
  y = np.arange(len(per_class))[::-1]
  f1 = np.array([r["f1"] for r in per_class])
  names = [f"{r['label_id']} {LABEL_NAMES.get(r['label_id'], '')}".strip()
           + f"  (n={r['support']})" for r in per_class]
  ax.barh(y, f1, color="tab:blue", alpha=0.85)
  for yi, v in zip(y, f1):  # the value inside the bar's end, or just right of a short bar
    inside = v > 0.15
    ax.text(v - 0.01 if inside else v + 0.01, yi, f"{v:.2f}", va="center", fontsize=8,
            ha="right" if inside else "left", color="white" if inside else "black")
  macro = float(f1.mean()) if len(f1) else 0.0
  ax.axvline(macro, color="black", ls="--", lw=1, label=f"macro F1 (mean of the bars) {macro:.3f}")
  ax.set_yticks(y, names, fontsize=8)
  for tick, r in zip(ax.get_yticklabels(), per_class):
    if r["support"] == 0:  # F1 0 there means "no examples", not "all wrong"
      tick.set_color("tab:red")
  ax.set_xlim(0, 1)
  ax.set_xlabel("F1 at the threshold(s) used   (n = examples with the label; red: none)")
  ax.set_title(title)
  ax.grid(axis="x", alpha=0.3)
  _legend_below(fig, ax, ncols=1)
  _save(fig, path)


def plot_threshold_sweep(probs_NxL, labels_NxL, path: str, *, chosen=0.5, default=0.5,
                         grid=thresholds_lib.DEFAULT_GRID) -> None:
  """Samples/micro/macro F1 against one global threshold; the chosen threshold(s) marked."""
  fig, ax = _figure()
  scores = {k: [] for k in ("samples_f1", "micro_f1", "macro_f1")}
  for t in grid:
    m = metrics_lib.multilabel_metrics(
        labels_NxL, thresholds_lib.apply_thresholds(probs_NxL, t, at_least_one=True))
    for k in scores:
      scores[k].append(m[k])
  for k, v in scores.items():
    ax.plot(grid, v, lw=2.2 if k == "samples_f1" else 1.2, label=k.replace("_f1", " F1"))
  best = int(np.argmax(scores["samples_f1"]))
  ax.axvline(default, color="gray", ls=":", lw=1, label=f"default {default:g}")
  chosen_arr = np.asarray(chosen, np.float64)
  if chosen_arr.ndim == 0:
    f1 = np.interp(float(chosen_arr), grid, scores["samples_f1"])
    ax.axvline(float(chosen_arr), color="black", ls="--", lw=1,
               label=f"chosen {float(chosen_arr):.2f}: samples F1 {f1:.4f}")
  else:  # per-class thresholds: no single x; show their spread and their score
    preds = thresholds_lib.apply_thresholds(probs_NxL, chosen_arr, at_least_one=True)
    f1 = metrics_lib.samples_f1(labels_NxL, preds)
    ax.axvspan(chosen_arr.min(), chosen_arr.max(), color="black", alpha=0.08,
               label=f"per-class thresholds ({chosen_arr.min():.2f}-{chosen_arr.max():.2f})")
    ax.axhline(f1, color="black", ls="--", lw=1, label=f"per-class: samples F1 {f1:.4f}")
  ax.plot([grid[best]], [scores["samples_f1"][best]], "*", ms=14, color="gold", mec="black",
          zorder=5, label=f"best samples F1 here: {scores['samples_f1'][best]:.4f} at "
          f"{grid[best]:.2f}")
  ax.set_xlabel("decision threshold (the same for every label)")
  ax.set_ylabel("F1")
  ax.set_title("Threshold sweep (a label is predicted when its probability > threshold)",
               fontsize=10)
  ax.grid(alpha=0.3)
  _legend_below(fig, ax)
  _save(fig, path)


def plot_confusion_matrix(cm, path: str, *, labels: Sequence[str] = ("no match", "match"),
                          title: str = "Confusion matrix") -> None:
  """A (K, K) confusion matrix (rows: true, columns: predicted) as counts and row percentages."""
  cm = np.asarray(cm, np.int64)
  if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(labels):
    raise ValueError(f"confusion matrix must be ({len(labels)}, {len(labels)}); got {cm.shape}")
  fig, ax = _figure(4.6, 4.0)
  rows = cm.sum(axis=1, keepdims=True)
  frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
  ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
  for i in range(cm.shape[0]):
    for j in range(cm.shape[1]):
      ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.1%}", ha="center", va="center",
              color="white" if frac[i, j] > 0.5 else "black")
  ax.set_xticks(range(len(labels)), labels)
  ax.set_yticks(range(len(labels)), labels)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  acc = np.trace(cm) / max(cm.sum(), 1)
  ax.set_title(f"{title} (accuracy {acc:.3f}, n={cm.sum()})")
  _save(fig, path)


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


def _steps_per_epoch(eval_rows) -> int | None:
  """From the first eval row at an epoch end ('epoch' there counts completed epochs)."""
  for r in eval_rows:
    if r.get("epoch", 0) >= 1 and r["step"] % r["epoch"] == 0:
      return r["step"] // r["epoch"]
  return None


def _epoch_means(train_rows, spe) -> list[tuple[float, float]]:
  """Mean train loss of each epoch over its finite steps, placed at the epoch's end."""
  if not spe:
    return []
  sums: dict[int, list[float]] = {}
  prev = 0
  for r in train_rows:
    n = r["step"] - prev - r.get("nonfinite_steps", 0)
    prev = r["step"]
    if r.get("train_loss") is not None and n > 0:
      s = sums.setdefault(r["epoch"], [0.0, 0])
      s[0] += r["train_loss"] * n
      s[1] += n
  return [(e + 1, s / n) for e, (s, n) in sorted(sums.items())]


def _fmt(v) -> str:
  if isinstance(v, float):
    return f"{v:.4g}"
  if isinstance(v, (list, tuple)):
    return "[" + ", ".join(_fmt(x) for x in v) + "]"
  return str(v)


def _markdown(workdir, config, tuned, rows, train_rows, eval_rows, spe, select, source,
              thresholds, per_class, at_thresholds, figures) -> str:
  name = os.path.basename(os.path.normpath(workdir))
  out = [f"# Report: {name}", ""]
  out.append(f"Workdir `{os.path.abspath(workdir)}`"
             + (f"; predictions from the {source}." if source else "."))
  out.append("")
  out += ["## Best result", "", "| | |", "|---|---|"]
  scores = [r.get(select) for r in eval_rows]
  if any(s is not None for s in scores):
    best = eval_rows[int(np.nanargmax([np.nan if s is None else s for s in scores]))]
    where = f"epoch {best['epoch']}, step {best['step']}" if spe else f"step {best['step']}"
    out.append(f"| best {select} | **{best[select]:.4f}** ({where}; threshold "
               f"{_get(config, 'train.threshold', 0.5):g}) |")
    for key, label in _SUMMARY + (("loss", "loss"),):
      if best.get(f"val_{key}") is not None and f"val_{key}" != select:
        out.append(f"| val {label} at that epoch | {best[f'val_{key}']:.4f} |")
  if tuned:
    thr = tuned["thresholds"]
    shown = f"{thr:.2f}" if isinstance(thr, float) else "per class, " + ", ".join(
        f"{t:.2f}" for t in thr)
    out.append(f"| tuned threshold ({tuned['mode']}) | {shown} |")
    out.append(f"| val samples F1 at the tuned threshold | **{tuned['val_samples_f1']:.4f}** "
               f"(at {_get(config, 'train.threshold', 0.5):g}: "
               f"{tuned['val_samples_f1_at_default']:.4f}) |")
  if rows:
    last = rows[-1]
    total = f"{last['step']} steps" + (f" ({last['step'] / spe:g} epochs)" if spe else "")
    out.append(f"| trained | {total} in {last.get('elapsed_s', 0) / 60:.1f} min |")
    bad = sum(r.get("nonfinite_steps", 0) for r in train_rows)
    out.append(f"| non-finite steps (skipped) | {bad} |")
  out.append("")
  if at_thresholds is not None:
    out += [f"## Scores on the {source or 'evaluated split'} at the thresholds used", "",
            "| metric | value |", "|---|---|"]
    out += [f"| {label} | {at_thresholds[key]:.4f} |" for key, label in _SUMMARY
            if key in at_thresholds]
    out += [f"| {k} | {at_thresholds[k]:.4f} |" for k in ("accuracy", "precision", "recall", "f1")
            if k in at_thresholds]
    out.append("")
  if per_class:
    out += [f"## Per-class results ({source or 'evaluated split'})", "",
            "| label | name | support | predicted | precision | recall | F1 |",
            "|---:|---|---:|---:|---:|---:|---:|"]
    out += [f"| {r['label_id']} | {LABEL_NAMES.get(r['label_id'], '')} | {r['support']} | "
            f"{r['predicted']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} |"
            for r in per_class]
    out.append("")
  if figures:
    out += ["## Plots", ""]
    for file, caption in figures:
      out += [f"### {caption}", "", f"![{caption}]({PLOTS_DIR}/{file})", ""]
  out += ["## Configuration (key hyperparameters)", "", "| key | value |", "|---|---|"]
  out += [f"| `{k}` | {_fmt(_get(config, k))} |" for k in _KEY_CONFIG
          if _get(config, k) is not None]
  out += ["", "Every value: `config.json`; every logged number: `metrics.jsonl`.", ""]
  return "\n".join(out)

