"""Fairness audit of a subject's champions on the test year, by disadvantaged, English learner,
special education, gender, grade and school type.

Growth model: mean error (bias, predicted minus actual), RMSE and interval coverage per group.
Needs-support classifier, with the district flagging a fixed share of students (10% by default):
flag rate, false-positive and false-negative rates, precision among the flagged and calibration
(mean predicted probability against the observed share). A group whose false-negative rate is more
than 1.25 times the overall one is named in a sentence.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.evaluate import GROUP_LABELS, group_table, growth_errors

FLAG_SHARE = 0.10
FNR_RATIO_ALERT = 1.25


def support_measure(needs: np.ndarray, p: np.ndarray, share: float = FLAG_SHARE):
    """Per group figures when the top ``share`` of all students by probability are flagged."""
    k = max(1, int(round(share * len(p))))
    flagged = np.zeros(len(p), dtype=bool)
    flagged[np.argsort(-p, kind="stable")[:k]] = True
    needs = np.asarray(needs, dtype=bool)

    def measure(rows: np.ndarray) -> dict[str, float]:
        n, f, y = len(rows), flagged[rows], needs[rows]
        positives, negatives = y.sum(), (~y).sum()
        return {
            "n": int(n),
            "needs_support_rate": float(y.mean()) if n else np.nan,
            "flag_rate": float(f.mean()) if n else np.nan,
            "false_positive_rate": float((f & ~y).sum() / negatives) if negatives else np.nan,
            "false_negative_rate": float((~f & y).sum() / positives) if positives else np.nan,
            "precision_flagged": float(y[f].mean()) if f.any() else np.nan,
            "mean_predicted": float(np.mean(p[rows])) if n else np.nan,
            "observed": float(y.mean()) if n else np.nan,
        }

    return measure


def audit(
    frame: pd.DataFrame,
    actual: np.ndarray,
    predicted: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    needs: np.ndarray | None = None,
    p: np.ndarray | None = None,
    share: float = FLAG_SHARE,
) -> tuple[pd.DataFrame, pd.DataFrame | None, list[str]]:
    """The growth table, the support table (when a classifier is given) and the alert sentences."""
    growth = group_table(frame, growth_errors(actual, predicted, low, high))
    if needs is None or p is None:
        return growth, None, []
    support = group_table(frame, support_measure(needs, p, share))
    return growth, support, alerts(support, share)


def alerts(support: pd.DataFrame, share: float = FLAG_SHARE, min_n: int = 30) -> list[str]:
    """Sentences for groups whose false-negative rate exceeds 1.25x the overall one."""
    overall = float(support.loc[support["group"] == "all", "false_negative_rate"].iloc[0])
    out = []
    for _, row in support[support["group"] != "all"].iterrows():
        rate = row["false_negative_rate"]
        if row["n"] < min_n or np.isnan(rate) or overall <= 0 or rate <= FNR_RATIO_ALERT * overall:
            continue
        label = GROUP_LABELS.get(row["group"], row["group"])
        out.append(
            f"With the top {share:.0%} of students flagged, {rate:.0%} of {label} = {row['value']} "
            "students who "
            f"will need support are not flagged, against {overall:.0%} overall ({rate / overall:.2f} times): "
            "a flag-share or per-group review is warranted before the list is used."
        )
    return out


def audit_markdown(
    subject: str,
    growth: pd.DataFrame,
    support: pd.DataFrame | None,
    sentences: list[str],
    share: float = FLAG_SHARE,
) -> str:
    lines = [
        f"# Fairness audit: {subject} (test year)",
        "",
        "## Growth model: bias (predicted minus actual), RMSE and 90% interval coverage",
        "",
        growth.to_markdown(index=False, floatfmt=".3f"),
    ]
    if support is not None:
        lines += [
            "",
            f"## Needs-support classifier, top {share:.0%} of students flagged",
            "",
            support.to_markdown(index=False, floatfmt=".3f"),
            "",
        ]
        lines += (
            ["No group's false-negative rate exceeds 1.25 times the overall rate."]
            if not sentences
            else [f"- {s}" for s in sentences]
        )
    return "\n".join(lines) + "\n"
