"""The transform of release 0.1.0, kept so models saved by that release still load and predict.

Pickles refer to ``features.transform.SchoolFeatures``; ``features.transform`` re-exports it from
here. New models use ``features.transform.GrowthTransform``. Only ``transform`` is supported:
refitting a 0.1.0 transform is not (its school-aggregate code has been replaced).

Original description: the model's feature transform (validated students -> model matrix), fitted
once and saved inside every model so training and serving apply exactly the same code.

Two steps: ``SchoolFeatures`` joins school aggregates of the prior-year scores (computed by
features.school_aggregates, the code behind the school summary report) and ``encoder`` scales
numbers and one-hot encodes categories. Target-year scores never enter: the transform drops
them explicitly, so a leak would need a change here, where tests look.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from features.contract import GRADES

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


class SchoolFeatures(BaseEstimator, TransformerMixin):
    """Adds student-level derived features and the school aggregate columns.

    ``fit`` computes the school table from the training students (prior-year data only) and a
    district-level fallback row; both are stored, so the fitted object is all serving needs.
    Schools unknown at fit time get the fallback, and ``unseen_schools`` names them.
    """

    def __init__(self, schools: pd.DataFrame | None = None):
        self.schools = schools

    def fit(self, X: pd.DataFrame, y: object = None) -> SchoolFeatures:
        raise NotImplementedError(
            "the 0.1.0 transform only predicts; fit new models with features.transform.GrowthTransform"
        )

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
