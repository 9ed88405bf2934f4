"""Prediction intervals that cover what they claim, for whatever a request carries.

Normalised split-conformal prediction (Lei et al. 2018), Mondrian by what the request lacks:

1. a scale model sigma(x) of |actual - predicted| is fitted on VALIDATION residuals of a model that
   never saw those rows (the train-only fit), on copies of the rows with random optional fields
   removed and with the school made unknown, so the width learns what missing inputs cost;
2. on the CALIBRATION part (no role in tuning, early stopping or selection; the final model never
   saw it), the same kind of copies are scored by the FINAL model, and for each bucket of
   (number of optional fields missing, school unseen) the conformal quantile q of |r| / sigma(x) is
   taken at level ceil((n + 1)(1 - alpha)) / n;
3. the multiplier q is conditioned on groups: a linear quantile regression of |r| / sigma(x) on
   indicators of the bucket and the audited student groups (``fit_group_quantile``, the
   conditional-guarantee method of Gibbs, Cherian and Candes 2023), so the interval covers about the
   level within each of those groups, not only overall; a prediction's interval is predicted +-
   q(x) * sigma(x).

sigma(x) spreads width to where errors are larger; the group quantile corrects what sigma(x) gets
wrong for a whole group. Models saved before the group quantile use the per-bucket quantile.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from training import compiled

UNSEEN_SCHOOL = "\x00unseen school"
MISSING_BUCKETS = ((0, 0), (1, 3), (4, 8), (9, 10**6))
COPIES = 4


_BAND_LOW = np.array([lo for lo, _ in MISSING_BUCKETS])
_BAND_HIGH = np.array([hi for _, hi in MISSING_BUCKETS])


def bucket_of(n_missing: np.ndarray, unseen: np.ndarray) -> np.ndarray:
    """Bucket index: 4 bands of missing optional fields x seen/unseen school (the last band that
    contains the count; band 0 when none does)."""
    count = np.asarray(n_missing)[:, None]
    within = (count >= _BAND_LOW) & (count <= _BAND_HIGH)
    last = len(MISSING_BUCKETS) - 1 - np.argmax(within[:, ::-1], axis=1)
    band = np.where(within.any(axis=1), last, 0)
    return band * 2 + np.asarray(unseen, dtype=np.int64)


def count_missing(X: pd.DataFrame | dict, optional: Sequence[str]) -> np.ndarray:
    """How many optional input fields each record lacks (absent columns count as missing)."""
    frame = isinstance(X, pd.DataFrame)
    n = len(X) if frame else len(next(iter(X.values())))
    columns = [X[name] if (name in X.columns if frame else name in X) else None for name in optional]
    present = [values for values in columns if values is not None]
    absent = len(columns) - len(present)
    small = not frame and n <= compiled.SMALL_BATCH
    if small and all(getattr(v, "ndim", None) == 1 and len(v) == n for v in present):
        # a few records (an HTTP request): one pass over the values, pandas' test element by element
        flags = np.array([[compiled.is_missing(v) for v in values] for values in present], dtype=bool)
        return flags.reshape(len(present), n).sum(axis=0, dtype=np.int64) + absent
    total = np.full(n, absent, dtype=np.int64)
    for values in present:
        total += compiled.isna(values)  # pd.isna of the values as objects, without a Series
    return total


def masked_copies(
    frame: pd.DataFrame, optional: Sequence[str], seed: int, copies: int = COPIES
) -> pd.DataFrame:
    """``copies`` versions of ``frame``: the first as is; the others with k random optional fields
    removed (k uniform over 0..all) and, for a third of them, the school unknown. Rows keep their
    original position in ``_row``."""
    rng = np.random.default_rng(seed)
    parts = [frame.assign(_row=np.arange(len(frame)))]
    optional = [c for c in optional if c in frame.columns]
    for _ in range(copies - 1):
        copy = frame.copy()
        k = rng.integers(0, len(optional) + 1, size=len(frame))
        scores = rng.random((len(frame), len(optional)))
        ranks = scores.argsort(axis=1).argsort(axis=1)
        for j, name in enumerate(optional):
            drop = ranks[:, j] < k
            column = copy[name]
            if isinstance(column.dtype, pd.CategoricalDtype):
                copy[name] = column.astype(object).where(~drop, None)
            else:
                copy[name] = column.where(~drop)
        unseen = rng.random(len(frame)) < 1 / 3
        copy["school_id"] = copy["school_id"].astype(object).where(~unseen, UNSEEN_SCHOOL)
        parts.append(copy.assign(_row=np.arange(len(frame))))
    return pd.concat(parts, ignore_index=True)


GROUP_FLAGS = ("econ_disadvantaged", "english_learner", "special_education")
GROUP_MIN_ROWS = 50  # an indicator with fewer calibration rows is left out of the group quantile
GROUP_QUANTILE_ROWS = 30_000  # calibration rows (of the masked copies) the group quantile is fitted on


def _values(X: pd.DataFrame | dict, name: str) -> np.ndarray | None:
    if isinstance(X, pd.DataFrame):
        return None if name not in X.columns else X[name].astype(object).to_numpy()
    return None if X.get(name) is None else np.asarray(X[name], dtype=object)


def _flag(X: pd.DataFrame | dict, name: str, n: int) -> np.ndarray:
    """True where the record says yes (1/True); missing and no are False."""
    values = _values(X, name)
    if values is None:
        return np.zeros(n, dtype=bool)
    return np.array([v is not None and v == v and bool(v) and v != "0" for v in values], dtype=bool)


def _text(X: pd.DataFrame | dict, name: str, n: int) -> np.ndarray:
    values = _values(X, name)
    if values is None:
        return np.full(n, "", dtype=object)
    return np.array([str(v) for v in values], dtype=object)


@dataclass(frozen=True)
class GroupDesign:
    """Indicators the interval's quantile is conditioned on: the missing-field bucket (and unseen
    school) and the audit's student groups (disadvantaged, English learner, special education, female).
    ``columns`` keeps those that had enough calibration rows. Grades are not among them: calibration
    rows come from a few dozen school-years, and per-grade multipliers fitted on them followed those
    school-years more than the grades (seen in development; not a committed measurement)."""

    columns: tuple[str, ...] = ()

    @staticmethod
    def all_columns() -> list[str]:
        buckets = [f"bucket={b}" for b in range(1, 2 * len(MISSING_BUCKETS))]
        return ["intercept", *buckets, *GROUP_FLAGS, "gender=F"]

    def matrix(
        self,
        X: pd.DataFrame | dict,
        n_missing: np.ndarray,
        unseen: np.ndarray,
        bucket: np.ndarray | None = None,
    ) -> np.ndarray:
        """0/1 columns (float64) of the kept indicators, computing only those. ``bucket``:
        ``bucket_of(n_missing, unseen)`` when the caller has it already."""
        n = len(n_missing)
        bucket = bucket_of(n_missing, unseen) if bucket is None else bucket
        layout = _layout(self.columns or tuple(self.all_columns()))
        out = np.zeros((n, layout.width))
        if layout.intercept is not None:
            out[:, layout.intercept] = 1.0
        if layout.bucket_columns:
            out[:, layout.bucket_columns] = bucket[:, None] == layout.bucket_values
        for j, flag in layout.flags:
            out[:, j] = _flag(X, flag, n)
        if layout.female is not None:
            out[:, layout.female] = _text(X, "gender", n) == "F"
        return out


@dataclass(frozen=True)
class _Layout:
    """Where each kind of indicator sits in a design's columns."""

    width: int
    intercept: int | None
    bucket_columns: list[int]
    bucket_values: np.ndarray
    flags: tuple[tuple[int, str], ...]
    female: int | None


@functools.lru_cache(maxsize=64)
def _layout(columns: tuple[str, ...]) -> _Layout:
    position = {name: j for j, name in enumerate(columns)}
    buckets = [
        (j, int(name.removeprefix("bucket="))) for j, name in enumerate(columns) if name.startswith("bucket=")
    ]
    return _Layout(
        width=len(columns),
        intercept=position.get("intercept"),
        bucket_columns=[j for j, _ in buckets],
        bucket_values=np.array([b for _, b in buckets], dtype=np.int64),
        flags=tuple((position[f], f) for f in GROUP_FLAGS if f in position),
        female=position.get("gender=F"),
    )


def fit_group_quantile(
    design: GroupDesign,
    X: pd.DataFrame,
    n_missing: np.ndarray,
    unseen: np.ndarray,
    scores: np.ndarray,
    level: float,
    seed: int,
) -> tuple[GroupDesign, np.ndarray]:
    """Linear quantile regression of the conformity scores on the group indicators, at the conformal
    level ceil((n + 1) level) / n: the conditional-guarantee conformal method of Gibbs, Cherian and
    Candes (2023) with a finite class of groups. Its first-order conditions make the interval cover
    about ``level`` of the calibration rows within every indicator's group (each missing-field bucket,
    unseen schools, each audited student group), not only overall. Solved exactly as a
    linear program by HiGHS (training.sgp.quantile_coefficients) on at most GROUP_QUANTILE_ROWS rows."""
    from training.sgp import quantile_coefficients

    full = design.matrix(X, n_missing, unseen)
    names = design.all_columns()
    keep = [j for j, name in enumerate(names) if name == "intercept" or full[:, j].sum() >= GROUP_MIN_ROWS]
    fitted = GroupDesign(tuple(names[j] for j in keep))
    rows = np.random.default_rng(seed).permutation(len(scores))[:GROUP_QUANTILE_ROWS]
    n = len(rows)
    tau = min(1.0 - 1e-9, np.ceil((n + 1) * level) / n)
    coef = quantile_coefficients(full[rows][:, keep], scores[rows], [tau], preprocess=False)[0]
    return fitted, coef


@dataclass
class IntervalModel:
    """sigma(x) and the conformal quantile (per group, or per bucket for models saved before the group
    quantile); applied by ``GrowthModel.predict_interval``."""

    level: float
    optional: tuple[str, ...]
    scale: object  # regressor on [features, n_missing, unseen] -> expected |residual|
    quantiles: np.ndarray  # per bucket (pooled conformal quantile of each bucket)
    counts: np.ndarray  # calibration rows per bucket
    groups: GroupDesign | None = None
    group_coef: np.ndarray | None = None

    def sigma(self, features: np.ndarray, n_missing: np.ndarray, unseen: np.ndarray) -> np.ndarray:
        design = scale_design(features, n_missing, unseen)
        scale = compiled.cached(self, "scale", self.scale, lambda: compiled.regressor(self.scale))
        return np.maximum(scale(design), 1e-6)

    def compile_forests(self) -> None:
        """The scale model as compiled native code where it is a LightGBM regressor (same numbers)."""
        compiled.store(self, "scale", self.scale, compiled.regressor(self.scale, forests=True))

    def quantile(
        self, X: pd.DataFrame | dict | None, n_missing: np.ndarray, unseen: np.ndarray
    ) -> np.ndarray:
        """The conformal multiplier of sigma for each record."""
        bucket = bucket_of(n_missing, unseen)
        pooled = self.quantiles[bucket]
        if self.group_coef is None or self.groups is None or X is None:
            return pooled
        # an element-wise product and a row-wise sum: a row's multiplier does not depend on the batch
        # (a BLAS matrix-vector product's rounding does)
        design = self.groups.matrix(X, n_missing, unseen, bucket)
        q = np.add.reduce(design * self.group_coef, axis=1)
        return np.maximum(q, 0.05 * pooled)  # a rare combination of indicators never gets a vanishing width

    def halfwidth(
        self,
        features: np.ndarray,
        n_missing: np.ndarray,
        unseen: np.ndarray,
        X: pd.DataFrame | dict | None = None,
    ) -> np.ndarray:
        return self.quantile(X, n_missing, unseen) * self.sigma(features, n_missing, unseen)

    def __getstate__(self) -> dict:
        return compiled.without_cache(self.__dict__)


def scale_design(features: np.ndarray, n_missing: np.ndarray, unseen: np.ndarray) -> np.ndarray:
    return np.column_stack([features, n_missing.astype(np.float32), unseen.astype(np.float32)])


def fit_scale_model(
    features: np.ndarray, n_missing: np.ndarray, unseen: np.ndarray, abs_residual: np.ndarray, seed: int
):
    """A small LightGBM of |residual| (L1 loss: robust, and its scale is what the quantile rescales).
    100 trees: sigma(x) only has to rank records by how hard they are (the conformal quantile sets the
    level), and every prediction pays for its trees."""
    import lightgbm

    model = lightgbm.LGBMRegressor(
        objective="l1",
        n_estimators=100,
        learning_rate=0.1,
        num_leaves=15,
        min_child_samples=200,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.8,
        random_state=seed,
        verbose=-1,
        n_jobs=2,
        deterministic=True,
        force_col_wise=True,
    )
    return model.fit(scale_design(features, n_missing, unseen), abs_residual)


def conformal_quantiles(
    scores: np.ndarray, buckets: np.ndarray, level: float, n_buckets: int = 2 * len(MISSING_BUCKETS)
) -> tuple[np.ndarray, np.ndarray]:
    """Per bucket, the ceil((n + 1) level)-th smallest score (the split-conformal quantile); buckets with
    too few rows use the pooled quantile."""
    pooled = _conformal(scores, level)
    quantiles = np.full(n_buckets, pooled)
    counts = np.zeros(n_buckets, dtype=np.int64)
    for b in range(n_buckets):
        mine = scores[buckets == b]
        counts[b] = len(mine)
        if len(mine) >= 50:
            quantiles[b] = _conformal(mine, level)
    return quantiles, counts


def _conformal(scores: np.ndarray, level: float) -> float:
    n = len(scores)
    rank = min(n, int(np.ceil((n + 1) * level)))
    return float(np.sort(scores)[rank - 1])
