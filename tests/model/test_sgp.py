"""Student Growth Percentiles: exactness of the HiGHS fits, the SGP properties, and the report aggregation."""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path
from types import SimpleNamespace

import highspy
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import lsq_linear

from training import sgp as sgp_module
from training.sgp import (
    PERCENTILE_TAUS,
    CohortFit,
    SGPConfig,
    SGPInput,
    SGPRun,
    design_matrix,
    fit_cohort,
    growth_percentiles,
    knots_and_boundaries,
    median_interval,
    median_sgp,
    quantile_coefficients,
    student_growth_percentiles,
)

TAUS = np.asarray(PERCENTILE_TAUS)
PRIORS = ["prior_score", "prior2_score"]


def simulate_district(
    cohort_sizes: dict[int, int],
    seed: int = 0,
    second_prior: float = 0.9,
    scale: tuple[float, float, float, float] = (500.0, 40.0, 150.0, 950.0),
) -> pd.DataFrame:
    """Integer scale scores (centre, within-grade SD, LOSS, HOSS): prior2 -> prior -> current.

    The current score is a nonlinear function of the prior plus heteroscedastic noise; a share
    ``1 - second_prior`` of students lacks the second prior.
    """
    centre, sd, low, high = scale
    rng = np.random.default_rng(seed)
    frames = []
    for grade, n in cohort_sizes.items():
        ability = rng.normal(0, 1, n)
        z2 = 0.9 * ability + rng.normal(0, 0.45, n)
        z1 = 0.6 * z2 + 0.4 * ability + rng.normal(0, 0.45, n)
        noise = rng.normal(0, 1, n) * (0.3 + 0.15 * np.abs(z1))
        current = 0.75 * z1 + 0.12 * z1**2 + 0.15 * ability + noise

        def to_scale(z: np.ndarray) -> np.ndarray:
            return np.clip(np.round(centre + sd * z), low, high)

        frame = pd.DataFrame(
            {
                "school_year": 2024,
                "grade": grade,
                "score": to_scale(current),
                "prior_score": to_scale(z1),
                "prior2_score": to_scale(z2),
            }
        )
        frame.loc[rng.random(n) > second_prior, "prior2_score"] = np.nan
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


PERCENT_SCALE = (50.0, 12.0, 0.0, 100.0)


def _continuous_cohort(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous scores (no ties), where the quantile-regression solution is unique."""
    rng = np.random.default_rng(seed)
    x = rng.normal(50, 10, n)
    x2 = 0.7 * x + rng.normal(15, 7, n)
    y = 0.5 * x + 0.2 * x2 + 0.01 * (x - 50) ** 2 + rng.normal(0, 1, n) * (3 + 0.1 * np.abs(x - 50))
    return y, np.column_stack([x, x2])


def _design(priors: np.ndarray) -> np.ndarray:
    kb = [knots_and_boundaries(priors[:, k]) for k in range(priors.shape[1])]
    return design_matrix(priors, [k for k, _ in kb], [b for _, b in kb])


def _check_loss(y: np.ndarray, fitted: np.ndarray, tau: float) -> float:
    resid = y - fitted
    return float(np.sum(resid * (tau - (resid < 0))))


# ---------------------------------------------------------------------------------------------
# Exactness of the solver
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("order", [1, 2])
def test_highs_fit_matches_statsmodels_quantreg(order: int) -> None:
    import statsmodels.api as sm

    y, priors = _continuous_cohort(500, seed=4)
    X = _design(priors[:, :order])
    coef = quantile_coefficients(X, y, TAUS, preprocess=False)
    converged = 0
    for j in range(5, 100, 10):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reference = sm.QuantReg(y, X).fit(q=TAUS[j]).params
        ours, theirs = X @ coef[j], X @ reference
        # HiGHS solves the LP exactly, so its check loss is never above the IRLS reference's.
        assert _check_loss(y, ours, TAUS[j]) <= _check_loss(y, theirs, TAUS[j]) + 1e-8
        if not caught:  # where statsmodels' IRLS reports convergence, the fitted quantiles coincide
            converged += 1
            assert np.abs(ours - theirs).max() < 1e-4
            assert np.abs(coef[j] - reference).max() < 1e-3
    assert converged >= 8


def test_highs_solution_satisfies_optimality_conditions() -> None:
    """A certificate independent of HiGHS: dual weights a in [0, 1] with X'a = (1 - tau) X'1 exist,
    a = 1 above the fit and a = 0 below it."""
    y, priors = _continuous_cohort(600, seed=11)
    X = _design(priors)
    coef = quantile_coefficients(X, y, TAUS, preprocess=False)
    for j in range(0, 100, 7):
        resid = y - X @ coef[j]
        on_fit = np.abs(resid) < 1e-7
        above = resid > 0
        target = (1 - TAUS[j]) * X.sum(axis=0) - X[above & ~on_fit].sum(axis=0)
        weights = lsq_linear(X[on_fit].T, target, bounds=(0, 1))
        assert on_fit.sum() >= X.shape[1]
        assert np.abs(X[on_fit].T @ weights.x - target).max() < 1e-6


def _blas_threads(task: object) -> tuple[int, int, np.ndarray, np.ndarray]:
    from threadpoolctl import threadpool_info

    threads = max(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")
    return 0, 1, np.array([threads]), np.array([os.getpid()])


def test_cohort_fits_in_worker_processes_use_one_blas_thread_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers that each start BLAS threads of their own overfill the cores (the fits took twice as
    long at 1,000,000 students): each worker is held to one BLAS thread."""
    monkeypatch.setattr(sgp_module, "_run_task", _blas_threads)
    tasks = [SimpleNamespace(order=1, rows=np.arange(5)) for _ in range(4)]
    pool, futures = sgp_module._submit(tasks, workers=2)
    try:
        results = [f.result() for f in futures]
    finally:
        pool.shutdown()
    assert [threads[0] for _, _, threads, _ in results] == [1, 1, 1, 1]
    assert {pid[0] for _, _, _, pid in results} != {os.getpid()}


def test_the_band_is_a_share_of_a_large_cohort_and_a_floor_for_a_small_one() -> None:
    assert sgp_module.band_for(1_800, band_size=800, band_share=0.03) == 800
    assert sgp_module.band_for(108_000, band_size=800, band_share=0.03) == 3_240
    assert sgp_module.band_for(108_000, band_size=800, band_share=0.0) == 800


@pytest.mark.parametrize(
    ("config", "band"),
    [(SGPConfig(band_size=150, band_share=0.0), 150), (SGPConfig(band_size=10, band_share=0.1), 163)],
    ids=["fixed band", "share of the cohort"],
)
def test_preprocessing_gives_the_plain_solution(
    monkeypatch: pytest.MonkeyPatch, config: SGPConfig, band: int
) -> None:
    frame = simulate_district({5: 1800}, seed=2)
    frame = frame.dropna()
    y = frame["score"].to_numpy()
    priors = frame[PRIORS].to_numpy()
    bands: list[int] = []
    original = sgp_module._solve_band

    def counting(*args, **kwargs):
        bands.append(args[-1])
        return original(*args, **kwargs)

    monkeypatch.setattr(sgp_module, "_solve_band", counting)
    for order in (1, 2):
        plain = fit_cohort(y, priors[:, :order], SGPConfig(preprocess=False))
        globbed = fit_cohort(y, priors[:, :order], config)
        X = design_matrix(priors[:, :order], plain.knots, plain.boundaries)
        # Both are optima of the same LPs (check loss equal within the solver's tolerance); where the
        # optimum is not unique they may be different optimal vertices, a few 1e-6 apart.
        assert np.abs(X @ plain.coefficients.T - X @ globbed.coefficients.T).max() < 1e-5
        for j, tau in enumerate(TAUS):
            loss = _check_loss(y, X @ plain.coefficients[j], tau)
            assert abs(_check_loss(y, X @ globbed.coefficients[j], tau) - loss) < 1e-9 * loss
        plain_sgp = plain.growth_percentiles(y, priors[:, :order])
        np.testing.assert_array_equal(plain_sgp, globbed.growth_percentiles(y, priors[:, :order]))
    assert len(bands) >= 2 * (len(TAUS) - 1)
    assert set(bands) == {band}  # 163: a tenth of the 1,624 students


@pytest.mark.slow
def test_solver_recovers_when_highs_gives_no_verdict(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fifth HiGHS run is reported as having no verdict: the band widens or the model is rebuilt, and
    the result is still the exact solution."""
    frame = simulate_district({6: 1500}, seed=9).dropna()
    y, priors = frame["score"].to_numpy(), frame[PRIORS].to_numpy()
    reference = fit_cohort(y, priors, SGPConfig(preprocess=False))
    runs = {"n": 0}
    real_run = sgp_module._run

    def flaky(h: highspy.Highs) -> highspy.HighsModelStatus:
        runs["n"] += 1
        status = real_run(h)
        return highspy.HighsModelStatus.kNotset if runs["n"] % 5 == 0 else status

    monkeypatch.setattr(sgp_module, "_run", flaky)
    for config in (SGPConfig(preprocess=False), SGPConfig(band_size=150)):
        fit = fit_cohort(y, priors, config)
        np.testing.assert_array_equal(
            fit.growth_percentiles(y, priors), reference.growth_percentiles(y, priors)
        )
        X = design_matrix(priors, fit.knots, fit.boundaries)
        assert np.abs(X @ fit.coefficients.T - X @ reference.coefficients.T).max() < 1e-6
    assert runs["n"] > 200


R_REFERENCE = r"""
# The core of SGP::studentGrowthPercentiles (R/studentGrowthPercentiles.R, R/createKnotsBoundaries.R) for one
# cohort: knots/boundaries, rq(method = "br") on bs() terms, sorted predictions rounded to 5 digits, and the
# count of predictions below the score with 0 -> 1 and 100 -> 99.
suppressMessages({library(quantreg); library(splines)})
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
taus <- (1:100 - 0.5) / 100
kb <- function(x) list(knots = round(as.vector(quantile(x, probs = c(.2, .4, .6, .8), na.rm = TRUE)), 3),
                       bnd = round(extendrange(x[!is.na(x)], f = 0.1), 3))
k1 <- kb(d$prior_score); k2 <- kb(d$prior2_score)
b1 <- function(x) bs(x, knots = k1$knots, Boundary.knots = k1$bnd)
b2 <- function(x) bs(x, knots = k2$knots, Boundary.knots = k2$bnd)
sgp <- function(pred, score) {
  pred <- round(t(apply(pred, 1, sort)), 5)
  tmp <- max.col(cbind(pred < score, FALSE), "last"); tmp[tmp == 101] <- 0
  tmp[tmp == 0] <- 1; tmp[tmp == 100] <- 99
  tmp
}
out <- data.frame(sgp_order_1 = rep(NA, nrow(d)), sgp_order_2 = NA)
o1 <- !is.na(d$score) & !is.na(d$prior_score)
m1 <- rq(score ~ b1(prior_score), tau = taus, data = d[o1, ], method = "br")$coefficients
out$sgp_order_1[o1] <- sgp(cbind(1, b1(d$prior_score[o1])) %*% m1, d$score[o1])
o2 <- o1 & !is.na(d$prior2_score)
m2 <- rq(score ~ b1(prior_score) + b2(prior2_score), tau = taus, data = d[o2, ], method = "br")$coefficients
out$sgp_order_2[o2] <- sgp(cbind(1, b1(d$prior_score[o2]), b2(d$prior2_score[o2])) %*% m2, d$score[o2])
write.csv(out, args[2], row.names = FALSE)
"""


def _has_r_quantreg() -> bool:
    if shutil.which("Rscript") is None:
        return False
    return subprocess.run(["Rscript", "-e", "library(quantreg)"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _has_r_quantreg(), reason="needs R with quantreg (apt-get install r-cran-quantreg)")
def test_sgps_equal_those_of_r_quantreg_with_the_packages_rules(tmp_path: Path) -> None:
    frame = simulate_district({7: 2500}, seed=12)
    frame.loc[frame.index[::97], "score"] = np.nan
    frame[["score", *PRIORS]].to_csv(tmp_path / "cohort.csv", index=False)
    (tmp_path / "sgp.R").write_text(R_REFERENCE)
    subprocess.run(
        ["Rscript", str(tmp_path / "sgp.R"), str(tmp_path / "cohort.csv"), str(tmp_path / "r.csv")],
        check=True,
    )
    r = pd.read_csv(tmp_path / "r.csv")
    ours = student_growth_percentiles(frame, "score", PRIORS, ["school_year", "grade"], workers=1)
    for col in ("sgp_order_1", "sgp_order_2"):
        theirs = pd.array(r[col].to_numpy(), dtype="Int64")
        assert ours[col].notna().sum() > 2000
        np.testing.assert_array_equal(
            ours[col].to_numpy(dtype=float, na_value=np.nan), theirs.to_numpy(dtype=float, na_value=np.nan)
        )


# ---------------------------------------------------------------------------------------------
# Reference details: knots, boundaries, counting
# ---------------------------------------------------------------------------------------------


def test_knots_and_boundaries_follow_create_knots_boundaries() -> None:
    knots, boundaries = knots_and_boundaries(np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, np.nan]))
    # R: quantile(1:11, c(.2,.4,.6,.8)) = 3 5 7 9; extendrange(1:11, f=0.1) = 0 12
    np.testing.assert_allclose(knots, [3, 5, 7, 9])
    np.testing.assert_allclose(boundaries, [0, 12])
    knots, _ = knots_and_boundaries(np.array([0.0, 1.0, 1.0, 2.0, 10.0 / 3.0]))
    np.testing.assert_array_equal(knots, np.round(np.quantile([0, 1, 1, 2, 10 / 3], [0.2, 0.4, 0.6, 0.8]), 3))


def test_counting_is_strictly_below_and_capped() -> None:
    quantiles = np.tile(np.arange(100, dtype=float), (5, 1))
    scores = np.array([50.0, 50.5, -5.0, 1000.0, 0.0])
    np.testing.assert_array_equal(growth_percentiles(quantiles, scores), [50, 51, 1, 99, 1])


def test_predictions_are_rounded_before_counting() -> None:
    """A fitted quantile a hair below an integer score is that score after rounding, so it is not below it."""
    knots, boundaries = knots_and_boundaries(np.arange(0.0, 101.0))
    coef = np.zeros((100, 8))
    coef[:, 0] = np.arange(100) + 0.5
    coef[50, 0] = 50.0 - 1e-9
    fit = CohortFit((knots,), (boundaries,), coef, TAUS, n=101)
    quantiles = fit.predict_quantiles(np.array([[40.0]]))
    assert quantiles[0, 50] == 50.0
    assert fit.growth_percentiles(np.array([50.0]), np.array([[40.0]]))[0] == 50


# ---------------------------------------------------------------------------------------------
# Properties of the SGPs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def district() -> pd.DataFrame:
    return simulate_district({4: 4000, 5: 1500}, seed=1)


@pytest.fixture(scope="module")
def district_sgp(district: pd.DataFrame) -> pd.DataFrame:
    return student_growth_percentiles(district, "score", PRIORS, ["school_year", "grade"], workers=1)


def test_sgps_are_uniform_and_unrelated_to_prior(district: pd.DataFrame, district_sgp: pd.DataFrame) -> None:
    """Deciles of SGP (1-10, ..., 91-99) hold 10% +/- 1% on the large cohort (nominally 10.5% and 9.5% at the
    ends, as SGP 1 also takes the students below every quantile); no correlation with the priors used."""
    data = district.join(district_sgp)
    for grade, cohort in data.groupby("grade"):
        for order, used in ((1, ["prior_score"]), (2, ["prior_score", "prior2_score"])):
            sgps = cohort[f"sgp_order_{order}"].dropna().astype(float)
            assert len(sgps) > 0.85 * len(cohort)
            for prior in used:
                assert abs(np.corrcoef(sgps, cohort.loc[sgps.index, prior])[0, 1]) < 0.05
            if grade == 4:
                bins = np.arange(0.5, 100, 10).tolist() + [99.5]
                shares = np.histogram(sgps, bins=bins)[0] / len(sgps)
                assert np.all(np.abs(shares - 0.1) <= 0.01), (order, shares)


def test_affine_rescaling_leaves_sgps_unchanged() -> None:
    """Translation: identical. 0-100 onto 200-800 (x6): identical except where the reference's rounding of
    predictions to 5 digits makes a tie on one scale only (a prediction within 5e-6 of the score on 0-100 is
    within 3e-5 on 200-800, beyond the rounding), which moves such a student by exactly one point."""
    percent = simulate_district({4: 1200, 5: 800}, seed=3, scale=PERCENT_SCALE)  # integer 0-100 scores
    cohort = ["school_year", "grade"]
    first = student_growth_percentiles(percent, "score", PRIORS, cohort, workers=1)
    assert first["sgp"].notna().sum() > 1900
    shifted, stretched = percent.copy(), percent.copy()
    for col in ["score", *PRIORS]:
        shifted[col] = shifted[col] + 137
        stretched[col] = 200 + 6 * stretched[col]
    pd.testing.assert_frame_equal(
        student_growth_percentiles(shifted, "score", PRIORS, cohort, workers=1), first
    )
    again = student_growth_percentiles(stretched, "score", PRIORS, cohort, workers=1)
    pd.testing.assert_series_equal(again["sgp_order"], first["sgp_order"])
    for col in ["sgp", "sgp_order_1", "sgp_order_2"]:
        diff = (again[col] - first[col]).abs().dropna()
        assert (diff == 0).mean() >= 0.995 and diff.max() <= 1


@pytest.mark.slow
def test_nonlinear_monotone_rescaling_changes_sgps_only_slightly(
    district: pd.DataFrame, district_sgp: pd.DataFrame
) -> None:
    """Not invariant: the splines and the linear-in-basis quantiles are not equivariant under a nonlinear map.
    Measured on this district (scores -> 1000 log(score / 100)): mean |difference| 0.34 point, 70% identical,
    97% within 1 point, 99.8% within 3, a few students in the sparse tails up to 14 points."""
    bent = district.copy()
    for col in ["score", *PRIORS]:
        bent[col] = np.round(1000 * np.log(bent[col] / 100), 1)
    again = student_growth_percentiles(bent, "score", PRIORS, ["school_year", "grade"], workers=1)
    diff = (again["sgp"] - district_sgp["sgp"]).abs().dropna()
    assert diff.mean() < 1.0
    assert (diff <= 3).mean() > 0.99
    assert diff.max() > 0  # it is not exactly invariant


def test_higher_score_never_gets_lower_sgp(district: pd.DataFrame, district_sgp: pd.DataFrame) -> None:
    data = district.join(district_sgp).dropna(subset=["sgp"])
    keys = ["grade", "sgp_order", "prior_score", "prior2_score"]
    data = data.sort_values([*keys, "score", "sgp"])
    same_priors = (data[keys].shift().eq(data[keys]) | (data[keys].shift().isna() & data[keys].isna())).all(
        axis=1
    )
    higher = same_priors & (data["score"] > data["score"].shift())
    assert higher.sum() > 500
    assert (data["sgp"].diff()[same_priors] >= 0).all()
    fit = fit_cohort(data["score"].to_numpy()[:1500], data[["prior_score"]].to_numpy()[:1500])
    scores = np.arange(150.0, 951.0)
    sgps = fit.growth_percentiles(scores, np.full((len(scores), 1), 500.0))
    assert np.all(np.diff(sgps) >= 0) and sgps[0] == 1 and sgps[-1] == 99


# ---------------------------------------------------------------------------------------------
# Orders, missing data, small cohorts, parallel path
# ---------------------------------------------------------------------------------------------


def test_highest_order_is_reported_with_fallback_to_order_1(
    district: pd.DataFrame, district_sgp: pd.DataFrame
) -> None:
    has_two = district["prior2_score"].notna()
    out = district_sgp
    assert (out.loc[has_two, "sgp_order"] == 2).all()
    assert (out.loc[has_two, "sgp"] == out.loc[has_two, "sgp_order_2"]).all()
    assert out.loc[has_two, "sgp_order_1"].notna().all()
    assert (~has_two).sum() > 100
    assert (out.loc[~has_two, "sgp_order"] == 1).all()
    assert (out.loc[~has_two, "sgp"] == out.loc[~has_two, "sgp_order_1"]).all()
    assert out.loc[~has_two, "sgp_order_2"].isna().all()
    assert (out.loc[has_two, "sgp_order_1"] != out.loc[has_two, "sgp_order_2"]).any()


def test_small_cohorts_missing_scores_and_priors_get_nan_with_a_note() -> None:
    frame = simulate_district({4: 600, 5: 60, 6: 400}, seed=5, second_prior=0.2)
    frame.loc[3, "score"] = np.nan
    frame.loc[4, "prior_score"] = np.nan
    out = student_growth_percentiles(frame, "score", PRIORS, ["school_year", "grade"], workers=1)
    small = frame["grade"] == 5
    assert out.loc[small, "sgp"].isna().all()
    assert out.loc[small, "sgp_note"].str.startswith("cohort too small").all()
    assert out.loc[3, "sgp_note"] == "missing current score" and pd.isna(out.loc[3, "sgp"])
    assert out.loc[4, "sgp_note"] == "no prior score" and pd.isna(out.loc[4, "sgp"])
    fine = ~small & frame["score"].notna() & frame["prior_score"].notna()
    assert out.loc[fine, "sgp"].between(1, 99).all() and out.loc[fine, "sgp_note"].isna().all()
    # grade 6: about 80 students have a second prior, fewer than 100, so order 2 is not fitted there
    grade6 = frame["grade"] == 6
    assert frame.loc[grade6, "prior2_score"].notna().sum() < 100
    assert (out.loc[grade6 & fine, "sgp_order"] == 1).all()
    assert (out.loc[frame["grade"] == 4, "sgp_order"] == 2).any()


def test_parallel_workers_and_progress_give_the_same_result(district: pd.DataFrame) -> None:
    small = district.sample(1500, random_state=0).sort_index()
    serial = student_growth_percentiles(small, "score", PRIORS, ["school_year", "grade"], workers=1)
    parallel = student_growth_percentiles(
        small, "score", PRIORS, ["school_year", "grade"], workers=2, progress=True
    )
    pd.testing.assert_frame_equal(serial, parallel)
    assert serial.index.equals(small.index)


def test_one_run_of_several_frames_gives_each_frame_its_own_sgps(district: pd.DataFrame) -> None:
    """``growth predict`` and the reports fit every subject (and year) in one pool of workers: each frame
    gets exactly what it gets alone, in its own index, even when the frames share index labels."""
    small = district.sample(2400, random_state=1).sort_index()
    first, second = small.iloc[:1200], small.iloc[1200:].reset_index(drop=True)
    cohort = ["school_year", "grade"]
    alone = [student_growth_percentiles(f, "score", PRIORS, cohort, workers=1) for f in (first, second)]
    run = SGPRun(
        [SGPInput(first, "score", PRIORS, cohort), SGPInput(second, "score", PRIORS, cohort)], workers=2
    )
    together = run.results()
    for own, shared in zip(alone, together, strict=True):
        pd.testing.assert_frame_equal(own, shared)
    assert together[0]["sgp"].notna().sum() > 1000 and together[1]["sgp"].notna().sum() > 1000


def test_a_run_closed_before_its_results_stops_its_workers(district: pd.DataFrame) -> None:
    """A caller that fails while the fits run (``growth predict`` scoring a past year) closes the run:
    the worker processes stop, and nothing is left to wait for at exit."""
    with SGPRun([SGPInput(district, "score", PRIORS, ["school_year", "grade"])], workers=2) as run:
        assert run._pool is not None and len(run._futures) > 1
        workers = list(run._pool._processes.values())  # forked at the first submit
    assert run._pool is None and len(workers) == 2
    assert not any(process.is_alive() for process in workers)
    assert all(f.done() for f in run._futures)


def test_district_knots_are_each_grades_knots_from_its_present_scores() -> None:
    """One lookup per distinct grade: the same knots as ``knots_and_boundaries`` on that grade's scores
    alone, missing scores left out, for text, categorical and numeric grades."""
    from training.sgp import district_knots

    rng = np.random.default_rng(3)
    grades = rng.choice(["3", "4", "5"], 3000)
    scores = pd.Series(np.where(rng.random(3000) < 0.1, np.nan, rng.integers(150, 950, 3000)))
    scores[grades == "5"] = np.nan  # a grade with no score gets no entry
    expected = {g: knots_and_boundaries(scores[grades == g].to_numpy()) for g in ("3", "4")}
    for column in (pd.Series(grades), pd.Series(grades).astype("category"), pd.Series(grades.astype(int))):
        table = district_knots(scores.astype("Int64"), column)
        assert sorted(table) == ["3", "4"]
        for grade, (knots, boundaries) in expected.items():
            assert np.array_equal(table[grade][0], knots) and np.array_equal(table[grade][1], boundaries)


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        SGPConfig(taus=(0.5, 0.2))
    with pytest.raises(ValueError):
        SGPConfig(max_order=0)
    with pytest.raises(KeyError):
        student_growth_percentiles(pd.DataFrame({"a": [1]}), "score", PRIORS, ["grade"])


# ---------------------------------------------------------------------------------------------
# Median SGP for reports
# ---------------------------------------------------------------------------------------------


def test_median_interval_by_hand() -> None:
    # sorted: 12 23 35 41 50 58 66 70 80 90; median (50 + 58) / 2 = 54.
    # Bin(10, 1/2): P(B <= 1) = 11/1024 = 0.0107 <= 0.05 < P(B <= 2) = 56/1024, so j = 2 and the 90% interval
    # is [x_(2), x_(9)] = [23, 80] (coverage 1 - 2 * 11/1024 = 97.9%).
    values = np.array([35, 70, 12, 50, 90, 41, 66, 23, 58, 80], dtype=float)
    assert median_interval(values, 0.9) == (54.0, 23.0, 80.0)


def test_median_sgp_suppresses_small_groups() -> None:
    frame = pd.DataFrame(
        {
            "school": ["A"] * 11 + ["B"] * 9,
            "sgp": pd.array(
                [35, 70, 12, 50, 90, 41, 66, 23, 58, 80, None] + list(range(1, 10)), dtype="Int64"
            ),
        }
    )
    out = median_sgp(frame, ["school"], min_n=10).set_index("school")
    assert out.loc["A", "n"] == 10
    assert (out.loc["A", "median_sgp"], out.loc["A", "lower"], out.loc["A", "upper"]) == (54.0, 23.0, 80.0)
    assert not out.loc["A", "suppressed"]
    assert out.loc["B", "suppressed"]
    assert (
        pd.isna(out.loc["B", "n"])
        and np.isnan(out.loc["B", ["median_sgp", "lower", "upper"]].astype(float)).all()
    )


@pytest.mark.slow
def test_knots_from_a_table_are_the_ones_used(district: pd.DataFrame) -> None:
    """With district-wide knots per prior grade (the package's createKnotsBoundaries, all years pooled),
    every cohort fit uses the table's knots: the SGPs equal a direct fit with those knots, and differ
    from the within-cohort knots' SGPs for some students."""
    from training.sgp import district_knots

    cohort = district[district["grade"] == 4].copy()
    cohort["prior_grade"], cohort["prior2_grade"] = "3", "2"
    wide = pd.concat([cohort["prior_score"], cohort["prior_score"] + 25.0])  # other years moved the knots
    table = district_knots(wide, pd.Series(["3"] * len(wide)))
    table.update(district_knots(cohort["prior2_score"], pd.Series(["2"] * len(cohort))))
    out = student_growth_percentiles(
        cohort,
        "score",
        PRIORS,
        ["school_year", "grade"],
        workers=1,
        knot_keys=["prior_grade", "prior2_grade"],
        knot_table=table,
    )
    rows = cohort["prior_score"].notna() & cohort["score"].notna()
    direct = fit_cohort(
        cohort.loc[rows, "score"].to_numpy(float),
        cohort.loc[rows, ["prior_score"]].to_numpy(float),
        knots=[table["3"][0]],
        boundaries=[table["3"][1]],
    )
    expected = direct.growth_percentiles(
        cohort.loc[rows, "score"].to_numpy(float), cohort.loc[rows, ["prior_score"]].to_numpy(float)
    )
    assert np.array_equal(out.loc[rows, "sgp_order_1"].to_numpy(dtype=int), expected)
    plain = student_growth_percentiles(cohort, "score", PRIORS, ["school_year", "grade"], workers=1)
    assert (plain.loc[rows, "sgp_order_1"] != out.loc[rows, "sgp_order_1"]).any()
    with pytest.raises(ValueError, match="one column per prior"):
        student_growth_percentiles(
            cohort, "score", PRIORS, ["grade"], knot_keys=["prior_grade"], knot_table=table
        )
