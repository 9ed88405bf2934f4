"""Model families: each one's search space, estimator and pruned fit, in one place.

Estimators see the transform's float32 matrix. ``fit_family`` reports validation RMSE as training
goes (boosting rounds, Keras epochs) so Optuna's Hyperband pruner can stop poor trials early, and
records where validation error was lowest, so the final refit on train + validation knows how long
to train without a validation set (``refit_family``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import SplineTransformer

from features.contract import prior_score_column
from training.keras_mlp import KerasMLPRegressor
from training.metrics import rmse

Report = Callable[[int, float], None]
HGB_STAGE = 50
LGBM_MAX_ROUNDS = 4000
LGBM_REPORT_EVERY = 25
EARLY_STOPPING_ROUNDS = 100
REFIT_GROWTH = 1.15  # more rows in the refit: train a little longer than the best validation round


def threads() -> int:
    """Threads per fit: every core of this machine (one study runs at a time per process)."""
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class FeatureInfo:
    """What a family may need to know about the matrix: which columns are continuous."""

    names: tuple[str, ...]

    @property
    def continuous(self) -> list[int]:
        return [i for i, n in enumerate(self.names) if "=" not in n and not n.endswith("_missing")]

    @property
    def student_continuous(self) -> list[int]:
        """Continuous student-level columns: school aggregates take a few hundred distinct school-year
        values, too few for a spline each, so additive models keep them linear."""
        return [i for i in self.continuous if not self.names[i].startswith("school_")]


@dataclass(frozen=True)
class Family:
    """A tunable model family."""

    name: str
    description: str
    space: Callable[[optuna.Trial], dict]
    build: Callable[[dict, int, FeatureInfo], BaseEstimator]
    space_version: str = "1"
    prunable: bool = False


# ---------------------------------------------------------------- LightGBM
def lgbm_space(trial: optuna.Trial) -> dict:
    """Shallow trees are in the space (num_leaves from 3, learning rates up to 0.3, L1 and L2 penalties):
    growth is mostly additive in the inputs, and AutoML peers found their best models there."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 3, 127, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 10, 1000, log=True),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 100.0, log=True),
        "reg_alpha": trial.suggest_float("reg_alpha", 1e-4, 10.0, log=True),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "max_bin": trial.suggest_categorical("max_bin", [63, 127, 255]),
    }


def lgbm_fixed_options(seed: int) -> dict:
    """What every LightGBM model of the project shares (regressor and classifier): a round cap that
    early stopping lowers, row bagging each round, and deterministic, quiet, reproducible fits."""
    return {
        "n_estimators": LGBM_MAX_ROUNDS,
        "subsample_freq": 1,
        "random_state": seed,
        "n_jobs": threads(),
        "verbose": -1,
        "deterministic": True,
        "force_col_wise": True,
    }


def build_lgbm(params: dict, seed: int, info: FeatureInfo) -> BaseEstimator:
    import lightgbm

    return lightgbm.LGBMRegressor(**params, **lgbm_fixed_options(seed))


# ---------------------------------------------------------------- scikit-learn
def hgb_space(trial: optuna.Trial) -> dict:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "max_leaf_nodes": trial.suggest_int("max_leaf_nodes", 8, 128, log=True),
        "min_samples_leaf": trial.suggest_int("min_samples_leaf", 10, 400, log=True),
        "l2_regularization": trial.suggest_float("l2_regularization", 1e-4, 10.0, log=True),
        "max_features": trial.suggest_float("max_features", 0.4, 1.0),
        "max_iter": trial.suggest_int("max_iter", 100, 800, step=HGB_STAGE),
    }


def build_hgb(params: dict, seed: int, info: FeatureInfo) -> BaseEstimator:
    return HistGradientBoostingRegressor(**params, early_stopping=False, random_state=seed)


def linear_space(trial: optuna.Trial) -> dict:
    return {
        "alpha": trial.suggest_float("alpha", 1e-3, 1e3, log=True),
        "n_knots": trial.suggest_int("n_knots", 3, 10),
        "degree": trial.suggest_int("degree", 1, 3),
    }


def build_linear(params: dict, seed: int, info: FeatureInfo) -> BaseEstimator:
    """Ridge on B-splines of the continuous features: a regularised additive (GAM-like) linear model."""
    splines = ColumnTransformer(
        [
            (
                "splines",
                SplineTransformer(n_knots=params["n_knots"], degree=params["degree"]),
                info.student_continuous,
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


def build_trees(params: dict, seed: int, info: FeatureInfo) -> BaseEstimator:
    return ExtraTreesRegressor(**params, bootstrap=True, n_jobs=threads(), random_state=seed)


# ---------------------------------------------------------------- Keras
def keras_space(trial: optuna.Trial) -> dict:
    return {
        "hidden_layers": trial.suggest_int("hidden_layers", 1, 3),
        "units": trial.suggest_int("units", 32, 256, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
        "l2": trial.suggest_float("l2", 1e-7, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [256, 512, 1024]),
    }


def build_keras(params: dict, seed: int, info: FeatureInfo) -> BaseEstimator:
    return KerasMLPRegressor(**params, seed=seed)


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "lgbm",
            "LightGBM gradient boosting (Hyperband-pruned on boosting rounds)",
            lgbm_space,
            build_lgbm,
            space_version="3",
            prunable=True,
        ),
        Family("hgb", "scikit-learn HistGradientBoostingRegressor", hgb_space, build_hgb, prunable=True),
        Family(
            "linear",
            "Ridge regression on spline-expanded student features",
            linear_space,
            build_linear,
            space_version="2",
        ),
        Family("extratrees", "scikit-learn ExtraTreesRegressor", trees_space, build_trees),
        Family("keras", "TensorFlow/Keras MLP with early stopping", keras_space, build_keras, prunable=True),
    )
}
DEFAULT_FAMILIES = ("lgbm", "linear", "keras")


def fit_family(
    family: Family,
    params: dict,
    seed: int,
    info: FeatureInfo,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    report: Report | None = None,
) -> BaseEstimator:
    """Fit one configuration on X; prunable families call ``report(step, val_rmse)`` as they go and
    remember their best round/epoch in ``best_rounds_`` for the refit."""
    estimator = family.build(params, seed, info)
    if family.name == "keras":
        estimator.fit(X, y, X_val, y_val, epoch_report=report)
        estimator.best_rounds_ = estimator.best_epoch_
        return estimator
    if family.name == "lgbm":
        return fit_lgbm(estimator, X, y, X_val, y_val, report)
    if family.name == "hgb" and report is not None:
        # Grow the ensemble in stages with warm_start so a poor trial stops after one stage.
        target_iter = estimator.max_iter
        estimator.set_params(warm_start=True)
        for n_iter in range(HGB_STAGE, target_iter + 1, HGB_STAGE):
            estimator.set_params(max_iter=n_iter)
            estimator.fit(X, y)
            report(n_iter, rmse(y_val, estimator.predict(X_val)))
        estimator.set_params(warm_start=False)
        return estimator
    return estimator.fit(X, y)


def fit_lgbm(estimator, X, y, X_val, y_val, report: Report | None):
    """Early stopping on validation RMSE; every LGBM_REPORT_EVERY rounds the pruner may stop the trial."""
    import lightgbm

    callbacks = [lightgbm.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)]
    if report is not None:

        def pruning(env: lightgbm.callback.CallbackEnv) -> None:
            round_ = env.iteration + 1
            if round_ % LGBM_REPORT_EVERY == 0:
                report(round_, float(env.evaluation_result_list[0][2]))

        callbacks.append(pruning)
    estimator.fit(X, y, eval_X=(X_val,), eval_y=(y_val,), eval_metric="rmse", callbacks=callbacks)
    estimator.best_rounds_ = int(estimator.best_iteration_ or estimator.n_estimators)
    return estimator


def refit_family(
    family: Family,
    params: dict,
    seed: int,
    info: FeatureInfo,
    X: np.ndarray,
    y: np.ndarray,
    fitted: BaseEstimator,
) -> BaseEstimator:
    """Refit on more rows (train + validation) with the round/epoch count the validation fit chose."""
    estimator = family.build(params, seed, info)
    best = getattr(fitted, "best_rounds_", None)
    if family.name == "lgbm":
        estimator.set_params(n_estimators=max(1, int(round(best * REFIT_GROWTH))))
        return estimator.fit(X, y)
    if family.name == "keras":
        estimator.set_params(max_epochs=max(1, int(round(best * REFIT_GROWTH))), patience=10**6)
        return estimator.fit(X, y, fixed_epochs=True)
    return estimator.fit(X, y)


class GradeMeanRegressor(BaseEstimator, RegressorMixin):
    """Naive baseline: the training mean growth of the student's grade (overall mean if unseen)."""

    def fit(self, X: pd.DataFrame, y) -> GradeMeanRegressor:
        frame = pd.DataFrame({"grade": X["grade"].astype(str).to_numpy(), "_y": np.asarray(y)})
        self.means_ = frame.groupby("grade")["_y"].mean().to_dict()
        self.overall_ = float(np.mean(y))
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (
            pd.Series(X["grade"].astype(str).to_numpy())
            .map(self.means_)
            .fillna(self.overall_)
            .to_numpy(float)
        )


class PriorScoreOLS(BaseEstimator, RegressorMixin):
    """Linear baseline: the classic growth regression of growth on the prior-year scores (every subject's,
    missing ones replaced by the training mean), with an intercept per grade."""

    def __init__(self, subjects: Sequence[str] = ()):
        self.subjects = subjects

    def _design(self, X: pd.DataFrame) -> np.ndarray:
        priors = np.column_stack([X[c].to_numpy(dtype=float) for c in self.columns_])
        priors = np.where(np.isnan(priors), self.means_, priors)
        grade = X["grade"].astype(str).to_numpy()
        dummies = np.column_stack([grade == g for g in self.grades_[1:]]) if len(self.grades_) > 1 else None
        return priors if dummies is None else np.hstack([priors, dummies.astype(float)])

    def fit(self, X: pd.DataFrame, y) -> PriorScoreOLS:
        self.columns_ = [prior_score_column(s) for s in self.subjects if prior_score_column(s) in X]
        self.means_ = np.array([np.nanmean(X[c].to_numpy(dtype=float)) for c in self.columns_])
        self.grades_ = sorted(X["grade"].astype(str).unique())
        self.model_ = LinearRegression().fit(self._design(X), y)
        return self

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict(self._design(X))


# The linear baseline comes first: every later run, the naive one included, reports its reduction against it.
BASELINES: dict[str, Callable[[Sequence[str]], BaseEstimator]] = {
    "baseline_linear": lambda subjects: PriorScoreOLS(subjects),
    "baseline_naive": lambda subjects: GradeMeanRegressor(),
}
