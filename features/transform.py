"""The model's feature transform (validated students -> model matrix), fitted once and saved
inside every model so training and serving apply exactly the same code.

Two steps: ``SchoolFeatures`` joins school aggregates of the prior-year scores (computed by
features.school_aggregates, the code behind the school summary report) and ``encoder`` scales
numbers and one-hot encodes categories. Target-year scores never enter: the transform drops
them explicitly, so a leak would need a change here, where tests look.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from features.contract import GRADES, TARGETS
from features.school_aggregates import AggregateConfig, school_aggregates

STUDENT_NUMERIC = (
    "prior_math_score",
    "prior_reading_score",
    "prior_days_absent",
    "homework_completion_pct",
    "extracurricular_count",
    "platform_logins_per_week",
    "commute_minutes",
)
STUDENT_FLAGS = ("econ_disadvantaged", "english_learner", "special_education", "home_internet")
STUDENT_CATEGORIES = ("gender", "grade", "parental_education")
PRIOR_SCORES = ("prior_math_score", "prior_reading_score")
# Columns that must never be features: target-year scores, targets, identity and names.
FORBIDDEN = frozenset(
    {
        "math_score",
        "reading_score",
        "math_growth",
        "reading_growth",
        "student_name",
        "student_id",
        "school_name",
    }
)
SCHOOL_CATEGORIES = ("school_type", "school_spending_bin", "school_size_bin")
FALLBACK_KEY = "\x00district fallback"  # starts with a NUL character: no district file names a school so
SCHOOL_SHARE_OF = ("econ_disadvantaged", "english_learner", "special_education", "prior_days_absent")


def grade_number(grade: pd.Series) -> pd.Series:
    """'9th' -> 9.0; unknown grades become NaN and are imputed downstream."""
    return grade.map({g: float(g.rstrip("thTH")) for g in GRADES})


def school_prior_table(students: pd.DataFrame, schools: pd.DataFrame) -> pd.DataFrame:
    """School features from prior-year data only, via the shared school aggregate code."""
    extra = tuple(c for c in SCHOOL_SHARE_OF if c in students.columns)
    agg = school_aggregates(
        students,
        schools,
        math_col="prior_math_score",
        reading_col="prior_reading_score",
        config=AggregateConfig(extra_means=extra),
    )
    renamed = agg.rename(
        columns={
            "total_students": "school_total_students",
            "per_student_budget": "school_per_student_budget",
            "avg_math": "school_prior_avg_math",
            "avg_reading": "school_prior_avg_reading",
            "pct_passing_math": "school_prior_pct_passing_math",
            "pct_passing_reading": "school_prior_pct_passing_reading",
            "pct_overall_passing": "school_prior_pct_overall_passing",
            "spending_bin": "school_spending_bin",
            "size_bin": "school_size_bin",
            **{f"mean_{c}": f"school_mean_{c}" for c in extra},
        }
    )
    renamed["school_total_students"] = renamed["school_total_students"].astype(float)
    for col in ("school_type", "school_spending_bin", "school_size_bin"):
        renamed[col] = renamed[col].astype(str)
    return renamed.drop(columns=["total_budget"])


class SchoolFeatures(BaseEstimator, TransformerMixin):
    """Adds student-level derived features and the school aggregate columns.

    ``fit`` computes the school table from the training students (prior-year data only) and a
    district-level fallback row; both are stored, so the fitted object is all serving needs.
    Schools unknown at fit time get the fallback, and ``unseen_schools`` names them.
    """

    def __init__(self, schools: pd.DataFrame | None = None):
        self.schools = schools

    def fit(self, X: pd.DataFrame, y: object = None) -> SchoolFeatures:
        if self.schools is None:
            raise ValueError("SchoolFeatures needs the schools table (school_name, type, size, budget)")
        table = school_prior_table(X, self.schools)
        table = table[table["school_total_students"] > 0]
        self.school_table_ = table
        self.fallback_ = self._district_row(table)
        self.__dict__.pop("_lookup", None)  # derived from the two above; rebuilt on next transform
        self.student_columns_ = [
            c for c in (*STUDENT_NUMERIC, *STUDENT_FLAGS, *STUDENT_CATEGORIES) if c in X.columns
        ]
        missing = [c for c in PRIOR_SCORES if c not in X.columns]
        if missing:
            raise ValueError(f"the growth model needs the prior-year score columns; missing {missing}")
        return self

    @staticmethod
    def _district_row(table: pd.DataFrame) -> pd.Series:
        """Student-weighted district means (mode for categories): the row for an unseen school."""
        weights = table["school_total_students"]
        row = {}
        for col in table.columns:
            if pd.api.types.is_numeric_dtype(table[col]):
                row[col] = float(np.average(table[col], weights=weights))
            else:
                row[col] = table[col].mode().iloc[0]
        return pd.Series(row)

    def unseen_schools(self, X: pd.DataFrame) -> list[str]:
        """Schools in X that the model never saw, in order of first appearance."""
        known = set(self.school_table_.index)
        return [s for s in pd.unique(X["school_name"]) if s not in known]

    def _school_lookup(self) -> pd.DataFrame:
        """School table plus the fallback row under ``FALLBACK_KEY``: one reindex serves every
        record, known school or not (built once per fitted object; the hot path of serving)."""
        lookup = self.__dict__.get("_lookup")
        if lookup is None:
            fallback = pd.DataFrame([self.fallback_], index=[FALLBACK_KEY]).astype(
                self.school_table_.dtypes.to_dict()
            )
            lookup = pd.concat([self.school_table_, fallback])
            self.__dict__["_lookup"] = lookup
        return lookup

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        columns: dict[str, object] = {}
        for col in self.student_columns_:
            values = X[col] if col in X.columns else pd.Series(np.nan, index=X.index)
            if col in STUDENT_FLAGS:
                values = pd.to_numeric(values, errors="coerce").astype(float)
            elif col in STUDENT_CATEGORIES:  # plain objects with NaN: what the imputer and encoder expect
                values = values.astype(object).where(values.notna(), np.nan)
            columns[col] = values
        columns["grade_number"] = grade_number(X["grade"].astype(str))
        if {"prior_math_score", "prior_reading_score"} <= set(columns):
            columns["prior_score_gap"] = columns["prior_math_score"] - columns["prior_reading_score"]
        known = X["school_name"].isin(self.school_table_.index)
        schools = self._school_lookup().reindex(X["school_name"].where(known, FALLBACK_KEY).to_numpy())
        schools.index = X.index
        out = pd.concat([pd.DataFrame(columns, index=X.index), schools], axis=1)
        leaked = FORBIDDEN.intersection(out.columns)
        if leaked:
            raise AssertionError(f"target-year or identity columns reached the features: {sorted(leaked)}")
        return out

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        return np.asarray(self.transform_columns_)

    @property
    def transform_columns_(self) -> list[str]:
        school_cols = list(self.school_table_.columns)
        return [*self.student_columns_, "grade_number", "prior_score_gap", *school_cols]


def encoder(feature_frame_columns: list[str]) -> ColumnTransformer:
    """Scale numbers (median-imputed: optional columns may be absent at serving), one-hot categories."""
    categorical = [c for c in feature_frame_columns if c in (*STUDENT_CATEGORIES, *SCHOOL_CATEGORIES)]
    numeric = [c for c in feature_frame_columns if c not in categorical]
    return ColumnTransformer(
        [
            (
                "numeric",
                Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                numeric,
            ),
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                categorical,
            ),
        ],
        verbose_feature_names_out=False,
    )


def feature_pipeline(students: pd.DataFrame, schools: pd.DataFrame) -> Pipeline:
    """The unfitted transform for a district: school features, then encoding."""
    school_step = SchoolFeatures(schools=schools[["school_name", "type", "size", "budget"]].copy())
    columns = school_step.fit(students).transform_columns_
    return Pipeline([("school", school_step), ("encode", encoder(columns))])


def model_pipeline(transform: Pipeline, estimator: BaseEstimator) -> Pipeline:
    """Transform plus estimator as one object: what is logged, registered and served."""
    return Pipeline([*transform.steps, ("model", estimator)])


def growth_target(students: pd.DataFrame, target: str) -> pd.Series:
    """Target-year score minus prior-year score for 'math' or 'reading'."""
    score, prior = TARGETS[target]
    return (students[score] - students[prior]).rename(f"{target}_growth")
