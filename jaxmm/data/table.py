"""The plain table layout: a folder with `train.jsonl` or `train.csv`, optional `val.*`, `test.*`.

Columns (their names are config keys, `data.columns`):

* `image`: the image file, a path relative to the table's folder (any depth) or absolute;
* `text`: the caption;
* `labels`: multi-label data: label names joined by `data.label_sep` ('|'); in JSONL also a list;
* `match`: matching data instead of `labels`: 1 when the text describes the image, else 0.

CSV files are standard CSV (fields with commas, quotes or line breaks in double quotes) read with
the `csv` module; JSONL files hold one JSON object per line. Line breaks in captions come out as
`\n`. The folder's layout (this one, COMP5329's or S0's) is told from its training file
(`layout_of_file`). Errors name the file and line.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import unicodedata
from collections.abc import Iterable, Iterator, Sequence

from jaxmm.data.comp5329 import (
  HEADER_LABELLED,
  HEADER_UNLABELLED,
  CsvFormatError,
  normalize_newlines,
  read_utf8,
)
from jaxmm.data.matching import HEADER_LABELLED as MATCH_LABELLED
from jaxmm.data.matching import HEADER_UNLABELLED as MATCH_UNLABELLED

EXTENSIONS = (".jsonl", ".csv")
LAYOUTS = ("auto", "table", "comp5329", "matching")
# What the layouts' files look like, for messages.
DESCRIPTIONS = {
  "table": "a table (train.jsonl or train.csv with columns image, text, labels or match)",
  "comp5329": "the COMP5329 layout (train.csv with ImageID,Labels,Caption + data/)",
  "matching": "the S0 matching layout (train.csv with id,caption,image_id,label + train_images/)",
}


@dataclasses.dataclass(frozen=True)
class Columns:
  """The column names of a table (config `data.columns`)."""

  image: str = "image"
  text: str = "text"
  labels: str = "labels"
  match: str = "match"

  @classmethod
  def from_config(cls, cfg_data) -> Columns:
    given = cfg_data.get("columns") or {}
    return cls(**{f.name: str(given.get(f.name, f.default)) for f in dataclasses.fields(cls)})

  def key(self, role: str) -> str:
    """The config key that names the column of `role` ('labels' -> data.columns.labels)."""
    return f"data.columns.{role}"


@dataclasses.dataclass(frozen=True)
class TableRecord:
  """One row: `image_id` is the image column as written, `path` the file it names.

  `labels` holds the row's label names (multi-label data), `label` its match value (matching data,
  None when the file has no such column).
  """

  image_id: str
  caption: str
  labels: tuple[str, ...] = ()
  label: int | None = None
  path: str = ""
  # 1-based line of the row in its file (the CSV header and a JSONL's first row are line 1).
  line: int = dataclasses.field(default=0, compare=False, repr=False)


class TableFormatError(CsvFormatError):
  """A table file that cannot be read as configured; the message names the file, line and key."""


def find_split_file(root: str, stem: str) -> str | None:
  """`root/<stem>.jsonl` or `root/<stem>.csv`, None when neither exists; both is an error."""
  found = [
    os.path.join(root, stem + ext)
    for ext in EXTENSIONS
    if os.path.isfile(os.path.join(root, stem + ext))
  ]
  if len(found) > 1:
    raise TableFormatError(
      f"{root} holds both {stem}.jsonl and {stem}.csv; keep one of them, or name the one to read "
      f"with --config.data.{stem}_csv=FILE"
    )
  return found[0] if found else None


def layout_of_file(path: str) -> str:
  """'table', 'comp5329' or 'matching': which reader a training file (or --csv) needs, from its
  extension and header line."""
  if path.lower().endswith(".jsonl"):
    return "table"
  with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
    header = f.readline().rstrip("\r\n")
  if header in (HEADER_LABELLED, HEADER_UNLABELLED):
    return "comp5329"
  cells = tuple(next(csv.reader([header]), ()))
  if cells in (MATCH_LABELLED, MATCH_UNLABELLED):
    return "matching"
  return "table"


def file_columns(path: str) -> list[str]:
  """The columns of a table file: the CSV header, or the keys of a JSONL file's first row."""
  for _, row in _rows(path):
    return list(row)
  return []


def read_table(
  path: str | os.PathLike,
  columns: Columns = Columns(),
  label_sep: str = "|",
  *,
  need: str | None = None,
  base_dir: str | None = None,
  trained: bool = False,
) -> list[TableRecord]:
  """Every row of a table file, in file order.

  need: 'labels' or 'match' when that column must be there (training, evaluation); otherwise it
  is read when present. Image paths are resolved against `base_dir` (default: the file's folder).
  Errors name the file, the line and, for a missing column, the columns the file has and the
  config key that names it (`trained`: a trained run's file, whose columns are the run's).
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such table file; check data.root / --csv")
  base_dir = base_dir or os.path.dirname(os.path.abspath(path))
  records = []
  roles = ("image", "text") + ((need,) if need else ())
  every_row = path.lower().endswith(".jsonl")  # a CSV's rows all have its header's columns
  for line, row in _rows(path):
    if every_row or not records:
      _check_columns(path, row, columns, roles, line, trained)
    records.append(_record(path, line, row, columns, label_sep, base_dir))
  return records


def _check_columns(
  path: str, row: dict, columns: Columns, roles: Sequence[str], line: int, trained: bool = False
):
  missing = [role for role in roles if getattr(columns, role) not in row]
  if not missing:
    return
  what = "keys" if path.lower().endswith(".jsonl") else "columns"
  have = ", ".join(repr(k) for k in row) or "none"
  settings = " and ".join(f"--config.{columns.key(r)}=<{what[:-1]}>" for r in missing)
  names = " or ".join(f"{getattr(columns, r)!r} ({columns.key(r)})" for r in missing)
  where = f"{path}:{line}" if what == "keys" else f"{path}:1"
  fix = (
    f"the run was trained with these {what}: rename them in the file"
    if trained
    else f"Rename the {what} in the file, or name the file's own with {settings}"
  )
  other_sep = [sep for sep in (";", "\t") if len(row) == 1 and sep in next(iter(row), "")]
  if what == "columns" and other_sep:
    fix = (
      f"The header holds {other_sep[0]!r} between its names: this file is not comma-separated. "
      "Save it as CSV with commas (fields holding commas in double quotes), or as .jsonl"
    )
  raise TableFormatError(f"{where}: no {what[:-1]} {names}; its {what} are {have}. {fix}")


def _rows(path: str) -> Iterator[tuple[int, dict]]:
  """(line, row as a dict) for every row: JSONL objects, or CSV rows keyed by the header."""
  text = read_utf8(path)
  if path.lower().endswith(".jsonl"):
    yield from _jsonl_rows(path, text)
  else:
    yield from _csv_rows(path, text)


def _jsonl_rows(path: str, text: str) -> Iterator[tuple[int, dict]]:
  for line, raw in enumerate(text.split("\n"), start=1):
    if not raw.strip():
      continue
    try:
      row = json.loads(raw)
    except json.JSONDecodeError as e:
      raise TableFormatError(
        f"{path}:{line}: not a JSON object ({e.msg} at column {e.colno}); "
        f"the line reads {raw[:80]!r}"
      ) from None
    if not isinstance(row, dict):
      raise TableFormatError(
        f"{path}:{line}: a JSONL row must be a JSON object "
        f'({{"image": ..., "text": ...}}), got {raw[:80]!r}'
      )
    yield line, row


# A caption may be long (a document's text): csv's default cap of 131,072 characters per field
# would call such a row malformed.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))


def _csv_rows(path: str, text: str) -> Iterator[tuple[int, dict]]:
  with io.StringIO(text, newline="") as f:
    reader = csv.reader(f, strict=True)
    try:
      header = [h.strip() for h in next(reader, [])]
    except csv.Error as e:
      raise TableFormatError(f"{path}:1: unreadable header ({e})") from None
    twice = sorted({h for h in header if header.count(h) > 1})
    if twice:
      raise TableFormatError(f"{path}:1: column(s) {twice} appear more than once in the header")
    line = reader.line_num + 1
    while True:
      try:
        cells = next(reader)
      except StopIteration:
        break
      except csv.Error as e:
        raise TableFormatError(
          f"{path}:{line}: malformed CSV ({e}); a field with commas, quotes "
          "or line breaks must be in double quotes"
        ) from None
      if cells and any(c.strip() for c in cells):  # blank lines carry no row
        if len(cells) != len(header):
          raise TableFormatError(
            f"{path}:{line}: {len(cells)} fields, expected {len(header)} ({','.join(header)}); "
            f"a field with commas must be in double quotes. Row starts {','.join(cells)[:80]!r}"
          )
        yield line, dict(zip(header, cells))
      line = reader.line_num + 1


def _record(
  path: str, line: int, row: dict, columns: Columns, label_sep: str, base_dir: str
) -> TableRecord:
  where = f"{path}:{line}"
  image = row.get(columns.image)
  if not isinstance(image, str) or not image.strip():
    raise TableFormatError(
      f"{where}: the {columns.image!r} column must name an image file, got {image!r}"
    )
  text = row.get(columns.text)
  if not isinstance(text, str):
    raise TableFormatError(f"{where}: the {columns.text!r} column must be text, got {text!r}")
  labels: tuple[str, ...] = ()
  if columns.labels in row:
    labels = split_labels(row[columns.labels], label_sep, where=where, column=columns.labels)
  label = None
  if columns.match in row:
    label = _match_value(row[columns.match], where, columns.match)
  image = image.strip()
  return TableRecord(
    image_id=image,
    caption=normalize_newlines(text),
    labels=labels,
    label=label,
    path=os.path.normpath(os.path.join(base_dir, image)),
    line=line,
  )


def split_labels(
  value, label_sep: str, *, where: str = "", column: str = "labels"
) -> tuple[str, ...]:
  """'cat | red car' -> ('cat', 'red car'); a JSON list of names is taken as it is (whole numbers
  as their digits). Names are stripped of surrounding spaces and in Unicode's composed form (NFC:
  'café' typed two ways is one label); empty ones (a trailing separator) are dropped."""
  whole = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
  if whole(value):
    value = str(value)
  if isinstance(value, list):
    value = [str(v) if whole(v) else v for v in value]
    if not all(isinstance(v, str) for v in value):
      raise TableFormatError(
        f"{where}: the {column!r} list must hold label names (strings), got {value!r}"
      )
    bad = [v for v in value if label_sep in v]
    if bad:
      raise TableFormatError(
        f"{where}: label name(s) {bad} hold the separator "
        f"data.label_sep={label_sep!r}; rename them or set another separator"
      )
    names = [v.strip() for v in value]
  elif isinstance(value, str):
    names = [v.strip() for v in value.split(label_sep)]
  elif value is None:
    names = []
  else:
    raise TableFormatError(
      f"{where}: the {column!r} column must hold label names joined by "
      f"{label_sep!r} (or, in JSONL, a list of names), got {value!r}"
    )
  return tuple(unicodedata.normalize("NFC", n) for n in names if n)


def _match_value(value, where: str, column: str) -> int:
  if isinstance(value, bool):
    return int(value)
  if value in (0, 1, "0", "1"):
    return int(value)
  raise TableFormatError(f"{where}: the {column!r} column must be 0 or 1, got {value!r}")


def write_table(path: str | os.PathLike, rows: Iterable[dict], fieldnames: Sequence[str]) -> None:
  """Rows as JSONL (a `.jsonl` path) or standard CSV (anything else), columns in `fieldnames`
  order; read_table reads them back."""
  path = os.fspath(path)
  rows = list(rows)
  if path.lower().endswith(".jsonl"):
    with open(path, "w", encoding="utf-8") as f:
      for row in rows:
        f.write(json.dumps({k: row.get(k, "") for k in fieldnames}, ensure_ascii=False) + "\n")
    return
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.DictWriter(
      f,
      fieldnames=list(fieldnames),
      lineterminator="\n",
      quoting=csv.QUOTE_MINIMAL,
      extrasaction="ignore",
    )
    writer.writeheader()
    writer.writerows(rows)


# --- which layout a dataset folder holds ------------------------------------------------------

# The layouts each task reads; the task that reads a layout it does not.
READS = {"multilabel": ("comp5329", "table"), "matching": ("matching", "table")}
_TASK_FOR = {"comp5329": "multilabel", "matching": "matching"}
# The value of a key that picks a task: config.task, or pretext.data for a pretext run.
_KEY_VALUES = {
  "task": {"multilabel": "multilabel", "matching": "matching"},
  "pretext.data": {"multilabel": "comp5329", "matching": "matching"},
}


@dataclasses.dataclass(frozen=True)
class Layout:
  name: str  # 'table' | 'comp5329' | 'matching'
  train_path: str


def find_layout(cfg_data, task: str, *, task_key: str = "task") -> Layout:
  """The layout of `data.root` for `task` ('multilabel' | 'matching'), from its training file
  (data.layout='auto') or as data.layout says.

  A folder the task cannot read is an error naming the layout found and the key to set:
  `task_key` ('task', or 'pretext.data' for a pretext run) when it holds the other task's data.
  """
  root, layout = cfg_data.root, cfg_data.get("layout") or "auto"
  if layout not in LAYOUTS:
    raise ValueError(f"data.layout={layout!r} is not one of {LAYOUTS}")
  train = cfg_data.train_csv
  if train == "train.csv" and layout in ("auto", "table"):
    path = find_split_file(root, "train")
  else:
    path = os.path.join(root, train) if os.path.isfile(os.path.join(root, train)) else None
  if path is None:
    held = sorted(os.listdir(root))
    listing = ", ".join(held[:8]) + (f" and {len(held) - 8} more" if len(held) > 8 else "")
    wanted = (
      "train.jsonl or train.csv" if train == "train.csv" and layout in ("auto", "table") else train
    )
    raise FileNotFoundError(
      f"data.root={root!r} has no {wanted}: it holds {listing or 'nothing'}. A dataset folder "
      f"holds {DESCRIPTIONS['table']}, or {DESCRIPTIONS['comp5329']}, or "
      f"{DESCRIPTIONS['matching']}; --config.data.train_csv names another training file"
    )
  found = layout_of_file(path) if layout == "auto" else layout
  key_hint = _key_hint(task_key)
  if found not in READS[task]:
    other = _TASK_FOR[found]
    if layout == "auto":
      raise ValueError(
        f"data.root={root!r} holds {DESCRIPTIONS[found]} ({path}), which task {task!r} does not "
        f"read: set {key_hint(other)} (or point data.root at {task} data)"
      )
    raise ValueError(
      f"data.layout={layout!r} does not fit task {task!r}, which reads "
      f"{' or '.join(repr(x) for x in READS[task])}: set --config.data.layout=auto, or "
      f"{key_hint(other)}"
    )
  if found == "table":
    _check_table_task(path, Columns.from_config(cfg_data), task, key_hint)
  return Layout(found, path)


def _key_hint(task_key: str):
  values = _KEY_VALUES.get(task_key, _KEY_VALUES["task"])
  return lambda task: f"--config.{task_key}={values[task]}"


def _check_table_task(path: str, columns: Columns, task: str, key_hint) -> None:
  """A table of the other task's data (a `labels` column for matching, say) is refused, naming
  what the file holds; a table with neither column is left to read_table's column error."""
  role, other_role = ("labels", "match") if task == "multilabel" else ("match", "labels")
  have = file_columns(path)
  if getattr(columns, role) in have or getattr(columns, other_role) not in have:
    return
  kind = "multi-label" if other_role == "labels" else "matching"
  other = "matching" if task == "multilabel" else "multilabel"
  raise ValueError(
    f"{path} is a {kind} table (columns {', '.join(repr(c) for c in have)}): task {task!r} "
    f"reads the column {getattr(columns, role)!r} ({columns.key(role)}). Set "
    f"{key_hint(other)}, or name the file's {role} column with --config.{columns.key(role)}=NAME"
  )


def val_file(cfg_data) -> str | None:
  """A table folder's val file: data.val_csv when set, else val.jsonl / val.csv when present."""
  if cfg_data.get("val_csv"):
    path = os.path.join(cfg_data.root, cfg_data.val_csv)
    if not os.path.isfile(path):
      raise FileNotFoundError(
        f"data.val_csv={cfg_data.val_csv!r}: {path} does not exist; set "
        "--config.data.val_csv='' to use val.jsonl / val.csv or cut the val "
        "split from the training file"
      )
    return path
  return find_split_file(cfg_data.root, "val")
