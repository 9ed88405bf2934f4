"""School-level aggregates: the one piece of code behind the school summary report and the
school features of the growth model.

The reports call it on the target-year scores; the model calls it on the prior-year scores
(never the target year, which would leak the target). Both get the same definitions of
per-student budget, pass rates and bins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

PASS_MARK = 70.0
SPENDING_BINS: tuple[float, ...] = (0, 585, 630, 645, 680)
SPENDING_LABELS: tuple[str, ...] = ("<$585", "$585-630", "$630-645", "$645-680")
SIZE_BINS: tuple[float, ...] = (0, 1000, 2000, 5000)
SIZE_LABELS: tuple[str, ...] = ("Small (<1000)", "Medium (1000-2000)", "Large (2000-5000)")
OUTSIDE_BINS = "outside bins"


@dataclass(frozen=True)
class AggregateConfig:
    """Pass mark and bin edges; the defaults are those of the standard district analysis."""

    pass_mark: float = PASS_MARK
    spending_bins: Sequence[float] = SPENDING_BINS
    spending_labels: Sequence[str] = SPENDING_LABELS
    size_bins: Sequence[float] = SIZE_BINS
    size_labels: Sequence[str] = SIZE_LABELS
    extra_means: Sequence[str] = field(default_factory=tuple)


def bin_values(values: pd.Series, edges: Sequence[float], labels: Sequence[str]) -> pd.Series:
    """Right-closed bins as in ``pd.cut``; values outside every bin get ``OUTSIDE_BINS``
    instead of silently becoming NaN, so a report can list them."""
    if len(labels) != len(edges) - 1:
        raise ValueError(f"{len(edges)} bin edges need {len(edges) - 1} labels, got {len(labels)}")
    cut = pd.cut(values, bins=list(edges), labels=list(labels), include_lowest=False)
    out = cut.astype("object").where(cut.notna(), OUTSIDE_BINS)
    return pd.Series(
        pd.Categorical(out, categories=[*labels, OUTSIDE_BINS]), index=values.index, name=values.name
    )


def school_aggregates(
    students: pd.DataFrame,
    schools: pd.DataFrame,
    math_col: str = "math_score",
    reading_col: str = "reading_score",
    config: AggregateConfig = AggregateConfig(),
) -> pd.DataFrame:
    """One row per school (index ``school_name``) with type, enrolment, budget, per-student
    budget, average scores, pass rates (percent, 0-100) and the spending and size bins.

    Total students is counted from the student table, not the schools' ``size`` column,
    which districts often leave stale. Schools without students keep a row with zero students.
    """
    math_pass = students[math_col] >= config.pass_mark
    reading_pass = students[reading_col] >= config.pass_mark
    scored = pd.DataFrame(
        {
            "school_name": students["school_name"],
            "avg_math": students[math_col],
            "avg_reading": students[reading_col],
            "pct_passing_math": math_pass * 100.0,
            "pct_passing_reading": reading_pass * 100.0,
            "pct_overall_passing": (math_pass & reading_pass) * 100.0,
            **{f"mean_{col}": students[col].astype(float) for col in config.extra_means},
        }
    )
    grouped = scored.groupby("school_name", sort=True)
    means = grouped.mean()
    counts = grouped.size().rename("total_students")
    base = schools.set_index("school_name")[["type", "budget"]].rename(
        columns={"type": "school_type", "budget": "total_budget"}
    )
    out = base.join(counts, how="left").join(means, how="left")
    out["total_students"] = out["total_students"].fillna(0).astype(int)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["per_student_budget"] = out["total_budget"] / out["total_students"].replace(0, np.nan)
    out["spending_bin"] = bin_values(out["per_student_budget"], config.spending_bins, config.spending_labels)
    out["size_bin"] = bin_values(out["total_students"].astype(float), config.size_bins, config.size_labels)
    out.index.name = "school_name"
    ordered = [
        "school_type",
        "total_students",
        "total_budget",
        "per_student_budget",
        "avg_math",
        "avg_reading",
        "pct_passing_math",
        "pct_passing_reading",
        "pct_overall_passing",
        "spending_bin",
        "size_bin",
    ]
    return out[ordered + [c for c in out.columns if c not in ordered]].sort_index()


def district_totals(
    students: pd.DataFrame,
    schools: pd.DataFrame,
    math_col: str = "math_score",
    reading_col: str = "reading_score",
    pass_mark: float = PASS_MARK,
) -> dict[str, float]:
    """District-wide figures (student-weighted); also the fallback for unseen schools at serving."""
    math_pass = students[math_col] >= pass_mark
    reading_pass = students[reading_col] >= pass_mark
    return {
        "total_schools": int(schools["school_name"].nunique()),
        "total_students": int(len(students)),
        "total_budget": float(schools["budget"].sum()),
        "avg_math": float(students[math_col].mean()),
        "avg_reading": float(students[reading_col].mean()),
        "pct_passing_math": float(math_pass.mean() * 100.0),
        "pct_passing_reading": float(reading_pass.mean() * 100.0),
        "pct_overall_passing": float((math_pass & reading_pass).mean() * 100.0),
    }
