"""Error metrics shared by tuning, training and evaluation."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import mean_absolute_error, r2_score


def rmse(actual: np.ndarray, predicted: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(actual, float) - np.asarray(predicted, float)) ** 2)))


def scores(actual: np.ndarray, predicted: np.ndarray, prefix: str) -> dict[str, float]:
    """MAE, RMSE and R2 under names like ``test_rmse``."""
    return {
        f"{prefix}_mae": float(mean_absolute_error(actual, predicted)),
        f"{prefix}_rmse": rmse(actual, predicted),
        f"{prefix}_r2": float(r2_score(actual, predicted)),
    }


def reduction_pct(model_error: float, baseline_error: float) -> float:
    """How much lower the model's error is than the baseline's, in percent of the baseline."""
    return float((baseline_error - model_error) / baseline_error * 100.0)
