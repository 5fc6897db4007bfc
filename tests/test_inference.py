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
