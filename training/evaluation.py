"""Evaluation of a fitted growth model: subgroup errors, school value-added, noise floor, plots.

All functions are pure over frames and arrays; ``training.train`` decides where results go.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.inspection import permutation_importance  # noqa: E402

from training.metrics import rmse  # noqa: E402

SUBGROUPS = ("grade", "gender", "econ_disadvantaged", "english_learner", "special_education", "school_type")


def subgroup_errors(
    frame: pd.DataFrame, actual: np.ndarray, predicted: np.ndarray, schools: pd.DataFrame
) -> pd.DataFrame:
    """MAE, RMSE and mean error (bias) for each value of each subgroup column present."""
    data = frame.assign(
        school_type=frame["school_name"].map(schools.set_index("school_name")["type"]),
        _err=np.asarray(predicted) - np.asarray(actual),
    )
    rows = []
    for column in SUBGROUPS:
        if column not in data.columns:
            continue
        for value, group in data.groupby(column, sort=True, observed=True):
            err = group["_err"].to_numpy()
            rows.append(
                {
                    "subgroup": column,
                    "value": str(value),
                    "n": len(err),
                    "mae": float(np.abs(err).mean()),
                    "rmse": float(np.sqrt((err**2).mean())),
                    "mean_error": float(err.mean()),
                }
            )
    return pd.DataFrame(rows)


AVERAGE_SCHOOL = "__district_average_school__"


def mean_residual(frame: pd.DataFrame, residual: np.ndarray, name: str) -> pd.DataFrame:
    """Per-school mean of a residual with its standard error (sd / sqrt(n))."""
    grouped = pd.Series(residual, index=frame.index).groupby(frame["school_name"])
    return pd.DataFrame(
        {name: grouped.mean(), f"{name}_std_error": grouped.std(ddof=1) / np.sqrt(grouped.size())}
    )


def school_value_added(
    frame: pd.DataFrame, actual: np.ndarray, predicted: np.ndarray, predicted_average_school: np.ndarray
) -> pd.DataFrame:
    """Two value-added views per school, each a mean residual with its standard error.

    ``value_added``: actual minus the model's prediction; what the model itself does not explain.
    Because school features are inputs, this is only the part of a school's effect that its
    attributes do not predict. ``value_added_vs_average_school``: actual minus what the same model
    predicts for the same students at a district-average school (the unseen-school fallback):
    the school's whole contribution, the figure a district usually means by value-added.
    """
    actual = np.asarray(actual, dtype=float)
    table = pd.concat(
        [
            frame.groupby("school_name").size().rename("n"),
            mean_residual(frame, actual - np.asarray(predicted), "value_added"),
            mean_residual(
                frame, actual - np.asarray(predicted_average_school), "value_added_vs_average_school"
            ),
        ],
        axis=1,
    )
    return table.sort_values("value_added_vs_average_school", ascending=False)


def read_truth(students_path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict] | None:
    """The synthetic district's truth files beside students.csv, if present (never used for training)."""
    folder = Path(students_path).parent
    needed = [folder / "truth.csv", folder / "truth_schools.csv", folder / "truth.json"]
    if not all(p.exists() for p in needed):
        return None
    return (
        pd.read_csv(needed[0]).rename(columns={"Student ID": "student_id"}),
        pd.read_csv(needed[1]),
        json.loads(needed[2].read_text()),
    )


def truth_comparison(
    frame: pd.DataFrame,
    actual: np.ndarray,
    predicted: np.ndarray,
    target: str,
    truth: tuple[pd.DataFrame, pd.DataFrame, dict],
    value_added: pd.DataFrame,
) -> dict[str, float]:
    """Noise floor (error of the true expected growth) and how close the model gets to it."""
    per_student, per_school, meta = truth
    expected = (
        frame[["student_id"]]
        .merge(per_student, on="student_id", how="left")[f"expected_{target}_growth"]
        .to_numpy()
    )
    floor = rmse(actual, expected)
    model_rmse = rmse(actual, predicted)
    effects = value_added.join(per_school.set_index("school_name"), how="inner")
    total, idiosyncratic = effects[f"{target}_effect"], effects[f"{target}_effect_idiosyncratic"]
    return {
        "noise_floor_rmse": floor,
        "documented_noise_sd": float(meta.get(f"noise_sd_{target}", np.nan)),
        "test_rmse_over_noise_floor": model_rmse / floor,
        "rmse_vs_expected_growth": rmse(expected, predicted),
        "value_added_vs_average_school_corr_true_effect": float(
            effects["value_added_vs_average_school"].corr(total)
        ),
        "value_added_corr_true_effect": float(effects["value_added"].corr(total)),
        "value_added_corr_true_idiosyncratic_effect": float(effects["value_added"].corr(idiosyncratic)),
    }


def feature_importance(
    model, frame: pd.DataFrame, actual: np.ndarray, seed: int, max_rows: int = 4000
) -> pd.Series:
    """Permutation importance of the raw input columns (RMSE increase), on a validation sample."""
    sample = frame.sample(n=min(max_rows, len(frame)), random_state=seed)
    y = pd.Series(actual, index=frame.index).loc[sample.index].to_numpy()
    columns = [
        c for c in sample.columns if c not in ("student_id", "student_name", "math_score", "reading_score")
    ]
    result = permutation_importance(
        model,
        sample[columns],
        y,
        scoring="neg_root_mean_squared_error",
        n_repeats=3,
        random_state=seed,
        n_jobs=1,
    )
    return pd.Series(result.importances_mean, index=columns).sort_values(ascending=False)


def residual_figures(actual: np.ndarray, predicted: np.ndarray, title: str) -> dict[str, plt.Figure]:
    """Predicted-vs-actual and residual plots, sampled so 150k points stay readable."""
    rng = np.random.default_rng(0)
    keep = rng.choice(len(actual), size=min(5000, len(actual)), replace=False)
    a, p = np.asarray(actual)[keep], np.asarray(predicted)[keep]
    scatter, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(p, a, s=4, alpha=0.3)
    low, high = float(min(a.min(), p.min())), float(max(a.max(), p.max()))
    ax.plot([low, high], [low, high], color="black", linewidth=1)
    ax.set(xlabel="predicted growth", ylabel="actual growth", title=f"{title}: predicted vs actual")
    resid, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].scatter(p, a - p, s=4, alpha=0.3)
    axes[0].axhline(0, color="black", linewidth=1)
    axes[0].set(xlabel="predicted growth", ylabel="residual", title="residuals vs predicted")
    axes[1].hist(np.asarray(actual) - np.asarray(predicted), bins=60)
    axes[1].set(xlabel="residual", title="residual distribution")
    resid.tight_layout()
    return {"predicted_vs_actual.png": scatter, "residuals.png": resid}


def importance_figure(importance: pd.Series, title: str) -> plt.Figure:
    figure, ax = plt.subplots(figsize=(7, 0.3 * len(importance) + 1))
    importance.iloc[::-1].plot.barh(ax=ax)
    ax.set(xlabel="RMSE increase when permuted", title=title)
    figure.tight_layout()
    return figure


def evaluation_markdown(
    target: str,
    family: str,
    metrics: dict[str, float],
    subgroups: pd.DataFrame,
    value_added: pd.DataFrame,
    truth_figures: dict[str, float] | None,
) -> str:
    """The human-readable evaluation report of the champion."""
    lines = [
        f"# Evaluation: {target} growth, champion family `{family}`",
        "",
        "## Overall (test set)",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    if truth_figures:
        lines += ["", "## Against the synthetic truth", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in truth_figures.items()]
    lines += ["", "## Error by subgroup (test set)", "", subgroups.to_markdown(index=False, floatfmt=".3f")]
    lines += [
        "",
        "## School value-added (test set: mean residual, actual minus predicted)",
        "",
        value_added.reset_index().to_markdown(index=False, floatfmt=".3f"),
    ]
    return "\n".join(lines) + "\n"
