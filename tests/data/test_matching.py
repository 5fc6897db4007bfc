"""Tests for the S0 image-caption matching CSV layout (real val.csv when ../shared/data has it)."""

from __future__ import annotations

import os
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxmm.data.comp5329 import CsvFormatError, normalize_newlines
from jaxmm.data.matching import MatchRecord, matching_image_path, read_matching, write_matching

DATA_ROOT = pathlib.Path(
  os.environ.get(
    "JAXMM_SHARED_DATA", pathlib.Path(__file__).resolve().parents[3] / "shared" / "data"
  )
)
MATCHING_DIR = DATA_ROOT / "matching-dev"
HEADER = "id,caption,image_id,label\n"


def _write(tmp_path, text: str, name: str = "m.csv") -> str:
  path = tmp_path / name
  path.write_text(text, encoding="utf-8", newline="")
  return str(path)


@pytest.mark.realdata
@pytest.mark.skipif(
  not (MATCHING_DIR / "val.csv").is_file(), reason=f"matching data not found under {MATCHING_DIR}"
)
def test_real_val_csv():
  records = read_matching(MATCHING_DIR / "val.csv")
  assert len(records) == 1164
  assert records[0] == MatchRecord(
    "b9e04892-ae43-5986-8787-dbfee45db349",
    "two men setting up a blue ice fishing hut on an iced over lake",
    "103205630_682ca7285b",
    1,
  )
  assert sum(r.label for r in records) == 491 and {r.label for r in records} == {0, 1}
  assert len({r.image_id for r in records}) == 491
  assert any("," in r.caption for r in records)  # quoted captions come back whole
  for r in records[:5]:
    assert os.path.isfile(matching_image_path(MATCHING_DIR, "val", r.image_id))


def test_read_quoted_multiline_and_unlabelled(tmp_path):
  path = _write(tmp_path, HEADER + 'a,"A dog , a ball",img1,1\r\nb,"say ""hi""\nthere",img2,0\n\n')
  assert read_matching(path) == [
    MatchRecord("a", "A dog , a ball", "img1", 1),
    MatchRecord("b", 'say "hi"\nthere', "img2", 0),
  ]
  path = _write(tmp_path, "\ufeffid,caption,image_id\nt1,a cat,img9\n", "test.csv")
  assert read_matching(path) == [MatchRecord("t1", "a cat", "img9", None)]


def test_write_read_round_trip(tmp_path):
  labelled = [
    MatchRecord("1", 'A "quoted", caption', "im_1", 1),
    MatchRecord("2", "two\nlines", "im_2", 0),
  ]
  write_matching(tmp_path / "l.csv", labelled)
  assert (tmp_path / "l.csv").read_text().startswith(HEADER)
  assert read_matching(tmp_path / "l.csv") == labelled
  unlabelled = [MatchRecord("3", "x", "im_3", None)]
  write_matching(tmp_path / "u.csv", unlabelled)
  assert (tmp_path / "u.csv").read_text().startswith("id,caption,image_id\n")
  assert read_matching(tmp_path / "u.csv") == unlabelled


def test_writer_refuses_what_reader_would_reject(tmp_path):
  with pytest.raises(ValueError, match="no label"):
    write_matching(
      tmp_path / "x.csv", [MatchRecord("1", "a", "i", 1), MatchRecord("2", "b", "i", None)]
    )
  with pytest.raises(ValueError, match="0/1"):
    write_matching(tmp_path / "x.csv", [MatchRecord("1", "a", "i", 2)])
  with pytest.raises(ValueError, match="empty id"):
    write_matching(tmp_path / "x.csv", [MatchRecord("", "a", "i", 1)])
  with pytest.raises(ValueError, match=r"records \['7'\] hold carriage returns"):
    write_matching(tmp_path / "x.csv", [MatchRecord("7", "two\r\nlines", "i", 1)])


_FIELD = st.text(min_size=1, max_size=20)


@given(
  st.lists(st.tuples(_FIELD, st.text(max_size=40), _FIELD), max_size=6, unique_by=lambda t: t[0]),
  st.sampled_from([None, 0, 1]),
)
@settings(
  max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_round_trip_property(tmp_path, rows, label):
  # Captions as the reader returns them (line breaks as "\n"); ids keep any "\r".
  records = [
    MatchRecord(i, normalize_newlines(c), im, None if label is None else (label + k) % 2)
    for k, (i, c, im) in enumerate(rows)
  ]
  write_matching(tmp_path / "rt.csv", records)
  assert read_matching(tmp_path / "rt.csv") == records


def test_crlf_file_captions_have_no_stray_cr(tmp_path):
  body = HEADER + 'a,"two\nlines",img1,1\nb,plain,img2,0\nc,"lone\rcr",img3,1\n'
  unix = read_matching(_write(tmp_path, body, "unix.csv"))
  windows = read_matching(_write(tmp_path, body.replace("\n", "\r\n"), "windows.csv"))
  assert windows == unix
  assert [r.caption for r in windows] == ["two\nlines", "plain", "lone\ncr"]
  assert [r.line for r in windows] == [2, 4, 5]


def test_not_utf8_names_file_line_and_fix(tmp_path):
  path = tmp_path / "m.csv"
  path.write_bytes((HEADER + "a,a dog,img1,1\nb,a café,img2,0\n").encode("latin-1"))
  with pytest.raises(CsvFormatError) as e:
    read_matching(path)
  msg = str(e.value)
  assert msg.startswith(f"{path}:3: not UTF-8 text: byte 0xe9 at column 8")
  assert f"iconv -f latin1 -t utf-8 {path}" in msg and "'b,a caf\ufffd,img2,0'" in msg
  path.write_text(path.read_bytes().decode("latin-1"), encoding="utf-8")
  assert read_matching(path)[1].caption == "a café"


@pytest.mark.parametrize(
  "header", ["ImageID,Labels,Caption", "id,caption,label,image_id", "id,caption"]
)
def test_bad_header_names_file(tmp_path, header):
  path = _write(tmp_path, f"{header}\na,b,c,1\n")
  with pytest.raises(CsvFormatError, match=r"m\.csv:1: header is"):
    read_matching(path)


@pytest.mark.parametrize("label", ["2", "", "yes", "1.0", " 1"])
def test_bad_label_names_file_and_line(tmp_path, label):
  # The quoted two-line caption takes lines 2-3, so the bad row is line 4.
  path = _write(tmp_path, HEADER + 'a,"one\ntwo",img,1\nb,cap,img,' + label + "\n")
  with pytest.raises(CsvFormatError, match=rf"m\.csv:4: record 'b' has label {label!r}"):
    read_matching(path)


def test_field_count_duplicate_and_missing_file(tmp_path):
  with pytest.raises(CsvFormatError, match=r"m\.csv:3: 5 fields, expected 4"):
    read_matching(_write(tmp_path, HEADER + "a,cap,img,1\nb,a, b,img,0\n"))
  with pytest.raises(CsvFormatError, match=r":3: duplicate id 'a' \(first on line 2\)"):
    read_matching(_write(tmp_path, HEADER + "a,cap,img,1\na,cap2,img,0\n"))
  with pytest.raises(FileNotFoundError, match="nope.csv"):
    read_matching(tmp_path / "nope.csv")


def test_image_path_layout():
  assert matching_image_path("/data/m", "val", "103205630_682ca7285b") == (
    os.path.join("/data/m", "val_images", "103205630_682ca7285b.jpg")
  )
