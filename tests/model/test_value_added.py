"""School value-added (training.value_added): known answers, shrinkage by hand, and accuracy and
interval coverage on simulated districts with a known truth.

``python tests/test_value_added.py`` prints the figures quoted in docs/value_added.md.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from training.value_added import (
    VAConfig,
    band,
    eb_shrink,
    estimate_tau2,
    school_value_added,
)

SUBJECTS = ["math", "reading"]


# --------------------------------------------------------------------------------------------
# A simulated district with a known truth
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sim:
    """Settings of a simulated district; every default is a realistic-looking choice."""

    n_schools: int = 300
    mean_size: int = 100  # pairs per school and year (lognormal around this)
    tiny_schools: int = 0  # extra schools with 3-8 pairs, to be suppressed
    years: tuple[int, ...] = (2024,)
    grades: tuple[int, ...] = (4, 5, 6)
    spans: tuple[tuple[int, ...], ...] = ()  # grade spans of school types (e.g. elementary, middle)
    effect_sd: float = 1.0  # true school effect, points
    year_effect_sd: float = 0.0  # school x year deviation from the school's effect
    effect_intake_corr: float = 0.5  # effective schools enrol stronger students
    intake_sd: float = 0.5  # SD of the school's mean ability, student SDs
    peer: float = 0.38  # points per point of the school's mean prior (both subjects)
    noise_sd: float = 3.5
    ceiling: bool = True
    linear_truth: bool = False  # current = 0.8 prior + effect + noise, nothing else
    seed: int = 0


def grade_mean(grade: np.ndarray | int) -> np.ndarray:
    """Mean score of a grade on a vertical scale."""
    return 60.0 + 5.0 * (np.asarray(grade, float) - 4)


def soft_bound(x: np.ndarray, centre: np.ndarray, knee: float = 5.0, limit: float = 16.0) -> np.ndarray:
    """Identity within +-knee of the grade centre, tanh-compressed towards +-limit beyond."""
    d = x - centre
    k = limit - knee
    out = np.where(d > knee, knee + k * np.tanh((d - knee) / k), d)
    out = np.where(d < -knee, -knee + k * np.tanh((d + knee) / k), out)
    return centre + out


def simulate(sim: Sim) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Growth pairs (the columns of docs/architecture.md) and the truth per school, year and subject.

    Student-level truth: non-linear in absences (S-shaped, x1.6 when disadvantaged or English
    learner), homework (tanh), logins (log, halved without internet), activities (concave), with
    a soft ceiling and floor on each student's expected score; school effects correlated with
    intake; a peer effect linear in the school's mean prior score. Growth never depends on the
    hidden ability except through the observed columns (selection on observables).
    """
    rng = np.random.default_rng(sim.seed)
    n_total = sim.n_schools + sim.tiny_schools
    intake = rng.normal(0, sim.intake_sd, n_total)
    poverty = -0.6 * intake / sim.intake_sd + 0.8 * rng.normal(size=n_total)
    z = (intake - intake.mean()) / intake.std()
    own = rng.multivariate_normal([0, 0], [[1, 0.5], [0.5, 1]], n_total)
    rho = sim.effect_intake_corr
    effect = {s: sim.effect_sd * (rho * z + np.sqrt(1 - rho**2) * own[:, i]) for i, s in enumerate(SUBJECTS)}
    sizes = np.clip(rng.lognormal(np.log(sim.mean_size), 0.6, n_total), 12, 8 * sim.mean_size).astype(int)
    sizes[sim.n_schools :] = rng.integers(3, 9, sim.tiny_schools)
    frames, truths = [], []
    next_id = 0
    for year in sim.years:
        school = np.repeat(np.arange(n_total), sizes)
        n = len(school)
        if sim.spans:  # each school serves one span of grades, e.g. 4-5 or 6-8
            span_of = np.arange(n_total) % len(sim.spans)
            span_size = np.array([len(sim.spans[k]) for k in span_of])[school]
            position = (rng.random(n) * span_size).astype(int)
            table = np.array([list(span) + [0] * (8 - len(span)) for span in sim.spans])
            grade = table[span_of[school], position]
        else:
            grade = rng.choice(sim.grades, n)
        theta = intake[school] + rng.normal(size=n)
        econ = rng.random(n) < expit(-0.2 + 0.9 * poverty[school] - 0.4 * (theta - intake[school]))
        el = rng.random(n) < expit(-2.2 + 0.9 * econ)
        sped = rng.random(n) < 0.12
        female = rng.random(n) < 0.5
        paredu = np.clip(np.round(2 + 0.8 * theta - 0.8 * econ - 0.5 * el + rng.normal(0, 1, n)), 0, 4)
        internet = rng.random(n) < expit(2.2 - 1.2 * econ - 0.8 * el)
        lam = 8 * np.exp(0.4 * econ + 0.3 * el + 0.3 * sped - 0.3 * theta)
        days = np.minimum(rng.poisson(rng.gamma(1.5, lam / 1.5)), 180).astype(float)
        homework = 100 * rng.beta(
            8 * expit(1.2 + 0.4 * theta - 0.04 * days), 8 * (1 - expit(1.2 + 0.4 * theta - 0.04 * days))
        )
        logins = rng.gamma(2.0, np.where(internet, 2.5, 0.6))
        activities = np.minimum(rng.poisson(1.3 * np.exp(0.2 * theta)), 10).astype(float)
        prior, prior2 = {}, {}
        gap = {"math": (-0.6, -5.5, -8.5), "reading": (1.8, -6.0, -8.0)}
        common = 0.8 * theta
        for s in SUBJECTS:
            g_female, g_el, g_sped = gap[s]
            specific = rng.normal(size=n)
            level = (
                7 * (common + 0.6 * specific)
                + g_female * female
                + g_el * el
                + g_sped * sped
                + 0.9 * (paredu - 2)
            )
            prior[s] = np.round(grade_mean(grade) + level + rng.normal(0, 2.0, n), 2)
            earlier = grade_mean(grade - 1) + level + rng.normal(0, 3.0, n)
            missing = (grade == min(sim.grades + tuple(g for span in sim.spans for g in span))) | (
                rng.random(n) < 0.1
            )
            prior2[s] = np.where(missing, np.nan, np.round(earlier, 2))
        school_prior = (
            pd.Series((prior["math"] - grade_mean(grade) + prior["reading"] - grade_mean(grade)) / 2)
            .groupby(school)
            .transform("mean")
            .to_numpy()
        )
        peer = sim.peer * (school_prior - np.average(school_prior))
        year_dev = {s: sim.year_effect_sd * rng.normal(size=n_total) for s in SUBJECTS}
        frame = pd.DataFrame(
            {
                "student_id": [f"S{next_id + i:07d}" for i in range(n)],
                "school_year": year,
                "grade": pd.Categorical(grade.astype(str)),
                "school_id": pd.Categorical([f"K{j:04d}" for j in school]),
                "gender": np.where(female, "F", "M"),
                "econ_disadvantaged": econ.astype(float),
                "english_learner": el.astype(float),
                "special_education": sped.astype(float),
                "parental_education": pd.Categorical.from_codes(
                    paredu.astype(int),
                    ["less_than_hs", "high_school", "some_college", "bachelors", "graduate"],
                ),
                "home_internet": internet.astype(float),
                "prior_days_absent": days,
                "prior_homework_completion_pct": homework,
                "prior_extracurricular_count": activities,
                "prior_platform_logins_per_week": logins,
            }
        )
        next_id += n
        rows = {
            "school_id": [f"K{j:04d}" for j in range(n_total)],
            "school_year": year,
            "n": np.bincount(school),
        }
        for s in SUBJECTS:
            o = "reading" if s == "math" else "math"
            m = grade_mean(grade)
            if sim.linear_truth:
                expected = 0.8 * prior[s] + 0.2 * m
            else:
                absence = -4.0 * (1 - np.exp(-((days / 20.0) ** 2))) * (1 + 0.6 * econ + 0.6 * el)
                raw = (
                    1.0
                    - 0.35 * (prior[s] - m)
                    + 0.06 * (prior[o] - m)
                    + 0.15 * np.nan_to_num(prior2[s] - grade_mean(grade - 1))
                    - 0.5 * econ
                    - 1.2 * el
                    - 1.8 * sped
                    + absence
                    + 1.5 * np.tanh((homework - 75) / 15)
                    + 0.8 * np.log1p(logins) * np.where(internet, 1.0, 0.5)
                    + 0.6 * internet
                    + 0.35 * (paredu - 1)
                    + 0.4 * np.minimum(activities, 3)
                    - 0.3 * np.maximum(activities - 4, 0)
                    - 0.3 * female
                    + 0.4 * (grade - 5)
                )
                expected = soft_bound(prior[s] + raw, m) if sim.ceiling else prior[s] + raw
            school_effect = effect[s][school] + year_dev[s][school]
            frame[f"score_{s}"] = np.round(
                expected + school_effect + (0 if sim.linear_truth else peer) + rng.normal(0, sim.noise_sd, n),
                2,
            )
            frame[f"prior_{s}_score"] = prior[s]
            frame[f"prior2_{s}_score"] = prior2[s]
            peer_school = np.bincount(school, weights=peer, minlength=n_total) / np.maximum(
                np.bincount(school), 1
            )
            rows[f"effect_{s}"] = effect[s] + year_dev[s]
            rows[f"peer_{s}"] = 0.0 if sim.linear_truth else peer_school
        frames.append(frame)
        rows["intake_true"] = intake
        truths.append(pd.DataFrame(rows))
    pairs = pd.concat(frames, ignore_index=True)
    for column in ("school_id", "grade"):
        pairs[column] = pairs[column].astype(str).astype("category")
    return pairs, pd.concat(truths, ignore_index=True)


def truth_for(pairs: pd.DataFrame, truth: pd.DataFrame, subject: str, by_year: bool = False) -> pd.DataFrame:
    """True view-A (effect + peer) and effect per school (or school-year), centred like the
    estimates: every pair gets its school-year's truth, each grade-year's mean over pairs is 0,
    and a unit's truth is the mean over its pairs."""
    keys = ["school_id", "school_year"]
    rows = pairs[[*keys, "grade"]].astype({"school_id": str, "grade": str})
    t = truth.astype({"school_id": str}).assign(a=truth[f"effect_{subject}"] + truth[f"peer_{subject}"])
    t = rows.merge(
        t.rename(columns={f"effect_{subject}": "effect"})[[*keys, "a", "effect"]], on=keys, how="left"
    )
    level = t["grade"] + "|" + t["school_year"].astype(str)
    for column in ("a", "effect"):
        t[column] -= t.groupby(level)[column].transform("mean")
    return t.groupby(keys if by_year else ["school_id"])[["a", "effect"]].mean().reset_index()


def compare(result, pairs: pd.DataFrame, truth: pd.DataFrame, subject: str) -> dict[str, float]:
    """Correlations and 90% coverage of both views against the truth (reported schools only).

    View B's truth is view A's truth minus its regression on the same intake measures (the most
    view B can recover: the part of the school effect that intake does not predict)."""
    keys = ["school_id", "school_year"] if result.by_year else ["school_id"]
    table = result.table.loc[~result.table["suppressed"]]
    t = truth_for(pairs, truth, subject, result.by_year)
    merged = table.merge(t, on=keys, how="inner", validate="one_to_one")
    Z = np.column_stack([np.ones(len(merged)), merged.filter(like="intake_").to_numpy()])
    coef = np.linalg.lstsq(Z, merged["a"].to_numpy(), rcond=None)[0]
    b_truth = merged["a"] - Z @ coef
    merged["b_truth"] = b_truth - np.average(b_truth, weights=merged["n"])
    cover_a = (merged["low"] <= merged["a"]) & (merged["a"] <= merged["high"])
    cover_b = (merged["low_b"] <= merged["b_truth"]) & (merged["b_truth"] <= merged["high_b"])
    z_fe = (merged["fe"] - merged["a"]) / merged["fe_se"]
    return {
        "schools": len(merged),
        "corr_a_truth_a": merged["estimate"].corr(merged["a"]),
        "corr_a_effect": merged["estimate"].corr(merged["effect"]),
        "corr_b_effect": merged["estimate_b"].corr(merged["effect"]),
        "corr_b_truth_b": merged["estimate_b"].corr(merged["b_truth"]),
        "ceiling_corr_b_effect": merged["b_truth"].corr(merged["effect"]),
        # what noise allows: corr(estimate, truth) ~ sqrt(reliability) for shrunken estimates
        "achievable_corr_b_truth_b": np.sqrt(merged["reliability_b"].mean()),
        "achievable_corr_b_effect": merged["b_truth"].corr(merged["effect"])
        * np.sqrt(merged["reliability_b"].mean()),
        "coverage_a": cover_a.mean(),
        "coverage_b": cover_b.mean(),
        "fe_z_mean": z_fe.mean(),
        "fe_z_sd": z_fe.std(),
        "fe_z_corr_intake": z_fe.corr(merged["intake_math"]),
    }


# --------------------------------------------------------------------------------------------
# Known answers and shrinkage by hand
# --------------------------------------------------------------------------------------------


def tiny_district(noise: np.ndarray | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
    """Four schools of five students, one grade and year: current = prior + effect (+ noise)."""
    effects = {"A": 3.0, "B": -1.0, "C": 0.5, "D": -2.5}
    priors = np.array(
        [
            50.0,
            55.0,
            61.0,
            47.0,
            70.0,
            52.0,
            58.0,
            64.0,
            49.0,
            66.0,
            57.0,
            45.0,
            60.0,
            53.0,
            68.0,
            51.0,
            62.0,
            56.0,
            59.0,
            48.0,
        ]
    )
    schools = np.repeat(list(effects), 5)
    score = priors + np.array([effects[s] for s in schools]) + (0 if noise is None else noise)
    pairs = pd.DataFrame(
        {
            "school_id": schools,
            "school_year": 2024,
            "grade": "5",
            "prior_math_score": priors,
            "score_math": score,
        }
    )
    return pairs, effects


def test_known_answer_exact_recovery_of_centred_effects():
    pairs, effects = tiny_district()
    result = school_value_added(pairs, "math", ["math"], VAConfig(min_students=3))
    table = result.table.set_index("school_id")
    expected = pd.Series(effects) - np.mean(list(effects.values()))  # equal n: the weighted mean is the mean
    np.testing.assert_allclose(table["fe"], expected[table.index], atol=1e-8)
    assert result.sigma < 1e-6
    # no noise: reliability 1, nothing shrunk
    np.testing.assert_allclose(table["estimate"], expected[table.index], atol=1e-6)
    assert (table["reliability"] > 0.999999).all()


def test_shrinkage_matches_hand_computation():
    noise = np.random.default_rng(3).normal(0, 2.0, 20)
    pairs, _ = tiny_district(noise)
    config = VAConfig(min_students=3, prior_knots=0, index_knots=0)
    result = school_value_added(pairs, "math", ["math"], config)
    # by hand: the within-school slope, residuals, sigma with N - J - 1 df, equal SEs
    g = pairs.groupby("school_id")
    x = pairs["prior_math_score"] - g["prior_math_score"].transform("mean")
    y = pairs["score_math"] - g["score_math"].transform("mean")
    slope = (x * y).sum() / (x * x).sum()
    resid = pairs["score_math"] - slope * pairs["prior_math_score"]
    sigma = np.sqrt(((y - slope * x) ** 2).sum() / (20 - 4 - 1))
    fe = resid.groupby(pairs["school_id"]).mean()
    fe -= fe.mean()
    se = sigma / np.sqrt(5)
    tau2 = max(0.0, fe.var(ddof=1) - se**2)  # REML of a balanced one-way layout, closed form
    lam = tau2 / (tau2 + se**2)
    table = result.table.set_index("school_id")
    assert result.coefficients.iloc[0] == pytest.approx(slope, rel=1e-9)
    assert result.sigma == pytest.approx(sigma, rel=1e-9)
    np.testing.assert_allclose(table["fe"], fe[table.index], atol=1e-9)
    np.testing.assert_allclose(table["fe_se"], se, rtol=1e-9)
    assert result.tau**2 == pytest.approx(tau2, rel=1e-5)
    assert 0 < lam < 1
    np.testing.assert_allclose(table["reliability"], lam, rtol=1e-5)
    np.testing.assert_allclose(table["estimate"], lam * fe[table.index], rtol=1e-5)
    np.testing.assert_allclose(table["se"], np.sqrt(lam) * se, rtol=1e-5)
    np.testing.assert_allclose(table["high"] - table["estimate"], 1.6448536 * np.sqrt(lam) * se, rtol=1e-5)
    np.testing.assert_allclose(table["growth_index"], lam * fe[table.index] / (np.sqrt(lam) * se), rtol=1e-5)


def test_tau_estimators_on_a_balanced_layout():
    fe = np.array([1.2, -0.4, 0.3, -1.5, 0.9, -0.5])
    se = np.full(6, 0.4)
    closed = fe.var(ddof=1) - 0.16
    assert estimate_tau2(fe, se, method="reml") == pytest.approx(closed, rel=1e-5)
    assert estimate_tau2(fe, se, method="mom") == pytest.approx(closed, rel=1e-9)
    assert estimate_tau2(fe * 0.1, se) == 0.0  # less spread than the noise alone: no true variance


def test_eb_shrinks_noisy_schools_more():
    out = eb_shrink(np.array([2.0, 2.0]), np.array([0.2, 1.0]), tau=1.0)
    assert out["reliability"].tolist() == pytest.approx([1 / 1.04, 0.5])
    assert out["estimate"].tolist() == pytest.approx([2 / 1.04, 1.0])
    assert out["se"].tolist() == pytest.approx([np.sqrt(1 / 1.04) * 0.2, np.sqrt(0.5)])


def test_bands_and_their_boundaries():
    values = [2.5, 2.0, 1.99, 1.0, 0.99, 0.0, -0.99, -1.0, -1.99, -2.0, -3.0]
    assert list(band(values)) == [
        "well above",
        "well above",
        "above",
        "above",
        "meets",
        "meets",
        "meets",
        "below",
        "below",
        "well below",
        "well below",
    ]


# --------------------------------------------------------------------------------------------
# Simulated districts
# --------------------------------------------------------------------------------------------


def test_adjustment_is_within_schools():
    """Effective schools enrol high-prior students: a pooled regression overstates the prior's
    slope; the within-school fit recovers the true 0.8."""
    pairs, _ = simulate(
        Sim(
            n_schools=120,
            mean_size=60,
            effect_intake_corr=0.9,
            effect_sd=2.0,
            intake_sd=0.8,
            linear_truth=True,
            seed=11,
        )
    )
    config = VAConfig(prior_knots=0, index_knots=0, other_knots=0)
    result = school_value_added(
        pairs[["school_id", "school_year", "grade", "score_math", "prior_math_score"]],
        "math",
        ["math"],
        config,
    )
    slopes = result.coefficients.filter(like="prior_math_score|grade=")
    assert len(slopes) == 3
    np.testing.assert_allclose(slopes, 0.8, atol=0.02)
    pooled = np.polyfit(
        pairs["prior_math_score"] - grade_mean(pairs["grade"].astype(int)), pairs["score_math"], 1
    )[0]
    assert pooled > 0.85  # what a pooled (between + within) regression would have used


def test_small_schools_are_suppressed():
    pairs, _ = simulate(Sim(n_schools=30, mean_size=40, tiny_schools=4, seed=5))
    result = school_value_added(pairs, "math", SUBJECTS)
    t = result.table
    small = t["n"] < 10
    assert small.sum() == 4
    assert t.loc[small, "suppressed"].all() and not t.loc[~small, "suppressed"].any()
    assert t.loc[small, "reason"].str.contains("fewer than 10").all()
    assert t.loc[small, ["estimate", "estimate_b", "band"]].isna().all().all()
    assert t.loc[~small, ["estimate", "estimate_b", "low", "high"]].notna().all().all()


@pytest.fixture(scope="module")
def district_150():
    return simulate(Sim(n_schools=150, mean_size=80, seed=21))


def test_views_track_their_truths(district_150):
    pairs, truth = district_150
    result = school_value_added(pairs, "math", SUBJECTS)
    m = compare(result, pairs, truth, "math")
    assert m["corr_a_truth_a"] >= 0.95
    # view B cannot see the part of the effect intake predicts; it gets close to what is possible
    assert m["corr_b_truth_b"] >= m["achievable_corr_b_truth_b"] - 0.03
    assert m["corr_b_effect"] >= m["achievable_corr_b_effect"] - 0.03
    assert m["corr_b_effect"] < m["corr_a_truth_a"]
    # intake (peers, and the effectiveness that goes with it) is in A and taken out of B
    t = result.table
    assert result.intake_coefficients.loc[["intake_math", "intake_reading"], "coefficient"].sum() > 0.5
    assert t["estimate"].corr(t["intake_math"]) > 0.4 and abs(t["estimate_b"].corr(t["intake_math"])) < 0.1
    differ = t.loc[t["views_differ"]]
    largest = differ.loc[(differ["estimate"] - differ["estimate_b"]).abs().idxmax(), "school_id"]
    assert len(differ) > 0 and f"{largest}: A " in result.explanation
    assert (np.sign(differ["estimate"] - differ["estimate_b"]) == np.sign(differ["intake_math"])).mean() > 0.9
    assert "View A" in result.explanation and "View B" in result.explanation
    assert {
        "fe",
        "fe_se",
        "reliability",
        "estimate",
        "se",
        "low",
        "high",
        "growth_index",
        "band",
        "fe_b",
        "estimate_b",
        "band_b",
    } <= set(result.table.columns)


def test_interval_coverage_on_300_schools():
    pairs, truth = simulate(Sim(n_schools=300, mean_size=100, seed=1))
    for subject in SUBJECTS:
        m = compare(school_value_added(pairs, subject, SUBJECTS), pairs, truth, subject)
        assert 0.85 <= m["coverage_a"] <= 0.95, m
        assert 0.85 <= m["coverage_b"] <= 0.95, m
        assert abs(m["fe_z_mean"]) < 0.15 and m["fe_z_sd"] < 1.15, m  # no school-level bias left


@pytest.mark.slow
def test_mixedlm_agrees_with_fe_eb():
    pairs, _ = simulate(Sim(n_schools=30, mean_size=40, seed=8))
    fe_eb = school_value_added(pairs, "math", SUBJECTS).table
    mixed = school_value_added(pairs, "math", SUBJECTS, VAConfig(method="mixedlm")).table
    for suffix in ("", "_b"):
        a, b = fe_eb[f"estimate{suffix}"], mixed[f"estimate{suffix}"]
        gap = (a - b).abs() / fe_eb[f"se{suffix}"]  # in posterior SDs
        assert a.corr(b) > 0.995
        assert gap.max() < 0.35 and gap.mean() < 0.1


def test_by_year_reports_school_years():
    pairs, truth = simulate(Sim(n_schools=60, mean_size=60, years=(2023, 2024), year_effect_sd=0.5, seed=4))
    result = school_value_added(pairs, "math", SUBJECTS, by_year=True)
    assert len(result.table) == 120 and set(result.table["school_year"]) == {2023, 2024}
    assert compare(result, pairs, truth, "math")["corr_a_truth_a"] > 0.9
    pooled = school_value_added(pairs, "math", SUBJECTS)
    assert len(pooled.table) == 60 and pooled.table["n"].sum() == len(pairs)


def test_schools_with_disjoint_grade_spans():
    """Elementary (4-5) and middle (6-8) schools share no grade, so grade levels cannot be told apart
    from school effects within schools; each grade-year's average school is the reference."""
    pairs, truth = simulate(
        Sim(n_schools=120, mean_size=80, grades=(4, 5, 6, 7, 8), spans=((4, 5), (6, 7, 8)), seed=12)
    )
    result = school_value_added(pairs, "math", SUBJECTS)
    m = compare(result, pairs, truth, "math")
    assert m["corr_a_truth_a"] >= 0.95
    assert abs(m["fe_z_mean"]) < 0.3 and m["fe_z_sd"] < 1.3, m
    assert 0.8 <= m["coverage_a"] <= 0.98, m


def test_cluster_standard_errors_by_hand():
    """se_method="cluster": a student counted in two years of the same school is one cluster."""
    rng = np.random.default_rng(2)
    students = pd.DataFrame(
        {"student_id": [f"s{i}" for i in range(24)], "school_id": np.repeat(["A", "B", "C"], 8)}
    )
    pairs = pd.concat(
        [students.assign(school_year=2023), students.assign(school_year=2024)], ignore_index=True
    )
    pairs["grade"] = "5"
    pairs["prior_math_score"] = rng.normal(60, 8, len(pairs))
    person = pairs["student_id"].map(dict(zip(students["student_id"], rng.normal(0, 3, 24), strict=True)))
    pairs["score_math"] = 0.8 * pairs["prior_math_score"] + person + rng.normal(0, 1, len(pairs))
    config = VAConfig(min_students=3, prior_knots=0, index_knots=0, se_method="cluster")
    result = school_value_added(pairs, "math", ["math"], config)
    cell = pairs["school_id"] + pairs["school_year"].astype(str)
    x = pairs["prior_math_score"] - pairs.groupby(cell)["prior_math_score"].transform("mean")
    y = pairs["score_math"] - pairs.groupby(cell)["score_math"].transform("mean")
    e = y - (x * y).sum() / (x * x).sum() * x
    per_student = e.groupby([pairs["school_id"], pairs["student_id"]]).sum()
    expected = np.sqrt((per_student**2).groupby(level=0).sum() * 8 / 7) / 16
    table = result.table.set_index("school_id")
    np.testing.assert_allclose(table["fe_se"], expected[table.index], rtol=1e-9)
    pooled = school_value_added(pairs, "math", ["math"], replace(config, se_method="pooled")).table
    # the pooled SE ignores that a student's two residuals share a persistent part
    assert (table["fe_se"].to_numpy() / pooled["fe_se"].to_numpy()).mean() > 1.2


def test_flexible_adjustment_leaves_no_school_level_bias():
    """Noise-free scores isolate misspecification: the default design's school-level error is a
    small fraction of a realistic SE (3.5 / sqrt(n)); an all-linear design's is not."""
    pairs, truth = simulate(Sim(n_schools=200, mean_size=300, intake_sd=0.8, noise_sd=0.0, seed=2))
    linear = VAConfig(
        prior_knots=0, index_knots=0, other_knots=0, engagement_knots=0, absence_knots=(0.0, 50.0)
    )
    bias = {}
    for name, config in {"default": VAConfig(), "linear": linear}.items():
        t = school_value_added(pairs, "math", SUBJECTS, config).table
        t = t.merge(truth_for(pairs, truth, "math"), on="school_id")
        bias[name] = (t["fe"] - t["a"]) / (3.5 / np.sqrt(t["n"]))
    assert np.sqrt((bias["default"] ** 2).mean()) < 0.25 and bias["default"].abs().max() < 1.0, bias[
        "default"
    ].describe()
    assert np.sqrt((bias["linear"] ** 2).mean()) > 0.5  # the check would catch a too-rigid adjustment


def report() -> None:
    """The figures of docs/value_added.md: accuracy and coverage over 10 simulated districts per
    school size, the misspecification check, MixedLM agreement and timings (several minutes)."""
    rows = []
    for size in (100, 400):
        for seed in range(10):
            pairs, truth = simulate(Sim(n_schools=300, mean_size=size, seed=100 + seed))
            for subject in SUBJECTS:
                m = compare(school_value_added(pairs, subject, SUBJECTS), pairs, truth, subject)
                rows.append({"pairs per school": size, **{k: float(v) for k, v in m.items()}})
    table = pd.DataFrame(rows).groupby("pairs per school")
    columns = [
        *("corr_a_truth_a", "corr_a_effect", "corr_b_effect", "achievable_corr_b_effect", "corr_b_truth_b"),
        *("coverage_a", "coverage_b", "fe_z_mean", "fe_z_sd", "fe_z_corr_intake"),
    ]
    print(table[columns].agg(["mean", "min", "max"]).T.round(3).to_markdown())

    pairs, truth = simulate(Sim(n_schools=200, mean_size=300, intake_sd=0.8, noise_sd=0.0, seed=2))
    linear = VAConfig(
        prior_knots=0, index_knots=0, other_knots=0, engagement_knots=0, absence_knots=(0.0, 50.0)
    )
    configs = {"default": VAConfig(), "no index spline": VAConfig(index_knots=0),
               "linear own prior": VAConfig(prior_knots=0), "all linear": linear}  # fmt: skip
    for name, config in configs.items():
        t = school_value_added(pairs, "math", SUBJECTS, config).table.merge(truth_for(pairs, truth, "math"))
        bias = (t["fe"] - t["a"]) / (3.5 / np.sqrt(t["n"]))
        print(
            f"noise-free bias / SE, {name}: rms {np.sqrt((bias**2).mean()):.3f}, max {bias.abs().max():.3f}"
        )

    pairs, _ = simulate(Sim(n_schools=30, mean_size=40, seed=8))
    fe_eb = school_value_added(pairs, "math", SUBJECTS)
    start = time.perf_counter()
    mixed = school_value_added(pairs, "math", SUBJECTS, VAConfig(method="mixedlm"))
    seconds = time.perf_counter() - start
    print(f"mixedlm on {len(pairs)} pairs: {seconds:.1f}s; tau {fe_eb.tau:.3f} (FE+EB) vs {mixed.tau:.3f}")
    for suffix in ("", "_b"):
        a, b = fe_eb.table[f"estimate{suffix}"], mixed.table[f"estimate{suffix}"]
        worst = ((a - b).abs() / fe_eb.table[f"se{suffix}"]).max()
        print(f"  view{suffix or ' A'}: corr {a.corr(b):.4f}, max |diff| / posterior SD {worst:.3f}")

    pairs, _ = simulate(
        Sim(n_schools=330, mean_size=250, years=(2022, 2023, 2024), grades=(3, 4, 5, 6, 7, 8), seed=5)
    )
    for by_year in (False, True):
        start = time.perf_counter()
        result = school_value_added(pairs, "math", SUBJECTS, by_year=by_year)
        print(
            f"timing: {len(pairs)} pairs, {len(result.design_columns)} columns, by_year={by_year}: "
            f"{time.perf_counter() - start:.1f}s"
        )


if __name__ == "__main__":
    report()
