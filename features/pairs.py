"""Growth pairs: a student's record in school year t beside the same student's records of t-1 and t-2.

One row per student and target year. The target-year school is the one credited. What happens to
unusual histories is decided here, once, and documented in docs/data.md:

* ``no_prior_record``: no record in t-1 (new to the district, or a gap year): no growth pair;
* ``no_prior_score``: a t-1 record without a score in the subject (not tested): no growth pair;
* ``no_score``: no score in t in the subject: nothing to learn from, nothing to measure;
* ``repeated_grade`` / ``skipped_grade`` / ``grade_went_down``: the grade did not move up by one.
  The pair exists but is left out of growth training, SGP cohorts and value-added (its growth is
  not comparable), kept in the descriptive reports, and counted;
* ``school_changed``: a usual one-grade step in another school than last year; kept and credited to
  the target-year school;
* ``ok``: everything else.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from features.contract import (
    ATTRIBUTE_COLUMNS,
    ENGAGEMENT_COLUMNS,
    growth_column,
    prior_engagement_column,
    prior_score_column,
    proficient_column,
    score_column,
)
from features.ingest import District

USABLE = ("ok", "school_changed")
STATUSES = (
    "ok",
    "school_changed",
    "no_score",
    "no_prior_record",
    "no_prior_score",
    "repeated_grade",
    "skipped_grade",
    "grade_went_down",
)
STATUS_TEXT = {
    "ok": "usual one-grade step, same school",
    "school_changed": "changed school (credited to the target-year school)",
    "no_score": "no score in the target year",
    "no_prior_record": "no record the year before (new to the district or a gap year)",
    "no_prior_score": "not tested in the subject the year before",
    "repeated_grade": "repeated a grade",
    "skipped_grade": "skipped a grade",
    "grade_went_down": "grade went down",
}


def status_column(subject: str) -> str:
    return f"pair_status_{subject}"


def previous_rows(students: pd.DataFrame, years_back: int) -> np.ndarray:
    """Position of the same student's record ``years_back`` years earlier, or -1. The table is sorted by
    student and year, so that record, if any, is at most ``years_back`` rows above."""
    codes = students["student_id"].cat.codes.to_numpy()
    years = students["school_year"].to_numpy().astype(np.int32)
    out = np.full(len(students), -1, dtype=np.int64)
    for shift in range(1, years_back + 1):
        candidate = np.arange(len(students)) - shift
        valid = candidate >= 0
        safe = np.maximum(candidate, 0)
        match = valid & (codes[safe] == codes) & (years[safe] == years - years_back) & (out < 0)
        out[match] = candidate[match]
    return out


def take(values: np.ndarray | pd.Categorical, positions: np.ndarray) -> np.ndarray | pd.Categorical:
    """values[positions] with -1 meaning missing."""
    present = positions >= 0
    safe = np.maximum(positions, 0)
    if isinstance(values, pd.Categorical):
        codes = np.where(present, values.codes[safe], -1)
        return pd.Categorical.from_codes(codes, categories=values.categories, ordered=values.ordered)
    out = np.asarray(values)[safe].astype(np.float32)
    out[~present] = np.nan
    return out


def text_at(column: pd.Series, rows: np.ndarray) -> object:
    """``column.to_numpy()[rows]`` of a categorical text column, as the text array the pairs frame
    stores, built by taking from the categories (not by materialising every row as a Python string)."""
    if isinstance(column.dtype, pd.CategoricalDtype) and isinstance(
        column.cat.categories.dtype, pd.StringDtype
    ):
        codes = column.cat.codes.to_numpy()[rows]
        return column.cat.categories.array.take(codes, allow_fill=True)
    return column.to_numpy()[rows]


def growth_pairs(district: District, years: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per student x target year (every year after the first, or ``years``), with the prior
    years' scores, last year's engagement, the credited school and a status per subject."""
    students = district.students
    first_year = min(district.years)
    prior = previous_rows(students, 1)
    prior2 = previous_rows(students, 2)
    in_scope = students["school_year"].to_numpy() > first_year
    if years is not None:
        in_scope &= np.isin(students["school_year"].to_numpy(), list(years))
    rows = np.flatnonzero(in_scope)
    p1, p2 = prior[rows], prior2[rows]
    grade = students["grade"].cat.codes.to_numpy().astype(np.int16)
    school = students["school_id"].cat.codes.to_numpy()
    attributes_from = p1 if district.config.features.attributes_from == "prior" else rows
    out: dict[str, object] = {
        "student_id": text_at(students["student_id"], rows),
        "school_year": students["school_year"].to_numpy()[rows],
        "grade": text_at(students["grade"], rows),
        "school_id": text_at(students["school_id"], rows),
        "school_name": text_at(students["school_name"], rows),
    }
    if "district" in students:
        out["district"] = text_at(students["district"], rows)
    for spec in ATTRIBUTE_COLUMNS:
        if spec.name in students:
            column = students[spec.name]
            values = column.array if isinstance(column.dtype, pd.CategoricalDtype) else column.to_numpy()
            out[spec.name] = take(values, attributes_from)
    for spec in ENGAGEMENT_COLUMNS:
        if spec.name in students:
            out[prior_engagement_column(spec.name)] = take(students[spec.name].to_numpy(), p1)
    out["prior_grade"] = take(students["grade"].array, p1)
    out["prior2_grade"] = take(students["grade"].array, p2)
    out["prior_school_id"] = take(students["school_id"].array, p1)
    step = np.where(p1 >= 0, grade[rows] - grade[np.maximum(p1, 0)], 0)
    moved = (p1 >= 0) & (school[rows] != school[np.maximum(p1, 0)])
    for subject in district.subject_names:
        scores = students[score_column(subject)].to_numpy()
        current = scores[rows]
        out[score_column(subject)] = current
        out[prior_score_column(subject)] = take(scores, p1)
        out[prior_score_column(subject, 2)] = take(scores, p2)
        out[growth_column(subject)] = current - out[prior_score_column(subject)]
        out[status_column(subject)] = pair_status(current, p1, out[prior_score_column(subject)], step, moved)
        flag = proficient_column(subject)
        if flag in students:  # from the cut scores, or the file's achievement levels without them
            levels = students[flag].to_numpy()
            out[flag] = take(levels, rows)
            out[f"prior_{flag}"] = take(levels, p1)
    return pd.DataFrame(out)


def pair_status(
    current: np.ndarray, prior_row: np.ndarray, prior_score: np.ndarray, step: np.ndarray, moved: np.ndarray
) -> pd.Categorical:
    """The status of each pair, first matching rule wins (the order of the module docstring)."""
    conditions = [
        np.isnan(current),
        prior_row < 0,
        np.isnan(prior_score),
        step == 0,
        step > 1,
        step < 0,
        moved,
    ]
    choices = [*STATUSES[2:], "school_changed"]  # the exclusions in STATUSES order, then the usable mover
    # Selected as category codes: the same categorical as selecting the texts, without per-row strings.
    codes = np.select(
        conditions, [np.int8(STATUSES.index(c)) for c in choices], default=np.int8(STATUSES.index("ok"))
    )
    return pd.Categorical.from_codes(codes, categories=list(STATUSES))


def usable(pairs: pd.DataFrame, subject: str) -> pd.DataFrame:
    """Pairs that enter growth training, SGP cohorts and value-added for ``subject``."""
    return pairs[pairs[status_column(subject)].isin(USABLE)]


def status_counts(pairs: pd.DataFrame, subjects: Sequence[str]) -> pd.DataFrame:
    """Counts of pairs by target year, subject and status: the validation summary's table."""
    parts = []
    for subject in subjects:
        counts = pairs.groupby(["school_year", status_column(subject)], observed=True).size()
        frame = counts.rename("students").reset_index().rename(columns={status_column(subject): "status"})
        frame.insert(1, "subject", subject)
        parts.append(frame)
    table = pd.concat(parts, ignore_index=True)
    table["meaning"] = table["status"].astype(str).map(STATUS_TEXT)
    table["in_growth_models"] = table["status"].astype(str).isin(USABLE)
    return table
