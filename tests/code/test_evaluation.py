"""Evaluation helpers on hand-computed values: metrics, reductions, subgroup errors, per-year errors and
the noise floor from a truth table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.evaluate import group_table, growth_errors, noise_floor, per_year
from training.metrics import reduction_pct, scores

FRAME = pd.DataFrame(
    {
        "student_id": ["1", "2", "3", "4", "5"],
        "school_year": [2024, 2024, 2025, 2025, 2025],
        "grade": ["04", "04", "05", "05", "05"],
        "school_type": ["District", "District", "District", "Charter", "Charter"],
        "english_learner": [1.0, 0.0, np.nan, 0.0, 1.0],
    }
)


def test_metrics_and_reduction() -> None:
    result = scores(np.array([0.0, 0.0]), np.array([3.0, -4.0]), "test")
    assert result["test_mae"] == pytest.approx(3.5)
    assert result["test_rmse"] == pytest.approx(np.sqrt(12.5))
    assert reduction_pct(3.0, 4.0) == pytest.approx(25.0)


def test_subgroup_errors_bias_and_coverage_by_hand() -> None:
    actual = np.zeros(5)
    predicted = np.array([1.0, -1.0, 2.0, 3.0, -3.0])
    low, high = predicted - 1.5, predicted + 1.5  # covers |error| <= 1.5: rows 0 and 1
    table = group_table(FRAME, growth_errors(actual, predicted, low, high)).set_index(["group", "value"])
    assert table.loc[("all", "all"), "coverage_90"] == pytest.approx(0.4)
    assert table.loc[("school_type", "Charter"), "rmse"] == pytest.approx(3.0)
    assert table.loc[("school_type", "Charter"), "bias"] == pytest.approx(0.0)
    assert table.loc[("school_type", "District"), "mae"] == pytest.approx(4.0 / 3)
    assert table.loc[("grade", "05"), "n"] == 3
    assert table.loc[("english_learner", "yes"), "bias"] == pytest.approx(-1.0)
    assert table.loc[("english_learner", "missing"), "n"] == 1


def test_errors_per_year_pair() -> None:
    table = per_year(FRAME, np.zeros(5), np.array([1.0, 1.0, 2.0, 2.0, 2.0]))
    assert table["year_pair"].tolist() == ["2023->2024", "2024->2025"]
    assert table["rmse"].tolist() == pytest.approx([1.0, 2.0])


def test_noise_floor_from_the_truth() -> None:
    truth = pd.DataFrame(
        {"student_id": ["1", "2", "3", "4"], "school_year": [2024, 2024, 2025, 2025],
         "subject": "math", "expected_growth": [1.0, -1.0, 0.0, 0.0]}
    )
    actual = np.array([2.0, -2.0, 1.0, -1.0, 0.0])
    predicted = np.array([1.0, -1.0, 0.0, 0.0, 9.0])  # the truth itself where it is known
    floor = noise_floor(FRAME, actual, predicted, truth, "math")
    assert floor["truth_rows"] == 4  # student 5 has no truth row
    assert floor["noise_floor_rmse"] == pytest.approx(1.0)
    assert floor["test_rmse_over_noise_floor"] == pytest.approx(1.0)
    assert floor["rmse_vs_expected_growth"] == pytest.approx(0.0)


def test_the_champion_row_says_whether_it_was_refitted() -> None:
    from training.champion import comparison_table
    from training.train_support import support_table

    baselines = {"baseline_naive": {"test_rmse": 3.0}}
    refitted = comparison_table(baselines, [], {"test_rmse": 2.0}, "lgbm")
    as_fitted = comparison_table(baselines, [], {"test_rmse": 2.0}, "lgbm", refit=False)
    assert refitted["model"].iloc[-1] == "champion (lgbm, refit)"
    assert as_fitted["model"].iloc[-1] == "champion (lgbm, as fitted on train)"
    support = support_table({}, {}, {"test_brier": 0.1}, "logistic", refit=False)
    assert support["model"].iloc[-1] == "champion (logistic, as fitted on train, calibrated)"
