"""The needs-support classifier's pieces on cases with known answers: labels from the cut scores,
calibration on a synthetic case with a known probability, precision and recall at a flagged share by
hand, and the fairness audit's alert sentence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from training.fairness import alerts, support_measure
from training.support import NoCutScores, calibrate, support_labels, support_scores, top_share_metrics


def test_labels_use_the_cut_of_the_target_grade() -> None:
    frame = pd.DataFrame({"grade": ["04", "04", "05", "05"], "score_math": [399.0, 400.0, 419.0, 420.0]})
    labels = support_labels(frame, "math", {"04": 400.0, "05": 420.0})
    assert labels.tolist() == [1.0, 0.0, 1.0, 0.0]  # at the cut is proficient: no support needed
    with pytest.raises(NoCutScores, match="neither proficiency cut scores nor achievement levels"):
        support_labels(frame, "math", {"04": None, "05": None})


def test_precision_and_recall_at_a_flagged_share_by_hand() -> None:
    # 10 students, 4 need support; by probability the order is s0..s9.
    p = np.array([0.95, 0.90, 0.80, 0.70, 0.60, 0.50, 0.40, 0.30, 0.20, 0.10])
    y = np.array([1, 0, 1, 0, 0, 1, 0, 0, 1, 0], dtype=float)
    out = top_share_metrics(y, p, shares=(0.1, 0.2, 0.5))
    assert out["precision_at_10pct"] == 1.0 and out["recall_at_10pct"] == 0.25  # s0 flagged
    assert out["precision_at_20pct"] == 0.5 and out["recall_at_20pct"] == 0.25  # s0, s1
    assert out["precision_at_50pct"] == 0.4 and out["recall_at_50pct"] == 0.5  # s0..s4: 2 of 4
    # Order of the input does not matter; ties are broken by position, so exactly k are flagged.
    shuffle = np.random.default_rng(0).permutation(10)
    assert top_share_metrics(y[shuffle], p[shuffle], shares=(0.2,))["precision_at_20pct"] == 0.5


def test_isotonic_calibration_recovers_a_known_probability() -> None:
    """True P = sigmoid(2x); the base model is well ranked but badly calibrated (sigmoid(6x + 1)).
    Calibrating on held-out rows brings every probability decile to the truth."""
    rng = np.random.default_rng(3)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x = rng.normal(size=n)
        truth = 1 / (1 + np.exp(-2 * x))
        return x[:, None], rng.random(n) < truth, truth

    class Overconfident:
        def predict_proba(self, X: np.ndarray) -> np.ndarray:
            p = 1 / (1 + np.exp(-(6 * X[:, 0] + 1)))
            return np.column_stack([1 - p, p])

    X_cal, y_cal, _ = draw(40_000)
    X_test, y_test, truth = draw(40_000)
    raw = Overconfident().predict_proba(X_test)[:, 1]
    calibrated = calibrate(Overconfident(), X_cal, y_cal.astype(float)).predict_proba(X_test)[:, 1]
    assert np.mean(np.abs(raw - truth)) > 0.1
    assert np.mean(np.abs(calibrated - truth)) < 0.02
    deciles = np.array_split(np.argsort(calibrated), 10)
    for rows in deciles:
        assert abs(calibrated[rows].mean() - y_test[rows].mean()) < 0.03
    assert support_scores(y_test, calibrated, "t")["t_brier"] < support_scores(y_test, raw, "t")["t_brier"]


def test_a_calibrated_logistic_model_is_left_calibrated() -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(20_000, 2))
    y = rng.random(20_000) < 1 / (1 + np.exp(-(X[:, 0] - 0.5 * X[:, 1])))
    model = LogisticRegression().fit(X[:10_000], y[:10_000])
    p = calibrate(model, X[10_000:15_000], y[10_000:15_000].astype(float)).predict_proba(X[15_000:])[:, 1]
    assert abs(p.mean() - y[15_000:].mean()) < 0.02


def test_fairness_alert_names_a_group_with_a_high_false_negative_rate() -> None:
    """Flag the top 10%: group B's students who need support are mostly below the flag line."""
    from training.evaluate import group_table

    n = 1000
    group = np.where(np.arange(n) < 500, "A", "B")
    needs = np.zeros(n, dtype=bool)
    needs[:100] = True  # A: 100 need support, all ranked on top
    needs[500:600] = True  # B: 100 need support, ranked low
    p = np.where(np.arange(n) < 100, 0.9, 0.1)
    p[500:600] = 0.2
    frame = pd.DataFrame({"gender": group})
    table = group_table(frame, support_measure(needs, p, 0.10), groups=("gender",))
    overall = table.set_index("value").loc["all"]
    assert overall["flag_rate"] == pytest.approx(0.10)
    assert overall["false_negative_rate"] == pytest.approx(0.5)
    b = table.set_index("value").loc["B"]
    assert b["false_negative_rate"] == 1.0 and b["flag_rate"] == 0.0
    [sentence] = alerts(table)
    assert "gender = B" in sentence and "100%" in sentence and "2.00 times" in sentence
    assert "at risk" not in sentence and "failing" not in sentence


def test_without_cut_scores_the_files_levels_decide() -> None:
    frame = pd.DataFrame(
        {"grade": ["4", "4", "5"], "score_math": [300.0, 500.0, 410.0], "proficient_math": [0.0, 1.0, 1.0]}
    )
    labels = support_labels(frame, "math", {"4": None, "5": None})
    assert labels.tolist() == [1.0, 0.0, 0.0]
    frame.loc[2, "proficient_math"] = np.nan
    with pytest.raises(NoCutScores, match="1 students with a score have no achievement level"):
        support_labels(frame, "math", {"4": None, "5": None})
