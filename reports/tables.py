"""The nine district tables (plus student-weighted variants of 7-9), one pure function each.

Every per-school figure comes from ``features.school_aggregates`` (computed once by the caller
and passed in), so the report and the growth model share one definition of per-student budget,
pass rates and bins. These functions only select, rename, rank and average those figures.

Tables are plain DataFrames with a RangeIndex and the report's display headers, so the CSVs and
the HTML page show exactly the same columns. Missing values stay NaN (never 0): a school with
no students in a grade, or a bin without schools, has no score rather than a score of zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from features.contract import GRADES, SCHOOL_TYPES
from features.school_aggregates import OUTSIDE_BINS, AggregateConfig, district_totals, school_aggregates

SCHOOL_NAME = "School Name"
SCHOOL_TYPE = "School Type"
TOTAL_STUDENTS = "Total Students"
TOTAL_SCHOOL_BUDGET = "Total School Budget"
PER_STUDENT_BUDGET = "Per Student Budget"
AVG_MATH = "Average Math Score"
AVG_READING = "Average Reading Score"
PCT_MATH = "% Passing Math"
PCT_READING = "% Passing Reading"
PCT_OVERALL = "% Overall Passing"
RANK = "Rank"
NUMBER_OF_SCHOOLS = "Number of Schools"
SPENDING_RANGE = "Spending Ranges (Per Student)"
SCHOOL_SIZE = "School Size"

#: aggregate column -> display header, for the school-level metrics the grouped tables average.
METRICS: dict[str, str] = {
    "avg_math": AVG_MATH,
    "avg_reading": AVG_READING,
    "pct_passing_math": PCT_MATH,
    "pct_passing_reading": PCT_READING,
    "pct_overall_passing": PCT_OVERALL,
}

SCHOOL_SUMMARY_COLUMNS: dict[str, str] = {
    "school_type": SCHOOL_TYPE,
    "total_students": TOTAL_STUDENTS,
    "total_budget": TOTAL_SCHOOL_BUDGET,
    "per_student_budget": PER_STUDENT_BUDGET,
    **METRICS,
}


def district_summary(students: pd.DataFrame, schools: pd.DataFrame, pass_mark: float) -> pd.DataFrame:
    """Table 1, one row. Student-weighted district figures; % Overall Passing is the share of
    students passing both subjects, not the mean of the two rates."""
    totals = district_totals(students, schools, pass_mark=pass_mark)
    return pd.DataFrame(
        [
            {
                "Total Schools": totals["total_schools"],
                TOTAL_STUDENTS: totals["total_students"],
                "Total Budget": totals["total_budget"],
                AVG_MATH: totals["avg_math"],
                AVG_READING: totals["avg_reading"],
                PCT_MATH: totals["pct_passing_math"],
                PCT_READING: totals["pct_passing_reading"],
                PCT_OVERALL: totals["pct_overall_passing"],
            }
        ]
    )


def school_summary(aggregates: pd.DataFrame) -> pd.DataFrame:
    """Table 2: the shared school aggregates under the report's headers, one row per school
    in name order. Schools without students keep their row with NaN scores."""
    out = aggregates[list(SCHOOL_SUMMARY_COLUMNS)].rename(columns=SCHOOL_SUMMARY_COLUMNS)
    out.insert(0, SCHOOL_NAME, aggregates.index.astype(str))
    out[SCHOOL_TYPE] = out[SCHOOL_TYPE].astype(str)
    return out.reset_index(drop=True)


def ranked_schools(summary: pd.DataFrame) -> pd.DataFrame:
    """The league table behind tables 3 and 4: % Overall Passing descending, ties broken by
    school name ascending so the order never depends on input order. Schools without
    students have no pass rate and are left out of the ranking."""
    ranked = summary.dropna(subset=[PCT_OVERALL]).sort_values(
        [PCT_OVERALL, SCHOOL_NAME], ascending=[False, True], kind="mergesort"
    )
    ranked = ranked.reset_index(drop=True)
    ranked.insert(0, RANK, np.arange(1, len(ranked) + 1))
    return ranked


def top_schools(summary: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """Table 3: ranks 1..n of the league table (best first)."""
    return ranked_schools(summary).head(n).reset_index(drop=True)


def bottom_schools(summary: pd.DataFrame, n: int = 5) -> pd.DataFrame:
    """Table 4: the last n ranks of the league table, worst first (so the lowest rank leads;
    within a tie the school later in the alphabet holds the lower rank)."""
    ranked = ranked_schools(summary)
    return ranked.tail(n).iloc[::-1].reset_index(drop=True)


def grade_aggregates(
    students: pd.DataFrame,
    schools: pd.DataFrame,
    config: AggregateConfig = AggregateConfig(),
    grades: Sequence[str] = GRADES,
) -> dict[str, pd.DataFrame]:
    """The shared school aggregates computed on each grade's students. Every school keeps a row
    in every grade; one without students in a grade gets NaN scores there, not 0."""
    grade = students["grade"].astype(str)
    return {g: school_aggregates(students[grade == g], schools, config=config) for g in grades}


def scores_by_grade(by_grade: Mapping[str, pd.DataFrame], metric: str) -> pd.DataFrame:
    """Tables 5 and 6: one row per school, one column per grade, from ``grade_aggregates``.
    ``metric`` is an aggregate column, ``avg_math`` or ``avg_reading``."""
    wide = pd.DataFrame({g: agg[metric] for g, agg in by_grade.items()})
    wide.insert(0, SCHOOL_NAME, wide.index.astype(str))
    return wide.reset_index(drop=True)


def _bin_table(
    aggregates: pd.DataFrame, by: str, label: str, categories: Sequence[str], weighted: bool
) -> pd.DataFrame:
    """Mean school-level metrics per group, every category kept (an empty one as NaN) plus
    the "outside bins" row whenever a school falls there, so no school disappears."""
    keys = aggregates[by].astype(str)
    present = [c for c in keys.unique() if c not in categories and c != OUTSIDE_BINS]
    order = [*categories, *sorted(present)]
    if (keys == OUTSIDE_BINS).any():
        order.append(OUTSIDE_BINS)
    metrics = aggregates[list(METRICS)]
    if weighted:
        # Student-weighted: each school counts by its enrolment, which equals the mean over the
        # students of the group (school pass rates and means are themselves student means).
        weights = aggregates["total_students"].astype(float)
        has = metrics.notna()
        num = metrics.fillna(0.0).mul(weights, axis=0).groupby(keys).sum()
        den = has.mul(weights, axis=0).groupby(keys).sum()
        values = num / den.replace(0.0, np.nan)
    else:
        values = metrics.groupby(keys).mean()
    out = values.reindex(order).rename(columns=METRICS)
    out.insert(0, NUMBER_OF_SCHOOLS, keys.value_counts().reindex(order, fill_value=0).astype(int))
    if weighted:
        students = aggregates["total_students"].groupby(keys).sum()
        out.insert(1, TOTAL_STUDENTS, students.reindex(order, fill_value=0).astype(int))
    out.index.name = label
    return out.reset_index()


def scores_by_spending(
    aggregates: pd.DataFrame, config: AggregateConfig = AggregateConfig(), weighted: bool = False
) -> pd.DataFrame:
    """Table 7: schools grouped by per-student budget bin; unweighted means of the school
    figures as in the standard analysis (``weighted=True`` gives the student-weighted variant)."""
    return _bin_table(aggregates, "spending_bin", SPENDING_RANGE, list(config.spending_labels), weighted)


def scores_by_size(
    aggregates: pd.DataFrame, config: AggregateConfig = AggregateConfig(), weighted: bool = False
) -> pd.DataFrame:
    """Table 8: schools grouped by enrolment bin (enrolment counted from the student table)."""
    return _bin_table(aggregates, "size_bin", SCHOOL_SIZE, list(config.size_labels), weighted)


def scores_by_type(aggregates: pd.DataFrame, weighted: bool = False) -> pd.DataFrame:
    """Table 9: schools grouped by type (District, Charter), from the same school figures."""
    return _bin_table(aggregates, "school_type", SCHOOL_TYPE, list(SCHOOL_TYPES), weighted)


def outside_bins(aggregates: pd.DataFrame) -> pd.DataFrame:
    """Schools falling outside every spending or size bin, with why, so the report can list
    them instead of silently dropping them."""
    spend = aggregates["spending_bin"].astype(str) == OUTSIDE_BINS
    size = aggregates["size_bin"].astype(str) == OUTSIDE_BINS
    rows = aggregates[spend | size]
    reasons = np.where(
        spend[rows.index] & size[rows.index],
        "spending and size",
        np.where(spend[rows.index], "spending", "size"),
    )
    return pd.DataFrame(
        {
            SCHOOL_NAME: rows.index.astype(str),
            "Outside": reasons,
            TOTAL_STUDENTS: rows["total_students"].to_numpy(),
            PER_STUDENT_BUDGET: rows["per_student_budget"].to_numpy(),
        }
    )
