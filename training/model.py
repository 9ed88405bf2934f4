"""The objects that are logged to MLflow, registered, exported to BentoML and served: each holds the
fitted transform (the one transform, saved with the model), the estimator and what the response
needs (intervals, input fields). They accept a DataFrame (batch) or a dict of column arrays (one
HTTP request) and run the same code for both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from features.transform import GrowthTransform
from training import compiled
from training.intervals import IntervalModel, count_missing


class AveragedRegressor(BaseEstimator, RegressorMixin):
    """Weighted average of fitted regressors on the same matrix (an ensemble registered as one model)."""

    def __init__(
        self, estimators: Sequence[Any] = (), weights: Sequence[float] = (), names: Sequence[str] = ()
    ):
        self.estimators = estimators
        self.weights = weights
        self.names = names

    def fit(self, X, y):  # members are fitted before they are averaged
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        total = np.zeros(len(X))
        for estimator, weight in zip(self.estimators, self.weights, strict=True):
            total += weight * np.asarray(estimator.predict(X), dtype=float)
        return total


@dataclass
class GrowthModel(BaseEstimator, RegressorMixin):
    """Predicted growth (target-year score minus prior-year score) of one subject, with intervals."""

    subject: str = "math"
    family: str = ""
    transform: GrowthTransform | None = None
    estimator: Any = None
    interval: IntervalModel | None = None
    input_columns: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)

    def features(self, X: pd.DataFrame | dict) -> np.ndarray:
        return self.transform.transform(X)

    def predict_features(self, features: np.ndarray) -> np.ndarray:
        """The estimator's predictions for a feature matrix, by its compiled evaluator (training.compiled:
        the same numbers for one row as for a batch)."""
        evaluator = compiled.cached(
            self, "estimator", self.estimator, lambda: compiled.regressor(self.estimator)
        )
        return evaluator(features)

    def predict(self, X: pd.DataFrame | dict) -> np.ndarray:
        return self.predict_features(self.features(X))

    def compile_forests(self) -> None:
        """Serving and batch scoring: LightGBM regressors (the estimator, an ensemble member, the
        interval's scale model) as compiled native code; the same numbers (training.compiled)."""
        compiled.store(self, "estimator", self.estimator, compiled.regressor(self.estimator, forests=True))
        if self.interval is not None:
            self.interval.compile_forests()

    def features_and_unseen(self, X: pd.DataFrame | dict) -> tuple[np.ndarray, np.ndarray]:
        """``features(X)`` and whether each record's school is unseen, from one school lookup."""
        return self.transform.transform_with_unseen(X)

    def predict_interval(
        self, X: pd.DataFrame | dict, features: np.ndarray | None = None, unseen: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Prediction, interval bounds, whether the school was unseen, and the fields missing.
        ``features``, ``unseen``: ``self.features_and_unseen(X)`` when the caller has them already."""
        features = self.features(X) if features is None else features
        predicted = self.predict_features(features)
        unseen = self.transform.unseen_school(X) if unseen is None else unseen
        missing = count_missing(X, self.interval.optional) if self.interval else np.zeros(len(predicted), int)
        half = (
            self.interval.halfwidth(features, missing, unseen, X)
            if self.interval
            else np.full(len(predicted), np.nan)
        )
        return {
            "predicted": predicted,
            "low": predicted - half,
            "high": predicted + half,
            "unseen": unseen,
            "n_missing": missing,
        }

    def __getstate__(self) -> dict:
        return compiled.without_cache(super().__getstate__())


@dataclass
class SupportModel(BaseEstimator, ClassifierMixin):
    """P(needs support): the target-year score falls below the proficient cut of the target-year grade."""

    subject: str = "math"
    family: str = ""
    transform: GrowthTransform | None = None
    estimator: Any = None
    input_columns: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)

    def predict_proba(self, X: pd.DataFrame | dict) -> np.ndarray:
        return self.predict_proba_features(self.transform.transform(X))

    def predict_proba_features(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities for a feature matrix (a CalibratedClassifier compiles itself; any other
        classifier gets its compiled evaluator here)."""
        if hasattr(self.estimator, "calibrator"):
            return self.estimator.predict_proba(features)
        evaluator = compiled.cached(
            self, "estimator", self.estimator, lambda: compiled.classifier(self.estimator)
        )
        return evaluator(features)

    def predict(self, X: pd.DataFrame | dict) -> np.ndarray:
        """The probability of needing support (what the registry's signature and batch scoring show)."""
        return self.predict_proba(X)[:, 1]

    def __getstate__(self) -> dict:
        return compiled.without_cache(super().__getstate__())
