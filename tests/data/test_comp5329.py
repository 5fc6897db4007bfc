"""Tests for the COMP5329 CSV reader/writer, labels and split (real data when ../shared/data has
it)."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jaxmm.data.comp5329 import (
  LABEL_IDS,
  NUM_LABELS,
  CsvFormatError,
  Record,
  labels_to_multihot,
  multihot_to_labels,
  normalize_newlines,
  read_comp5329,
  split_train_val,
  write_comp5329,
)

# JAXMM_SHARED_DATA overrides; the default is the shared folder beside the repo (never in it).
DATA_ROOT = pathlib.Path(
  os.environ.get(
    "JAXMM_SHARED_DATA", pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"
  )
)
COMP_DIR = DATA_ROOT / "comp5329-dev"
needs_data = pytest.mark.skipif(
  not (COMP_DIR / "train.csv").is_file(), reason=f"COMP5329 data not found under {COMP_DIR}"
)


def _write(tmp_path, text: str, name: str = "x.csv") -> str:
  path = tmp_path / name
  path.write_text(text, encoding="utf-8", newline="")
  return str(path)


@pytest.fixture(scope="module")
def real_train():
  return read_comp5329(COMP_DIR / "train.csv")


@pytest.mark.realdata
@needs_data
def test_real_train_quirky_captions_verbatim(real_train):
  assert len(real_train) == 12000
  assert [r.image_id for r in real_train] == [f"{i}.jpg" for i in range(12000)]
  by_id = {r.image_id: r for r in real_train}
  assert by_id["1338.jpg"] == Record(
    "1338.jpg", (1,), 'A man surfing with titling that reads "spray."'
  )
  assert by_id["552.jpg"].caption == (
    'A yellow and blue fire hydrant that has falling into the street with "caution" tape around it.'
  )
  assert by_id["1014.jpg"].caption == (
    "Atop an oriental rug rests a dog and two low-lying tables and a taller one\n"
    "full of very tidily arranged piles of jeans and tops."
  )
  assert by_id["2259.jpg"] == Record(
    "2259.jpg", (1, 3), "Men loading up a van with bags and suitcases.\n."
  )
  assert by_id["6751.jpg"].caption == (  # the space before the line break is part of the caption
    "Red motor \nscooter parked on the sand with a sunset in background."
  )
  # This 12000-record cut holds 3 two-line captions and 37 with inner quotes (full file: 4 and ~82).
  assert sorted(r.image_id for r in real_train if "\n" in r.caption) == [
    "1014.jpg",
    "2259.jpg",
    "6751.jpg",
  ]
  assert sum('"' in r.caption for r in real_train) == 37
  assert all(r.labels and set(r.labels) <= set(LABEL_IDS) for r in real_train)
  assert not any(r.caption.endswith("\r") or r.caption.startswith('"') for r in real_train)


@pytest.mark.realdata
@needs_data
def test_real_test_csv_unlabelled():
  records = read_comp5329(COMP_DIR / "test.csv")
  assert len(records) == 2000
  assert [r.image_id for r in records] == [f"{i}.jpg" for i in range(30000, 32000)]
  assert all(r.labels == () and r.caption for r in records)


@pytest.mark.realdata
@needs_data
def test_real_train_round_trips_through_writer(real_train, tmp_path):
  path = tmp_path / "train.csv"
  write_comp5329(path, real_train)
  assert read_comp5329(path) == real_train


def test_reads_quotes_multiline_and_crlf(tmp_path):
  path = _write(
    tmp_path,
    "ImageID,Labels,Caption\r\n"
    '0.jpg,1 3,"A sign that reads "stop, now.""\r\n'
    '1.jpg,19,"two\r\nlines"\r\n'
    '2.JPG,,"no labels, commas"\r\n',
  )
  records = read_comp5329(path)
  assert records == [
    Record("0.jpg", (1, 3), 'A sign that reads "stop, now."'),
    Record("1.jpg", (19,), "two\nlines"),  # the file's CRLF is not part of the caption
    Record("2.JPG", (), "no labels, commas"),
  ]
  assert [r.line for r in records] == [2, 3, 5]


def test_crlf_file_captions_have_no_stray_cr(tmp_path):
  # The same records from a Windows-made (CRLF) and a Unix-made file, and a classic-Mac lone CR
  # inside a caption: the captions come out identical, with "\n" line breaks only.
  body = (
    'ImageID,Labels,Caption\n0.jpg,1,"A dog\non a mat"\n1.jpg,2,"three\nline\n'
    'caption with "quotes""\n2.jpg,3,"a lone\rbreak"\n'
  )
  unix = read_comp5329(_write(tmp_path, body, "unix.csv"))
  windows = read_comp5329(_write(tmp_path, body.replace("\n", "\r\n"), "windows.csv"))
  assert windows == unix
  assert [r.caption for r in windows] == [
    "A dog\non a mat",
    'three\nline\ncaption with "quotes"',
    "a lone\nbreak",
  ]
  assert not any("\r" in r.caption for r in windows)
  assert [r.line for r in windows] == [r.line for r in unix] == [2, 4, 7]


def test_not_utf8_names_file_line_and_fix(tmp_path):
  path = tmp_path / "latin1.csv"
  path.write_bytes(
    'ImageID,Labels,Caption\n0.jpg,1,"a dog"\n1.jpg,17,"a cat in a café"\n'
    '2.jpg,17,"crème brûlée"\n'.encode("latin-1")
  )
  with pytest.raises(CsvFormatError) as e:
    read_comp5329(path)
  msg = str(e.value)
  assert msg.startswith(f"{path}:3: not UTF-8 text: byte 0xe9 at column 25")
  assert "(1 more line(s) after it too)" in msg and "a cat in a caf\ufffd" in msg
  assert f"iconv -f latin1 -t utf-8 {path} > {path}.utf8" in msg
  assert not isinstance(e.value, UnicodeDecodeError)
  # The fix the message gives works.
  path.write_text(path.read_bytes().decode("latin-1"), encoding="utf-8")
  assert read_comp5329(path)[1].caption == "a cat in a café"


def test_bom_and_missing_final_newline(tmp_path):
  path = _write(tmp_path, '\ufeffImageID,Caption\n30000.jpg,"a cat"')
  assert read_comp5329(path) == [Record("30000.jpg", (), "a cat")]


def test_malformed_line_names_line_number(tmp_path):
  # The two-line record occupies lines 2-3, so the broken record is on line 5.
  path = _write(
    tmp_path,
    'ImageID,Labels,Caption\n0.jpg,1,"first\nsecond"\n1.jpg,1,"ok"\n'
    "2.jpg,1,caption without quotes\n",
  )
  with pytest.raises(CsvFormatError, match=r"x\.csv:5: malformed record '2\.jpg"):
    read_comp5329(path)


def test_unknown_label_names_record_and_id(tmp_path):
  path = _write(tmp_path, 'ImageID,Labels,Caption\n0.jpg,1,"a"\n7.jpg,1 12,"b"\n')
  with pytest.raises(CsvFormatError, match=r":3: record '7\.jpg' has unknown label id\(s\) \[12\]"):
    read_comp5329(path)


def test_duplicate_id_names_both_lines(tmp_path):
  path = _write(tmp_path, 'ImageID,Labels,Caption\n5.jpg,1,"a"\n6.jpg,1,"b"\n5.jpg,2,"c"\n')
  with pytest.raises(CsvFormatError, match=r":4: duplicate ImageID '5\.jpg' \(first on line 2\)"):
    read_comp5329(path)


@pytest.mark.parametrize("header", ["ImageID,Caption,Labels", "id,caption,image_id,label", ""])
def test_wrong_header_names_it(tmp_path, header):
  path = _write(tmp_path, f'{header}\n0.jpg,1,"a"\n')
  with pytest.raises(CsvFormatError, match=rf"x\.csv:1: header is {header!r}"):
    read_comp5329(path)


@pytest.mark.parametrize("labelled", [True, False])
def test_row_with_unknown_image_type_is_not_glued_to_the_caption_above(tmp_path, labelled):
  # The reader splits records at '<id>.jpg|jpeg|png,': a '.gif' row would become caption text.
  row = '1.gif,2,"a bike"' if labelled else '1.gif,"a bike"'
  head = "ImageID,Labels,Caption\n0.jpg,1," if labelled else "ImageID,Caption\n0.jpg,"
  path = _write(tmp_path, f'{head}"a dog"\n{row}\n')
  with pytest.raises(
    CsvFormatError,
    match=r"x\.csv:3: this line looks like the record of image "
    r"'1\.gif'.*caption of '0\.jpg' \(line 2\)",
  ):
    read_comp5329(path)
  with pytest.raises(
    ValueError, match="would read as a new record"
  ):  # nor does the writer make one
    write_comp5329(
      tmp_path / "w.csv",
      [Record("0.jpg", (1,) if labelled else (), f"dog\n{row}")],
      labelled=labelled,
    )


def test_missing_file_names_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.csv"):
    read_comp5329(tmp_path / "nope.csv")


def test_writer_refuses_carriage_returns_the_reader_would_change(tmp_path):
  path = tmp_path / "w.csv"
  with pytest.raises(ValueError, match=r"caption of '0\.jpg' holds a carriage return"):
    write_comp5329(path, [Record("0.jpg", (1,), "two\r\nlines")])
  write_comp5329(path, [Record("0.jpg", (1,), normalize_newlines("two\r\nlines\r"))])
  assert read_comp5329(path) == [Record("0.jpg", (1,), "two\nlines\n")]


def test_writer_refuses_caption_that_reads_as_new_record(tmp_path):
  with pytest.raises(ValueError, match="'0.jpg'"):
    write_comp5329(tmp_path / "x.csv", [Record("0.jpg", (1,), "a\n1.jpg,b")])


def test_multihot_order_insensitive_and_round_trips():
  a, b = labels_to_multihot([3, 1, 19]), labels_to_multihot([19, 3, 1])
  np.testing.assert_array_equal(a, b)
  assert a.dtype == np.float32 and a.shape == (NUM_LABELS,) == (18,)
  assert multihot_to_labels(a) == (1, 3, 19)
  assert multihot_to_labels(labels_to_multihot([])) == ()
  with pytest.raises(KeyError):
    labels_to_multihot([12])


@given(st.lists(st.sampled_from(LABEL_IDS), max_size=25))
@settings(max_examples=100, deadline=None)
def test_multihot_round_trip_property(labels):
  assert multihot_to_labels(labels_to_multihot(labels)) == tuple(sorted(set(labels)))


def _records(n: int) -> list[Record]:
  return [Record(f"{i}.jpg", (LABEL_IDS[i % NUM_LABELS],), f"caption {i}") for i in range(n)]


def test_split_seeded_and_disjoint():
  records = _records(50)
  train, val = split_train_val(records, 0.2, seed=3)
  assert len(val) == 10 and len(train) == 40
  assert {r.image_id for r in train}.isdisjoint(r.image_id for r in val)
  assert sorted(train + val, key=lambda r: int(r.image_id[:-4])) == records
  assert split_train_val(records, 0.2, seed=3) == (train, val)
  assert split_train_val(records, 0.2, seed=4)[1] != val
  assert len(split_train_val(records, 0.9, seed=0, val_size=7)[1]) == 7  # val_size wins
  # Both halves keep file order, so a split is stable under re-reading.
  assert [r.image_id for r in val] == sorted((r.image_id for r in val), key=lambda s: int(s[:-4]))


@pytest.mark.parametrize("kwargs", [dict(val_fraction=1.0), dict(val_size=50), dict(val_size=-1)])
def test_split_rejects_impossible_sizes(kwargs):
  with pytest.raises(ValueError, match="validation records out of 50"):
    split_train_val(_records(50), **kwargs)


# Arbitrary unicode, plus captions built from the pieces that stress the layout (quotes, commas,
# line breaks, things that look like a record start).
_CAPTION = st.text(st.characters(codec="utf-8"), max_size=60) | st.lists(
  st.sampled_from(['"', ",", "\n", "\r", " ", "a", "1", ".jpg", "7.jpg,", "\r\n", "\ufeff", '""']),
  max_size=20,
).map("".join)


@given(
  data=st.lists(st.tuples(st.lists(st.sampled_from(LABEL_IDS), max_size=4), _CAPTION), max_size=8),
  labelled=st.booleans(),
  ext=st.sampled_from(["jpg", "jpeg", "png", "JPG"]),
)
@settings(
  max_examples=150,
  deadline=None,
  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
def test_write_read_round_trip_property(tmp_path, data, labelled, ext):
  records = [
    Record(f"{i}.{ext}", tuple(labels) if labelled else (), caption)
    for i, (labels, caption) in enumerate(data)
  ]
  path = tmp_path / "rt.csv"
  try:
    write_comp5329(path, records, labelled=labelled)
  except ValueError:
    assume(False)  # a caption the course layout cannot hold; the writer refuses it loudly
  assert read_comp5329(path) == records


# Image ids: any text without the separators the layout reserves (comma, quote, line breaks).
_ID_STEM = st.text(
  st.characters(codec="utf-8", exclude_characters=',"\r\n'), min_size=1, max_size=12
)


@given(
  stems=st.lists(_ID_STEM, min_size=1, max_size=6, unique=True),
  ext=st.sampled_from(["jpg", "JPEG", "png"]),
  caption=_CAPTION,
)
@settings(
  max_examples=100,
  deadline=None,
  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
def test_round_trip_arbitrary_image_ids(tmp_path, stems, ext, caption):
  records = [
    Record(f"{stem}.{ext}", (LABEL_IDS[i % NUM_LABELS],), caption) for i, stem in enumerate(stems)
  ]
  path = tmp_path / "ids.csv"
  try:
    write_comp5329(path, records)
  except ValueError:
    assume(False)
  assert read_comp5329(path) == records
