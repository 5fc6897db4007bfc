"""The Task type: everything that differs between the tasks jaxmm trains.

A task is made per run from its config (`jaxmm.tasks.make(config)`) and answers for its data
(layout, preparation, extra grain transform), its model (head size, construction), the jitted
part (loss, probabilities, forward pass), its metrics and decision rule, its prediction file and
what it adds to evaluation output. The loop, the recipes, evaluate.py and predict.py only ask it.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence

import jax
import numpy as np

from jaxmm.data import datasets, table
from jaxmm.models import registry
from jaxmm.train import evaluation

# train.tune_thresholds: '' keeps train.threshold; 'expected_f1' (multi-label) is a decision rule.
TUNE_MODES = ("", "global", "per_class", "expected_f1")
# predict.py --probs: the column of label NAME's probability is 'p:NAME' (never an input column's
# name, whatever the labels are called).
PROB_PREFIX = "p:"


class Task:
  name: str
  metric_names: tuple[str, ...]  # what `report` returns (the loop prefixes them with 'val_')
  label_key: str  # the split's target array ('' when a transform makes the targets)
  target_key: str  # the batch key the loss reads: predict steps compute a loss when it is there
  lower_is_better: tuple[str, ...] = ("val_loss",)  # selection metrics that improve downwards
  tunes_thresholds = True  # the run writes thresholds.json after training
  predicts = True  # predict.py writes predictions (pretext tasks only have a val metric)
  decision_rules: tuple[str, ...] = ()  # rules that replace a threshold (--thresholds=RULE)

  def __init__(self, config):
    self.config = config

  # --- config and data ---------------------------------------------------------------------

  def check_config(self) -> None:
    """Every check of the config this task can make before any file is read or written."""
    config = self.config
    registry.check_model_config(config.model)
    tune = config.train.tune_thresholds
    if tune not in TUNE_MODES:
      raise ValueError(f"train.tune_thresholds={tune!r} is not one of {TUNE_MODES}")
    select = config.train.select_metric
    known = [f"val_{m}" for m in self.metric_names] + ["val_loss"]
    if select not in known:
      raise ValueError(
        f"train.select_metric={select!r} is not reported by task {self.name!r}; use one of {known}"
      )
    check_ranges(config)
    check_data_config(config.data)
    bias = config.model.get("head", {}).get("output_bias", "zeros")
    if bias not in ("zeros", "prior"):
      raise ValueError(f"model.head.output_bias={bias!r} is not 'zeros' or 'prior'")
    if bias == "prior" and not self.has_prior_bias:
      raise ValueError(
        f"model.head.output_bias='prior' is for multi-label tasks (task {self.name!r} has no "
        "label prior): set it to 'zeros'"
      )

  @property
  def layout(self) -> str:
    """The dataset layout this task reads: 'multilabel' (COMP5329) or 'matching' (S0)."""
    return self.name

  def load_data(
    self, workdir: str | None, *, with_images: bool | None = None
  ) -> datasets.PreparedData:
    """train/val of the configured dataset (vocab.json is read from or written to `workdir`);
    images are decoded unless the model is text-only (or `with_images` says otherwise)."""
    raise NotImplementedError

  @property
  def task_key(self) -> str:
    """The config key that chose this task's data: 'task', or 'pretext.data' when a pretext task
    reads its images and captions through this one."""
    return "task" if self.config.task == self.name else "pretext.data"

  def read_workdir(self, workdir: str) -> None:
    """Takes what a trained workdir fixes beyond its config (multi-label: its label set), before
    its model is built for evaluation or prediction."""

  def _with_images(self, with_images: bool | None) -> bool:
    return self.config.model.mode != "text" if with_images is None else with_images

  has_prior_bias = False  # output_bias can start the head's biases at the labels' log-odds

  def output_bias(self, train_split):
    """The heads' initial output bias from the training labels (model.head.output_bias='prior'),
    or None to keep the layer's own initialisation."""
    return None

  def with_train_data(self, train_split) -> Task:
    """This task with what its loss takes from the training labels (class weights)."""
    return self

  def extra_map(self, vocab_size: int):
    """A grain RandomMap applied to train and eval examples (pretext targets), or None."""
    return None

  def select_mode(self) -> str:
    """'max' or 'min': the direction in which train.select_metric improves."""
    return "min" if self.config.train.select_metric in self.lower_is_better else "max"

  # --- model and the jitted step ------------------------------------------------------------

  def num_outputs(self) -> int:
    raise NotImplementedError

  def output_names(self) -> tuple[str, ...]:
    """What each column of `probs` is (multi-label: the label names); () when it has none."""
    return ()

  def build_model(self, vocab_size: int, rngs, *, embedding_init=None):
    return registry.build_model(
      self.config.model,
      num_outputs=self.num_outputs(),
      vocab_size=vocab_size,
      rngs=rngs,
      embedding_init=embedding_init,
    )

  def forward(self, model, batch, rngs):
    """Training forward pass -> (model output, extra scalar loss added to the mean task loss)."""
    return model(batch, rngs=rngs), 0.0

  def loss(self, output, batch) -> jax.Array:
    """Per-example loss (B,) of the model output against the batch."""
    raise NotImplementedError

  def probs(self, output) -> jax.Array:
    """What the predict step returns for the model output (probabilities for classifiers)."""
    raise NotImplementedError

  # --- metrics and decisions ----------------------------------------------------------------

  def evaluate(self, predict_step, model_state, split, *, vocab_size: int | None = None) -> dict:
    """The task's metrics on `split` at train.threshold, prefixed 'val_', plus val_loss."""
    config = self.config
    probs, loss = evaluation.predict_split(
      predict_step,
      model_state,
      split,
      batch_size=config.train.eval_batch_size,
      num_threads=config.data.num_threads,
    )
    out = {
      f"val_{k}": v
      for k, v in self.report(probs, split.arrays[self.label_key], config.train.threshold).items()
    }
    out["val_loss"] = loss
    return out

  def report(self, probs, labels, thresholds) -> dict:
    raise NotImplementedError

  def tune_thresholds(self, probs, labels) -> tuple[object, float]:
    """-> (thresholds by train.tune_thresholds, the first metric at them) for thresholds.json."""
    raise NotImplementedError

  def details(self, result: dict, probs, labels, thresholds) -> str:
    """Extra lines evaluate.py prints under the metrics (and may add to `result`)."""
    return ""

  def after_training(
    self, workdir: str, predict_step, best_model_state, val_split, *, vocab_size: int | None = None
  ) -> None:
    """Extra outputs once training ends; best_model_state() restores the best model state."""

  # --- files: other CSVs and predictions ----------------------------------------------------

  def split_from_csv(
    self,
    encoder,
    csv_path: str,
    images_dir: str,
    *,
    labelled: bool,
    skip_bad: bool = False,
    rows: str | None = None,
  ):
    """Another CSV of this task's layouts as a split; `rows` ('START:END') reads those records
    alone."""
    raise NotImplementedError

  def encode_options(self, csv_path: str, images_dir: str, labelled: bool, skip_bad: bool) -> dict:
    """How split_from_csv encodes another CSV's records: this run's image size, pixel limit and
    cache, images only when the model has an image tower."""
    data = self.config.data
    return dict(
      images_dir=images_dir,
      image_size=data.image_size,
      cache_dir=data.cache_dir or None,
      skip_bad=skip_bad,
      skipped=[],
      labelled=labelled,
      with_images=self.config.model.mode != "text",
      max_image_pixels=data.max_image_pixels,
      csv_path=csv_path,
    )

  def csv_is_labelled(self, csv_path: str) -> bool:
    raise NotImplementedError

  def default_images_dir(self, csv_path: str) -> str:
    """Where a CSV's images are when --images is not given."""
    return os.path.join(os.path.dirname(os.path.abspath(csv_path)), "data")

  def write_predictions(
    self,
    path: str,
    split,
    probs,
    thresholds,
    *,
    source: str | None = None,
    skipped: Mapping[int, str] | None = None,
    with_probs: bool = False,
  ) -> None:
    """Writes one row per record of `source` (the predicted file), in its order: the decisions
    for the examples of `split` and no decision for the `skipped` records (record -> id).
    `with_probs` adds the probability columns (PROB_PREFIX + name)."""
    raise ValueError(f"prediction is not defined for the task {self.name!r}")


# Numeric keys every run reads, with the least value that means anything: (key, least, whether
# the least itself is allowed). A key a config does not have is not checked.
RANGES = (
  ("train.batch_size", 1, True),
  ("train.eval_batch_size", 1, True),
  ("train.epochs", 0, False),
  ("train.log_every", 1, True),
  ("train.max_steps", 1, True),  # None: no cap
  ("train.ckpt_every_steps", 0, True),
  ("optim.lr", 0, False),
  ("optim.warmup_epochs", 0, True),
  ("data.image_size", 1, True),
  ("data.max_len", 1, True),
)


def check_ranges(config) -> None:
  """A value below its key's least (a batch of 0, a negative learning rate) stops the run at once,
  naming the key, instead of failing somewhere later or training backwards."""
  for key, least, allowed in RANGES:
    section, _, name = key.partition(".")
    value = config.get(section, {}).get(name)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
      continue
    if value < least or (value == least and not allowed):
      bound = f">= {least}" if allowed else f"> {least}"
      raise ValueError(f"{key}={value!r}: it must be {bound}; set --config.{key}=VALUE")


def check_data_config(data) -> None:
  """The data keys every task reads: the layout, the table's columns and label separator."""
  if data.get("layout", "auto") not in table.LAYOUTS:
    raise ValueError(f"data.layout={data.layout!r} is not one of {table.LAYOUTS}")
  sep = data.get("label_sep", "|")
  if not sep.strip():
    raise ValueError(
      f"data.label_sep={sep!r}: label names need a separator that is not empty and not a space "
      "(a name may hold spaces), e.g. '|' or ';'"
    )
  columns = table.Columns.from_config(data)
  names = [getattr(columns, role) for role in ("image", "text", "labels", "match")]
  if any(not n for n in names) or len(set(names)) != len(names):
    raise ValueError(
      f"data.columns={dict(data.get('columns', {}))}: each role needs its own column"
    )


def parse_rows(spec: str, n: int, *, source: str = "the CSV") -> np.ndarray:
  """Indices picked by a 'START:END' row range (Python slice rules, either end optional) of `n`."""
  parts = spec.split(":")
  try:
    if len(parts) != 2:
      raise ValueError
    start, end = (int(p) if p.strip() else None for p in parts)
  except ValueError:
    raise ValueError(f"--rows={spec!r}: expected START:END, e.g. 10000:12000 or 10000:") from None
  rows = np.arange(n)[slice(start, end)]
  if not len(rows):
    raise ValueError(f"--rows={spec!r} selects no row of {source} ({n} records)")
  return rows


def select_rows(records: Sequence, rows: str | None, source: str) -> list:
  """The records a row range `rows` (evaluate.py --rows) picks, before any image is read: what
  lies outside it is neither decoded nor checked."""
  if not rows:
    return list(records)
  return [records[k] for k in parse_rows(rows, len(records), source=source)]


def read_table_file(cfg_data, path: str, images_dir: str, *, need: str | None):
  """A table file (--csv) read with the run's columns and separator; its images are found from
  `images_dir` (by default the file's folder)."""
  return table.read_table(
    path,
    table.Columns.from_config(cfg_data),
    cfg_data.get("label_sep") or "|",
    need=need,
    base_dir=images_dir,
    trained=True,
  )


def write_table_predictions(
  path: str,
  source: str,
  cfg_data,
  decisions: Mapping[str, Sequence[str]],
  probs: Mapping[str, Sequence[float]],
  *,
  skipped: Mapping[int, str] | None = None,
) -> None:
  """A table of predictions for the table `source`: each row's image and text as there, then the
  decision columns and the probability columns (6 significant digits; numbers in JSONL); skipped
  records get empty decisions. A `.jsonl` path is written as JSONL, anything else as CSV."""
  columns = table.Columns.from_config(cfg_data)
  rows = table.read_table(source, columns, cfg_data.get("label_sep") or "|")
  kept = [k for k in range(len(rows)) if k not in (skipped or {})]
  out = [{columns.image: r.image_id, columns.text: r.caption} for r in rows]
  for name, values in (*decisions.items(), *probs.items()):
    for k, value in zip(kept, values):
      out[k][name] = value if isinstance(value, str) else float(f"{float(value):.6g}")
  fields = [columns.image, columns.text, *decisions, *probs]
  table.write_table(path, out, fields)


def write_id_predictions(
  path: str,
  header: Sequence[str],
  ids: Sequence[str],
  decisions: Sequence[str],
  probs: Mapping[str, Sequence[float]],
  *,
  skipped: Mapping[int, str] | None = None,
) -> None:
  """A CSV of `header` (id column, decision column) and the probability columns: one row per
  example of `ids`, with a row of no decision at each skipped record's place. A `.jsonl` path is
  written as JSON lines (probabilities as numbers)."""
  kept = iter(zip(ids, decisions, *probs.values()))
  total = len(ids) + len(skipped or {})
  rows = []
  for k in range(total):
    if skipped and k in skipped:
      rows.append([skipped[k], ""] + [""] * len(probs))
      continue
    row_id, decision, *p = next(kept)
    rows.append([row_id, decision, *(float(f"{float(x):.6g}") for x in p)])
  fields = [*header, *probs]
  if path.lower().endswith(".jsonl"):
    table.write_table(path, [dict(zip(fields, row)) for row in rows], fields)
    return
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(fields)
    for row in rows:
      w.writerow(row[:2] + [x if x == "" else f"{x:.6g}" for x in row[2:]])
