"""Restoring a trained workdir for evaluation and prediction (CPU or GPU, whatever wrote it)."""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import logging
import os

import ml_collections
import numpy as np

from jaxmm import tasks
from jaxmm import workdir as workdir_lib
from jaxmm.data import images as images_lib
from jaxmm.data.pipeline import PreparedSplit
from jaxmm.data.text import TextEncoder
from jaxmm.data.wordpiece import load_text_encoder
from jaxmm.train import checkpoint as ckpt_lib
from jaxmm.train import evaluation, steps
from jaxmm.train import state as state_lib
from jaxmm.train import thresholds as thresholds_lib

log = logging.getLogger("jaxmm")


@dataclasses.dataclass
class Restored:
  config: ml_collections.ConfigDict
  task: tasks.Task
  encoder: TextEncoder
  model_state: object
  predict_step: object
  thresholds: float | list[float] | str  # str: thresholds.EXPECTED_F1
  step: int

  @property
  def label_names(self) -> tuple[str, ...]:
    """The columns of `predict`'s probabilities: a multi-label workdir's label names (labels.json;
    COMP5329's 18 for a workdir without one), ('match',) for matching."""
    return self.task.output_names()

  def predict(self, split: PreparedSplit) -> np.ndarray:
    probs, _ = evaluation.predict_split(
      self.predict_step,
      self.model_state,
      split,
      batch_size=self.config.train.eval_batch_size,
      num_threads=self.config.data.num_threads,
    )
    return probs


def parse_thresholds(value: str, task):
  """A --thresholds flag: one number for every label, or a decision rule of the task
  (`task.decision_rules`: 'expected_f1' for multi-label)."""
  if value == thresholds_lib.EXPECTED_F1:
    if value not in task.decision_rules:
      raise ValueError(
        f"--thresholds={value!r} needs a multi-label workdir; this one is {task.name!r}: pass a "
        "number"
      )
    return value
  try:
    thr = float(value)
  except ValueError:
    thr = None
  if thr is None or not 0.0 <= thr < 1.0:
    raise ValueError(
      f"--thresholds={value!r}: expected a number in [0, 1) or {thresholds_lib.EXPECTED_F1!r}"
    )
  return thr


def restore(workdir: str, *, which: str = ckpt_lib.BEST, thresholds: str | None = None) -> Restored:
  """Loads config.json, vocab.json, thresholds.json and the `best` (else `latest`) checkpoint.

  Reads only: nothing is created in `workdir`. A damaged `best` falls back to an intact `latest`
  with a warning. `thresholds` (a --thresholds flag's text) replaces those of thresholds.json:
  see parse_thresholds.
  """
  if which not in (ckpt_lib.BEST, ckpt_lib.LATEST):
    raise ValueError(f"which={which!r}: a workdir has the checkpoints 'best' and 'latest'")
  config = workdir_lib.read_config(workdir)
  task = tasks.make(config)
  task.read_workdir(workdir)  # its label set (labels.json) sizes the head
  override = (
    None
    if thresholds is None  # checked before the checkpoint is read
    else parse_thresholds(thresholds, task)
  )
  encoder = load_text_encoder(workdir_lib.path(workdir, workdir_lib.VOCAB_FILE))  # either kind
  state = state_lib.build(config, task, vocab_size=len(encoder.vocab))
  checkpointer = ckpt_lib.Checkpointer(workdir, read_only=True)
  try:
    state, meta = _restore_state(state, checkpointer, which, workdir)
  finally:
    checkpointer.close()
  chosen = config.train.threshold
  thr_path = workdir_lib.path(workdir, workdir_lib.THRESHOLDS_FILE)
  if override is not None:
    chosen = override
  elif os.path.exists(thr_path):
    with open(thr_path) as f:
      chosen = json.load(f)["thresholds"]
  return Restored(
    config=config,
    task=task,
    encoder=encoder,
    model_state=state.model,
    predict_step=steps.make_predict_step(state.model_def, task),
    thresholds=chosen,
    step=int(meta["step"]),
  )


def _restore_state(state, checkpointer: ckpt_lib.Checkpointer, which: str, workdir: str):
  """`which`, else the other checkpoint when `which` has no step or (best) none that restores."""
  other = ckpt_lib.LATEST if which == ckpt_lib.BEST else ckpt_lib.BEST
  if checkpointer.latest_step(which) is None:
    if checkpointer.latest_step(other) is None:
      raise FileNotFoundError(
        f"{workdir} has no checkpoint (no step in {checkpointer.directory(ckpt_lib.LATEST)} or "
        f"{checkpointer.directory(ckpt_lib.BEST)}): its training stopped before the first "
        "one. Train it (python train.py --config ... --workdir) first."
      )
    if which == ckpt_lib.LATEST:  # asked for by name: never silently another checkpoint
      raise FileNotFoundError(f"no 'latest' checkpoint in {workdir}: pass --which best")
    return state_lib.restore(state, checkpointer, which=other)
  try:
    return state_lib.restore(state, checkpointer, which=which)
  except ckpt_lib.CheckpointDamagedError as damaged:
    if which != ckpt_lib.BEST or checkpointer.latest_step(other) is None:
      raise RuntimeError(_unrestorable(workdir, damaged.folders)) from damaged
    try:
      restored = state_lib.restore(state, checkpointer, which=other)
    except ckpt_lib.CheckpointDamagedError as also:
      raise RuntimeError(_unrestorable(workdir, damaged.folders + also.folders)) from also
    log.warning(
      "the 'best' checkpoint (step %s: %s) cannot be restored (a damaged file, or a "
      "model of another config); using the 'latest' checkpoint, step %d, instead. Pass "
      "--which latest to choose it without this warning.",
      ", ".join(os.path.basename(f) for f in damaged.folders),
      ", ".join(damaged.folders),
      int(restored[1]["step"]),
    )
    return restored


def _unrestorable(workdir: str, folders: list[str]) -> str:
  return (
    f"no checkpoint of {workdir} can be restored: {', '.join(folders)} hold a damaged file "
    "(truncated, edited) or a model of another config than its config.json. Copy the "
    "folder(s) back from a backup, or train again into a new --workdir."
  )


def split_from_csv(
  restored: Restored,
  csv_path: str,
  images_dir: str,
  *,
  labelled: bool,
  skip_bad: bool = False,
  rows: str | None = None,
) -> PreparedSplit:
  """Any CSV in the layout of the workdir's task as a split, with its vocabulary and image size;
  `rows` ('START:END') reads those records alone."""
  return restored.task.split_from_csv(
    restored.encoder, csv_path, images_dir, labelled=labelled, skip_bad=skip_bad, rows=rows
  )


@dataclasses.dataclass
class Skipped:
  """The rows of a CSV left out for bad images: their ids and 0-based record numbers, and the data
  layer's lines naming each file with its reason and CSV line."""

  csv: str
  ids: list[str]
  records: list[int]
  reasons: list[str]

  def to_json(self) -> dict:
    return {
      "csv": self.csv,
      "rows": [{"id": i, "record": r} for i, r in zip(self.ids, self.records)],
      "reasons": self.reasons,
    }


def read_split(
  restored: Restored,
  csv_path: str,
  images_dir: str,
  *,
  labelled: bool,
  skip_bad: bool,
  skip_hint: str,
  rows: str | None = None,
) -> tuple[PreparedSplit, Skipped | None]:
  """split_from_csv for a script: bad images raise ImageDataError naming the CSV, each file and its
  line, with `skip_hint` (the script's own flag) as the fix; with `skip_bad`, the split of the
  other rows and the Skipped ones (None when every image is usable; their record numbers count
  from the first of `rows`)."""
  read = dict(labelled=labelled, rows=rows)
  try:
    return split_from_csv(restored, csv_path, images_dir, **read), None
  except images_lib.ImageDataError as e:
    if not os.path.isdir(images_dir):  # one line, not every image listed as missing
      raise FileNotFoundError(
        f"the images folder {images_dir} does not exist: pass --images DIR, the folder that "
        f"holds the images {csv_path} names"
      ) from None
    listing = _without_training_hint(str(e))
    if not skip_bad:
      raise images_lib.ImageDataError(
        f"{listing}\nFix or remove these files (or their rows), or {skip_hint}."
      ) from None
  split = split_from_csv(restored, csv_path, images_dir, skip_bad=True, **read)
  # Every row's id, in CSV order: the same reader with the images left out.
  config = ml_collections.ConfigDict(restored.config.to_dict())
  config.model.mode = "text"
  text_only = copy.copy(restored.task)  # the workdir's task, label set included
  text_only.config = config
  every = text_only.split_from_csv(restored.encoder, csv_path, images_dir, **read).ids
  kept = collections.Counter(split.ids)
  ids, records = [], []
  for k, i in enumerate(every):
    if kept[i]:
      kept[i] -= 1
    else:
      ids.append(i)
      records.append(k)
  reasons = [line.strip() for line in listing.splitlines()[1:] if line.strip()]
  return split, Skipped(csv=csv_path, ids=ids, records=records, reasons=reasons)


def _without_training_hint(message: str) -> str:
  """The data layer's bad-image listing without its advice, which is for train.py's flags."""
  cut = message.rfind("\nFix or remove")
  message = message[:cut] if cut >= 0 else message
  return message.replace(
    " (with data.skip_bad=True, skipped.json in the workdir lists every one)", ""
  )


def write_predictions(
  restored: Restored,
  path: str,
  csv_path: str,
  split: PreparedSplit,
  skipped: Skipped | None = None,
  *,
  with_probs: bool = False,
) -> None:
  """The predictions file of `csv_path` in its task's format: one row per record, in input
  order (skipped records with no decision; a file without records gives the header alone)."""
  restored.task.write_predictions(
    path,
    split,
    restored.predict(split) if len(split) else None,
    restored.thresholds,
    source=csv_path,
    skipped=dict(zip(skipped.records, skipped.ids)) if skipped else None,
    with_probs=with_probs,
  )
