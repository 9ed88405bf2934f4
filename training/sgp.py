"""Student Growth Percentiles (SGP) computed as the R ``SGP`` package computes them, exactly and fast.

The method (Betebenner's SGP, reference implementation CenterForAssessment/SGP, ``studentGrowthPercentiles``):
for each cohort (content area x grade progression) fit linear quantile regressions of the current scale score
on an additive cubic B-spline basis of each prior score, at the 100 quantiles tau = 0.005, ..., 0.995. Each
student's 100 predicted quantiles are sorted (no crossing) and rounded to 5 digits; the SGP is the number of
predicted quantiles strictly below the actual score, capped to 1..99. Order 1 uses the most recent prior,
order 2 adds the one before; the reported SGP is the highest order available for the student.

Every quantile fit is the exact optimum of the quantile-regression linear program (the dual that R's ``rq``
"br" method solves), found by HiGHS. Speed comes from two exact devices: warm-starting each quantile from its
neighbour's basis, and Portnoy-Koenker preprocessing (solve only a band of observations near the expected fit,
fix the rest at their bounds, verify, repeat). ``docs/sgp.md`` lists the reference's choices followed here.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import highspy
import numpy as np
import pandas as pd
from scipy.interpolate import BSpline
from threadpoolctl import threadpool_limits

PERCENTILE_TAUS: tuple[float, ...] = tuple(float(t) for t in (np.arange(1, 101) - 0.5) / 100)
"""R's ``(1:100 - 0.5)/100``: the 100 percentile midpoints the package fits."""

_T = TypeVar("_T")
_FEASIBILITY_TOL = 1e-10  # HiGHS primal/dual feasibility tolerance (its minimum); default 1e-7
_VERDICTS = (
    highspy.HighsModelStatus.kOptimal,
    highspy.HighsModelStatus.kInfeasible,
    highspy.HighsModelStatus.kUnboundedOrInfeasible,
)
# Workers are forked where possible: they inherit the imported modules (a fresh interpreter needs seconds to
# import pandas/scipy) and the parent runs no HiGHS or thread pools of its own while they start.
_START_METHOD = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


@dataclass(frozen=True)
class SGPConfig:
    """Settings of the SGP calculation; the defaults are the R package's (see docs/sgp.md)."""

    taus: tuple[float, ...] = PERCENTILE_TAUS
    knot_probs: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    boundary_extension: float = 0.1  # R extendrange(f=0.1): boundary knots 10% of the range beyond it
    knot_digits: int = 3  # createKnotsBoundaries rounds knots and boundaries to 3 digits
    prediction_digits: int = 5  # .get.percentile.predictions rounds sorted predictions to 5 digits
    max_order: int = 2
    min_cohort_size: int = 100  # project default; the package's sgp.cohort.size defaults to no minimum
    preprocess: bool = True  # Portnoy-Koenker band preprocessing (exact); False solves every LP in full
    band_size: int = 800  # least observations kept in each preprocessed LP (doubled when it proves too small)
    band_share: float = 0.03  # ... or this share of the cohort, if more: the band keeps its width in taus

    def __post_init__(self) -> None:
        taus = np.asarray(self.taus)
        if taus.size < 2 or np.any(np.diff(taus) <= 0) or taus[0] <= 0 or taus[-1] >= 1:
            raise ValueError("taus must be strictly increasing within (0, 1)")
        if not all(0 < p < 1 for p in self.knot_probs):
            raise ValueError("knot_probs must lie within (0, 1)")
        if self.max_order < 1 or self.min_cohort_size < 1 or self.band_size < 10:
            raise ValueError("max_order, min_cohort_size must be >= 1 and band_size >= 10")
        if not 0 <= self.band_share < 0.5:
            raise ValueError("band_share must lie within [0, 0.5)")


# --------------------------------------------------------------------------------------------------
# Knots, boundaries and the B-spline design (R: createKnotsBoundaries, splines::bs)
# --------------------------------------------------------------------------------------------------


def knots_and_boundaries(
    scores: np.ndarray, config: SGPConfig = SGPConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """Interior knots at the knot quantiles and boundary knots at the extended range, both rounded.

    Mirrors ``createKnotsBoundaries``: ``round(quantile(x, c(.2,.4,.6,.8)), 3)`` (type 7, numpy's default) and
    ``round(extendrange(x, f=0.1), 3)``.
    """
    x = np.asarray(scores, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        raise ValueError("no scores to place knots on")
    knots = np.round(np.quantile(x, config.knot_probs), config.knot_digits)
    lo, hi = float(x.min()), float(x.max())
    ext = config.boundary_extension * (hi - lo)
    boundaries = np.round(np.array([lo - ext, hi + ext]), config.knot_digits)
    return knots, boundaries


def district_knots(
    scores: pd.Series, grades: pd.Series, config: SGPConfig = SGPConfig()
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Knots and boundaries per grade from every score of that grade, all years pooled: what the package's
    ``createKnotsBoundaries`` computes (per content area x grade) and what states fix in ``SGPstateData``.
    Shared by every cohort whose prior is in that grade, so one year's SGPs do not move the next year's
    knots."""
    values = pd.to_numeric(scores, errors="coerce").to_numpy(dtype=float)
    codes, names = pd.factorize(grades)  # compare integer codes, not millions of texts
    codes = np.where(np.isnan(values), -1, codes)
    table = {}
    for k, grade in enumerate(names):
        if (chosen := codes == k).any():
            table[str(grade)] = knots_and_boundaries(values[chosen], config)
    return table


def bspline_basis(x: np.ndarray, knots: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """R's ``bs(x, knots, Boundary.knots)``: cubic B-splines without the first (intercept) column.

    Outside the boundary knots R extends each basis function by its cubic end piece (a Taylor expansion of
    order 3, which for a cubic is the polynomial itself); scipy's ``extrapolate=True`` does the same.
    """
    if boundaries[1] <= boundaries[0]:
        raise ValueError("boundary knots must span a positive range")
    t = np.concatenate([[boundaries[0]] * 4, np.sort(knots), [boundaries[1]] * 4])
    basis = BSpline.design_matrix(np.asarray(x, dtype=float), t, 3, extrapolate=True).toarray()
    return basis[:, 1:]


def design_matrix(
    priors: np.ndarray, knots: Sequence[np.ndarray], boundaries: Sequence[np.ndarray]
) -> np.ndarray:
    """Intercept plus one additive B-spline block per prior (most recent first), as the package's formula."""
    priors = np.asarray(priors, dtype=float).reshape(len(priors), -1)
    blocks = [np.ones((priors.shape[0], 1))]
    blocks += [bspline_basis(priors[:, k], knots[k], boundaries[k]) for k in range(priors.shape[1])]
    return np.hstack(blocks)


# --------------------------------------------------------------------------------------------------
# The quantile-regression dual LP and HiGHS
# --------------------------------------------------------------------------------------------------


class _QuantileDual:
    """The data of the quantile-regression dual LP of one design (the problem R's ``rq`` "br" solves).

    max y'a  s.t.  X'a = (1 - tau) X'1 - X_H'1,  0 <= a <= 1 over the observations in the model, where H are
    observations left out and fixed at a = 1 (above the fit); the others left out are fixed at a = 0 (below).
    HiGHS minimises -y'a, so the coefficients are minus the row duals. Rows of X are the LP's columns, kept in
    CSR form so any subset can be handed to HiGHS quickly.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray) -> None:
        self.X = np.ascontiguousarray(X, dtype=float)
        self.y = np.asarray(y, dtype=float)
        self.n, self.p = self.X.shape
        nonzero = self.X != 0
        self.row_nnz = nonzero.sum(axis=1)
        self.indptr = np.concatenate([[0], np.cumsum(self.row_nnz)])
        self.indices = np.nonzero(nonzero)[1].astype(np.int32)
        self.values = self.X[nonzero]
        self.colsum = self.X.sum(axis=0)
        self.tol = 1e-11 * (1.0 + float(np.abs(self.y).max(initial=0.0)))

    def rhs(self, tau: float, fixed_up: np.ndarray | None = None) -> np.ndarray:
        """Row bounds: (1 - tau) X'1 minus the columns of observations fixed at their upper bound."""
        rhs = (1.0 - tau) * self.colsum
        return rhs if fixed_up is None else rhs - fixed_up.astype(float) @ self.X

    def columns(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSC start/index/value of the LP columns of observations ``obs``."""
        counts = self.row_nnz[obs]
        start = np.concatenate([[0], np.cumsum(counts)])
        gather = np.repeat(self.indptr[obs] - start[:-1], counts) + np.arange(start[-1])
        return start, self.indices[gather], self.values[gather]


class _WorkingSet:
    """One HiGHS model over a changing set of observations, kept across quantiles so the basis carries over.

    Columns are added and deleted in place and only the row bounds change between quantiles, so HiGHS's dual
    simplex always restarts from the previous optimal basis (no presolve, which would discard it).
    """

    def __init__(self, dual: _QuantileDual) -> None:
        self.dual = dual
        self.iterations = 0
        self.reset()

    def reset(self) -> None:
        """A fresh HiGHS model with the same observations (a cold start, after numerical trouble)."""
        kept = getattr(self, "in_model", np.zeros(self.dual.n, dtype=bool))
        self.highs = _new_highs()
        self.in_model = np.zeros(self.dual.n, dtype=bool)
        self.order = np.zeros(0, dtype=np.int64)  # observation of each HiGHS column
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = 0, self.dual.p
        lp.row_lower_ = lp.row_upper_ = np.zeros(self.dual.p)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = np.zeros(1, dtype=np.int32)
        self.highs.passModel(lp)
        self.add(kept)

    def add(self, wanted: np.ndarray) -> None:
        """Add the observations of boolean mask ``wanted`` that are not in the model yet."""
        obs = np.flatnonzero(wanted & ~self.in_model)
        if obs.size == 0:
            return
        start, index, value = self.dual.columns(obs)
        zeros, ones = np.zeros(obs.size), np.ones(obs.size)
        self.highs.addCols(
            obs.size, -self.dual.y[obs], zeros, ones, index.size, start[:-1].astype(np.int32), index, value
        )
        self.in_model[obs] = True
        self.order = np.concatenate([self.order, obs])

    def remove(self, unwanted: np.ndarray) -> None:
        """Delete the observations of boolean mask ``unwanted`` (never basic ones) from the model."""
        positions = np.flatnonzero(unwanted[self.order])
        if positions.size == 0:
            return
        self.highs.deleteCols(positions.size, positions.astype(np.int32))
        self.in_model[self.order[positions]] = False
        self.order = np.delete(self.order, positions)

    def basic(self) -> np.ndarray:
        """Boolean mask of observations whose column is basic (the fit passes through them)."""
        _, variables = self.highs.getBasicVariables()
        variables = np.asarray(variables)
        mask = np.zeros(self.dual.n, dtype=bool)
        mask[self.order[variables[variables >= 0]]] = True
        return mask

    def solve(self, rhs: np.ndarray) -> np.ndarray | None:
        """Coefficients for these row bounds, or None when HiGHS finds the model infeasible or fails on it.

        A reduced model can be infeasible (band too narrow) and is then often nearly singular, where HiGHS
        may stop with an error instead of a verdict; either way the caller widens the band.
        """
        p = self.dual.p
        self.highs.changeRowsBounds(p, np.arange(p, dtype=np.int32), rhs, rhs)
        status = _run(self.highs)
        self.iterations += max(int(self.highs.getInfo().simplex_iteration_count), 0)
        if status == highspy.HighsModelStatus.kOptimal:
            return -np.asarray(self.highs.getSolution().row_dual)
        return None

    def solve_all(self, tau: float) -> np.ndarray:
        """The full LP (every observation in the model), from a fresh model if the warm start fails."""
        self.add(np.ones(self.dual.n, dtype=bool))
        beta = self.solve(self.dual.rhs(tau))
        if beta is None:
            self.reset()
            beta = self.solve(self.dual.rhs(tau))
        if beta is None:
            status = self.highs.modelStatusToString(self.highs.getModelStatus())
            raise RuntimeError(f"HiGHS could not solve the quantile regression at tau={tau}: {status}")
        return beta


def _run(h: highspy.Highs) -> highspy.HighsModelStatus:
    """Run; when HiGHS stops without a verdict (status Unknown, seen after some warm starts), go on, then
    restart cold. Continuing from the basis it stopped at has taken a few iterations wherever it happened."""
    h.run()
    for attempt in range(2):
        if h.getModelStatus() in _VERDICTS:
            break
        if attempt:
            h.clearSolver()
        h.run()
    return h.getModelStatus()


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """HiGHS prints its copyright banner from C++ when a process creates its first solver: send the C-level
    stdout to /dev/null meanwhile, so the CLI's output stays the project's own."""
    sys.stdout.flush()
    saved, devnull = os.dup(1), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _new_highs() -> highspy.Highs:
    """Dual simplex without presolve, so a basis carries over between neighbouring quantiles."""
    with _quiet_stdout():
        h = highspy.Highs()
    for name, value in (
        ("output_flag", False),
        ("presolve", "off"),
        ("solver", "simplex"),
        ("simplex_strategy", 1),
        ("threads", 1),
        ("primal_feasibility_tolerance", _FEASIBILITY_TOL),
        ("dual_feasibility_tolerance", _FEASIBILITY_TOL),
    ):
        h.setOptionValue(name, value)
    return h


def _solve_plain(dual: _QuantileDual, taus: np.ndarray) -> tuple[np.ndarray, int]:
    """Every quantile on all observations; only the row bounds change, so each solve warm-starts."""
    model = _WorkingSet(dual)
    coef = np.empty((len(taus), dual.p))
    for j, tau in enumerate(taus):
        coef[j] = model.solve_all(tau)
    return coef, model.iterations


def _solve_preprocessed(dual: _QuantileDual, taus: np.ndarray, band_size: int) -> tuple[np.ndarray, int]:
    """Portnoy-Koenker preprocessing along the tau grid; exact because every fixed observation is verified.

    The first quantile is solved on all observations. For each next one the model keeps only the
    ``band_size`` observations nearest the fit expected from the previous two (and the basic ones); the rest
    are fixed at the bound their side implies. After solving, fixed observations found on the wrong side of
    the fit are added and the LP re-solved until there are none: then (a, beta) satisfy the full problem's
    optimality conditions, and beta is its solution.
    """
    model = _WorkingSet(dual)
    coef = np.empty((len(taus), dual.p))
    coef[0] = model.solve_all(taus[0])
    fitted_prev, fitted = None, dual.X @ coef[0]
    for j in range(1, len(taus)):
        dist, above = _band_distance(dual.y, fitted, fitted_prev, taus, j)
        coef[j] = _solve_band(model, taus[j], dist, above, band_size)
        fitted_prev, fitted = fitted, dual.X @ coef[j]
    return coef, model.iterations


def _band_distance(
    y: np.ndarray, fitted: np.ndarray, fitted_prev: np.ndarray | None, taus: np.ndarray, j: int
) -> tuple[np.ndarray, np.ndarray]:
    """How far (in local quantile spacings) each observation is from the strip the next fit should sweep.

    The strip runs from the current fit to its linear extrapolation; the local spacing is the gap between the
    last two fits (a constant gap from the residual quantiles for the second tau). Returns the distance and
    whether the observation lies above the strip.
    """
    resid = y - fitted
    if fitted_prev is None:
        spacing = np.full_like(resid, np.quantile(resid, taus[j]) - np.quantile(resid, taus[j - 1]))
        target = 1.0
    else:
        spacing = fitted - fitted_prev
        target = (taus[j] - taus[j - 1]) / (taus[j - 1] - taus[j - 2])
    floor = max(0.25 * float(np.median(spacing)), 1e-6)
    z = resid / np.maximum(spacing, floor)
    return np.maximum(np.maximum(-z, z - target), 0.0), z > target


def _nearest(dist: np.ndarray, size: int) -> np.ndarray:
    """Mask of the ``size`` smallest distances (all ties at the cut included)."""
    kth = min(size, dist.size - 1)
    return dist <= np.partition(dist, kth)[kth]


def _solve_band(
    model: _WorkingSet, tau: float, dist: np.ndarray, above: np.ndarray, band_size: int
) -> np.ndarray:
    """One quantile on a band of observations, widened while the reduced LP is infeasible."""
    nearest = _nearest(dist, band_size)
    model.remove(model.in_model & ~nearest & ~model.basic())
    model.add(nearest)
    size = band_size
    while True:
        beta = _verify(model, tau, above)
        if beta is not None:
            return beta
        size *= 2
        if size >= model.dual.n // 2:  # the band no longer pays: solve on everyone
            return model.solve_all(tau)
        model.add(_nearest(dist, size))


def _verify(model: _WorkingSet, tau: float, above: np.ndarray) -> np.ndarray | None:
    """Solve with the observations outside the model fixed by side; add those on the wrong side until none.

    Returns None when the reduced LP is infeasible (too few observations to carry the constraints) or HiGHS
    fails on it.
    """
    dual = model.dual
    for _ in range(100):
        beta = model.solve(dual.rhs(tau, above & ~model.in_model))
        if beta is None:
            return None
        resid = dual.y - dual.X @ beta
        wrong = ~model.in_model & np.where(above, resid < -dual.tol, resid > dual.tol)
        if not wrong.any():
            return beta
        model.add(wrong)
    return None


def quantile_coefficients(
    X: np.ndarray,
    y: np.ndarray,
    taus: Sequence[float],
    preprocess: bool = True,
    band_size: int = 800,
    band_share: float = 0.03,
) -> np.ndarray:
    """Exact linear quantile-regression coefficients (len(taus) x p) of y on X at every tau.

    ``preprocess=False`` is the plain path (every LP on all rows); both return optima of the same LPs.
    Preprocessing is used only when the band is well below the number of observations.
    """
    return _fit_coefficients(X, y, np.asarray(taus, dtype=float), preprocess, band_size, band_share)[0]


def band_for(n: int, band_size: int, band_share: float) -> int:
    """Observations in a preprocessed LP: ``band_size``, or ``band_share`` of the cohort if more.

    A fixed count is a narrower strip of taus in a larger cohort: more students then land on the wrong
    side of the band and each tau takes more re-solves (docs/sgp.md measures both)."""
    return max(band_size, math.ceil(band_share * n))


def _fit_coefficients(
    X: np.ndarray, y: np.ndarray, taus: np.ndarray, preprocess: bool, band_size: int, band_share: float
) -> tuple[np.ndarray, int]:
    """Coefficients and the number of simplex iterations HiGHS needed."""
    dual = _QuantileDual(X, y)
    band = band_for(dual.n, band_size, band_share)
    if preprocess and dual.n > 3 * band:
        return _solve_preprocessed(dual, taus, band)
    return _solve_plain(dual, taus)


# --------------------------------------------------------------------------------------------------
# One cohort: fit, predict sorted quantiles, count
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CohortFit:
    """A fitted cohort model: knots/boundaries per prior (most recent first) and the taus x p coefficients."""

    knots: tuple[np.ndarray, ...]
    boundaries: tuple[np.ndarray, ...]
    coefficients: np.ndarray
    taus: np.ndarray
    n: int
    prediction_digits: int = 5
    iterations: int = field(default=0, compare=False)

    @property
    def order(self) -> int:
        """Number of priors the model uses."""
        return len(self.knots)

    def predict_quantiles(self, priors: np.ndarray) -> np.ndarray:
        """Sorted (isotonized), rounded predicted quantiles per student: shape (n, len(taus))."""
        pred = design_matrix(priors, self.knots, self.boundaries) @ self.coefficients.T
        return np.round(np.sort(pred, axis=1), self.prediction_digits)

    def growth_percentiles(self, current: np.ndarray, priors: np.ndarray) -> np.ndarray:
        """SGPs (1..99) of students with these current and prior scores."""
        return growth_percentiles(self.predict_quantiles(priors), current)


def growth_percentiles(quantiles: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Count the predicted quantiles strictly below the score and cap to 1..K-1 (R: .get.quantiles).

    Strictly below, on predictions rounded to 5 digits: a student whose integer score equals a fitted quantile
    (the fit passes through p students per tau) is not counted above it, whatever the last bits of the fit.
    """
    count = (quantiles < np.asarray(current, dtype=float)[:, None]).sum(axis=1)
    return np.clip(count, 1, quantiles.shape[1] - 1).astype(np.int64)


def fit_cohort(
    current: np.ndarray,
    priors: np.ndarray,
    config: SGPConfig = SGPConfig(),
    knots: Sequence[np.ndarray] | None = None,
    boundaries: Sequence[np.ndarray] | None = None,
) -> CohortFit:
    """Fit the 100 quantile regressions of one cohort (rows: students with current and all priors present).

    Knots/boundaries default to those of the given priors; pass the cohort-wide ones to share them between
    orders, as the package does.
    """
    y = np.asarray(current, dtype=float)
    priors = np.asarray(priors, dtype=float).reshape(len(y), -1)
    if np.isnan(y).any() or np.isnan(priors).any():
        raise ValueError("fit_cohort needs complete rows")
    if knots is None or boundaries is None:
        kb = [knots_and_boundaries(priors[:, k], config) for k in range(priors.shape[1])]
        knots, boundaries = [k for k, _ in kb], [b for _, b in kb]
    X = design_matrix(priors, knots, boundaries)
    if len(y) <= X.shape[1]:
        raise ValueError(f"{len(y)} students cannot identify {X.shape[1]} coefficients")
    taus = np.asarray(config.taus, dtype=float)
    coef, iterations = _fit_coefficients(X, y, taus, config.preprocess, config.band_size, config.band_share)
    return CohortFit(
        knots=tuple(np.asarray(k, dtype=float) for k in knots),
        boundaries=tuple(np.asarray(b, dtype=float) for b in boundaries),
        coefficients=coef,
        taus=taus,
        n=len(y),
        prediction_digits=config.prediction_digits,
        iterations=iterations,
    )


# --------------------------------------------------------------------------------------------------
# A whole frame: cohorts x orders, in parallel
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    """One (cohort, order) fit, small enough to send to a worker process."""

    order: int
    rows: np.ndarray
    current: np.ndarray
    priors: np.ndarray
    knots: tuple[np.ndarray, ...]
    boundaries: tuple[np.ndarray, ...]
    config: SGPConfig
    frame: int = 0  # which of the run's frames the students are in


def _run_task(task: _Task) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Fit one cohort/order; return the frame, the order, the students' positions in it and their SGPs."""
    fit = fit_cohort(task.current, task.priors, task.config, task.knots, task.boundaries)
    return task.frame, task.order, task.rows, fit.growth_percentiles(task.current, task.priors)


KnotTable = Mapping[str, tuple[np.ndarray, np.ndarray]]


def _cohort_tasks(
    frame: pd.DataFrame,
    score: str,
    priors: list[str],
    cohort: list[str],
    config: SGPConfig,
    notes: np.ndarray,
    knot_keys: Sequence[str] | None = None,
    knot_table: KnotTable | None = None,
    frame_index: int = 0,
) -> list[_Task]:
    """Split the frame into (cohort, order) fits; record why students of unfittable cohorts get no SGP."""
    y = frame[score].astype("float64").to_numpy()  # nullable Int64 scores: <NA> becomes NaN
    P = frame[priors].astype("float64").to_numpy()
    K = (
        frame[list(knot_keys)].astype(object).to_numpy()
        if knot_keys is not None and knot_table is not None
        else None
    )
    keys = frame[cohort]
    missing_key = keys.isna().any(axis=1).to_numpy()
    tasks: list[_Task] = []
    groups = keys[~missing_key].groupby(cohort, sort=True, dropna=True).indices
    positions = np.flatnonzero(~missing_key)
    for idx in groups.values():
        tasks += _tasks_for_cohort(positions[idx], y, P, config, notes, K, knot_table, frame_index)
    return tasks


def _table_knots(
    keys: np.ndarray, prior: np.ndarray, table: KnotTable
) -> tuple[np.ndarray, np.ndarray] | None:
    """The table's knots for the most common key among the students who have this prior (None: not found)."""
    present = pd.Series(keys[~np.isnan(prior)], dtype=object).dropna().astype(str)
    if present.empty:
        return None
    return table.get(present.value_counts().index[0])


def _tasks_for_cohort(
    idx: np.ndarray,
    y: np.ndarray,
    P: np.ndarray,
    config: SGPConfig,
    notes: np.ndarray,
    K: np.ndarray | None = None,
    knot_table: KnotTable | None = None,
    frame_index: int = 0,
) -> list[_Task]:
    """Orders 1..max that have enough students; the package stops at the first order that is too small."""
    tasks: list[_Task] = []
    max_order = min(config.max_order, P.shape[1])
    knots: list[np.ndarray] = []
    bounds: list[np.ndarray] = []
    for order in range(1, max_order + 1):
        prior = P[idx, order - 1]
        if np.isnan(prior).all():
            break
        given = _table_knots(K[idx, order - 1], prior, knot_table) if K is not None else None
        k, b = given if given is not None else knots_and_boundaries(prior, config)
        knots.append(k)
        bounds.append(b)
        complete = ~np.isnan(y[idx]) & ~np.isnan(P[idx, :order]).any(axis=1)
        rows = idx[complete]
        minimum = max(config.min_cohort_size, 2 + 7 * order)
        if len(rows) < minimum or b[1] <= b[0]:
            if order == 1:
                why = "cohort too small" if len(rows) < minimum else "no spread in prior scores"
                notes[rows] = f"{why} (n={len(rows)}, minimum {minimum})"
            break
        tasks.append(
            _Task(order, rows, y[rows], P[rows, :order], tuple(knots), tuple(bounds), config, frame_index)
        )
    return tasks


@dataclass(frozen=True)
class SGPInput:
    """One frame to compute SGPs for, as ``student_growth_percentiles`` takes it."""

    frame: pd.DataFrame
    score: str
    priors: list[str]
    cohort: list[str]
    knot_keys: Sequence[str] | None = None
    knot_table: KnotTable | None = None


class SGPRun:
    """The cohort fits of several frames in one pool of worker processes, started when the run is made
    and collected by ``results()``.

    The caller can work meanwhile (``growth predict`` scores a past year while its SGPs are fitted), and
    the fits of all frames share the workers, largest first, so no worker waits at the end of one frame
    for the other's last fit. ``close()`` (or leaving a ``with`` block) stops the workers.
    """

    def __init__(
        self,
        inputs: Sequence[SGPInput],
        config: SGPConfig = SGPConfig(),
        workers: int = 2,
        progress: bool = False,
    ) -> None:
        self.inputs, self.config, self.progress = list(inputs), config, progress
        for item in self.inputs:
            _check_input(item)
        self.notes = [np.full(len(item.frame), None, dtype=object) for item in self.inputs]
        tasks = [
            task
            for k, item in enumerate(self.inputs)
            for task in _cohort_tasks(
                item.frame,
                item.score,
                item.priors,
                item.cohort,
                config,
                self.notes[k],
                item.knot_keys,
                item.knot_table,
                frame_index=k,
            )
        ]
        self._tasks = sorted(tasks, key=lambda t: t.order * len(t.rows), reverse=True)
        self._pool, self._futures = _submit(self._tasks, workers)

    def results(self) -> list[pd.DataFrame]:
        """Wait for every fit; per input frame, the columns ``student_growth_percentiles`` returns."""
        by_order = [
            np.full((min(self.config.max_order, len(item.priors)), len(item.frame)), -1, dtype=np.int64)
            for item in self.inputs
        ]
        done: Iterable[tuple[int, int, np.ndarray, np.ndarray]] = (
            (f.result() for f in as_completed(self._futures))
            if self._futures
            else map(_run_task, self._tasks)
        )
        try:
            for frame, order, rows, sgps in _with_progress(done, len(self._tasks), self.progress):
                by_order[frame][order - 1, rows] = sgps
        finally:
            self.close()
        return [
            _assemble(item.frame, item.score, item.priors, item.cohort, by_order[k], self.notes[k])
            for k, item in enumerate(self.inputs)
        ]

    def close(self) -> None:
        """Stop the workers (fits not started are dropped); safe to call twice."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> SGPRun:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _submit(tasks: Sequence[_Task], workers: int) -> tuple[ProcessPoolExecutor | None, list[Future]]:
    """Start ``workers`` processes on the fits, in the order given (none for a single fit or worker).

    The workers are forked at the first submit, so before the caller starts threads of its own."""
    if workers <= 1 or len(tasks) <= 1:
        return None, []
    context = multiprocessing.get_context(_START_METHOD)
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)), mp_context=context, initializer=_one_blas_thread
    )
    return pool, [pool.submit(_run_task, t) for t in tasks]


def _check_input(item: SGPInput) -> None:
    """The columns named must be in the frame, with one knot key per prior."""
    missing = [c for c in [item.score, *item.priors, *item.cohort] if c not in item.frame.columns]
    if missing or not item.priors:
        raise KeyError(f"columns not in frame: {missing}" if missing else "at least one prior is needed")
    if item.knot_keys is not None and len(item.knot_keys) != len(item.priors):
        raise ValueError("knot_keys needs one column per prior")


def _one_blas_thread() -> None:
    """Each worker's matrix products on one BLAS thread: the workers already fill the cores, and
    OpenBLAS's threads in every worker on top of them halved the speed of the whole fit (docs/sgp.md)."""
    threadpool_limits(limits=1, user_api="blas")


def _with_progress(results: Iterable[_T], total: int, progress: bool) -> Iterator[_T]:
    """Pass results through, advancing a rich progress bar over the cohort fits when asked."""
    if not progress:
        yield from results
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("SGP cohort fits"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()
    ) as bar:
        task = bar.add_task("fits", total=total)
        for result in results:
            yield result
            bar.advance(task)


def student_growth_percentiles(
    frame: pd.DataFrame,
    score: str,
    priors: list[str],
    cohort: list[str],
    config: SGPConfig = SGPConfig(),
    workers: int = 2,
    progress: bool = False,
    knot_keys: Sequence[str] | None = None,
    knot_table: KnotTable | None = None,
) -> pd.DataFrame:
    """SGPs for every student of ``frame`` (one row per student), cohort by cohort, highest order reported.

    ``priors`` are column names, most recent first, NaN where a student lacks that prior; ``cohort`` the
    columns defining a norm group (e.g. school year and grade). Knots/boundaries of each prior are computed
    within the cohort, unless ``knot_keys`` (one column per prior, e.g. the prior's grade) and
    ``knot_table`` (key -> knots, boundaries; ``district_knots``) are given: then each prior takes the
    table's entry, as the package does with knots fixed per content area and grade. Returns, aligned to
    ``frame.index``: ``sgp``, ``sgp_order``, ``sgp_order_1``, ``sgp_order_2`` (nullable Int64) and
    ``sgp_note`` saying why ``sgp`` is missing.
    """
    item = SGPInput(frame, score, priors, cohort, knot_keys, knot_table)
    return SGPRun([item], config, workers, progress).results()[0]


def _assemble(
    frame: pd.DataFrame,
    score: str,
    priors: list[str],
    cohort: list[str],
    by_order: np.ndarray,
    notes: np.ndarray,
) -> pd.DataFrame:
    """Highest available order per student, per-order columns, and a note wherever ``sgp`` is missing."""
    have = by_order >= 0
    order = np.where(have.any(axis=0), have.shape[0] - np.argmax(have[::-1], axis=0), 0)
    sgp = np.where(order > 0, by_order[np.maximum(order - 1, 0), np.arange(by_order.shape[1])], -1)
    out = pd.DataFrame(index=frame.index)
    out["sgp"] = _nullable(sgp)
    out["sgp_order"] = _nullable(np.where(order > 0, order, -1))
    for k in range(by_order.shape[0]):
        out[f"sgp_order_{k + 1}"] = _nullable(by_order[k])
    if "sgp_order_2" not in out:
        out["sgp_order_2"] = pd.array([pd.NA] * len(out), dtype="Int64")
    reasons = _missing_reasons(frame, score, priors, cohort)
    note = np.where(order > 0, None, np.where(pd.isna(notes), reasons, notes))
    out["sgp_note"] = pd.array(note, dtype="string")
    return out


def _nullable(values: np.ndarray) -> pd.arrays.IntegerArray:
    """Int64 with -1 as missing."""
    values = np.asarray(values, dtype=np.int64)
    return pd.arrays.IntegerArray(np.maximum(values, 0), mask=values < 0)


def _missing_reasons(frame: pd.DataFrame, score: str, priors: list[str], cohort: list[str]) -> np.ndarray:
    """The default reason a student has no SGP when no cohort-level reason was recorded."""
    reason = np.full(len(frame), "not computed", dtype=object)
    reason[frame[priors[0]].isna().to_numpy()] = "no prior score"
    reason[frame[score].isna().to_numpy()] = "missing current score"
    reason[frame[cohort].isna().any(axis=1).to_numpy()] = "missing cohort"
    return reason


# --------------------------------------------------------------------------------------------------
# Aggregation for reports
# --------------------------------------------------------------------------------------------------


def median_interval(values: np.ndarray, level: float = 0.9) -> tuple[float, float, float]:
    """Median and a distribution-free confidence interval for it from binomial order statistics.

    The interval is [x_(j), x_(n-j+1)] with the largest j such that P(Bin(n, 1/2) <= j-1) <= (1-level)/2, so
    its coverage is at least ``level`` for any continuous distribution (exact-binomial, conservative).
    Returns NaN bounds when n is too small for any such interval.
    """
    from scipy.stats import binom  # imported here: only reports need it

    x = np.sort(np.asarray(values, dtype=float))
    x = x[~np.isnan(x)]
    n = x.size
    if n == 0:
        return math.nan, math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    j = int(np.sum(binom.cdf(np.arange(n), n, 0.5) <= alpha))  # number of k = 0.. with P(B <= k) <= alpha
    median = float(np.median(x))
    if j == 0:
        return median, math.nan, math.nan
    return median, float(x[j - 1]), float(x[n - j])


def median_sgp(
    frame: pd.DataFrame, by: list[str], sgp: str = "sgp", level: float = 0.9, min_n: int = 10
) -> pd.DataFrame:
    """Per group: number of SGPs, median SGP and its order-statistic confidence interval.

    Groups with fewer than ``min_n`` SGPs are suppressed (count, median and bounds missing, ``suppressed``
    True) so a report can never show a small group.
    """
    rows = []
    for key, group in frame.groupby(by, sort=True, dropna=False)[sgp]:
        values = group.dropna().to_numpy(dtype=float)
        key = key if isinstance(key, tuple) else (key,)
        suppressed = values.size < min_n
        median, lower, upper = (math.nan,) * 3 if suppressed else median_interval(values, level)
        rows.append((*key, pd.NA if suppressed else values.size, median, lower, upper, suppressed))
    columns = [*by, "n", "median_sgp", "lower", "upper", "suppressed"]
    out = pd.DataFrame(rows, columns=columns)
    out["n"] = out["n"].astype("Int64")
    return out
