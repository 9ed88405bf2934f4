"""School-level aggregates: the one piece of code behind the school summary report and the school
features of the growth model.

The reports call it on the report year's student rows; the model calls it on each target year's
PRIOR year (never the target year, which would leak the target). Both get the same definitions of
enrolment (counted from the records), per-student budget, % proficient, bins and means.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import growth_column, proficient_column, score_column

SPENDING_BINS: tuple[float, ...] = (0, 585, 630, 645, 680)
SPENDING_LABELS: tuple[str, ...] = ("<$585", "$585-630", "$630-645", "$645-680")
SIZE_BINS: tuple[float, ...] = (0, 1000, 2000, 5000)
SIZE_LABELS: tuple[str, ...] = ("Small (<1000)", "Medium (1000-2000)", "Large (2000-5000)")
OUTSIDE_BINS = "outside bins"
# Student columns whose school means are model features (when present).
SCHOOL_SHARES = ("econ_disadvantaged", "english_learner", "special_education", "days_absent")


@dataclass(frozen=True)
class AggregateConfig:
    """Bin edges and labels; the defaults are those of the standard district analysis."""

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


def proficiency_flags(students: pd.DataFrame, subject: str) -> np.ndarray:
    """1 proficient, 0 not, NaN not known; all NaN for a subject without cut scores or levels (its
    aggregates are then NaN, and the reports say why)."""
    column = proficient_column(subject)
    if column not in students:
        return np.full(len(students), np.nan)
    return students[column].to_numpy(dtype=float)


def overall_proficient(students: pd.DataFrame, subjects: Sequence[str]) -> pd.Series:
    """1 when proficient in every subject, 0 when not, NaN when a subject was not tested: "% overall"
    counts only students with a result in every subject (the classic "passing both")."""
    flags = np.column_stack(
        [proficiency_flags(students, s) for s in subjects] or [np.empty((len(students), 0))]
    )
    every = np.where(np.isnan(flags).any(axis=1), np.nan, flags.min(axis=1) if flags.size else np.nan)
    return pd.Series(every, index=students.index)


def school_aggregates(
    students: pd.DataFrame,
    schools: pd.DataFrame | None,
    subjects: Sequence[str],
    config: AggregateConfig = AggregateConfig(),
) -> pd.DataFrame:
    """One row per school (index ``school_id``): name, type and level (when the schools table has them),
    students counted from the records, budget and per-student budget (when known), and per subject the
    average scale score and % proficient (0-100), % proficient in every subject, the size and spending
    bins, and ``mean_<column>`` of each ``config.extra_means`` column.

    Schools of the schools table without students keep a row with zero students and NaN figures.
    """
    scored: dict[str, object] = {}
    for subject in subjects:
        scored[f"avg_{subject}"] = students[score_column(subject)].to_numpy(dtype=float)
        scored[f"pct_proficient_{subject}"] = proficiency_flags(students, subject) * 100.0
    scored["pct_overall_proficient"] = overall_proficient(students, subjects).to_numpy() * 100.0
    for column in config.extra_means:
        scored[f"mean_{column}"] = students[column].to_numpy(dtype=float)
    key = _school_key(students["school_id"]) if len(students) else None
    if key is not None:
        # Grouped by the categorical's codes (no per-row text): the same groups, rows and means.
        grouped = pd.DataFrame(scored).groupby(key, sort=True, observed=True)
        means = _text_index(grouped.mean())
        counts = _text_index(grouped.size().rename("total_students"))
        names = _text_index(_first_names(students["school_name"], key))
    else:
        scored = {"school_id": students["school_id"].astype(str).to_numpy(), **scored}
        grouped = pd.DataFrame(scored).groupby("school_id", sort=True)
        means = grouped.mean()
        counts = grouped.size().rename("total_students")
        names = (
            pd.Series(students["school_name"].astype(str).to_numpy(), index=scored["school_id"])
            .groupby(level=0)
            .first()
            .rename("school_name")
        )
    out = pd.concat([names, counts], axis=1)
    if schools is not None:
        base = schools.set_index("school_id")
        out = out.reindex(out.index.union(base.index))
        if "school_name" in base:
            out["school_name"] = out["school_name"].fillna(base["school_name"])
        for source, target in (
            ("type", "school_type"),
            ("level", "school_level"),
            ("budget", "total_budget"),
        ):
            if source in base:
                out[target] = base[source].reindex(out.index)
    out["school_name"] = out["school_name"].fillna(pd.Series(out.index, index=out.index))
    out["total_students"] = out["total_students"].fillna(0).astype(int)
    out = out.join(means, how="left")
    if "total_budget" in out:
        with np.errstate(divide="ignore", invalid="ignore"):
            out["per_student_budget"] = out["total_budget"] / out["total_students"].replace(0, np.nan)
        out["spending_bin"] = bin_values(
            out["per_student_budget"], config.spending_bins, config.spending_labels
        )
    out["size_bin"] = bin_values(out["total_students"].astype(float), config.size_bins, config.size_labels)
    out.index.name = "school_id"
    return out.sort_index()


def _school_key(ids: pd.Series) -> pd.Categorical | None:
    """The school ids as a categorical of their texts (what ``astype(str)`` gives), or None when they
    are not categorical with distinct texts (then they are grouped as text)."""
    if not isinstance(ids.dtype, pd.CategoricalDtype):
        return None
    categories = ids.cat.categories.astype(str)
    if not categories.is_unique:
        return None
    return pd.Categorical.from_codes(ids.cat.codes.to_numpy(), categories=categories)


def _text_index(table: pd.DataFrame | pd.Series) -> pd.DataFrame | pd.Series:
    """A result grouped by ``_school_key`` indexed by the school id texts, as grouping the texts gives."""
    table.index = pd.Index(np.asarray(table.index.astype(object)), name="school_id").astype(str)
    return table


def _first_names(names: pd.Series, key: pd.Categorical) -> pd.Series:
    """Per school, the first non-missing name in row order (``groupby(...).first()`` of the texts)."""
    if isinstance(names.dtype, pd.CategoricalDtype):
        codes = names.cat.codes.to_numpy()
        texts = names.cat.categories.astype(str)
        first = pd.Series(np.where(codes >= 0, codes, np.nan)).groupby(key, sort=True, observed=True).first()
        present = first.notna().to_numpy()
        values = np.full(len(first), np.nan, dtype=object)
        values[present] = np.asarray(texts.astype(object))[first.to_numpy()[present].astype(np.int64)]
        return pd.Series(values, index=first.index, name="school_name").astype(str)
    text = pd.Series(names.astype(str).to_numpy())
    return text.groupby(key, sort=True, observed=True).first().rename("school_name")


def district_totals(students: pd.DataFrame, schools: pd.DataFrame | None, subjects: Sequence[str]) -> dict:
    """District-wide figures, student-weighted; % overall counts students tested in every subject."""
    totals: dict[str, float] = {
        "total_schools": int(
            schools["school_id"].nunique() if schools is not None else students["school_id"].nunique()
        ),
        "total_students": int(len(students)),
    }
    if schools is not None and "budget" in schools:
        totals["total_budget"] = float(schools["budget"].sum())
    for subject in subjects:
        totals[f"avg_{subject}"] = float(np.nanmean(students[score_column(subject)].to_numpy(dtype=float)))
        totals[f"pct_proficient_{subject}"] = float(np.nanmean(proficiency_flags(students, subject)) * 100.0)
    totals["pct_overall_proficient"] = float(np.nanmean(overall_proficient(students, subjects)) * 100.0)
    return totals


# ----------------------------------------------------------------------------------------------
# The model's school features: aggregates of each school year, looked up for the year after
# ----------------------------------------------------------------------------------------------


def z_column(subject: str) -> str:
    return f"z_{subject}"


def within_grade_z(students: pd.DataFrame, subjects: Sequence[str]) -> pd.DataFrame:
    """``z_<subject>`` = (score - mean) / SD over every score of that subject, grade and school year
    (population SD): comparable across grades on any scale, the same definition as the synthetic
    generator's truth uses."""
    keys = [students["school_year"].to_numpy(), students["grade"].cat.codes.to_numpy()]
    out = {}
    for subject in subjects:
        score = students[score_column(subject)].astype(float)
        grouped = score.groupby(keys)
        mean = grouped.transform("mean")
        sd = grouped.transform("std", ddof=0)
        out[z_column(subject)] = ((score - mean) / sd.replace(0, np.nan)).astype(np.float32)
    return pd.DataFrame(out, index=students.index)


def adjusted_column(subject: str) -> str:
    return f"adjusted_growth_{subject}"


# Adding last year's engagement measured no better (validation RMSE 16.279 vs 16.283 on the default district).
ADJUSTERS = ("econ_disadvantaged", "english_learner", "special_education")


def adjusted_growth(pairs: pd.DataFrame, subjects: Sequence[str]) -> pd.DataFrame:
    """Each comparable pair's score minus what a per-grade, per-year least-squares fit on the prior scores
    (every subject's, missing ones filled), and the student flags predicts: growth beyond what students
    like these usually make that year. A school's mean of it is a simple value-added signal, far less
    confounded by who the school enrols than its raw mean growth."""
    out = pd.DataFrame(index=pairs.index)
    # One integer per (school year, grade) cell; each cell's rows in their original order.
    year_code, _ = pd.factorize(pairs["school_year"], use_na_sentinel=False)
    grade_code, grades = pd.factorize(pairs["grade"].astype(str), use_na_sentinel=False)
    cells = year_code.astype(np.int64) * max(len(grades), 1) + grade_code
    priors = [f"prior_{s}_score" for s in subjects if f"prior_{s}_score" in pairs]
    flags = [c for c in ADJUSTERS if c in pairs]
    design = pairs[priors + flags].to_numpy(dtype=float)
    with _one_blas_thread():
        for subject in subjects:
            values = np.full(len(pairs), np.nan)
            comparable = pairs[f"pair_status_{subject}"].isin(["ok", "school_changed"]).to_numpy()
            y = pairs[score_column(subject)].to_numpy(dtype=float)
            usable = np.flatnonzero(comparable & ~np.isnan(y))
            by_cell = usable[np.argsort(cells[usable], kind="stable")]
            bounds = np.flatnonzero(np.diff(cells[by_cell])) + 1
            for rows in np.split(by_cell, bounds) if len(by_cell) else []:
                if len(rows) < 3 * (len(priors) + len(flags) + 1):
                    continue
                x = design[rows]
                missing = np.isnan(x)
                filled = np.where(missing, np.nanmean(np.where(missing, np.nan, x), axis=0), x)
                x = np.column_stack([np.ones(len(rows)), np.nan_to_num(filled), missing[:, : len(priors)]])
                beta = np.linalg.lstsq(x, y[rows], rcond=None)[0]
                values[rows] = y[rows] - x @ beta
            out[adjusted_column(subject)] = values
    return out


def _one_blas_thread() -> AbstractContextManager[object]:
    """The fits are tall and narrow (rows x ~10 columns): BLAS threads only add synchronisation, and on a
    busy 2-core machine made each fit several times slower. One thread gives the same numbers."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def school_feature_columns(subjects: Sequence[str], table: pd.DataFrame) -> list[str]:
    """The raw school-year aggregates of ``school_year_table`` (none uses target-year data): the school
    attributes the AutoML benchmark offers its peers. The growth models use fewer, shrunk ones
    (``training.data.model_school_columns``)."""
    columns = ["total_students", "per_student_budget"]
    for subject in subjects:
        columns += [
            f"mean_{z_column(subject)}",
            f"pct_proficient_{subject}",
            f"mean_{growth_column(subject)}",
            f"mean_{adjusted_column(subject)}",
        ]
    columns += [f"mean_{c}" for c in SCHOOL_SHARES]
    return [c for c in columns if c in table.columns]


def pair_positions(students: pd.DataFrame, pairs: pd.DataFrame) -> np.ndarray:
    """For each student-year row, the position of its pair (same student id as text, same school year),
    or -1. With a categorical student id the ids are matched once per distinct id and the (student,
    year) keys as integers; otherwise as (text, year) pairs."""
    ids = students["student_id"]
    if isinstance(ids.dtype, pd.CategoricalDtype):
        categories = ids.cat.categories.astype(str)
        student = ids.cat.codes.to_numpy().astype(np.int64)
        if categories.is_unique and (student >= 0).all():
            pair_student = _positions_in(pairs["student_id"].astype(str), categories)
            year = students["school_year"].to_numpy().astype(np.int64)
            pair_year = pairs["school_year"].to_numpy().astype(np.int64)
            low = min(year.min(initial=0), pair_year.min(initial=0))
            span = max(year.max(initial=0), pair_year.max(initial=0)) - low + 1
            # A pair whose student is not in the table gets a negative key of its own, which no row has.
            pair_key = np.where(
                pair_student >= 0, pair_student * span + (pair_year - low), -1 - np.arange(len(pairs))
            )
            return pd.Index(pair_key).get_indexer(student * span + (year - low))
    key = pd.MultiIndex.from_arrays([ids.astype(str), students["school_year"].astype(int)])
    pair_key = pd.MultiIndex.from_arrays([pairs["student_id"].astype(str), pairs["school_year"].astype(int)])
    return pair_key.get_indexer(key)


def _positions_in(values: pd.Series, lookup: pd.Index) -> np.ndarray:
    """``lookup.get_indexer(values)`` for text, hashed by Arrow (several times faster on millions of ids)."""
    try:
        found = pc.index_in(pa.array(values.array), value_set=pa.array(lookup.array))
    except (pa.ArrowException, TypeError, ValueError):
        return lookup.get_indexer(values).astype(np.int64)
    return found.fill_null(-1).to_numpy().astype(np.int64)


def school_year_table(
    students: pd.DataFrame,
    schools: pd.DataFrame | None,
    subjects: Sequence[str],
    pairs: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """School aggregates of every school year, index (school_id, school_year): within-grade z, %
    proficient, mean growth (of that year's pairs), shares of student groups, enrolment, and the
    schools table's type, level and per-student budget. The model joins year t-1's row to a target
    year t pair, so nothing here is ever computed from the target year."""
    frame = students.join(within_grade_z(students, subjects))
    for subject in subjects:
        frame[growth_column(subject)] = np.nan
        frame[adjusted_column(subject)] = np.nan
    if pairs is not None:
        # Pairs come from this table, so they are matched by (student, year); only comparable growth
        # (pairs that enter the growth models) counts towards a school's mean growth.
        position = pair_positions(students, pairs)
        found = position >= 0
        adjusted = adjusted_growth(pairs, subjects)
        for subject in subjects:
            growth = pairs[growth_column(subject)].to_numpy(dtype=float)
            comparable = pairs[f"pair_status_{subject}"].isin(["ok", "school_changed"]).to_numpy()
            for name, values in (
                (growth_column(subject), np.where(comparable, growth, np.nan)),
                (adjusted_column(subject), adjusted[adjusted_column(subject)].to_numpy()),
            ):
                column = np.full(len(frame), np.nan)
                column[found] = values[position[found]]
                frame[name] = column
    extra = [z_column(s) for s in subjects] + [growth_column(s) for s in subjects]
    extra += [adjusted_column(s) for s in subjects]
    extra += [c for c in SCHOOL_SHARES if c in frame]
    parts = []
    for year, rows in frame.groupby("school_year", sort=True):
        table = school_aggregates(rows, schools, subjects, AggregateConfig(extra_means=tuple(extra)))
        table = table[table["total_students"] > 0]
        parts.append(table.assign(school_year=int(year)).set_index("school_year", append=True))
    return pd.concat(parts)
