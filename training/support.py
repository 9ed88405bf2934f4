"""Who needs support next year: P(next score below the proficiency cut of the next grade), per subject.

Same features and the same fitted transform as the growth model. Baselines: (a) the rule districts
use today, "last year's score below last year's cut", as a score (distance below the cut) turned
into a probability by a logistic fit on the training part; (b) logistic regression on the prior
scores. Tuned families: LightGBM and a regularised logistic model on spline features, both
calibrated afterwards (isotonic) on the calibration part, which took no part in tuning or selection.
Districts have capacity for a fixed share of students, so precision and recall are reported for the
top 5%, 10% and 20% flagged. Wording everywhere a person reads it: "needs support".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import ColumnTransformer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import SplineTransformer

from features.contract import prior_score_column, proficient_column, score_column
from training import compiled
from training.families import (
    EARLY_STOPPING_ROUNDS,
    LGBM_REPORT_EVERY,
    REFIT_GROWTH,
    Family,
    FeatureInfo,
    lgbm_fixed_options,
    lgbm_space,
)

TOP_SHARES = (0.05, 0.10, 0.20)
EPS = 1e-6


class NoCutScores(ValueError):
    """The subject has no proficiency cut scores, so "needs support" is undefined."""


def cut_per_row(grades: pd.Series, cuts: dict[str, float | None]) -> np.ndarray:
    return pd.Series(np.asarray(grades, dtype=object)).astype(str).map(cuts).to_numpy(dtype=float)


def support_labels(frame: pd.DataFrame, subject: str, cuts: dict[str, float | None]) -> np.ndarray:
    """1 when the target-year score is below the proficient cut of the target-year grade; without cut
    scores, when the target-year achievement level (from the file) is below the proficient level."""
    cut = cut_per_row(frame["grade"], cuts)
    if not np.isnan(cut).all():
        return (frame[score_column(subject)].to_numpy(dtype=float) < cut).astype(float)
    flag = proficient_column(subject)
    if flag in frame and frame[flag].notna().any():
        labels = 1.0 - frame[flag].to_numpy(dtype=float)
        unknown = int(np.isnan(labels).sum())
        if unknown:
            raise NoCutScores(
                f"{subject}: {unknown:,} students with a score have no achievement level in the files; "
                f"give the cut scores (config key subjects.{subject}.cuts) so levels are derived from scores"
            )
        return labels
    raise NoCutScores(
        f"{subject} has neither proficiency cut scores nor achievement levels (config keys "
        f"subjects.{subject}.levels, proficient and cuts, or columns.achievement_level); the "
        "needs-support model needs one of them"
    )


def why_no_support(district, subject: str) -> str | None:
    """Why "needs support next year" is not defined for a subject of the district, or None when it is:
    it needs a proficient level, and cut scores or achievement levels in the files (the rule
    ``support_labels`` applies row by row). Checked before tuning, also when workers prepare the data."""
    spec = district.subject(subject)
    flag = proficient_column(subject)
    levels = flag in district.students and district.students[flag].notna().any()
    if spec.proficient is not None and (bool(spec.cuts) or bool(levels)):
        return None
    return (
        f"{subject}: no needs-support model: the config gives no proficient level, and neither "
        f"cut scores nor achievement levels (keys subjects.{subject}.levels, proficient, cuts, "
        "columns.achievement_level)"
    )


def labels_of(prepared) -> np.ndarray:
    """Labels for every usable pair of a prepared subject (cached on the Prepared object)."""
    cached = getattr(prepared, "_support_labels", None)
    if cached is None:
        subject = prepared.data.district.subject(prepared.subject)
        cuts = {g: subject.proficient_cut(g) for g in prepared.data.district.grades}
        cached = support_labels(prepared.frame, prepared.subject, cuts)
        prepared._support_labels = cached
    return cached


# ---------------------------------------------------------------- metrics
def top_share_metrics(y: np.ndarray, p: np.ndarray, shares: Sequence[float] = TOP_SHARES) -> dict[str, float]:
    """Precision and recall when the top ``share`` of students by probability are flagged.

    Ties at the boundary are broken by position (stable sort), so exactly round(share * n) are flagged."""
    y = np.asarray(y, dtype=float)
    order = np.argsort(-np.asarray(p, dtype=float), kind="stable")
    positives = y.sum()
    out = {}
    for share in shares:
        k = max(1, int(round(share * len(y))))
        flagged = y[order[:k]]
        label = f"{int(round(share * 100))}pct"
        out[f"precision_at_{label}"] = float(flagged.mean())
        out[f"recall_at_{label}"] = float(flagged.sum() / positives) if positives else float("nan")
    return out


def support_scores(y: np.ndarray, p: np.ndarray, prefix: str) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision), Brier score, log loss and the top-share figures."""
    p = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    out = {
        f"{prefix}_roc_auc": float(roc_auc_score(y, p)),
        f"{prefix}_pr_auc": float(average_precision_score(y, p)),
        f"{prefix}_brier": float(brier_score_loss(y, p)),
        f"{prefix}_log_loss": float(log_loss(y, p, labels=[0, 1])),
        f"{prefix}_base_rate": float(np.mean(y)),
    }
    out.update({f"{prefix}_{k}": v for k, v in top_share_metrics(y, p).items()})
    return out


def score_for_tuning(y: np.ndarray, model: object, X: np.ndarray) -> dict[str, float]:
    return support_scores(y, model.predict_proba(X)[:, 1], "val")


# ---------------------------------------------------------------- families
def build_lgbm_classifier(params: dict, seed: int, info: FeatureInfo) -> BaseEstimator:
    import lightgbm

    return lightgbm.LGBMClassifier(**params, **lgbm_fixed_options(seed))


def logistic_space(trial: optuna.Trial) -> dict:
    return {
        "C": trial.suggest_float("C", 1e-3, 10.0, log=True),
        "n_knots": trial.suggest_int("n_knots", 3, 8),
    }


def build_logistic(params: dict, seed: int, info: FeatureInfo) -> BaseEstimator:
    """L2-regularised logistic regression on B-splines of the continuous features (additive, smooth)."""
    splines = ColumnTransformer(
        [("splines", SplineTransformer(n_knots=params["n_knots"], degree=3), info.student_continuous)],
        remainder="passthrough",
    )
    return Pipeline([("splines", splines), ("logistic", LogisticRegression(C=params["C"], max_iter=2000))])


SUPPORT_FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "lgbm",
            "LightGBM classifier (Hyperband-pruned on boosting rounds)",
            lgbm_space,
            build_lgbm_classifier,
            space_version="3",
            prunable=True,
        ),
        Family(
            "logistic",
            "L2-regularised logistic regression on spline features",
            logistic_space,
            build_logistic,
            space_version="2",
        ),
    )
}
DEFAULT_SUPPORT_FAMILIES = ("lgbm", "logistic")


def fit_support(family: Family, params: dict, seed: int, info: FeatureInfo, X, y, X_val, y_val, report=None):
    """Fit one classifier; LightGBM stops early on validation log loss and reports it for pruning."""
    estimator = family.build(params, seed, info)
    if family.name != "lgbm":
        return estimator.fit(X, y)
    import lightgbm

    callbacks = [lightgbm.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)]
    if report is not None:

        def pruning(env: lightgbm.callback.CallbackEnv) -> None:
            if (env.iteration + 1) % LGBM_REPORT_EVERY == 0:
                report(env.iteration + 1, float(env.evaluation_result_list[0][2]))

        callbacks.append(pruning)
    estimator.fit(X, y, eval_X=(X_val,), eval_y=(y_val,), eval_metric="binary_logloss", callbacks=callbacks)
    estimator.best_rounds_ = int(estimator.best_iteration_ or estimator.n_estimators)
    return estimator


def refit_support(family: Family, params: dict, seed: int, info: FeatureInfo, X, y, fitted) -> BaseEstimator:
    estimator = family.build(params, seed, info)
    if family.name == "lgbm":
        estimator.set_params(n_estimators=max(1, int(round(fitted.best_rounds_ * REFIT_GROWTH))))
    return estimator.fit(X, y)


@dataclass(frozen=True)
class CalibratedClassifier:
    """A fitted classifier followed by an isotonic map of its probabilities, fitted on held-out rows."""

    base: object
    calibrator: IsotonicRegression

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """By the compiled evaluators of the classifier and of the isotonic map (training.compiled):
        the same numbers as ``base.predict_proba`` then ``calibrator.predict``, one row or many."""
        base, calibrator = compiled.cached(
            self,
            "proba",
            self.base,
            lambda: (compiled.classifier(self.base), compiled.isotonic(self.calibrator)),
        )
        raw = base(X)[:, 1]
        p = np.clip(calibrator(raw), EPS, 1 - EPS)
        return np.column_stack([1 - p, p])

    def __getstate__(self) -> dict:
        return compiled.without_cache(self.__dict__)


def calibrate(model: object, X_cal: np.ndarray, y_cal: np.ndarray) -> CalibratedClassifier:
    """Isotonic calibration on the calibration part (never seen by tuning, fitting or selection)."""
    raw = model.predict_proba(X_cal)[:, 1]
    return CalibratedClassifier(
        model, IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(raw, y_cal)
    )


# ---------------------------------------------------------------- baselines (on the model-input frame)
class PriorBelowCutRule(BaseEstimator, ClassifierMixin):
    """Baseline (a): how far last year's score fell below last year's proficient cut, as a probability
    through a one-variable logistic fit (the rule "below the cut last year" with a sensible scale)."""

    def __init__(self, subject: str = "math", cuts: dict | None = None, grades: Sequence[str] = ()):
        self.subject = subject
        self.cuts = cuts
        self.grades = grades

    def distance(self, X: pd.DataFrame) -> np.ndarray:
        """Points below last year's cut (negative: above it). Last year's grade is the one below. Without
        cut scores: 1 when last year's achievement level was below proficient, else 0."""
        previous = {g: self.grades[i - 1] for i, g in enumerate(self.grades) if i}
        prior_grade = pd.Series(X["grade"].astype(str).to_numpy()).map(previous)
        cut = cut_per_row(prior_grade, self.cuts or {})
        if np.isnan(cut).all():
            return 1.0 - X[f"prior_{proficient_column(self.subject)}"].to_numpy(dtype=float)
        return cut - X[prior_score_column(self.subject)].to_numpy(dtype=float)

    def fit(self, X: pd.DataFrame, y) -> PriorBelowCutRule:
        d = self.distance(X)
        ok = ~np.isnan(d)
        self.model_ = LogisticRegression().fit(d[ok, None], np.asarray(y)[ok])
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        d = np.nan_to_num(self.distance(X), nan=0.0)
        return self.model_.predict_proba(d[:, None])


class PriorScoreLogistic(BaseEstimator, ClassifierMixin):
    """Baseline (b): logistic regression on the prior scores (every subject's) and the grade."""

    def __init__(self, subjects: Sequence[str] = ()):
        self.subjects = subjects

    def _design(self, X: pd.DataFrame) -> np.ndarray:
        priors = np.column_stack([X[c].to_numpy(dtype=float) for c in self.columns_])
        priors = (np.where(np.isnan(priors), self.means_, priors) - self.means_) / self.sds_
        grade = X["grade"].astype(str).to_numpy()
        return np.hstack([priors, np.column_stack([grade == g for g in self.grades_]).astype(float)])

    def fit(self, X: pd.DataFrame, y) -> PriorScoreLogistic:
        self.columns_ = [prior_score_column(s) for s in self.subjects if prior_score_column(s) in X]
        values = np.column_stack([X[c].to_numpy(dtype=float) for c in self.columns_])
        self.means_, self.sds_ = np.nanmean(values, axis=0), np.nanstd(values, axis=0) + 1e-9
        self.grades_ = sorted(X["grade"].astype(str).unique())
        self.model_ = LogisticRegression(max_iter=2000).fit(self._design(X), y)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict_proba(self._design(X))


def support_baselines(subject: str, subjects: Sequence[str], cuts: dict, grades: Sequence[str]) -> dict:
    return {
        "baseline_rule": PriorBelowCutRule(subject, cuts, tuple(grades)),
        "baseline_logistic": PriorScoreLogistic(tuple(subjects)),
    }


def _task():
    from training.tuning import Task

    return Task("support", SUPPORT_FAMILIES, "val_log_loss", labels_of, fit_support, score_for_tuning)


SUPPORT = _task()
