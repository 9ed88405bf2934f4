"""Behavioural checks of a candidate model before it is promoted (as Made-With-ML runs behavioural tests
against the trained candidate): what a district would find absurd if the model did it.

* directional: more days absent last year, or less homework completed, never raises the predicted
  growth on average (nor lowers the probability of needing support);
* invariance: the student id and name change nothing.

Each check edits one input of real records and compares average predictions; a small tolerance (0.5%
of the predictions' spread) keeps a flat stretch of a tree model from failing on rounding noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

MAX_ROWS = 3000
TOLERANCE_SHARE = 0.005
ABSENCE_STEPS = (5.0, 10.0, 20.0)  # days added
HOMEWORK_STEPS = (10.0, 20.0, 40.0)  # percentage points removed


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str


def _sample(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    rows = np.random.default_rng(seed).permutation(len(frame))[:MAX_ROWS]
    return frame.iloc[np.sort(rows)].reset_index(drop=True)


def _directional(
    predict: Callable[[pd.DataFrame], np.ndarray],
    frame: pd.DataFrame,
    name: str,
    column: str,
    edits: dict[str, Callable[[pd.Series], pd.Series]],
    sign: float,
) -> Check:
    """``sign`` = +1: the edit must not raise the mean prediction; -1: must not lower it."""
    if column not in frame or frame[column].notna().sum() == 0:
        return Check(name, True, f"not applicable: no {column} in the data")
    base = np.asarray(predict(frame), dtype=float)
    tolerance = TOLERANCE_SHARE * float(np.std(base) or 1.0)
    worst, worst_edit = -np.inf, ""
    for label, edit in edits.items():
        changed = frame.assign(**{column: edit(pd.to_numeric(frame[column], errors="coerce"))})
        shift = sign * float(np.mean(np.asarray(predict(changed), dtype=float) - base))
        if shift > worst:
            worst, worst_edit = shift, label
    passed = worst <= tolerance
    verb = "raises" if sign > 0 else "lowers"
    detail = (
        f"{name}: {worst_edit} {verb} the mean prediction by {abs(worst):.4f}"
        if worst > 0
        else f"{name}: no edit {verb} the mean prediction (largest change {worst:+.4f})"
    )
    return Check(name, passed, f"{detail} (tolerance {tolerance:.4f})")


def behaviour_checks(model, frame: pd.DataFrame, kind: str = "growth", seed: int = 0) -> list[Check]:
    """Run every check on up to MAX_ROWS records of ``frame`` (model-input columns)."""
    sample = _sample(frame, seed)
    if kind == "growth":
        predict, sign = model.predict, 1.0
    else:
        predict, sign = (lambda f: model.predict_proba(f)[:, 1]), -1.0
    checks = [
        _directional(
            predict,
            sample,
            "more absences",
            "prior_days_absent",
            {f"+{d:g} days absent": (lambda v, d=d: v + d) for d in ABSENCE_STEPS},
            sign,
        ),
        _directional(
            predict,
            sample,
            "less homework",
            "prior_homework_completion_pct",
            {f"-{p:g} points of homework": (lambda v, p=p: (v - p).clip(lower=0)) for p in HOMEWORK_STEPS},
            sign,
        ),
    ]
    rng = np.random.default_rng(seed + 1)
    named = [
        sample.assign(
            student_id=[f"{rng.integers(10**9):010d}" for _ in range(len(sample))],
            student_name=[f"Student {i}" for i in rng.permutation(len(sample))],
        )
        for _ in range(2)
    ]
    same = np.array_equal(np.asarray(predict(named[0])), np.asarray(predict(named[1]))) and np.array_equal(
        np.asarray(predict(named[0])), np.asarray(predict(sample))
    )
    checks.append(
        Check(
            "student id and name",
            same,
            "predictions identical whatever the student id and name"
            if same
            else "predictions change with the student id or name",
        )
    )
    return checks


def checks_table(checks: list[Check]) -> pd.DataFrame:
    return pd.DataFrame([{"check": c.name, "passed": c.passed, "detail": c.detail} for c in checks])
