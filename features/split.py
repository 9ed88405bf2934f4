"""Deterministic train / validation / test split, by student or by whole school."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Split:
    """Positional row indices of each part."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_rows(
    students: pd.DataFrame,
    seed: int = 42,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    holdout_schools: bool = False,
) -> Split:
    """Shuffle students (or schools, so val/test schools are unseen in training) by seed and cut."""
    if not 0 < val_frac < 1 or not 0 < test_frac < 1 or val_frac + test_frac >= 1:
        raise ValueError("val_frac and test_frac must be in (0, 1) and sum to less than 1")
    rng = np.random.default_rng(seed)
    if holdout_schools:
        schools = np.sort(students["school_name"].unique())
        if len(schools) < 3:
            raise ValueError("holding out schools needs at least 3 schools")
        order = rng.permutation(schools)
        n_test = max(1, round(len(order) * test_frac))
        n_val = max(1, round(len(order) * val_frac))
        part = pd.Series("train", index=order)
        part.iloc[:n_test] = "test"
        part.iloc[n_test : n_test + n_val] = "val"
        labels = students["school_name"].map(part).to_numpy()
        return Split(*(np.flatnonzero(labels == name) for name in ("train", "val", "test")))
    order = rng.permutation(len(students))
    n_test = round(len(order) * test_frac)
    n_val = round(len(order) * val_frac)
    return Split(
        train=np.sort(order[n_test + n_val :]),
        val=np.sort(order[n_test : n_test + n_val]),
        test=np.sort(order[:n_test]),
    )
