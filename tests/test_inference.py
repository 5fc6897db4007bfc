from __future__ import annotations

import numpy as np
import pytest

from jaxmm import inference, tasks
from jaxmm.tasks import base


@pytest.mark.parametrize(
  "spec,want",
  [("2:5", [2, 3, 4]), ("7:", [7, 8, 9]), (":2", [0, 1]), ("-3:", [7, 8, 9]), ("8:100", [8, 9])],
)
def test_parse_rows(spec, want):
  np.testing.assert_array_equal(base.parse_rows(spec, 10), want)


@pytest.mark.parametrize(
  "spec,match",
  [
    ("5", "START:END"),
    ("a:b", "START:END"),
    ("1:2:3", "START:END"),
    ("10:", "selects no row of x.csv"),
  ],
)
def test_parse_rows_errors_name_the_problem(spec, match):
  with pytest.raises(ValueError, match=match):
    base.parse_rows(spec, 10, source="x.csv")


def test_parse_thresholds():
  assert inference.parse_thresholds("0.35", tasks.TASKS["multilabel"]) == 0.35
  assert inference.parse_thresholds("expected_f1", tasks.TASKS["multilabel"]) == "expected_f1"
  with pytest.raises(ValueError, match="needs a multi-label workdir; this one is 'matching'"):
    inference.parse_thresholds("expected_f1", tasks.TASKS["matching"])
  for bad in ("1.5", "high", ""):
    with pytest.raises(ValueError, match=r"expected a number in \[0, 1\) or 'expected_f1'"):
      inference.parse_thresholds(bad, tasks.TASKS["multilabel"])


def test_skipped_rows_keep_their_place_in_the_predictions(tmp_path):
  out = tmp_path / "sub.csv"
  base.write_id_predictions(
    str(out),
    ["ImageID", "Labels"],
    ["a.jpg", "c.jpg"],
    ["1", "2 3"],
    {"p:person": [0.9, 0.25]},
    skipped={1: "b.jpg", 3: "d.jpg"},
  )
  assert out.read_text().splitlines() == [
    "ImageID,Labels,p:person",
    "a.jpg,1,0.9",
    "b.jpg,,",
    "c.jpg,2 3,0.25",
    "d.jpg,,",
  ]


def test_bad_image_hint_is_the_scripts_own():
  message = (
    "t.csv: 1 image(s) cannot be used (1 missing):\n  line 4: x.jpg: missing\nFix or "
    "remove these files (or their rows), or set --config.data.skip_bad=True to train "
    "without them (skipped.json in the workdir then lists each one)."
  )
  assert inference._without_training_hint(message) == (
    "t.csv: 1 image(s) cannot be used (1 missing):\n  line 4: x.jpg: missing"
  )
