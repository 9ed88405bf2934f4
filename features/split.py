"""Deterministic train / validation / calibration / test parts of the growth pairs.

* ``future`` (default with two or more target years): the latest target year is the test year, as a
  district uses the model to forecast next year; earlier year pairs are cut into train (tuning and
  fitting), validation (early stopping, tuning, model selection) and calibration (prediction
  intervals and probability calibration only: it takes no part in tuning or selection).
* ``random``: every year pair is shuffled into the four parts (the only choice with one target year,
  e.g. the classic format).

The random scheme draws parts by student (or by school with ``holdout_schools``). The future scheme
draws train, validation and calibration by SCHOOL-YEAR: the test year brings each school's new
prior-year aggregates, values no training row had, so validation and calibration must also hold
school-years the model never saw, or they reward memorising the few hundred school-year rows
(measured: a spline model validated at 16.0 points and tested at 41.7 when cut by student).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

PARTS = ("train", "val", "cal", "test")
VAL_FRAC = 0.15
CAL_FRAC = 0.15
TEST_FRAC = 0.15
# Fewest school-years before the test year for the by-school-year cut (train gets 4, validation and
# calibration one each); a district with fewer (two or three schools) is cut by student instead, and
# the scheme's label says so.
MIN_SCHOOL_YEARS = 6


@dataclass(frozen=True)
class Split:
    """Positional row indices of each part, and how they were drawn."""

    train: np.ndarray
    val: np.ndarray
    cal: np.ndarray
    test: np.ndarray
    scheme: str
    test_years: tuple[int, ...]

    def describe(self) -> str:
        years = ", ".join(str(y) for y in self.test_years)
        if self.scheme.startswith("future"):
            return (
                f"leave-future-out: trained on year pairs before {years}, tested on the pairs of "
                f"{years} ({len(self.test):,} students)"
            )
        return f"{self.scheme}: {len(self.test):,} test students drawn at random from years {years}"


def _groups(pairs: pd.DataFrame, holdout_schools: bool, by_school_year: bool = False) -> np.ndarray:
    if by_school_year and not holdout_schools:
        keys = pairs["school_id"].astype(str) + "|" + pairs["school_year"].astype(str)
        return pd.factorize(keys, sort=True)[0]
    column = "school_id" if holdout_schools else "student_id"
    return pd.factorize(pairs[column].astype(str), sort=True)[0]


def _cut(groups: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Assign whole groups to parts at random in the given proportions; returns sorted row positions."""
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    order = np.random.default_rng(seed).permutation(n_groups)
    edges = [int(round(e)) for e in np.cumsum([0.0, *fractions.values()]) * n_groups]
    if n_groups >= len(fractions):  # rounding must not leave a part without a group
        for i in range(1, len(edges) - 1):
            edges[i] = max(edges[i], edges[i - 1] + 1)
        for i in range(len(edges) - 2, 0, -1):
            edges[i] = min(edges[i], edges[i + 1] - 1)
    part_of_group = np.empty(n_groups, dtype=np.int8)
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        part_of_group[order[lo:hi]] = i
    part = part_of_group[groups]
    return {name: np.flatnonzero(part == i) for i, name in enumerate(fractions)}


def split_pairs(
    pairs: pd.DataFrame,
    seed: int = 42,
    scheme: Literal["future", "random"] = "future",
    holdout_schools: bool = False,
) -> Split:
    """Cut usable pairs of one subject into train/val/cal/test (see the module docstring)."""
    if len(pairs) < 20:
        raise ValueError(
            f"{len(pairs)} growth pairs are too few to split into train, validation, "
            "calibration and test parts"
        )
    years = np.asarray(pairs["school_year"], dtype=np.int64)
    target_years = sorted(set(years.tolist()))
    future = scheme == "future" and len(target_years) >= 2
    groups = _groups(pairs, holdout_schools, by_school_year=future)
    if holdout_schools and groups.max() + 1 < 4:
        raise ValueError("holding out schools needs at least 4 schools")
    if future:
        label = "holdout-schools" if holdout_schools else "by school-year"
        test_year = target_years[-1]
        past = np.flatnonzero(years < test_year)
        school_years = len(np.unique(groups[past]))
        if not holdout_schools and school_years < MIN_SCHOOL_YEARS:
            groups = _groups(pairs, holdout_schools=False)  # by student
            label = f"by student: only {school_years} school-years before the test year"
        rest = 1.0 - VAL_FRAC - CAL_FRAC
        parts = _cut(groups[past], {"train": rest, "val": VAL_FRAC, "cal": CAL_FRAC}, seed)
        test = np.flatnonzero(years == test_year)
        if holdout_schools:  # test schools must be unseen too: drop test rows of schools in the past parts
            seen = np.unique(groups[past[parts["train"]]])
            test = test[~np.isin(groups[test], seen)]
        return Split(
            *(past[parts[p]] for p in ("train", "val", "cal")), test, f"future ({label})", (test_year,)
        )
    label = "holdout-schools" if holdout_schools else "by student"
    rest = 1.0 - VAL_FRAC - CAL_FRAC - TEST_FRAC
    parts = _cut(groups, {"train": rest, "val": VAL_FRAC, "cal": CAL_FRAC, "test": TEST_FRAC}, seed)
    return Split(*(parts[p] for p in PARTS), f"random ({label})", tuple(target_years))
