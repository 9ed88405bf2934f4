"""Prediction intervals: the group-conditional conformal quantile covers its level within every group it
conditions on, where a single pooled quantile does not; masked copies and missing-field counts."""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.intervals import (
    UNSEEN_SCHOOL,
    GroupDesign,
    bucket_of,
    conformal_quantiles,
    count_missing,
    fit_group_quantile,
    masked_copies,
)


def exchangeable(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Records with student groups and missing fields whose scale model is wrong per group: the true
    |residual| / sigma(x) is 1.6x larger for English learners, 0.7x for special education, 1.3x when
    many fields are missing."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "english_learner": (rng.random(n) < 0.12).astype(float),
            "special_education": (rng.random(n) < 0.13).astype(float),
            "econ_disadvantaged": np.where(rng.random(n) < 0.05, np.nan, rng.random(n) < 0.45),
            "gender": rng.choice(["F", "M"], n),
        }
    )
    missing = rng.integers(0, 12, n)
    unseen = rng.random(n) < 0.2
    factor = (1 + 0.6 * frame["english_learner"] - 0.3 * frame["special_education"]).to_numpy()
    factor = factor * np.where(missing >= 9, 1.3, 1.0)
    scores = np.abs(rng.normal(size=n)) * factor
    return frame, missing, unseen, scores


def coverage_by_group(frame, missing, unseen, scores, q) -> dict[str, float]:
    inside = scores <= q
    groups = {
        "all": np.ones(len(frame), bool),
        "english learner": frame["english_learner"].to_numpy() == 1,
        "special education": frame["special_education"].to_numpy() == 1,
        "female": frame["gender"].to_numpy() == "F",
        "9+ fields missing": missing >= 9,
        "unseen school": unseen,
    }
    return {name: float(inside[rows].mean()) for name, rows in groups.items()}


def test_group_quantile_covers_within_every_group() -> None:
    frame, missing, unseen, scores = exchangeable(40_000, seed=1)
    design, coef = fit_group_quantile(GroupDesign(), frame, missing, unseen, scores, level=0.9, seed=0)
    assert "english_learner" in design.columns and "bucket=1" in design.columns
    test, t_missing, t_unseen, t_scores = exchangeable(40_000, seed=2)
    q = design.matrix(test, t_missing, t_unseen) @ coef
    covered = coverage_by_group(test, t_missing, t_unseen, t_scores, q)
    for group, value in covered.items():
        assert 0.88 <= value <= 0.92, (group, covered)
    # one pooled quantile: right overall, wrong for the groups the scale model misjudges
    pooled = np.quantile(scores, 0.9)
    naive = coverage_by_group(test, t_missing, t_unseen, t_scores, np.full(len(test), pooled))
    assert naive["english learner"] < 0.8 and naive["special education"] > 0.95


def test_rare_indicators_are_left_out_of_the_design() -> None:
    frame, missing, unseen, scores = exchangeable(2_000, seed=3)
    frame["special_education"] = 0.0
    frame.loc[:9, "special_education"] = 1.0  # 10 rows: fewer than GROUP_MIN_ROWS
    design, coef = fit_group_quantile(GroupDesign(), frame, missing, unseen, scores, level=0.9, seed=0)
    assert "special_education" not in design.columns and len(coef) == len(design.columns)
    assert design.matrix(frame.head(3), missing[:3], unseen[:3]).shape == (3, len(design.columns))


def test_bucket_quantiles_and_missing_counts_by_hand() -> None:
    scores = np.arange(1, 101, dtype=float)
    buckets = np.zeros(100, dtype=np.int64)
    quantiles, counts = conformal_quantiles(scores, buckets, 0.9)
    assert counts[0] == 100 and quantiles[0] == 91.0  # ceil(101 * 0.9) = 91st smallest
    assert bucket_of(np.array([0, 1, 3, 4, 8, 9, 30]), np.array([0, 0, 0, 0, 0, 0, 1])).tolist() == [
        0, 2, 2, 4, 4, 6, 7,
    ]
    records = {"a": np.array([1.0, None], dtype=object), "b": np.array([None, None], dtype=object)}
    assert count_missing(records, ["a", "b", "c"]).tolist() == [2, 3]


def test_masked_copies_keep_the_row_and_remove_fields() -> None:
    frame = pd.DataFrame({"school_id": ["1", "2", "3"], "x": [1.0, 2.0, 3.0], "y": [4.0, 5.0, 6.0]})
    copies = masked_copies(frame, ["x", "y"], seed=0, copies=50)
    assert len(copies) == 150 and copies["_row"].tolist()[:3] == [0, 1, 2]
    assert copies.iloc[:3][["x", "y"]].notna().all().all()  # the first copy is as sent
    assert copies["x"].isna().any() and (copies["school_id"] == UNSEEN_SCHOOL).any()
