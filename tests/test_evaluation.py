"""Evaluation helpers on hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.evaluation import school_value_added, subgroup_errors
from training.metrics import reduction_pct, scores

FRAME = pd.DataFrame(
    {
        "school_name": ["A", "A", "A", "B", "B"],
        "grade": ["9th", "9th", "10th", "10th", "10th"],
        "gender": ["F", "M", "F", "M", "F"],
    }
)
SCHOOLS = pd.DataFrame({"school_name": ["A", "B"], "type": ["District", "Charter"]})


def test_value_added_means_and_standard_errors() -> None:
    actual = np.array([1.0, 2.0, 3.0, 10.0, 14.0])
    table = school_value_added(FRAME, actual, np.zeros(5), np.full(5, 1.0))
    assert table.loc["A", "value_added"] == pytest.approx(2.0)
    assert table.loc["A", "value_added_std_error"] == pytest.approx(1.0 / np.sqrt(3))
    assert table.loc["B", "value_added"] == pytest.approx(12.0)
    assert table.loc["B", "value_added_std_error"] == pytest.approx(np.std([10, 14], ddof=1) / np.sqrt(2))
    assert table.loc["B", "value_added_vs_average_school"] == pytest.approx(11.0)
    assert table.index.tolist() == ["B", "A"]  # largest contribution first
    assert table["n"].tolist() == [2, 3]


def test_subgroup_errors_by_school_type_and_grade() -> None:
    actual = np.zeros(5)
    predicted = np.array([1.0, -1.0, 2.0, 3.0, -3.0])
    table = subgroup_errors(FRAME, actual, predicted, SCHOOLS).set_index(["subgroup", "value"])
    assert table.loc[("school_type", "Charter"), "rmse"] == pytest.approx(3.0)
    assert table.loc[("school_type", "District"), "mae"] == pytest.approx(4.0 / 3)
    assert table.loc[("grade", "9th"), "mean_error"] == pytest.approx(0.0)
    assert table.loc[("grade", "10th"), "n"] == 3


def test_metrics_and_reduction() -> None:
    result = scores(np.array([0.0, 0.0]), np.array([3.0, -4.0]), "test")
    assert result["test_mae"] == pytest.approx(3.5)
    assert result["test_rmse"] == pytest.approx(np.sqrt(12.5))
    assert reduction_pct(3.0, 4.0) == pytest.approx(25.0)
