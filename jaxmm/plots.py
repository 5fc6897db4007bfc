"""The pictures of a report, drawn with matplotlib's object API (`Figure` on the Agg canvas).

No pyplot and no global backend switch: importing or calling this never changes how a user's own
plots show, and it works on machines without a display. Every function writes one PNG.
Rows are metrics.jsonl rows (jaxmm/train/writer.py); x is the epoch when steps_per_epoch is known.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxmm.train import metrics as metrics_lib
from jaxmm.train import thresholds as thresholds_lib

# Validation curves, in legend order: (metrics.jsonl key, legend label).
VAL_CURVES = (
  ("val_samples_f1", "samples F1 (Kaggle's Mean F1)"),
  ("val_micro_f1", "micro F1"),
  ("val_macro_f1", "macro F1"),
  ("val_f1", "F1"),
  ("val_accuracy", "accuracy"),
  ("val_rotation_accuracy", "rotation accuracy"),
  ("val_mlm_accuracy", "masked-token accuracy"),
  ("val_mae", "reconstruction MAE"),
)


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
  fig.legend(
    *ax.get_legend_handles_labels(),
    loc="outside lower center",
    ncols=ncols,
    fontsize=8,
    frameon=False,
  )


def plot_loss(train_rows, eval_rows, spe, path: str, *, loss_name: str = "loss") -> None:
  """Train loss at every log point (thin), its per-epoch mean and the val loss at epoch ends."""
  fig, ax = _figure()
  tr = [r for r in train_rows if r.get("train_loss") is not None]
  if tr:
    ax.plot(
      _x(tr, spe),
      [r["train_loss"] for r in tr],
      color="tab:blue",
      alpha=0.35,
      lw=1,
      label="train (each log point)",
    )
  means = epoch_means(train_rows, spe)
  if means:
    ax.plot(*zip(*means), "o-", color="tab:blue", label="train (mean of the epoch, at its end)")
  ev = [r for r in eval_rows if r.get("val_loss") is not None]
  if ev:
    ax.plot(_x(ev, spe), [r["val_loss"] for r in ev], "s-", color="tab:orange", label="validation")
  ax.set_ylabel(f"loss ({loss_name})")
  ax.set_title("Loss per epoch")
  _xlabel(ax, spe)
  _legend_below(fig, ax)
  _save(fig, path)


def plot_val_scores(
  eval_rows,
  spe,
  path: str,
  *,
  select_metric: str = "val_samples_f1",
  threshold: float | None = 0.5,
  lower_is_better: bool = False,
) -> None:
  """Validation F1 (samples/micro/macro) per epoch; the best epoch of `select_metric` marked.

  threshold None: the task predicts no labels (pretext tasks); lower_is_better: e.g. val_mae."""
  fig, ax = _figure()
  x = _x(eval_rows, spe)
  for key, label in VAL_CURVES:
    ys = [r.get(key) for r in eval_rows]
    if any(y is not None for y in ys):
      ax.plot(x, [np.nan if y is None else y for y in ys], "o-", ms=4, label=label)
  scores = [r.get(select_metric) for r in eval_rows]
  if any(s is not None for s in scores):
    pick = np.nanargmin if lower_is_better else np.nanargmax
    best = int(pick([np.nan if s is None else s for s in scores]))
    name = select_metric.removeprefix("val_").replace("_", " ").replace("f1", "F1")
    where = f"epoch {x[best]:g}" if spe else f"step {x[best]:g}"
    ax.plot(
      [x[best]],
      [scores[best]],
      "*",
      ms=16,
      color="gold",
      mec="black",
      zorder=5,
      label=f"best {name}: {scores[best]:.4f} ({where}, the checkpoint kept)",
    )
  ax.set_ylabel("score")
  ax.set_title(
    "Validation scores per epoch"
    + (f" (labels predicted above {threshold:g})" if threshold is not None else "")
  )
  _xlabel(ax, spe)
  _legend_below(fig, ax, ncols=2)
  _save(fig, path)


def plot_lr(train_rows, spe, path: str) -> None:
  """The learning rate as logged: a sample per log point, so a short warmup shows only in part."""
  fig, ax = _figure(7.0, 3.2)
  rows = [r for r in train_rows if r.get("lr") is not None]
  ax.plot(_x(rows, spe), [r["lr"] for r in rows], ".-", ms=3, color="tab:green")
  ax.set_ylabel("learning rate")
  ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
  ax.set_ylim(bottom=0)
  ax.set_title("Learning rate at each log point (schedule x plateau scale)", fontsize=10)
  _xlabel(ax, spe)
  _save(fig, path)


def plot_per_class_f1(per_class: Sequence[dict], path: str, *, title: str = "Per-class F1") -> None:
  """Horizontal bars, one per label ('id name (n=support)'), first label at the top."""
  fig, ax = _figure(7.5, 0.32 * len(per_class) + 1.6)
  y = np.arange(len(per_class))[::-1]
  f1 = np.array([r["f1"] for r in per_class])
  names = [f"{metrics_lib.label_text(r)}  (n={r['support']})" for r in per_class]
  ax.barh(y, f1, color="#4a8fc4", zorder=2)  # opaque: the macro line stays behind
  for yi, v in zip(y, f1):  # the value inside the bar's end, or just right of a short bar
    inside = v > 0.15
    ax.text(
      v - 0.01 if inside else v + 0.01,
      yi,
      f"{v:.2f}",
      va="center",
      fontsize=8,
      ha="right" if inside else "left",
      color="white" if inside else "black",
    )
  macro = float(f1.mean()) if len(f1) else 0.0
  ax.axvline(
    macro,
    color="black",
    ls="--",
    lw=1,
    zorder=1,  # behind the bars and their values
    label=f"macro F1 (mean of the bars) {macro:.3f}",
  )
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


def plot_threshold_sweep(
  probs_NxL, labels_NxL, path: str, *, chosen=0.5, default=0.5, grid=thresholds_lib.DEFAULT_GRID
) -> None:
  """Samples/micro/macro F1 against one global threshold; the chosen threshold(s) marked."""
  fig, ax = _figure()
  scores = {k: [] for k in ("samples_f1", "micro_f1", "macro_f1")}
  for t in grid:
    m = metrics_lib.multilabel_metrics(
      labels_NxL, thresholds_lib.apply_thresholds(probs_NxL, t, at_least_one=True)
    )
    for k in scores:
      scores[k].append(m[k])
  for k, v in scores.items():
    ax.plot(grid, v, lw=2.2 if k == "samples_f1" else 1.2, label=k.replace("_f1", " F1"))
  best = int(np.argmax(scores["samples_f1"]))
  ax.axvline(default, color="gray", ls=":", lw=1, label=f"default {default:g}")
  if isinstance(chosen, str):  # a decision rule, not a threshold: its score as a level
    f1 = metrics_lib.samples_f1(
      labels_NxL, thresholds_lib.apply_thresholds(probs_NxL, chosen, at_least_one=True)
    )
    ax.axhline(f1, color="black", ls="--", lw=1, label=f"{chosen}: samples F1 {f1:.4f}")
  elif np.ndim(chosen) == 0:
    f1 = np.interp(float(chosen), grid, scores["samples_f1"])
    ax.axvline(
      float(chosen),
      color="black",
      ls="--",
      lw=1,
      label=f"chosen {float(chosen):.2f}: samples F1 {f1:.4f}",
    )
  else:  # per-class thresholds: no single x; show their spread and their score
    chosen_arr = np.asarray(chosen, np.float64)
    preds = thresholds_lib.apply_thresholds(probs_NxL, chosen_arr, at_least_one=True)
    f1 = metrics_lib.samples_f1(labels_NxL, preds)
    ax.axvspan(
      chosen_arr.min(),
      chosen_arr.max(),
      color="black",
      alpha=0.08,
      label=f"per-class thresholds ({chosen_arr.min():.2f}-{chosen_arr.max():.2f})",
    )
    ax.axhline(f1, color="black", ls="--", lw=1, label=f"per-class: samples F1 {f1:.4f}")
  ax.plot(
    [grid[best]],
    [scores["samples_f1"][best]],
    "*",
    ms=14,
    color="gold",
    mec="black",
    zorder=5,
    label=f"best samples F1 here: {scores['samples_f1'][best]:.4f} at {grid[best]:.2f}",
  )
  ax.set_xlabel("decision threshold (the same for every label)")
  ax.set_ylabel("F1")
  ax.set_title(
    "Threshold sweep (a label is predicted when its probability > threshold)", fontsize=10
  )
  ax.grid(alpha=0.3)
  _legend_below(fig, ax)
  _save(fig, path)


def plot_confusion_matrix(
  cm, path: str, *, labels: Sequence[str] = ("no match", "match"), title: str = "Confusion matrix"
) -> None:
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
      ax.text(
        j,
        i,
        f"{cm[i, j]}\n{frac[i, j]:.1%}",
        ha="center",
        va="center",
        color="white" if frac[i, j] > 0.5 else "black",
      )
  ax.set_xticks(range(len(labels)), labels)
  ax.set_yticks(range(len(labels)), labels)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  acc = np.trace(cm) / max(cm.sum(), 1)
  ax.set_title(f"{title} (accuracy {acc:.3f}, n={cm.sum()})")
  _save(fig, path)


def steps_per_epoch(eval_rows) -> int | None:
  """From the first eval row at an epoch end ('epoch' there counts completed epochs)."""
  for r in eval_rows:
    if r.get("epoch", 0) >= 1 and r["step"] % r["epoch"] == 0:
      return r["step"] // r["epoch"]
  return None


def epoch_means(train_rows, spe) -> list[tuple[float, float]]:
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
