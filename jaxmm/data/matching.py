"""Image-caption matching (S0) layout: `id,caption,image_id,label` CSVs, `<split>_images/<id>.jpg`.

Unlike the COMP5329 files these are proper CSV (captions with commas are quoted), so the `csv`
module reads them. `label` is 1 when the caption describes the image, 0 otherwise; unlabelled (test)
files have the header `id,caption,image_id` and records with `label=None`. Line breaks inside
captions come out as `\n` whatever the file's line endings.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Iterable

from jaxmm.data.comp5329 import CsvFormatError, normalize_newlines, read_utf8

HEADER_LABELLED = ("id", "caption", "image_id", "label")
HEADER_UNLABELLED = ("id", "caption", "image_id")


@dataclasses.dataclass(frozen=True)
class MatchRecord:
  """One (caption, image) pair; `label` is 1 (matches), 0 (does not) or None (unlabelled)."""

  id: str
  caption: str
  image_id: str
  label: int | None
  # 1-based first line of the row in its CSV (0 = not read from a file); not part of its identity.
  line: int = dataclasses.field(default=0, compare=False, repr=False)


def read_matching(csv_path: str | os.PathLike) -> list[MatchRecord]:
  """Reads every pair of a matching CSV in file order; errors name the file and line."""
  path = os.fspath(csv_path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such CSV file; check data.root / --csv")
  records: list[MatchRecord] = []
  seen: dict[str, int] = {}
  # Decoded up front, so a file that is not UTF-8 fails with its line named, not mid-iteration.
  with io.StringIO(read_utf8(path), newline="") as f:
    reader = csv.reader(f, strict=True)
    try:
      header = tuple(next(reader, ()))
    except csv.Error as e:
      raise CsvFormatError(f"{path}:1: unreadable header ({e})") from None
    if header not in (HEADER_LABELLED, HEADER_UNLABELLED):
      raise CsvFormatError(
        f"{path}:1: header is {','.join(header)!r}; expected {','.join(HEADER_LABELLED)!r} "
        f"(labelled) or {','.join(HEADER_UNLABELLED)!r} (unlabelled). "
        "Is this a matching-layout file?"
      )
    labelled = header == HEADER_LABELLED
    line_no = reader.line_num + 1  # first line of the next record (a quoted caption may span lines)
    while True:
      try:
        row = next(reader)
      except StopIteration:
        break
      except csv.Error as e:
        raise CsvFormatError(f"{path}:{line_no}: malformed CSV ({e}); check the quoting") from None
      if row:  # blank lines carry no record
        records.append(_parse_row(row, labelled, path, line_no, seen))
      line_no = reader.line_num + 1
  return records


def _parse_row(
  row: list[str], labelled: bool, path: str, line_no: int, seen: dict[str, int]
) -> MatchRecord:
  n_fields = len(HEADER_LABELLED if labelled else HEADER_UNLABELLED)
  if len(row) != n_fields:
    raise CsvFormatError(
      f"{path}:{line_no}: {len(row)} fields, expected {n_fields}; a caption with commas must be "
      f"in double quotes. Row starts {','.join(row)[:80]!r}"
    )
  record_id, caption, image_id = row[:3]
  if not record_id or not image_id:
    raise CsvFormatError(f"{path}:{line_no}: empty id or image_id in {','.join(row)[:80]!r}")
  if record_id in seen:
    raise CsvFormatError(
      f"{path}:{line_no}: duplicate id {record_id!r} (first on line {seen[record_id]}); "
      "remove the duplicate row."
    )
  seen[record_id] = line_no
  label = None
  if labelled:
    if row[3] not in ("0", "1"):
      raise CsvFormatError(
        f"{path}:{line_no}: record {record_id!r} has label {row[3]!r}; labels must be 0 or 1."
      )
    label = int(row[3])
  return MatchRecord(
    id=record_id, caption=normalize_newlines(caption), image_id=image_id, label=label, line=line_no
  )


def write_matching(csv_path: str | os.PathLike, records: Iterable[MatchRecord]) -> None:
  """Writes records as proper CSV, labelled unless every label is None; read_matching reads them.

  A caption holding a carriage return is refused, as the reader would return it changed.
  """
  records = list(records)
  missing = [r.id for r in records if r.label is None]
  labelled = len(missing) < len(records) or not records
  if labelled and missing:
    raise ValueError(f"records {missing[:5]} have no label while others do; write them separately")
  bad = [r.id for r in records if r.label not in (None, 0, 1)]
  if bad:
    raise ValueError(f"records {bad[:5]} have labels other than 0/1")
  with_cr = [r.id for r in records if "\r" in r.caption]
  if with_cr:
    raise ValueError(
      f"captions of records {with_cr[:5]} hold carriage returns, which the reader "
      "turns into \\n line breaks; pass them through normalize_newlines() first"
    )
  empty = [r for r in records if not r.id or not r.image_id]
  if empty:
    raise ValueError(f"records with an empty id or image_id cannot be read back: {empty[:3]}")
  with open(csv_path, "w", encoding="utf-8", newline="") as f:
    writer = csv.writer(f, lineterminator="\n")
    # QUOTE_MINIMAL quotes only characters of the line terminator, so a field holding a bare "\r"
    # would be written unquoted and read back cut; such rows are written fully quoted.
    quote_all = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow(HEADER_LABELLED if labelled else HEADER_UNLABELLED)
    for r in records:
      row = [r.id, r.caption, r.image_id] + ([str(int(r.label))] if labelled else [])
      (quote_all if any("\r" in field for field in row) else writer).writerow(row)


def matching_image_path(root: str | os.PathLike, split: str, image_id: str) -> str:
  """`{root}/{split}_images/{image_id}.jpg`, the S0 image layout."""
  return os.path.join(os.fspath(root), f"{split}_images", f"{image_id}.jpg")
