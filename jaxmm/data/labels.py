"""The label set of a multi-label run: its names in head order (and COMP5329's COCO ids).

A run's label set comes from `data.labels` when the config fixes it, else from the training file:
its label names, sorted (names that are all whole numbers sort as numbers, so '2' < '10'). COMP5329
data has its own: the 18 COCO ids with their names. The set is saved in the workdir as labels.json
(`workdir.LABELS_FILE`); a workdir from before labels.json existed is a COMP5329 run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

from jaxmm.data import comp5329
from jaxmm.workdir import LABELS_FILE


class UnknownLabelError(ValueError):
  """A label outside the run's label set; the message names the file, row and label."""


@dataclasses.dataclass(frozen=True)
class LabelSet:
  """Label names in head order; `ids` are COMP5329's COCO ids (None for named label sets)."""

  names: tuple[str, ...]
  ids: tuple[int, ...] | None = None

  def __post_init__(self):
    if not self.names:
      raise ValueError("a label set needs at least one label")
    if len(set(self.names)) != len(self.names):
      twice = sorted({n for n in self.names if self.names.count(n) > 1})
      raise ValueError(f"label names appear twice: {twice}")
    if self.ids is not None and len(self.ids) != len(self.names):
      raise ValueError(f"{len(self.ids)} label ids for {len(self.names)} names")

  def __len__(self) -> int:
    return len(self.names)

  @property
  def columns(self) -> dict[str, int]:
    """Label -> head column; a COMP5329 label may also be given by its id ('3' for car)."""
    out = {str(i): k for k, i in enumerate(self.ids or ())}
    out.update({name: k for k, name in enumerate(self.names)})
    return out

  def multihot(self, labels: Iterable[str]) -> np.ndarray:
    """Label names (any order) -> float32 multi-hot (L,); every name must be in the set."""
    columns = self.columns
    out = np.zeros(len(self.names), np.float32)
    for label in labels:
      out[columns[label]] = 1.0
    return out

  def multihot_batch(self, label_lists: Sequence[Iterable[str]]) -> np.ndarray:
    """(N, L) float32 multi-hot of N examples' label names."""
    if not label_lists:
      return np.zeros((0, len(self.names)), np.float32)
    return np.stack([self.multihot(labels) for labels in label_lists])

  def names_of(self, multihot_L) -> tuple[str, ...]:
    """The names whose entry is set, in head order."""
    return tuple(self.names[i] for i in np.flatnonzero(np.asarray(multihot_L) > 0.5))

  def unknown(self, labels: Iterable[str]) -> list[str]:
    columns = self.columns
    return [label for label in labels if label not in columns]

  def describe(self, limit: int = 12) -> str:
    """'cat, dog, red car' (the first `limit` names, then a count)."""
    shown = ", ".join(repr(n) for n in self.names[:limit])
    return shown + (f" and {len(self.names) - limit} more" if len(self.names) > limit else "")

  def to_json(self) -> dict:
    out: dict = {"names": list(self.names)}
    if self.ids is not None:
      out["ids"] = list(self.ids)
    return out

  @classmethod
  def from_json(cls, value: dict) -> LabelSet:
    ids = value.get("ids")
    return cls(names=tuple(value["names"]), ids=None if ids is None else tuple(ids))


COMP5329 = LabelSet(
  names=tuple(comp5329.LABEL_NAMES[i] for i in comp5329.LABEL_IDS), ids=comp5329.LABEL_IDS
)


def sort_names(names: Iterable[str]) -> tuple[str, ...]:
  """Distinct names, sorted; all whole numbers ('1', '10', '2') sort by value."""
  distinct = set(names)
  if distinct and all(_is_int(n) for n in distinct):
    return tuple(sorted(distinct, key=lambda n: (int(n), n)))  # '01' before '1': one order
  return tuple(sorted(distinct))


def _is_int(name: str) -> bool:
  try:
    int(name)
  except ValueError:
    return False
  return True


def from_config(names: Sequence[str], label_sep: str) -> LabelSet:
  """The label set `data.labels` fixes, in its order; bad names are refused with the key."""
  names = tuple(unicodedata.normalize("NFC", str(n)) for n in names)  # as table rows read them
  bad = [n for n in names if not n.strip() or n != n.strip() or label_sep in n]
  if bad:
    raise ValueError(
      f"data.labels holds name(s) {bad} that no row can carry: names are non-empty, without "
      f"leading or trailing spaces and without the separator data.label_sep={label_sep!r}"
    )
  try:
    return LabelSet(names=names)
  except ValueError as e:
    raise ValueError(f"data.labels: {e}") from None


def save(label_set: LabelSet, path: str) -> None:
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(label_set.to_json(), f, indent=1, ensure_ascii=False)
  os.replace(tmp, path)


def load(path: str) -> LabelSet:
  with open(path, encoding="utf-8") as f:
    return LabelSet.from_json(json.load(f))


def for_workdir(workdir: str) -> LabelSet:
  """The label set a multi-label workdir was trained with: labels.json, else (a workdir from
  before labels.json) COMP5329's 18 labels."""
  path = os.path.join(workdir, LABELS_FILE)
  return load(path) if os.path.exists(path) else COMP5329


def for_outputs(num_labels: int, workdir: str | None = None) -> LabelSet:
  """The names for `num_labels` head columns: the workdir's set when it has that size, else
  COMP5329's for 18 columns, else '0'..'L-1' (report helpers given bare arrays)."""
  if workdir:
    found = for_workdir(workdir)
    if len(found) == num_labels:
      return found
  if num_labels == len(COMP5329):
    return COMP5329
  return LabelSet(names=tuple(str(i) for i in range(num_labels)))


def for_training(
  cfg_data, workdir: str | None, records: Sequence, path: str
) -> tuple[LabelSet, str]:
  """-> (the label set of a table run, where it comes from, for messages).

  `data.labels` when set; else the workdir's labels.json (a resumed run keeps its head); else the
  sorted label names of the training file's `records` (all of them, before data.limit).
  """
  saved_path = os.path.join(workdir, LABELS_FILE) if workdir else None
  saved = load(saved_path) if saved_path and os.path.exists(saved_path) else None
  if cfg_data.get("labels"):
    fixed = from_config(cfg_data.labels, cfg_data.get("label_sep") or "|")
    if saved is not None and saved.names != fixed.names:
      raise ValueError(
        f"{saved_path} holds the labels this workdir was trained with ({saved.describe()}), not "
        f"data.labels ({fixed.describe()}): use a new --workdir for another label set"
      )
    return fixed, "data.labels"
  if saved is not None:
    return saved, f"the workdir's {saved_path}"
  names = sort_names(name for r in records for name in r.labels)
  if not names:
    raise ValueError(
      f"{path}: no row has a label: a multi-label table names each row's labels in its labels "
      "column, joined by data.label_sep (e.g. 'cat|red car')"
    )
  return LabelSet(names=names), f"the label names of {path}"


def check_known(records: Sequence, label_set: LabelSet, path: str, origin: str) -> None:
  """Raises UnknownLabelError naming the file, line and label of the first row with a label
  outside `label_set` (and how many rows have one)."""
  bad = [(r, label_set.unknown(r.labels)) for r in records]
  bad = [(r, unknown) for r, unknown in bad if unknown]
  if not bad:
    return
  record, unknown = bad[0]
  more = f" ({len(bad) - 1} more row(s) have unknown labels too)" if len(bad) > 1 else ""
  fix = (
    "add it to data.labels"
    if origin == "data.labels"
    else "train with data.labels listing every label"
    if origin.startswith("the label names")
    else "train a new workdir with it"
  )
  raise UnknownLabelError(
    f"{path}:{record.line}: label {unknown[0]!r} is not in the label set ({len(label_set)} "
    f"labels from {origin}: {label_set.describe()}){more}. Fix the row's labels, or {fix}"
  )
