"""The model's feature transform (model-input records -> float32 matrix), fitted once on the training
pairs and saved inside every model, so training, batch scoring and serving run exactly this code.

It is columnar numpy: the same function turns one HTTP record or a million rows into features,
so the served numbers equal the batch numbers by construction and a single record costs tens of
microseconds. School features are the school's aggregates of the year BEFORE the target year
(``features.school_aggregates.school_year_table``), looked up by (school, year); a school or year
the model never saw gets that year's district row, and ``unseen_school`` says so.

Models saved by release 0.1.0 pickled ``features.transform.SchoolFeatures``; it is re-exported from
``features.legacy_transform`` so they still load.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from features.contract import (
    ENGAGEMENT_COLUMNS,
    PARENTAL_EDUCATION,
    RECORD_GENDERS,
    SCHOOL_TYPES,
    prior_engagement_column,
    prior_score_column,
)
from features.legacy_transform import SchoolFeatures  # noqa: F401  (models saved by release 0.1.0)
from features.school_aggregates import SCHOOL_SHARES, z_column

FLAGS = ("econ_disadvantaged", "english_learner", "special_education", "home_internet")
NUMERIC_ATTRIBUTES = ("commute_minutes",)
ENGAGEMENT = tuple(prior_engagement_column(c.name) for c in ENGAGEMENT_COLUMNS)
SMALL_BATCH = 256  # below this, dictionary lookups beat pandas' vectorised ones (measured: docs/serving.md)


def model_input_columns(subjects: Sequence[str]) -> list[str]:
    """Every column a growth or support model accepts, in a fixed order (the model-input schema)."""
    priors = [prior_score_column(s, k) for k in (1, 2) for s in subjects]
    return [
        "school_id",
        "school_year",
        "grade",
        *priors,
        "gender",
        *FLAGS,
        "parental_education",
        *NUMERIC_ATTRIBUTES,
        *ENGAGEMENT,
    ]


def _column(X: Any, name: str, n: int) -> np.ndarray | None:
    """A column as a numpy array, or None when absent (batch frames and record dicts alike)."""
    if isinstance(X, pd.DataFrame):
        if name not in X.columns:
            return None
        values = X[name]
        if isinstance(values.dtype, pd.CategoricalDtype):
            return np.asarray(values.astype(object))
        return values.to_numpy()
    values = X.get(name)
    return None if values is None else np.asarray(values)


@dataclass(frozen=True)
class Lookup:
    """Text -> position, by dictionary for a few values and by a pandas Index for many (same result)."""

    index: pd.Index
    mapping: dict[str, int]

    @classmethod
    def of(cls, values: Sequence[Any]) -> Lookup:
        keys = [str(v) for v in values]
        return cls(pd.Index(keys), {k: i for i, k in enumerate(keys)})

    def positions(self, values: np.ndarray | None, n: int) -> np.ndarray:
        if values is None:
            return np.full(n, -1, dtype=np.int64)
        if len(values) < SMALL_BATCH:
            return np.array(
                # missing (None or NaN) is no value, as in the large-batch routes below
                [
                    -1 if v is None or (isinstance(v, float) and v != v) else self.mapping.get(str(v), -1)
                    for v in values
                ],
                dtype=np.int64,
            )
        codes, distinct = pd.factorize(np.asarray(values, dtype=object))  # missing: code -1
        if all(type(v) is str for v in distinct):  # texts: hashing cannot merge two (as 1 == 1.0 == True)
            return np.append([self.mapping.get(v, -1) for v in distinct], -1).astype(np.int64)[codes]
        text = pd.Index(pd.Series(values, dtype=object).astype(str).where(pd.notna(values), "\x00"))
        return self.index.get_indexer(text).astype(np.int64)

    def pair_positions(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """``positions`` of the keys ``pair_key(first, second)`` (school and year); in a large batch of
        texts each key is built once per distinct pair instead of once per record."""
        n = len(second)
        codes, distinct = pd.factorize(np.asarray(first, dtype=object)) if n >= SMALL_BATCH else (None, [])
        if codes is None or not all(type(v) is str for v in distinct):
            keys = np.array([pair_key(a, b) for a, b in zip(first, second, strict=True)], dtype=object)
            return self.positions(keys, n)
        seconds, second_values = pd.factorize(np.asarray(second))
        pair_codes, pairs = pd.factorize(np.where(codes >= 0, codes * len(second_values) + seconds, -1))
        width = max(len(second_values), 1)
        found = [
            self.mapping.get(pair_key(distinct[p // width], second_values[p % width]), -1) if p >= 0 else -1
            for p in pairs
        ]
        return np.append(found, -1).astype(np.int64)[pair_codes]


def pair_key(school: object, year: object) -> str:
    """The school-year key of the school table's lookup."""
    return f"{school}\x1f{year}"


class GrowthTransform(BaseEstimator, TransformerMixin):
    """Model-input records -> standardised float32 features; see the module docstring.

    ``fit`` learns medians for imputation, per-grade moments of the prior scores (for within-grade
    z-scores), the categories, the school-year table with a district row per year, and the mean
    and scale of every output column.
    """

    def __init__(
        self,
        subjects: Sequence[str] = (),
        grades: Sequence[str] = (),
        school_table: pd.DataFrame | None = None,
        school_columns: Sequence[str] = (),
        exclude: Sequence[str] = (),
    ):
        self.subjects = subjects
        self.grades = grades
        self.school_table = school_table
        self.school_columns = school_columns
        self.exclude = exclude

    # ------------------------------------------------------------------ fit
    def fit(self, X: pd.DataFrame, y: object = None) -> GrowthTransform:
        if self.school_table is None:
            raise ValueError("GrowthTransform needs the school-year table (features.school_aggregates)")
        n = len(X)
        self.subjects_ = list(self.subjects)
        self.grade_lookup_ = Lookup.of(self.grades)
        self.gender_lookup_ = Lookup.of(RECORD_GENDERS)
        self.parent_lookup_ = Lookup.of(PARENTAL_EDUCATION)
        self._fit_schools()
        self.priors_ = [prior_score_column(s, back) for s in self.subjects_ for back in (1, 2)]
        self.prior_backs_ = np.array([back for _ in self.subjects_ for back in (1, 2)])
        self.numeric_ = [
            *self.priors_,
            *(c for c in (*FLAGS, *NUMERIC_ATTRIBUTES, *ENGAGEMENT) if c not in self.exclude),
        ]
        self.use_gender_ = "gender" not in self.exclude
        values = self._numeric_values(X, n)
        grade = self.grade_lookup_.positions(_column(X, "grade", n), n)
        self.fill_ = np.array(
            [
                _nanmean(values[:, j]) if c in FLAGS else _nanmedian(values[:, j])
                for j, c in enumerate(self.numeric_)
            ]
        )
        moments = [
            grade_moments(values[:, k], grade - back, len(self.grades))
            for k, back in enumerate(self.prior_backs_)
        ]
        self.prior_mean_ = np.column_stack([m[0] for m in moments])  # (grades + 1) x priors
        self.prior_sd_ = np.column_stack([m[1] for m in moments])
        gains = values[:, 0 : len(self.priors_) : 2] - values[:, 1 : len(self.priors_) : 2]
        self.gain_fill_ = np.array([_nanmedian(gains[:, j]) for j in range(gains.shape[1])])
        parent = self.parent_lookup_.positions(_column(X, "parental_education", n), n).astype(float)
        self.parent_fill_ = _nanmedian(np.where(parent < 0, np.nan, parent))
        self.default_year_ = int(self.school_years_[-1]) + 1
        # One-hot tables with a zero row last, so an unknown code (-1) gives zeros.
        self.grade_onehot_ = np.vstack([np.eye(len(self.grades)), np.zeros(len(self.grades))])
        self.gender_onehot_ = np.vstack([np.eye(len(RECORD_GENDERS)), np.zeros(len(RECORD_GENDERS))])
        self.feature_names_ = self._names()
        raw = self._raw(X)
        self.mean_ = raw.mean(axis=0)
        scale = raw.std(axis=0)
        self.scale_ = np.where(scale > 1e-12, scale, 1.0)
        self.held_ = np.flatnonzero(scale <= 1e-12)  # constant in training: see ``transform``
        return self

    def _names(self) -> list[str]:
        """Output column names, in the order ``_raw`` builds them."""
        return [
            "grade_index",
            *(f"grade={g}" for g in self.grades),
            *self.numeric_,
            *(f"{c}_missing" for c in self.numeric_),
            *(f"{c}_z" for c in self.priors_),
            *(f"gain_{s}" for s in self.subjects_),
            *((f"gender={g}" for g in RECORD_GENDERS) if self.use_gender_ else ()),
            "parental_education",
            "parental_education_missing",
            *self.school_feature_names(),
        ]

    def _fit_schools(self) -> None:
        """The school-year table as a float32 matrix with one district row per year, and lookups."""
        table = self.school_table
        numeric = [c for c in self.school_columns if c in table.columns]
        self.school_numeric_ = numeric
        self.school_types_ = list(SCHOOL_TYPES) if "school_type" in table else []
        levels = (
            table["school_level"].dropna().astype(str).unique().tolist() if "school_level" in table else []
        )
        self.school_levels_ = sorted(levels)
        values = table[numeric].to_numpy(dtype=float)
        self.school_fill_ = np.array([_nanmedian(values[:, j]) for j in range(len(numeric))])
        blocks, keys, fallback, years = [], [], [], []
        for year, rows in table.groupby(level="school_year", sort=True):
            block = self._school_block(rows, numeric)
            blocks.append(block)
            keys += [pair_key(school, year) for school in rows.index.get_level_values("school_id")]
            fallback.append(np.average(block, axis=0, weights=rows["total_students"].to_numpy(dtype=float)))
            years.append(int(year))
        self.school_years_ = years
        self.school_matrix_ = np.vstack([*blocks, *fallback]).astype(np.float32)
        self.school_lookup_ = Lookup.of(keys)
        self.fallback_row_ = {year: len(keys) + i for i, year in enumerate(years)}
        self.known_schools_ = frozenset(table.index.get_level_values("school_id").astype(str))

    def _school_block(self, table: pd.DataFrame, numeric: Sequence[str]) -> np.ndarray:
        values = table[numeric].to_numpy(dtype=float)
        missing = np.isnan(values)
        values = np.where(missing, self.school_fill_, values)
        parts = [values, missing.any(axis=1, keepdims=True).astype(float)]
        if self.school_types_:
            kind = table["school_type"].astype(str).to_numpy()
            parts.append(np.column_stack([kind == t for t in self.school_types_]).astype(float))
        if self.school_levels_:
            level = table["school_level"].astype(str).to_numpy()
            parts.append(np.column_stack([level == v for v in self.school_levels_]).astype(float))
        return np.hstack(parts)

    # ------------------------------------------------------------------ transform
    def school_rows(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Row of the school matrix for each record (its school in the year before the target year)
        and whether the school was unseen (a district row used instead)."""
        n = _length(X)
        schools = _column(X, "school_id", n)
        years = _column(X, "school_year", n)
        target = (
            np.full(n, self.default_year_)
            if years is None
            else np.where(pd.isna(years), self.default_year_, years).astype(np.int64)
        )
        source = np.minimum(np.maximum(target - 1, self.school_years_[0]), self.school_years_[-1])
        rows = self.school_lookup_.pair_positions(np.full(n, None) if schools is None else schools, source)
        unseen = rows < 0
        if unseen.any():
            years, which = np.unique(source[unseen], return_inverse=True)  # a district row per year
            rows[unseen] = np.array([self.fallback_row_[int(y)] for y in years])[which]
        return rows, unseen

    def unseen_school(self, X: Any) -> np.ndarray:
        return self.school_rows(X)[1]

    def _numeric_values(self, X: Any, n: int) -> np.ndarray:
        """The numeric inputs as one float64 matrix (absent columns and None as NaN)."""
        if isinstance(X, pd.DataFrame):
            out = np.empty((n, len(self.numeric_)))
            for j, name in enumerate(self.numeric_):
                out[:, j] = X[name].to_numpy(dtype=float, na_value=np.nan) if name in X.columns else np.nan
            return out
        absent = [None] * n
        return np.array([X.get(name, absent) for name in self.numeric_], dtype=float).reshape(-1, n).T

    def _raw(self, X: Any, school_rows: np.ndarray | None = None) -> np.ndarray:
        """Unstandardised features (names in ``feature_names_``), in a few whole-block operations;
        ``school_rows``: ``self.school_rows(X)[0]`` when the caller has it already."""
        n = _length(X)
        grade = self.grade_lookup_.positions(_column(X, "grade", n), n)
        values = self._numeric_values(X, n)
        missing = np.isnan(values)
        imputed = np.where(missing, self.fill_, values)
        k = len(self.priors_)
        position = np.maximum(grade[:, None] - self.prior_backs_[None, :], -1)  # -1: the overall moments
        columns = np.arange(k)
        z = (values[:, :k] - self.prior_mean_[position, columns]) / self.prior_sd_[position, columns]
        z = np.where(missing[:, :k], 0.0, z)
        gains = values[:, 0:k:2] - values[:, 1:k:2]
        gains = np.where(np.isnan(gains), self.gain_fill_, gains)
        parent = self.parent_lookup_.positions(_column(X, "parental_education", n), n).astype(float)
        blocks = [
            np.where(grade < 0, np.nan, grade)[:, None],
            self.grade_onehot_[grade],
            imputed,
            missing,
            z,
            gains,
        ]
        if self.use_gender_:
            gender = self.gender_lookup_.positions(_column(X, "gender", n), n)
            blocks.append(self.gender_onehot_[gender])
        blocks += [
            np.where(parent < 0, self.parent_fill_, parent)[:, None],
            (parent < 0)[:, None],
            self.school_matrix_[self.school_rows(X)[0] if school_rows is None else school_rows],
        ]
        return np.hstack(blocks).astype(np.float64, copy=False)

    def school_feature_names(self) -> list[str]:
        return (
            [f"school_{c}" for c in self.school_numeric_]
            + ["school_history_missing"]
            + [f"school_type={t}" for t in self.school_types_]
            + [f"school_level={v}" for v in self.school_levels_]
        )

    def transform(self, X: Any) -> np.ndarray:
        """Standardised features. A column that never varied in training (a prior two years back in a
        3-year district, the missing flag of a field training never lacked, a gender it never saw) is held
        at its training value: no model learned what a change in it means, and a network's untrained
        weights on it turned such a change into errors of 20+ points (docs/architecture.md)."""
        return self._standardised(self._raw(X))

    def transform_with_unseen(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """``transform(X)`` and ``unseen_school(X)`` from one school lookup (serving needs both)."""
        rows, unseen = self.school_rows(X)
        return self._standardised(self._raw(X, rows)), unseen

    def _standardised(self, raw: np.ndarray) -> np.ndarray:
        out = ((raw - self.mean_) / self.scale_).astype(np.float32)
        held = getattr(self, "held_", None)  # None: a model saved before this rule
        if held is not None and held.size:
            out[:, held] = 0.0
        return out

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.asarray(self.feature_names_)


def grade_moments(values: np.ndarray, grade: np.ndarray, n_grades: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and SD of ``values`` per grade position; the last entry (position -1) is the overall one,
    used for grades never seen in training."""
    mean = np.full(n_grades + 1, np.nan)
    sd = np.full(n_grades + 1, np.nan)
    present = ~np.isnan(values)
    for g in range(n_grades):
        mine = present & (grade == g)
        if mine.sum() >= 2:
            mean[g], sd[g] = values[mine].mean(), values[mine].std()
    overall_mean = values[present].mean() if present.any() else 0.0
    overall_sd = values[present].std() if present.sum() > 1 else 1.0
    mean[-1], sd[-1] = overall_mean, overall_sd or 1.0
    mean = np.where(np.isnan(mean), overall_mean, mean)
    sd = np.where(np.isnan(sd) | (sd <= 0), overall_sd or 1.0, sd)
    return mean, sd


def _length(X: Any) -> int:
    if isinstance(X, pd.DataFrame):
        return len(X)
    for values in X.values():
        return len(values)
    return 0


def _nanmedian(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(np.median(present)) if len(present) else 0.0


def _nanmean(values: np.ndarray) -> float:
    present = values[~np.isnan(values)]
    return float(present.mean()) if len(present) else 0.0


def records_to_columns(records: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> dict[str, np.ndarray]:
    """JSON records -> the column arrays ``GrowthTransform.transform`` takes (serving's only conversion)."""
    return {name: np.array([r.get(name) for r in records], dtype=object) for name in columns}


SCHOOL_FEATURE_SOURCES = SCHOOL_SHARES  # documented in docs/architecture.md
__all__ = ["GrowthTransform", "SchoolFeatures", "model_input_columns", "records_to_columns", "z_column"]
