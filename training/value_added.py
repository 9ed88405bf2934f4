"""School value-added: each school's contribution to its students' growth, with honest uncertainty.

The model (docs/value_added.md has the full story and the measured accuracy):

1. A flexible covariate adjustment for each student's prior scores and characteristics,
   estimated **within** schools (school x school-year fixed effects), so the slopes are not
   biased by effective schools enrolling different students.
2. Per school: the fixed-effect estimate (mean residual, centred so that the district's
   students of each grade and year average 0), its standard error, and empirical-Bayes shrinkage
   by reliability (tau^2 by REML or method of moments).
3. Two views: (A) the headline, student covariates only, which includes the effect of the peers
   a school enrols; (B) additionally adjusted for the school's intake (mean prior achievement),
   which removes peer/composition effects and anything else correlated with intake.
4. ``method="mixedlm"`` refits the same fixed design as a statsmodels random-intercept model
   and reports its BLUPs, a cross-check of the fixed-effect + empirical-Bayes route.

Everything is a pure function of the growth-pairs table (docs/architecture.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.linalg import cho_factor, cho_solve, qr
from scipy.linalg.lapack import dpstrf
from scipy.optimize import minimize_scalar
from scipy.stats import norm
from sklearn.preprocessing import SplineTransformer
from threadpoolctl import threadpool_limits

USABLE_STATUSES = ("ok", "school_changed")
BINARY_COLUMNS = ("econ_disadvantaged", "english_learner", "special_education", "home_internet")
CATEGORY_COLUMNS = ("gender", "parental_education")
BANDS = ("well below", "below", "meets", "above", "well above")
STAT_COLUMNS = ("fe", "fe_se", "reliability", "estimate", "se", "low", "high", "growth_index", "band")


@dataclass(frozen=True)
class VAConfig:
    """Settings of one value-added run; the defaults are the ones measured in docs/value_added.md."""

    level: float = 0.9  # two-sided level of the reported intervals
    min_students: int = 10  # schools (or school-years) with fewer pairs are suppressed
    prior_knots: int = 6  # cubic B-spline knots (quantiles) of the own prior, per grade; 0 = linear
    other_knots: int = 4  # pooled B-spline knots of the other subjects' priors (beside per-grade slopes)
    absence_knots: tuple[float, ...] = (0.0, 2.0, 5.0, 10.0, 18.0, 30.0, 50.0)  # days; clipped at the last
    engagement_knots: int = 4  # quantile knots of homework completion and log platform logins
    index_knots: int = 5  # spline of the fitted student index (ceiling/floor bend); 0 = off
    method: Literal["fe_eb", "mixedlm"] = "fe_eb"
    tau_method: Literal["reml", "mom"] = "reml"
    se_method: Literal["pooled", "cluster"] = "pooled"
    by_year: bool = False  # False: one estimate per school pooled over the years in ``pairs``
    intake_extra: tuple[str, ...] = ()  # further school means for view B, e.g. ("econ_disadvantaged",)

    def __post_init__(self) -> None:
        if not 0 < self.level < 1:
            raise ValueError(f"level must be in (0, 1), got {self.level}")
        if self.min_students < 1:
            raise ValueError(f"min_students must be at least 1, got {self.min_students}")
        if self.method not in ("fe_eb", "mixedlm"):
            raise ValueError(f"method must be 'fe_eb' or 'mixedlm', got {self.method!r}")
        if self.tau_method not in ("reml", "mom"):
            raise ValueError(f"tau_method must be 'reml' or 'mom', got {self.tau_method!r}")
        if self.se_method not in ("pooled", "cluster"):
            raise ValueError(f"se_method must be 'pooled' or 'cluster', got {self.se_method!r}")
        for name in ("prior_knots", "other_knots", "engagement_knots", "index_knots"):
            value = getattr(self, name)
            if value != 0 and value < 3:
                raise ValueError(f"{name} must be 0 (linear) or at least 3, got {value}")


@dataclass
class ValueAdded:
    """Per-school value-added of one subject, both views, and what the model behind them was."""

    subject: str
    table: pd.DataFrame  # one row per school (or school x year); view B columns carry the suffix _b
    tau: float  # SD of the true school effects, view A (points)
    tau_b: float  # the same after the intake adjustment (view B)
    sigma: float  # residual SD of a student's score within a school (points)
    design_columns: list[str]  # the student-level design actually used (collinear columns dropped)
    coefficients: pd.Series  # within-school slopes of the design columns (points per unit)
    intake_coefficients: pd.DataFrame  # view B: school-level slope of view A on intake, with SE
    explanation: str
    config: VAConfig
    n_pairs: int
    n_dropped: int  # rows of ``pairs`` not usable for this subject (status, missing score or prior)
    by_year: bool


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


def band(growth_index: np.ndarray | pd.Series) -> np.ndarray:
    """Band of each growth index; a boundary value belongs to the outer band (1 is "above",
    -2 is "well below"), so "meets" is the open interval (-1, 1)."""
    g = np.asarray(growth_index, dtype=float)
    out = np.select([g >= 2, g >= 1, g > -1, g > -2, g <= -2], BANDS[::-1], default="")
    return np.where(np.isnan(g), None, out)


def eb_shrink(fe: np.ndarray, fe_se: np.ndarray, tau: float, level: float = 0.9) -> pd.DataFrame:
    """Empirical-Bayes estimate of effects with known sampling SEs, shrunk towards 0 (the district
    mean): lambda = tau^2 / (tau^2 + se^2), estimate = lambda fe, posterior SD = sqrt(lambda) se."""
    fe, fe_se = np.asarray(fe, float), np.asarray(fe_se, float)
    t2 = tau**2
    total = t2 + fe_se**2
    lam = np.divide(t2, total, out=np.zeros_like(total), where=total > 0)
    return posterior_table(lam * fe, np.sqrt(lam) * fe_se, lam, level)


def posterior_table(estimate: np.ndarray, post_sd: np.ndarray, lam: np.ndarray, level: float) -> pd.DataFrame:
    """Interval, growth index (estimate / posterior SD) and band of shrunken estimates. A zero
    posterior SD (no noise) gives an infinite index of the estimate's sign; a zero estimate gives 0."""
    estimate, post_sd = np.asarray(estimate, float), np.asarray(post_sd, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        index = np.where(post_sd > 0, estimate / post_sd, np.sign(estimate) * np.inf)
    index = np.where(estimate == 0, 0.0, index)
    z = float(norm.ppf(0.5 + level / 2))
    return pd.DataFrame(
        {
            "reliability": lam,
            "estimate": estimate,
            "se": post_sd,
            "low": estimate - z * post_sd,
            "high": estimate + z * post_sd,
            "growth_index": index,
            "band": band(index),
        }
    )


def _gls(y: np.ndarray, v: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GLS coefficients and their covariance for independent errors of variance ``v``."""
    w = 1.0 / v
    cov = np.linalg.pinv(Z.T @ (Z * w[:, None]))
    return cov @ (Z.T @ (w * y)), cov


def estimate_tau2(
    fe: np.ndarray, fe_se: np.ndarray, Z: np.ndarray | None = None, method: str = "reml"
) -> float:
    """Between-school variance of the true effects around ``Z gamma`` (default: a constant) from
    estimates with known sampling SEs: REML (the default; unbiased-ish for small J and unequal SEs)
    or the DerSimonian-Laird method of moments (closed form; a check on REML)."""
    y, se2 = np.asarray(fe, float), np.asarray(fe_se, float) ** 2
    Z = np.ones((len(y), 1)) if Z is None else np.asarray(Z, float)
    k = np.linalg.matrix_rank(Z)
    if len(y) <= k:
        return 0.0
    if method == "mom":
        w = 1.0 / np.maximum(se2, 1e-300)
        gamma, cov = _gls(y, 1.0 / w, Z)
        q = float((w * (y - Z @ gamma) ** 2).sum())
        trace = w.sum() - np.trace(cov @ (Z.T @ (Z * (w**2)[:, None])))
        return max(0.0, (q - (len(y) - k)) / trace) if trace > 0 else 0.0

    def neg_restricted_loglik(t2: float) -> float:
        v = t2 + se2
        gamma, cov = _gls(y, v, Z)
        r = y - Z @ gamma
        return 0.5 * (np.log(v).sum() - np.linalg.slogdet(cov)[1] + (r * r / v).sum())

    upper = max(4.0 * float(np.var(y)), 1e-12)
    result = minimize_scalar(
        neg_restricted_loglik, bounds=(0.0, upper), method="bounded", options={"xatol": upper * 1e-10}
    )
    if se2.min() > 0 and neg_restricted_loglik(0.0) <= result.fun:
        return 0.0
    return float(result.x)


def _codes(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes and labels of a key column (categoricals and strings alike)."""
    codes, labels = pd.factorize(values, sort=True)
    return codes.astype(np.int64), np.asarray(labels)


def _group_means(matrix: np.ndarray, codes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-group column means (groups are 0..k-1): a bincount per column of a column-major matrix
    (the design is built that way), else one sparse product."""
    k = len(counts)
    safe = np.maximum(counts, 1)
    if matrix.ndim == 1:
        return np.bincount(codes, weights=matrix, minlength=k) / safe
    if matrix.flags.f_contiguous:
        sums = np.empty((k, matrix.shape[1]))
        for j in range(matrix.shape[1]):
            sums[:, j] = np.bincount(codes, weights=matrix[:, j], minlength=k)
    else:
        indicator = sp.csr_matrix(
            (np.ones(len(codes)), (codes, np.arange(len(codes)))), shape=(k, len(codes))
        )
        sums = indicator @ matrix
    return sums / safe[:, None]


def _bspline(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Cubic B-spline basis at the given knots without the constant (linear beyond the ends)."""
    spline = SplineTransformer(
        knots=knots.reshape(-1, 1), degree=3, include_bias=False, extrapolation="linear"
    )
    return spline.fit_transform(x.reshape(-1, 1))


def _quantile_knots(x: np.ndarray, n_knots: int) -> np.ndarray | None:
    """Distinct quantile knots of ``x`` (None when there are too few distinct values for a spline)."""
    x = x[np.isfinite(x)]
    if n_knots < 3 or len(x) == 0:
        return None
    knots = np.unique(np.quantile(x, np.linspace(0, 1, n_knots)))
    return knots if len(knots) >= 3 else None


class _Design:
    """Columns of a design matrix as they are built, each with a readable name."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.columns: list[np.ndarray] = []
        self.names: list[str] = []

    def add(self, name: str, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=float)
        if np.nanmax(values) > np.nanmin(values):  # constant columns are absorbed by the fixed effects
            self.columns.append(values)
            self.names.append(name)

    def add_block(self, name: str, block: np.ndarray) -> None:
        for j in range(block.shape[1]):
            self.add(f"{name}{j}", block[:, j])

    def matrix(self, spare: int = 0) -> np.ndarray:
        """Column-major, with ``spare`` empty columns at the end to fill later without a copy."""
        out = np.empty((self.n, len(self.columns) + spare), order="F")
        for j, column in enumerate(self.columns):
            out[:, j] = column
        return out


# --------------------------------------------------------------------------------------------
# The student-level design
# --------------------------------------------------------------------------------------------


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64 with NaN for missing (nullable, categorical and text numbers alike)."""
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)


def _centred_by(x: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``x`` minus the mean of its group over the rows where it is present (NaN stays NaN)."""
    present = np.isfinite(x)
    sums = np.bincount(codes[present], weights=x[present], minlength=codes.max() + 1)
    counts = np.bincount(codes[present], minlength=codes.max() + 1)
    return x - (sums / np.maximum(counts, 1))[codes]


def _add_with_missing(design: _Design, name: str, x: np.ndarray) -> np.ndarray:
    """Add a missing indicator (when anything is missing) and return ``x`` with NaN set to 0."""
    missing = ~np.isfinite(x)
    if missing.any():
        design.add(f"{name}:missing", missing)
    return np.where(missing, 0.0, x)


def _add_spline(
    design: _Design, name: str, x: np.ndarray, knots: np.ndarray | None, mask: np.ndarray | None = None
) -> None:
    """Spline of ``x`` (0 outside the ``mask`` rows when given); linear when no knots."""
    if mask is None:
        mask = np.ones(len(x), bool)
    if knots is None:
        design.add(name, np.where(mask, x, 0.0))
        return
    rows = np.flatnonzero(mask)
    basis = np.zeros((len(x), len(knots) + 1))
    basis[rows] = _bspline(x[rows], knots)
    design.add_block(f"{name}:bs", basis)


def build_design(
    frame: pd.DataFrame, subject: str, subjects: list[str], config: VAConfig, spare: int = 0
) -> tuple[np.ndarray, list[str]]:
    """The student-level adjustment, built from whichever pair columns are present.

    Why each block (docs/value_added.md): grade x year levels; the own prior as a cubic spline
    within each grade (the relation bends near the floor and ceiling); the other subjects' priors
    with per-grade slopes plus a pooled spline; the scores two years back with missing indicators
    whose interaction lets the prior's slope differ when they are missing; demographics with
    missing indicators; last year's engagement with splines, the absence spline interacted with
    disadvantage and English-learner status. Constant columns are left out (the fixed effects
    absorb them); collinear ones are dropped later by the fit. ``spare`` empty columns are left
    at the end of the (column-major) matrix for the fitted-index spline.
    """
    n = len(frame)
    design = _Design(n)
    grade_codes, grade_labels = _codes(frame["grade"].astype(str))
    year_codes, year_labels = _codes(frame["school_year"])
    grade_year = grade_codes * len(year_labels) + year_codes
    for g, grade in enumerate(grade_labels):
        for t, year in enumerate(year_labels):
            design.add(f"grade={grade}|year={year}", grade_year == g * len(year_labels) + t)
    in_grade = [grade_codes == g for g in range(len(grade_labels))]

    own = _centred_by(_numeric(frame, f"prior_{subject}_score"), grade_year)
    for g, grade in enumerate(grade_labels):
        knots = _quantile_knots(own[in_grade[g]], config.prior_knots)
        _add_spline(design, f"prior_{subject}_score|grade={grade}", own, knots, in_grade[g])

    for other in subjects:
        column = f"prior_{other}_score"
        if other == subject or column not in frame:
            continue
        raw = _centred_by(_numeric(frame, column), grade_year)
        x = _add_with_missing(design, column, raw)
        for g, grade in enumerate(grade_labels):
            design.add(f"{column}|grade={grade}", np.where(in_grade[g], x, 0.0))
        knots = _quantile_knots(x, config.other_knots)
        if knots is not None:
            _add_spline(design, f"{column}:pooled", x, knots)
        if not np.isfinite(raw).all():  # without the other score, the own prior carries its information
            design.add(f"prior_{subject}_score x {column}:missing", np.where(np.isfinite(raw), 0.0, own))

    own_prior2_missing = None
    for s in subjects:
        column = f"prior2_{s}_score"
        if column not in frame:
            continue
        raw = _centred_by(_numeric(frame, column), grade_year)
        missing = ~np.isfinite(raw)
        x = _add_with_missing(design, column, raw)
        for g, grade in enumerate(grade_labels):
            design.add(f"{column}|grade={grade}", np.where(in_grade[g], x, 0.0))
        if s == subject:
            own_prior2_missing = missing
    if own_prior2_missing is not None and own_prior2_missing.any():
        for g, grade in enumerate(grade_labels):
            design.add(
                f"prior_{subject}_score x prior2_missing|grade={grade}",
                np.where(in_grade[g] & own_prior2_missing, own, 0.0),
            )

    _add_demographics(design, frame)
    _add_engagement(design, frame, config)
    return design.matrix(spare), design.names


def _add_demographics(design: _Design, frame: pd.DataFrame) -> None:
    """Gender and parental education as levels, the 0/1 flags with missing indicators."""
    for column in CATEGORY_COLUMNS:
        if column not in frame:
            continue
        values = frame[column].astype("string").fillna("missing").to_numpy()
        levels = sorted(set(values))
        for level in levels[1:]:
            design.add(f"{column}={level}", values == level)
    for column in BINARY_COLUMNS:
        if column in frame:
            design.add(column, _add_with_missing(design, column, _numeric(frame, column)))


def _add_engagement(design: _Design, frame: pd.DataFrame, config: VAConfig) -> None:
    """Last year's absences (spline, and its interactions with disadvantage and English learner),
    homework completion, extracurricular activities and platform logins, each with a missing flag."""
    if "prior_days_absent" in frame:
        days = _add_with_missing(design, "prior_days_absent", _numeric(frame, "prior_days_absent"))
        knots = np.asarray(config.absence_knots, float)
        days = np.clip(days, knots[0], knots[-1])
        basis = _bspline(days, knots) if len(knots) >= 3 else days[:, None]
        design.add_block("prior_days_absent:bs", basis)
        for flag in ("econ_disadvantaged", "english_learner"):
            if flag in frame:
                on = np.nan_to_num(_numeric(frame, flag))[:, None]
                design.add_block(f"prior_days_absent x {flag}:bs", basis * on)
    if "prior_homework_completion_pct" in frame:
        x = _add_with_missing(
            design, "prior_homework_completion_pct", _numeric(frame, "prior_homework_completion_pct")
        )
        _add_spline(design, "prior_homework_completion_pct", x, _quantile_knots(x, config.engagement_knots))
    if "prior_extracurricular_count" in frame:
        raw = _numeric(frame, "prior_extracurricular_count")
        x = np.clip(_add_with_missing(design, "prior_extracurricular_count", raw), 0, 5)
        for level in range(1, 6):
            design.add(
                f"prior_extracurricular_count={level}{'+' if level == 5 else ''}", np.round(x) == level
            )
    if "prior_platform_logins_per_week" in frame:
        raw = _numeric(frame, "prior_platform_logins_per_week")
        x = np.log1p(np.clip(_add_with_missing(design, "prior_platform_logins_per_week", raw), 0, None))
        _add_spline(design, "log1p_prior_platform_logins", x, _quantile_knots(x, config.engagement_knots))
        if "home_internet" in frame:
            design.add(
                "log1p_prior_platform_logins x home_internet",
                x * np.nan_to_num(_numeric(frame, "home_internet")),
            )


# --------------------------------------------------------------------------------------------
# The within-school fit
# --------------------------------------------------------------------------------------------


@dataclass
class _WithinFit:
    beta: np.ndarray  # one slope per design column, 0 for the columns dropped as collinear
    kept: np.ndarray  # indices of the design columns used
    rss: float  # within-school residual sum of squares
    df_resid: int  # rows - school-year cells - kept columns


def within_fit(X: np.ndarray, y: np.ndarray, cells: np.ndarray) -> _WithinFit:
    """Least squares of y on X after removing each school-year's mean from both (school fixed
    effects): the slopes then come only from comparisons between students of the same school and
    year, so how effective schools differ in intake cannot bias them.

    The demeaned matrix is never built: its cross-products are X'X - sum_c n_c xbar_c xbar_c'
    (one pass over X, which matters at 300,000 rows). Columns constant or collinear within
    schools are dropped by a rank-revealing pivoted Cholesky of the correlation-scaled matrix.
    """
    counts = np.bincount(cells).astype(float)
    means = _group_means(X, cells, counts)
    y_means = _group_means(y, cells, counts)
    gram = X.T @ X - (means.T * counts) @ means
    cross = X.T @ y - means.T @ (counts * y_means)
    diag = np.diag(gram).copy()
    total = np.einsum("ij,ij->j", X, X)
    usable = np.flatnonzero(diag > 1e-10 * np.maximum(total, 1e-300))
    n_cells = int((counts > 0).sum())
    beta = np.zeros(X.shape[1])
    kept = usable
    if len(usable):
        scale = np.sqrt(diag[usable])
        corr = gram[np.ix_(usable, usable)] / np.outer(scale, scale)
        _, piv, rank, _ = dpstrf(corr.copy(), lower=0, tol=1e-10)
        order = np.sort(piv[:rank] - 1)
        kept = usable[order]
        factor = cho_factor(corr[np.ix_(order, order)])
        beta[kept] = cho_solve(factor, cross[kept] / scale[order]) / scale[order]
    resid = y - X @ beta
    resid -= _group_means(resid, cells, counts)[cells]
    return _WithinFit(beta, kept, float(resid @ resid), len(y) - n_cells - len(kept))


def _index_columns(
    X: np.ndarray, fit: _WithinFit, y: np.ndarray, grade_year: np.ndarray, n_knots: int
) -> tuple[np.ndarray, list[str]]:
    """Spline of the fitted student index (the adjustment on the score scale): one smooth bend in
    the whole prediction captures a ceiling or floor that compresses every covariate's effect
    near the ends of the scale, which no additive term can."""
    index = X @ fit.beta
    index = index + _group_means(y - index, grade_year, np.bincount(grade_year))[grade_year]
    knots = _quantile_knots(index, n_knots)
    if knots is None:
        return np.zeros((len(y), 0)), []
    basis = _bspline(index, knots)
    return basis, [f"fitted_index:bs{j}" for j in range(basis.shape[1])]


# --------------------------------------------------------------------------------------------
# Per-school estimates
# --------------------------------------------------------------------------------------------


def _usable(pairs: pd.DataFrame, subject: str) -> pd.DataFrame:
    """Rows usable for this subject's growth: a usable pair status (when the column is present)
    and both the current and the prior score."""
    keep = pairs[f"score_{subject}"].notna() & pairs[f"prior_{subject}_score"].notna()
    status = f"pair_status_{subject}"
    if status in pairs:
        keep &= pairs[status].astype("string").isin(USABLE_STATUSES).fillna(False)
    return pairs.loc[keep.to_numpy()].reset_index(drop=True)


def _intake(frame: pd.DataFrame, subjects: list[str], units: np.ndarray, config: VAConfig) -> pd.DataFrame:
    """Each unit's intake: the mean within-grade z of its students' prior scores in each subject
    (z over all pairs of the same grade and year, population SD, so grade mix and a scale whose
    spread changes with grade do not count as intake), plus any ``intake_extra`` means."""
    grade_year = _codes(frame["grade"].astype(str) + "|" + frame["school_year"].astype(str))[0]
    columns = {}
    for s in subjects:
        column = f"prior_{s}_score"
        if column in frame:
            deviation = _centred_by(_numeric(frame, column), grade_year)
            present = np.isfinite(deviation)
            var = np.bincount(
                grade_year[present], weights=deviation[present] ** 2, minlength=grade_year.max() + 1
            )
            count = np.bincount(grade_year[present], minlength=grade_year.max() + 1)
            sd = np.sqrt(var / np.maximum(count, 1))[grade_year]
            columns[f"intake_{s}"] = np.where(sd > 0, deviation / np.where(sd > 0, sd, 1.0), 0.0)
    for column in config.intake_extra:
        columns[f"intake_{column}"] = _numeric(frame, column)
    table = pd.DataFrame(columns).groupby(units).mean()
    return table.fillna(table.mean()).fillna(0.0)


def _unit_se(
    resid: np.ndarray, units: np.ndarray, n: np.ndarray, sigma: float, frame: pd.DataFrame, config: VAConfig
) -> np.ndarray:
    """SE of each unit's mean residual: sigma / sqrt(n) (homoskedastic, the default), or clustered
    by student within the unit (robust to heteroskedasticity and to a student counted in several
    years: sqrt(sum over students of their summed residual squared) / n, with a G/(G-1) factor)."""
    if config.se_method == "pooled":
        return sigma / np.sqrt(n)
    student = _codes(frame["student_id"].astype(str))[0] if "student_id" in frame else np.arange(len(resid))
    key = pd.DataFrame({"unit": units, "student": student, "r": resid})
    per_student = key.groupby(["unit", "student"], sort=False)["r"].sum()
    summed = (per_student**2).groupby(level="unit").sum()
    clusters = per_student.groupby(level="unit").size()
    factor = np.where(clusters > 1, clusters / np.maximum(clusters - 1, 1), 1.0)
    return np.sqrt(summed.reindex(range(len(n))).to_numpy() * factor) / n


def _view_b(
    fe: np.ndarray, se: np.ndarray, n: np.ndarray, intake: np.ndarray, config: VAConfig
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray]:
    """View B: each school's fixed effect minus what its intake predicts (a GLS regression of the
    fixed effects on intake across the district's schools), re-centred on the student-weighted
    mean. tau^2 is re-estimated with the intake as covariate. The SE is that of the residual
    (I - P) fe given the schools' true effects: sampling noise also moves the fitted intake line,
    which adds a little for schools of unusual intake and takes a little from those that pull
    the line towards themselves."""
    Z = np.column_stack([np.ones(len(fe)), intake])
    tau2_b = estimate_tau2(fe, se, Z, config.tau_method)
    gamma, cov = _gls(fe, tau2_b + se**2, Z)
    fe_b = fe - Z @ gamma
    fe_b -= np.average(fe_b, weights=n)
    M = cov @ (Z / (tau2_b + se**2)[:, None]).T  # gamma = M fe
    own = np.einsum("ij,ji->i", Z, M)  # P_jj: the weight of a school's own estimate in its fitted line
    spread = np.einsum("ij,jk,ik->i", Z, (M * se**2) @ M.T, Z)  # Var of the fitted line from sampling noise
    se_b = np.sqrt(np.maximum(se**2 * (1 - 2 * own) + spread, 0.0))
    return fe_b, se_b, tau2_b, gamma, cov  # cov: the slope as a parameter (schools as a sample)


@dataclass
class _MixedFit:
    blup: np.ndarray  # per unit (codes 0..k-1), shrunk towards the model's intercept
    cond_sd: np.ndarray  # conditional (posterior) SD of each random intercept
    sigma: float
    tau: float
    fixed: np.ndarray  # fitted fixed part of every row


def mixedlm_fit(X: np.ndarray, y: np.ndarray, units: np.ndarray, grade_year: np.ndarray) -> _MixedFit:
    """statsmodels random-intercept model (REML) on a fixed design plus a constant and grade x
    year levels: the independent cross-check of FE + EB."""
    with threadpool_limits(limits=1, user_api="blas"):  # many tiny per-school solves: threads only cost
        return _mixedlm_fit(X, y, units, grade_year)


def _mixedlm_fit(X: np.ndarray, y: np.ndarray, units: np.ndarray, grade_year: np.ndarray) -> _MixedFit:
    from statsmodels.regression.mixed_linear_model import MixedLM

    levels = [(grade_year == t).astype(float)[:, None] for t in range(1, int(grade_year.max()) + 1)]
    design = np.column_stack([np.ones((len(y), 1)), *levels, X])
    # An orthonormal basis of the same column space: the model, its fitted fixed part and the
    # BLUPs are unchanged, but with ~100 spline and indicator columns the optimisers otherwise stop
    # at different, wrong variance ratios (seen with bfgs, lbfgs and nm on the test districts).
    q, r, _ = qr(design, mode="economic", pivoting=True)
    rank = int((np.abs(np.diag(r)) > 1e-9 * np.abs(r[0, 0])).sum())  # drop collinear directions
    exog = q[:, :rank] * np.sqrt(len(y))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MixedLM(y, exog, groups=units)
        result = model.fit(reml=True, method="bfgs")
        if not np.isfinite(result.llf) or not result.converged:
            result = model.fit(reml=True, method="powell")
    order = np.argsort(np.asarray(result.model.group_labels))
    labels = np.asarray(result.model.group_labels)[order]
    blup = np.array([float(np.asarray(result.random_effects[g]).ravel()[0]) for g in labels])
    cond = np.array([float(np.asarray(result.random_effects_cov[g])[0, 0]) for g in labels])
    return _MixedFit(
        blup=blup,
        cond_sd=np.sqrt(np.maximum(cond, 0.0)),
        sigma=float(np.sqrt(result.scale)),
        tau=float(np.sqrt(np.asarray(result.cov_re)[0, 0])),
        fixed=exog @ np.asarray(result.fe_params),
    )


def _mixedlm_views(
    X: np.ndarray,
    y: np.ndarray,
    units: np.ndarray,
    grade_year: np.ndarray,
    report: np.ndarray,
    n: np.ndarray,
    intake: np.ndarray,
    config: VAConfig,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, float, float, float]:
    """Both views from MixedLM fitted on the reported units (view B adds the unit's intake to the
    fixed part). The BLUPs shrink towards the model's intercepts; subtracting lambda x (the unit's
    mean residual minus the same after centring each grade-year on 0) puts them on the FE + EB
    footing (relative to the student-weighted district mean of each grade and year).
    Returns view A, view B, their unshrunken mean residuals, sigma, tau^2 of A and of B."""
    rows = report[units]
    sub_units = _codes(units[rows])[0]
    sub_levels = _codes(grade_year[rows])[0]
    ns = n[report]
    intake = intake[report] - np.average(intake[report], axis=0, weights=ns)
    views, raw = [], []
    for view_intake in (None, intake):
        Xv = X[rows] if view_intake is None else np.column_stack([X[rows], view_intake[sub_units]])
        fit = mixedlm_fit(Xv, y[rows], sub_units, sub_levels)
        resid = y[rows] - fit.fixed
        centred = resid - _group_means(resid, sub_levels, np.bincount(sub_levels))[sub_levels]
        offset = _group_means(resid - centred, sub_units, ns)
        lam = fit.tau**2 / (fit.tau**2 + fit.sigma**2 / ns)
        views.append((posterior_table(fit.blup - lam * offset, fit.cond_sd, lam, config.level), fit))
        raw.append(_group_means(centred, sub_units, ns))
    (view_a, fit_a), (view_b, fit_b) = views
    fe = pd.DataFrame(
        {
            "fe": raw[0],
            "fe_se": fit_a.sigma / np.sqrt(ns),
            "fe_b": raw[1],
            "fe_se_b": fit_b.sigma / np.sqrt(ns),
        }
    )
    return view_a, view_b, fe, fit_a.sigma, fit_a.tau**2, fit_b.tau**2


def _unit_keys(unit_labels: np.ndarray, by_year: bool) -> pd.DataFrame:
    """school_id (and school_year) of each unit label."""
    labels = pd.Series(unit_labels.astype(str))
    if not by_year:
        return pd.DataFrame({"school_id": labels})
    split = labels.str.rsplit("|", n=1, expand=True)
    year = pd.to_numeric(split[1], errors="coerce")
    return pd.DataFrame({"school_id": split[0], "school_year": year if year.notna().all() else split[1]})


def _assemble(
    keys: pd.DataFrame,
    n: np.ndarray,
    report: np.ndarray,
    intake: pd.DataFrame,
    view_a: pd.DataFrame,
    view_b: pd.DataFrame,
    config: VAConfig,
) -> pd.DataFrame:
    """One row per unit: keys, n, intake, both views (suppressed units keep n, intake and a reason)."""
    stats = pd.concat(
        [
            view_a[list(STAT_COLUMNS)].reset_index(drop=True),
            view_b[list(STAT_COLUMNS)].add_suffix("_b").reset_index(drop=True),
        ],
        axis=1,
    )
    stats.index = np.flatnonzero(report)
    stats = stats.reindex(range(len(n)))
    table = pd.concat([keys.assign(n=n.astype(int)), intake.reset_index(drop=True), stats], axis=1)
    table["views_differ"] = (
        report & ((table["low"] > table["high_b"]) | (table["high"] < table["low_b"])).to_numpy()
    )
    table["suppressed"] = ~report
    table["reason"] = np.where(report, "", f"fewer than {config.min_students} students with a growth pair")
    return table


def school_value_added(
    pairs: pd.DataFrame,
    subject: str,
    subjects: list[str],
    config: VAConfig = VAConfig(),
    by_year: bool | None = None,
) -> ValueAdded:
    """Value-added of every school for one subject, both views, from the growth-pairs table.

    ``by_year`` (default ``config.by_year``, False): False pools all school years in ``pairs``
    into one estimate per school (the adjustment is still fitted within school x year, and each
    grade-year's residuals are centred on its district mean); True reports one estimate per
    school and school year. With ``config.method == "mixedlm"`` both views come from statsmodels
    MixedLM (the intake coefficients and the explanation's numbers stay those of FE + EB).
    """
    # One BLAS thread: the heavy step is a single X'X (under a second on 300,000 x 150), and OpenBLAS
    # threads that spin-wait on a busy 2-core machine made it 20-30x slower in our measurements.
    with threadpool_limits(limits=1, user_api="blas"):
        return _school_value_added(
            pairs, subject, subjects, config, config.by_year if by_year is None else by_year
        )


def _school_value_added(
    pairs: pd.DataFrame, subject: str, subjects: list[str], config: VAConfig, by_year: bool
) -> ValueAdded:
    frame = _usable(pairs, subject)
    if frame.empty:
        raise ValueError(f"no usable growth pairs for {subject!r}")
    y = _numeric(frame, f"score_{subject}")
    grade_year = _codes(frame["grade"].astype(str) + "|" + frame["school_year"].astype(str))[0]
    school = frame["school_id"].astype(str)
    school_year = school + "|" + frame["school_year"].astype(str)
    cells = _codes(school_year)[0]
    units, unit_labels = _codes(school_year if by_year else school)

    spare = config.index_knots + 1 if config.index_knots else 0  # the index spline's basis size
    full, names = build_design(frame, subject, subjects, config, spare)
    X = full[:, : len(names)]
    fit = within_fit(X, y, cells)
    if config.index_knots:
        extra, extra_names = _index_columns(X, fit, y, grade_year, config.index_knots)
        full[:, len(names) : len(names) + extra.shape[1]] = extra
        X, names = full[:, : len(names) + extra.shape[1]], names + extra_names
        fit = within_fit(X, y, cells)
    kept_names = [names[i] for i in fit.kept]
    sigma = float(np.sqrt(fit.rss / max(fit.df_resid, 1)))

    resid = y - X @ fit.beta
    # Each grade-year's district mean is 0: schools are compared with the average school for the same
    # grade and year (grade levels are not identified within schools when grade spans are disjoint).
    resid -= _group_means(resid, grade_year, np.bincount(grade_year))[grade_year]
    n = np.bincount(units).astype(float)
    fe_all = _group_means(resid, units, n)
    within_resid = resid - _group_means(resid, cells, np.bincount(cells))[cells]
    se_all = _unit_se(within_resid, units, n, sigma, frame, config)
    intake = _intake(frame, subjects, units, config)
    report = n >= config.min_students
    if report.sum() < 2:
        raise ValueError(
            f"fewer than 2 schools with at least {config.min_students} usable pairs in {subject!r}"
        )
    fe, se, nr = fe_all[report], se_all[report], n[report]
    z_intake = intake.to_numpy()[report]
    z_intake = z_intake - np.average(z_intake, axis=0, weights=nr)

    tau2 = estimate_tau2(fe, se, None, config.tau_method)
    fe_b, se_b, tau2_b, gamma, gamma_cov = _view_b(fe, se, nr, z_intake, config)
    view_a = eb_shrink(fe, se, np.sqrt(tau2), config.level).assign(fe=fe, fe_se=se)
    view_b = eb_shrink(fe_b, se_b, np.sqrt(tau2_b), config.level).assign(fe=fe_b, fe_se=se_b)
    if config.method == "mixedlm":
        view_a, view_b, raw, sigma, tau2, tau2_b = _mixedlm_views(
            X[:, [i for i in fit.kept if not names[i].startswith("grade=")]],
            y,
            units,
            grade_year,
            report,
            n,
            intake.to_numpy(),
            config,
        )
        view_a = view_a.assign(fe=raw["fe"].to_numpy(), fe_se=raw["fe_se"].to_numpy())
        view_b = view_b.assign(fe=raw["fe_b"].to_numpy(), fe_se=raw["fe_se_b"].to_numpy())

    keys = _unit_keys(unit_labels, by_year)
    if "school_name" in frame:
        names_of = frame.groupby(school, sort=False)["school_name"].first().astype(str)
        keys.insert(1, "school_name", keys["school_id"].map(names_of).to_numpy())
    table = _assemble(keys, n, report, intake, view_a, view_b, config)
    result = ValueAdded(
        subject=subject,
        table=table,
        tau=float(np.sqrt(tau2)),
        tau_b=float(np.sqrt(tau2_b)),
        sigma=sigma,
        design_columns=kept_names,
        coefficients=pd.Series(fit.beta[fit.kept], index=kept_names),
        intake_coefficients=pd.DataFrame(
            {"coefficient": gamma, "se": np.sqrt(np.diag(gamma_cov))}, index=["intercept", *intake.columns]
        ),
        explanation="",
        config=config,
        n_pairs=len(frame),
        n_dropped=len(pairs) - len(frame),
        by_year=by_year,
    )
    result.explanation = explain(result)
    return result


def explain(result: ValueAdded) -> str:
    """Plain-language account of the two views, their numbers and where they disagree."""
    t = result.table
    shown = t.loc[~t["suppressed"]]
    differ = shown.loc[shown["views_differ"]]
    unit = "school-years" if result.by_year else "schools"
    slopes = ", ".join(
        f"{name.removeprefix('intake_')} {row.coefficient:+.2f} (SE {row.se:.2f})"
        for name, row in result.intake_coefficients.iloc[1:].iterrows()
    )
    lines = [
        f"Value-added in {result.subject}: {len(shown)} {unit} reported, {int(t['suppressed'].sum())} "
        f"suppressed (fewer than {result.config.min_students} students), {result.n_pairs} growth pairs.",
        "",
        "View A (the headline) compares each student's score with what students with the same prior "
        "scores and characteristics score in the same grade and year, the adjustment being learned within "
        "schools. It includes everything that comes with attending the school: its teaching and also the "
        "effect of the peers it enrols. It answers what a family gets from enrolling there. It excludes "
        "differences in the students' own starting points and characteristics.",
        "",
        "View B additionally adjusts for the school's intake (the mean within-grade z of its students' "
        f"prior scores; points of view A per SD of intake: {slopes}). It removes peer and composition "
        "effects, and also whatever else correlates with intake, including genuine effectiveness that "
        "happens to be more common among schools with stronger intakes. It answers how a school compares "
        "with schools serving similar students.",
        "",
        f"Estimated spread of the true effects: view A SD {result.tau:.2f} points, view B SD "
        f"{result.tau_b:.2f}; a student's residual SD within a school is {result.sigma:.2f} points. "
        "Estimates are shrunk towards the district mean by their reliability; intervals are "
        f"{result.config.level:.0%} posterior intervals.",
        "",
    ]
    if differ.empty:
        lines.append(
            f"The two views agree within their uncertainty (overlapping intervals) for every {unit[:-1]}."
        )
        return "\n".join(lines)
    gap = differ["estimate"].sub(differ["estimate_b"]).abs().sort_values(ascending=False)
    listed = "; ".join(
        f"{r.school_id}{f' {r.school_year}' if result.by_year else ''}: "
        f"A {r.estimate:+.2f}, B {r.estimate_b:+.2f}"
        for r in differ.loc[gap.index[:10]].itertuples()
    )
    lines.append(
        f"The two views differ by more than their uncertainty (intervals do not overlap) for {len(differ)} "
        f"{unit} (largest gaps first{', 10 shown' if len(differ) > 10 else ''}): {listed}. "
        "A above B means the school's intake "
        "(peers and what comes with it) accounts for part of its headline result; A below B, the reverse."
    )
    return "\n".join(lines)
