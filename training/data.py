"""Everything a tuning worker or the training step needs: validated data, target, split and the
fitted transform, built by one function so every process prepares data identically."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from features.contract import TARGETS
from features.io import load_district
from features.split import Split, split_rows
from features.transform import feature_pipeline, growth_target


@dataclass(frozen=True)
class DataConfig:
    """Where the district is and how to cut it."""

    schools: Path
    students: Path
    target: str = "math"
    seed: int = 42
    holdout_schools: bool = False

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {self.target!r}")


@dataclass
class Prepared:
    """Validated frames, target, split, fitted transform and the encoded matrices."""

    config: DataConfig
    students: pd.DataFrame
    schools: pd.DataFrame
    y: np.ndarray
    split: Split
    transform: Pipeline
    X_train: np.ndarray
    X_val: np.ndarray
    X_test: np.ndarray
    n_numeric: int
    fingerprint: str

    def part(self, name: str) -> pd.DataFrame:
        return self.students.iloc[getattr(self.split, name)]

    def y_part(self, name: str) -> np.ndarray:
        return self.y[getattr(self.split, name)]


def file_fingerprint(*paths: Path) -> str:
    """Short content hash of the input files: tags every run with the exact data it saw."""
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def prepare(config: DataConfig) -> Prepared:
    """Load, validate, compute the target, split, and fit the transform on the training part only."""
    district = load_district(config.schools, config.students)
    students = district.students
    y = growth_target(students, config.target)
    if y.isna().any():
        raise ValueError(
            f"{config.students}: {int(y.isna().sum())} students lack a prior-year or target-year "
            f"score for {config.target}; the growth model needs both"
        )
    split = split_rows(students, seed=config.seed, holdout_schools=config.holdout_schools)
    train = students.iloc[split.train]
    transform = feature_pipeline(train, district.schools).fit(train)
    n_numeric = len(transform.named_steps["encode"].transformers_[0][2])
    return Prepared(
        config=config,
        students=students,
        schools=district.schools,
        y=y.to_numpy(dtype=float),
        split=split,
        transform=transform,
        X_train=transform.transform(train).astype("float32"),
        X_val=transform.transform(students.iloc[split.val]).astype("float32"),
        X_test=transform.transform(students.iloc[split.test]).astype("float32"),
        n_numeric=n_numeric,
        fingerprint=file_fingerprint(config.schools, config.students),
    )


def subsample(n_rows: int, limit: int | None, seed: int) -> np.ndarray:
    """Deterministic subset of row positions for fast tuning trials (all rows when limit is None)."""
    if limit is None or limit >= n_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=limit, replace=False))
