"""COMP5329 CSV layout: `ImageID,Labels,Caption` (train) or `ImageID,Caption` (test).

The course files are not valid CSV: captions keep unescaped inner quotes and a few span two lines,
so `pandas.read_csv` fails and the `csv` module garbles them. A record starts at a line beginning
with `<image id>.<ext>,`; everything up to the next such line belongs to it, and the caption is the
text between the first and last double quote of the record, verbatim except for line breaks:
`\r\n` and a lone `\r` inside a caption come out as `\n`, whatever the file's line endings.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
from collections.abc import Iterable, Sequence

import numpy as np

# COCO category ids used by the task: 1..19 without 12 (never present in the data).
LABEL_IDS: tuple[int, ...] = tuple(i for i in range(1, 20) if i != 12)
NUM_LABELS = len(LABEL_IDS)
# Their COCO names, for reports.
LABEL_NAMES: dict[int, str] = {
  1: "person",
  2: "bicycle",
  3: "car",
  4: "motorcycle",
  5: "airplane",
  6: "bus",
  7: "train",
  8: "truck",
  9: "boat",
  10: "traffic light",
  11: "fire hydrant",
  13: "stop sign",
  14: "parking meter",
  15: "bench",
  16: "bird",
  17: "cat",
  18: "dog",
  19: "horse",
}
_LABEL_INDEX = {label: i for i, label in enumerate(LABEL_IDS)}

_IMAGE_ID = r"[^,\"\r\n]+\.(?:jpe?g|png)"
# A record starts at the beginning of the text or right after a newline, with "<id>.jpg,".
_RECORD_START = re.compile(rf"(?:^|\r?\n)(?={_IMAGE_ID},)", re.IGNORECASE)
_WITH_LABELS = re.compile(rf'^({_IMAGE_ID}),([0-9 ]*),"(.*)"$', re.IGNORECASE | re.DOTALL)
_WITHOUT_LABELS = re.compile(rf'^({_IMAGE_ID}),"(.*)"$', re.IGNORECASE | re.DOTALL)
# A line inside a record shaped like a record start, but with an image id the reader does not take
# ('7.gif'): left alone, the reader would glue that row to the previous caption and lose it.
_FOREIGN_START = {
  True: re.compile(r'\n([^,"\r\n]+),[0-9 ]*,"'),
  False: re.compile(r'\n([^,"\r\n]+),"'),
}
HEADER_LABELLED = "ImageID,Labels,Caption"
HEADER_UNLABELLED = "ImageID,Caption"


@dataclasses.dataclass(frozen=True)
class Record:
  """One image-caption pair; `labels` is empty for unlabelled (test) files."""

  image_id: str
  labels: tuple[int, ...]
  caption: str
  # 1-based line of the record in its CSV (0 = not read from a file), for messages that name the
  # row; not part of a record's identity, so records compare equal wherever they came from.
  line: int = dataclasses.field(default=0, compare=False, repr=False)


class CsvFormatError(ValueError):
  """A COMP5329 CSV that cannot be read; the message names the file and line."""


def normalize_newlines(text: str) -> str:
  """`\r\n` and lone `\r` as `\n`: a caption reads the same from a Windows- or Unix-made file."""
  return text.replace("\r\n", "\n").replace("\r", "\n")


def read_utf8(path: str) -> str:
  """The whole text of a UTF-8 file (a leading BOM dropped), line endings untouched.

  Anything else raises CsvFormatError naming the first bad line and the command that converts the
  file, instead of a bare UnicodeDecodeError.
  """
  with open(path, "rb") as f:
    data = f.read()
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
    bad_lines = sum(1 for row in data.split(b"\n") if not _is_utf8(row))
    shown = data.split(b"\n")[line - 1].decode("utf-8", "replace").rstrip("\r")
    more = f" ({bad_lines - 1} more line(s) after it too)" if bad_lines > 1 else ""
    q = shlex.quote(path)
    raise CsvFormatError(
      f"{path}:{line}: not UTF-8 text: byte {data[e.start]:#04x} at column {column} "
      f"({e.reason}){more}; the line reads {shown[:80]!r}. Save the file as UTF-8, e.g. from "
      f"Latin-1: iconv -f latin1 -t utf-8 {q} > {q}.utf8 && mv {q}.utf8 {q} "
      "(-f cp1252 for a file saved by Excel on Windows)"
    ) from None
  return text.removeprefix("\ufeff")


def _is_utf8(data: bytes) -> bool:
  try:
    data.decode("utf-8")
  except UnicodeDecodeError:
    return False
  return True


def read_comp5329(csv_path: str | os.PathLike) -> list[Record]:
  """Reads every record of a COMP5329-layout CSV in file order, captions verbatim but for their
  line breaks (always `\n`); each record knows its line."""
  path = os.fspath(csv_path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such CSV file; check data.root / --csv")
  text = read_utf8(path)
  header, sep, body = text.partition("\n")
  header = header.rstrip("\r")
  if header == HEADER_LABELLED:
    pattern, labelled = _WITH_LABELS, True
  elif header == HEADER_UNLABELLED:
    pattern, labelled = _WITHOUT_LABELS, False
  else:
    raise CsvFormatError(
      f"{path}:1: header is {header!r}; expected {HEADER_LABELLED!r} (labelled) or "
      f"{HEADER_UNLABELLED!r} (test). Is this a COMP5329-layout file?"
    )
  records: list[Record] = []
  seen: dict[str, int] = {}
  line_no = 2  # 1-based line of the current record's first line
  for chunk in _split_records(body):
    raw = chunk.rstrip()  # after the closing quote nothing belongs to the caption
    if raw.strip():
      records.append(_parse_record(raw, pattern, labelled, path, line_no, seen))
    line_no += chunk.count("\n")
  return records


def _split_records(body: str) -> list[str]:
  """Splits the body into raw record chunks, each keeping its trailing newline."""
  starts = [m.end() for m in _RECORD_START.finditer(body)]
  if not starts or starts[0] != 0:
    starts.insert(0, 0)
  starts = sorted(set(starts))
  chunks = [body[a:b] for a, b in zip(starts, starts[1:] + [len(body)])]
  return [c for c in chunks if c]


def _parse_record(
  raw: str, pattern: re.Pattern, labelled: bool, path: str, line_no: int, seen: dict[str, int]
) -> Record:
  match = pattern.match(raw)
  if match is None:
    layout = 'ImageID,Labels,"Caption"' if labelled else 'ImageID,"Caption"'
    raise CsvFormatError(
      f"{path}:{line_no}: malformed record {raw[:80]!r}; expected {layout} with the caption in "
      "double quotes. Fix or remove this line."
    )
  image_id = match.group(1)
  # (A quote that closes the record, as in a caption ending '\n0,', starts nothing.)
  foreign = next((m for m in _FOREIGN_START[labelled].finditer(raw) if m.end() < len(raw)), None)
  if foreign:
    line = line_no + raw[: foreign.start()].count("\n") + 1
    raise CsvFormatError(
      f"{path}:{line}: this line looks like the record of image {foreign.group(1)!r}, but image "
      f"ids must end in .jpg, .jpeg or .png; as it is, it would be read as part of the caption of "
      f"{image_id!r} (line {line_no}). Rename the image or fix the row."
    )
  if image_id in seen:
    raise CsvFormatError(
      f"{path}:{line_no}: duplicate ImageID {image_id!r} (first on line {seen[image_id]}); "
      "each image must appear once. Remove the duplicate row."
    )
  seen[image_id] = line_no
  labels: tuple[int, ...] = ()
  if labelled:
    labels = tuple(int(t) for t in match.group(2).split())
    unknown = [lab for lab in labels if lab not in _LABEL_INDEX]
    if unknown:
      raise CsvFormatError(
        f"{path}:{line_no}: record {image_id!r} has unknown label id(s) {unknown}; valid ids are "
        f"{list(LABEL_IDS)}. Fix the Labels column of this row."
      )
  return Record(
    image_id=image_id,
    labels=labels,
    caption=normalize_newlines(match.group(2 + labelled)),
    line=line_no,
  )


def write_comp5329(
  csv_path: str | os.PathLike, records: Iterable[Record], *, labelled: bool = True
) -> None:
  """Writes records in the course's own (unescaped) layout, which read_comp5329 reads back exactly.

  A caption holding a carriage return is refused: the reader returns line breaks as `\n`, so it
  would not read back equal (`normalize_newlines` first).
  """
  lines = [HEADER_LABELLED if labelled else HEADER_UNLABELLED]
  for r in records:
    if "\r" in r.caption:
      raise ValueError(
        f"caption of {r.image_id!r} holds a carriage return, which the reader turns "
        "into a \\n line break; pass it through normalize_newlines() first"
      )
    if re.search(rf"\n{_IMAGE_ID},", r.caption, re.IGNORECASE) or _FOREIGN_START[labelled].search(
      r.caption
    ):
      raise ValueError(f"caption of {r.image_id!r} holds a line that would read as a new record")
    labels = " ".join(str(lab) for lab in r.labels)
    lines.append(
      f'{r.image_id},{labels},"{r.caption}"' if labelled else f'{r.image_id},"{r.caption}"'
    )
  with open(csv_path, "w", encoding="utf-8", newline="") as f:
    f.write("\n".join(lines) + "\n")


def labels_to_multihot(labels: Sequence[int]) -> np.ndarray:
  """Maps label ids (any order) to a float32 multi-hot over LABEL_IDS, shape (18,)."""
  out = np.zeros(NUM_LABELS, np.float32)
  for label in labels:
    out[_LABEL_INDEX[label]] = 1.0
  return out


def multihot_to_labels(multihot_L: np.ndarray) -> tuple[int, ...]:
  """Inverse of `labels_to_multihot`: the label ids whose entry is set, in LABEL_IDS order."""
  return tuple(LABEL_IDS[i] for i in np.flatnonzero(np.asarray(multihot_L) > 0.5))


def split_train_val(
  records: Sequence[Record],
  val_fraction: float = 0.0,
  *,
  seed: int = 0,
  val_size: int | None = None,
) -> tuple[list[Record], list[Record]]:
  """Seeded random split of labelled records; `val_size` (a count) overrides `val_fraction`."""
  n = len(records)
  n_val = val_size if val_size is not None else int(round(n * val_fraction))
  if not 0 <= n_val < n:
    raise ValueError(f"cannot take {n_val} validation records out of {n}")
  order = np.random.default_rng(seed).permutation(n)
  val_idx = set(order[:n_val].tolist())
  train = [r for i, r in enumerate(records) if i not in val_idx]
  val = [r for i, r in enumerate(records) if i in val_idx]
  return train, val
