from __future__ import annotations

import numpy as np
import pytest

from jaxmm import inference


@pytest.mark.parametrize("spec,want", [("2:5", [2, 3, 4]), ("7:", [7, 8, 9]), (":2", [0, 1]),
                                       ("-3:", [7, 8, 9]), ("8:100", [8, 9])])
def test_parse_rows(spec, want):
  np.testing.assert_array_equal(inference.parse_rows(spec, 10), want)


@pytest.mark.parametrize("spec,match", [("5", "START:END"), ("a:b", "START:END"),
                                        ("1:2:3", "START:END"), ("10:", "selects no row of x.csv")])
def test_parse_rows_errors_name_the_problem(spec, match):
  with pytest.raises(ValueError, match=match):
    inference.parse_rows(spec, 10, source="x.csv")


def test_parse_thresholds():
  assert inference.parse_thresholds("0.35", "multilabel") == 0.35
  assert inference.parse_thresholds("expected_f1", "multilabel") == "expected_f1"
  with pytest.raises(ValueError, match="needs a multi-label workdir; this one is 'matching'"):
    inference.parse_thresholds("expected_f1", "matching")
  for bad in ("1.5", "high", ""):
    with pytest.raises(ValueError, match=r"expected a number in \[0, 1\) or 'expected_f1'"):
      inference.parse_thresholds(bad, "multilabel")
