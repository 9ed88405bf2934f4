"""Model families: each one's search space, estimator and (where possible) pruned fit, in one place.

Estimators here see the encoded matrix; the transform in front of them is the shared
features.transform pipeline. ``fit_family`` reports intermediate validation RMSE through
``report`` so Optuna can prune boosting and Keras trials early.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import SplineTransformer

from training.keras_mlp import KerasMLPRegressor
from training.metrics import rmse

Report = Callable[[int, float], None]
HGB_STAGE = 50


@dataclass(frozen=True)
class Family:
    """A tunable model family."""

    name: str
    description: str
    space: Callable[[optuna.Trial], dict]
    build: Callable[[dict, int, int], BaseEstimator]  # params, seed, number of numeric leading columns
    prunable: bool = False


def hgb_space(trial: optuna.Trial) -> dict:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 8, 128, log=True),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 10, 400, log=True),
        "l2_regularization": trial.suggest_float("l2_regularization", 1e-4, 10.0, log=True),
        "max_features": trial.suggest_float("max_features", 0.4, 1.0),
        "max_iter": trial.suggest_int("max_iter", 100, 800, step=HGB_STAGE),
    }


def build_hgb(params: dict, seed: int, n_numeric: int) -> BaseEstimator:
    return HistGradientBoostingRegressor(**params, early_stopping=False, random_state=seed)


def linear_space(trial: optuna.Trial) -> dict:
    return {
        "alpha": trial.suggest_float("alpha", 1e-3, 1e3, log=True),
        "n_knots": trial.suggest_int("n_knots", 3, 10),
        "degree": trial.suggest_int("degree", 1, 3),
    }


def build_linear(params: dict, seed: int, n_numeric: int) -> BaseEstimator:
    """Ridge on B-splines of the numeric features: a regularised additive (GAM-like) linear model."""
    splines = ColumnTransformer(
        [
            (
                "splines",
                SplineTransformer(n_knots=params["n_knots"], degree=params["degree"]),
                list(range(n_numeric)),
            )
        ],
        remainder="passthrough",
    )
    return Pipeline([("splines", splines), ("ridge", Ridge(alpha=params["alpha"]))])


def trees_space(trial: optuna.Trial) -> dict:
    return {
        "n_estimators": trial.suggest_int("n_estimators", 40, 160, step=20),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 5, 200, log=True),
        "max_features": trial.suggest_float("max_features", 0.2, 1.0),
        "max_samples": trial.suggest_float("max_samples", 0.2, 0.8),
    }


def build_trees(params: dict, seed: int, n_numeric: int) -> BaseEstimator:
    return ExtraTreesRegressor(**params, bootstrap=True, n_jobs=-1, random_state=seed)


def keras_space(trial: optuna.Trial) -> dict:
    return {
        "hidden_layers": trial.suggest_int("hidden_layers", 1, 3),
        "units": trial.suggest_int("units", 32, 256, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
        "l2": trial.suggest_float("l2", 1e-7, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [256, 512, 1024]),
    }


def build_keras(params: dict, seed: int, n_numeric: int) -> BaseEstimator:
    return KerasMLPRegressor(**params, seed=seed)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("hgb", "scikit-learn HistGradientBoostingRegressor", hgb_space, build_hgb, prunable=True),
        Family("linear", "Ridge regression on spline-expanded features", linear_space, build_linear),
        Family("extratrees", "scikit-learn ExtraTreesRegressor", trees_space, build_trees),
        Family("keras", "TensorFlow/Keras MLP with early stopping", keras_space, build_keras, prunable=True),
    )
}


def fit_family(
    family: Family,
    params: dict,
    seed: int,
    n_numeric: int,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    report: Report | None = None,
) -> BaseEstimator:
    """Fit one configuration; prunable families call ``report(step, val_rmse)`` as they go."""
    estimator = family.build(params, seed, n_numeric)
    if family.name == "keras":
        return estimator.fit(X, y, X_val, y_val, epoch_report=report)
    if family.name == "hgb" and report is not None:
        # Grow the ensemble in stages with warm_start so a poor trial stops after one stage.
        target_iter = estimator.max_iter
        estimator.set_params(warm_start=True)
        for step, n_iter in enumerate(range(HGB_STAGE, target_iter + 1, HGB_STAGE)):
            estimator.set_params(max_iter=n_iter)
            estimator.fit(X, y)
            report(step, rmse(y_val, estimator.predict(X_val)))
        estimator.set_params(warm_start=False)
        return estimator
    return estimator.fit(X, y)


class GradeMeanRegressor(BaseEstimator, RegressorMixin):
    """Naive baseline: the training mean growth of the student's grade (overall mean if unseen)."""

    def fit(self, X, y) -> GradeMeanRegressor:
        frame = X.assign(_y=np.asarray(y))
        self.means_ = frame.groupby(frame["grade"].astype(str))["_y"].mean().to_dict()
        self.overall_ = float(np.mean(y))
        return self

    def predict(self, X) -> np.ndarray:
        return X["grade"].astype(str).map(self.means_).fillna(self.overall_).to_numpy(dtype=float)


class PriorScoreOLS(BaseEstimator, RegressorMixin):
    """Linear baseline: the classic growth regression of growth on the two prior-year scores."""

    columns = ("prior_math_score", "prior_reading_score")

    def fit(self, X, y) -> PriorScoreOLS:
        self.model_ = LinearRegression().fit(X[list(self.columns)].to_numpy(dtype=float), y)
        return self

    def predict(self, X) -> np.ndarray:
        return self.model_.predict(X[list(self.columns)].to_numpy(dtype=float))


# The linear baseline comes first: every later run, the naive one included, reports its reduction against it.
BASELINES: dict[str, Callable[[], BaseEstimator]] = {
    "baseline_linear": PriorScoreOLS,
    "baseline_naive": GradeMeanRegressor,
}
