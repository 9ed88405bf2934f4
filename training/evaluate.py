"""Evaluation of a fitted growth model: errors per year pair and subgroup, interval coverage, the noise
floor from the synthetic truth, permutation importance, partial dependence and plots.

All functions are pure over frames and arrays; ``training.train`` decides where results go.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from training.metrics import rmse  # noqa: E402

# Groups of the fairness audit and the subgroup tables (when the district has the column).
SUBGROUPS = ("econ_disadvantaged", "english_learner", "special_education", "gender", "grade", "school_type")
GROUP_LABELS = {
    "econ_disadvantaged": "economically disadvantaged",
    "english_learner": "English learner",
    "special_education": "special education",
    "gender": "gender",
    "grade": "grade",
    "school_type": "school type",
}


def with_school_type(frame: pd.DataFrame, schools: pd.DataFrame | None) -> pd.DataFrame:
    """The frame with ``school_type`` of each row's school (when the schools table has types)."""
    if schools is None or "type" not in schools or "school_type" in frame:
        return frame
    types = schools.set_index("school_id")["type"].astype(str)
    return frame.assign(school_type=frame["school_id"].astype(str).map(types).to_numpy())


def group_values(frame: pd.DataFrame, column: str) -> pd.Series:
    """A group column as readable text (flags as yes/no), missing as 'missing'."""
    values = frame[column]
    if column in ("econ_disadvantaged", "english_learner", "special_education"):
        numbers = pd.to_numeric(values, errors="coerce")
        text = np.where(numbers.isna(), "missing", np.where(numbers > 0.5, "yes", "no"))
        return pd.Series(text, index=frame.index)
    return values.astype(object).where(values.notna(), "missing").astype(str)


def group_table(
    frame: pd.DataFrame, measure: Callable[[np.ndarray], dict[str, float]], groups: Sequence[str] = SUBGROUPS
) -> pd.DataFrame:
    """``measure(positions)`` for everyone and for each value of each group column present."""
    rows = [{"group": "all", "value": "all", **measure(np.arange(len(frame)))}]
    for column in groups:
        if column not in frame:
            continue
        values = group_values(frame, column)
        for value in sorted(values.unique(), key=str):
            positions = np.flatnonzero(values.to_numpy() == value)
            rows.append({"group": column, "value": str(value), **measure(positions)})
    return pd.DataFrame(rows)


def growth_errors(
    actual: np.ndarray, predicted: np.ndarray, low: np.ndarray | None = None, high: np.ndarray | None = None
) -> Callable[[np.ndarray], dict[str, float]]:
    """Per group: n, bias (mean of predicted - actual), MAE, RMSE and interval coverage."""

    def measure(rows: np.ndarray) -> dict[str, float]:
        err = predicted[rows] - actual[rows]
        out = {
            "n": int(len(rows)),
            "bias": float(err.mean()),
            "mae": float(np.abs(err).mean()),
            "rmse": float(np.sqrt((err**2).mean())),
        }
        if low is not None and high is not None:
            out["coverage_90"] = float(((actual[rows] >= low[rows]) & (actual[rows] <= high[rows])).mean())
        return out

    return measure


def per_year(frame: pd.DataFrame, actual: np.ndarray, predicted: np.ndarray) -> pd.DataFrame:
    """Test error per target year (a year pair t-1 -> t)."""
    rows = []
    for year in sorted(pd.unique(frame["school_year"])):
        mine = np.flatnonzero(frame["school_year"].to_numpy() == year)
        err = predicted[mine] - actual[mine]
        rows.append(
            {
                "year_pair": f"{int(year) - 1}->{int(year)}",
                "n": len(mine),
                "mae": float(np.abs(err).mean()),
                "rmse": float(np.sqrt((err**2).mean())),
            }
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the synthetic truth
def read_truth(folder: Path) -> pd.DataFrame | None:
    """The synthetic district's expected growth per (student, target year, subject), if its truth files
    are beside the data (never used for training). Long districts: truth/expected_growth_<year>.csv;
    classic: truth.csv (target year 1)."""
    folder = Path(folder)
    long_files = sorted((folder / "truth").glob("expected_growth_*.csv"))
    if long_files:
        parts = []
        for path in long_files:
            year = int(path.stem.rsplit("_", 1)[1])
            part = pd.read_csv(
                path, dtype={"student_id": str}, usecols=["student_id", "subject", "expected_growth"]
            )
            parts.append(part.assign(school_year=year))
        return pd.concat(parts, ignore_index=True)
    classic = folder / "truth.csv"
    if classic.exists():
        wide = pd.read_csv(classic).rename(columns={"Student ID": "student_id"})
        wide["student_id"] = wide["student_id"].astype(str)
        parts = [
            wide[["student_id", c]]
            .rename(columns={c: "expected_growth"})
            .assign(subject=c.removeprefix("expected_").removesuffix("_growth"), school_year=1)
            for c in wide.columns
            if c.startswith("expected_")
        ]
        return pd.concat(parts, ignore_index=True)
    return None


def truth_folder(source) -> Path:
    return Path(source.config).parent if source.config else Path(source.students).parent


def expected_growth(frame: pd.DataFrame, truth: pd.DataFrame, subject: str) -> np.ndarray:
    """The truth's expected growth for each row of ``frame`` (NaN where the truth has none)."""
    mine = truth[truth["subject"] == subject]
    key = pd.MultiIndex.from_arrays([mine["student_id"].astype(str), mine["school_year"].astype(int)])
    wanted = pd.MultiIndex.from_arrays([frame["student_id"].astype(str), frame["school_year"].astype(int)])
    position = key.get_indexer(wanted)
    values = mine["expected_growth"].to_numpy(dtype=float)
    return np.where(position >= 0, values[np.maximum(position, 0)], np.nan)


def noise_floor(
    frame: pd.DataFrame, actual: np.ndarray, predicted: np.ndarray, truth: pd.DataFrame, subject: str
) -> dict[str, float]:
    """RMSE of the truth's expected growth (no model can beat it on average) and the model against it."""
    expected = expected_growth(frame, truth, subject)
    known = ~np.isnan(expected)
    if not known.any():
        return {}
    floor = rmse(actual[known], expected[known])
    model = rmse(actual[known], predicted[known])
    return {
        "noise_floor_rmse": floor,
        "test_rmse_over_noise_floor": model / floor,
        "excess_mse_over_floor": model**2 - floor**2,
        "rmse_vs_expected_growth": rmse(expected[known], predicted[known]),
        "truth_rows": float(known.sum()),
    }


# ---------------------------------------------------------------- what drives the model
def permutation_importance(
    predict: Callable[[pd.DataFrame], np.ndarray],
    frame: pd.DataFrame,
    actual: np.ndarray,
    columns: Sequence[str],
    seed: int,
    max_rows: int = 4000,
    repeats: int = 3,
) -> pd.Series:
    """RMSE increase when one input column is shuffled (on a validation sample), per input column."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(frame), size=min(max_rows, len(frame)), replace=False)
    sample = frame.iloc[rows].reset_index(drop=True)
    y = np.asarray(actual)[rows]
    base = rmse(y, predict(sample))
    out = {}
    for column in columns:
        if column not in sample:
            continue
        increases = []
        for _ in range(repeats):
            shuffled = sample.copy()
            shuffled[column] = sample[column].to_numpy()[rng.permutation(len(sample))]
            increases.append(rmse(y, predict(shuffled)) - base)
        out[column] = float(np.mean(increases))
    return pd.Series(out).sort_values(ascending=False)


def partial_dependence(
    predict: Callable[[pd.DataFrame], np.ndarray],
    frame: pd.DataFrame,
    column: str,
    seed: int,
    max_rows: int = 2000,
    points: int = 12,
) -> pd.DataFrame:
    """Average prediction when everyone's ``column`` is set to each grid value (quantiles of the data)."""
    rng = np.random.default_rng(seed)
    sample = frame.iloc[rng.choice(len(frame), size=min(max_rows, len(frame)), replace=False)].reset_index(
        drop=True
    )
    values = pd.to_numeric(sample[column], errors="coerce").dropna()
    if values.nunique() < 2:
        return pd.DataFrame(columns=["value", "mean_prediction"])
    grid = np.unique(np.quantile(values, np.linspace(0.02, 0.98, points)))
    rows = []
    for value in grid:
        changed = sample.copy()
        changed[column] = value
        rows.append({"value": float(value), "mean_prediction": float(np.mean(predict(changed)))})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- plots
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
    ax.set(xlabel="RMSE increase when shuffled", title=title)
    figure.tight_layout()
    return figure


def calibration_figure(y: np.ndarray, p: np.ndarray, title: str, bins: int = 10) -> plt.Figure:
    """Observed share needing support against the mean predicted probability, per probability decile."""
    order = np.argsort(p)
    chunks = np.array_split(order, bins)
    mean_p = [float(np.mean(p[c])) for c in chunks if len(c)]
    observed = [float(np.mean(y[c])) for c in chunks if len(c)]
    figure, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle="--", label="perfect calibration")
    ax.plot(mean_p, observed, marker="o", label="model")
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed share needing support",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    figure.tight_layout()
    return figure


def markdown_table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".3f")


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
