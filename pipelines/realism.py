"""Realism and learnability statistics of a synthetic district.

One definition shared by the generator tests and the table in docs/data.md, so the documented
figures are exactly what the tests check.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import CHRONIC_ABSENCE_DAYS, GENDERS, GRADES, PARENTAL_EDUCATION, SCHOOL_TYPES, TARGETS
from features.contract import CLASSIC_PASS_MARK as PASS_MARK
from pipelines.synthetic import SyntheticDistrict


def _realism_targets() -> dict[str, tuple[float, float, str]]:
    """statistic -> (low, high, what it measures); a district is realistic when every value is inside."""
    targets: dict[str, tuple[float, float, str]] = {}
    for t in TARGETS:
        targets |= {
            f"avg_score_{t}": (70.0, 80.0, f"mean {t} score"),
            f"pct_passing_{t}": (60.0, 85.0, f"% of students with {t} score >= {PASS_MARK:g}"),
            f"corr_prior_current_{t}": (0.70, 0.85, f"corr(prior, current) {t} score"),
            f"icc_growth_{t}": (0.05, 0.10, f"school share of {t}_growth variance (one-way ANOVA ICC)"),
            f"gap_econ_sd_{t}": (0.5, 0.8, f"econ. disadvantaged gap in current {t}, SD units"),
            f"gap_el_sd_{t}": (0.8, 1.2, f"English learner gap in current {t}, SD units"),
            f"gap_sped_sd_{t}": (0.8, 1.2, f"special education gap in current {t}, SD units"),
            f"slope_growth_on_prior_{t}": (-0.5, -0.02, f"OLS slope of {t}_growth on prior {t} score"),
            f"school_effect_sd_ratio_{t}": (0.07, 0.13, f"SD of true school {t} effect / SD of current {t}"),
            f"school_effect_r2_{t}": (0.2, 0.8, f"R^2 of school {t} effect on type, size, budget/student"),
            f"school_idiosyncratic_sd_{t}": (0.0, 0.6, f"SD of the unexplained school {t} effect, points"),
            f"unexplained_sd_ratio_{t}": (
                0.8,
                1.0,
                f"SD of expected {t} growth not linear in the priors / noise SD",
            ),
            f"noise_sd_ratio_{t}": (0.97, 1.03, f"realised SD of {t} noise / documented SD"),
        }
    return targets | {
        "absence_few_days_effect": (-0.5, 0.5, "mean growth effect of 1-5 vs 0 prior absences, points"),
        "absence_chronic_effect": (-10.0, -1.5, f"growth effect of >{CHRONIC_ABSENCE_DAYS} vs 0 absences"),
        "absence_chronic_extra_econ": (-5.0, -0.3, "extra chronic-absence effect, disadvantaged"),
        "absence_chronic_extra_el": (-5.0, -0.3, "extra chronic-absence effect, English learners"),
    }


REALISM_TARGETS = _realism_targets()


def ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares coefficients and residuals (x must already hold the constant column)."""
    beta = np.linalg.lstsq(x, y, rcond=None)[0]
    return beta, y - x @ beta


def icc_anova(values: np.ndarray, groups: np.ndarray) -> float:
    """One-way ANOVA intraclass correlation: the share of variance that lies between groups."""
    codes, counts = np.unique(groups, return_inverse=True, return_counts=True)[1:]
    k, n = len(counts), len(values)
    means = np.bincount(codes, weights=values) / counts
    grand = values.mean()
    msb = float((counts * (means - grand) ** 2).sum() / (k - 1))
    msw = float(((values - means[codes]) ** 2).sum() / (n - k))
    n0 = (n - (counts**2).sum() / n) / (k - 1)
    return float((msb - msw) / (msb + (n0 - 1) * msw))


def gap_sd(score: pd.Series, flag: pd.Series) -> float:
    """Mean score of the rest minus that of the flagged group, in SDs of the score."""
    return float((score[~flag].mean() - score[flag].mean()) / score.std(ddof=0))


def school_frame(district: SyntheticDistrict) -> pd.DataFrame:
    """Per school: charter flag, actual enrolment, per-student budget and true effects."""
    counts = district.students["school_name"].value_counts().rename("n_students")
    schools = district.schools.set_index("school_name").join(counts)
    schools["charter"] = (schools["type"] == SCHOOL_TYPES[1]).astype(float)
    schools["per_student_budget"] = schools["budget"] / schools["n_students"]
    return schools.join(district.truth_schools.set_index("school_name"))


def absence_effects(district: SyntheticDistrict) -> dict[str, float]:
    """OLS of mean growth on absence bands with prior and demographic controls; the chronic
    band is interacted with disadvantage and English-learner status."""
    s = district.students
    growth = sum((s[cur] - s[prior]) for cur, prior in TARGETS.values()) / len(TARGETS)
    days = s["prior_days_absent"].to_numpy()
    econ = s["econ_disadvantaged"].to_numpy(float)
    el = s["english_learner"].to_numpy(float)
    chronic = (days > CHRONIC_ABSENCE_DAYS).astype(float)
    x = np.column_stack(
        [
            np.ones(len(s)),
            s["prior_math_score"],
            s["prior_reading_score"],
            econ,
            el,
            s["special_education"].astype(float),
            ((days >= 1) & (days <= 5)).astype(float),
            ((days > 5) & (days <= CHRONIC_ABSENCE_DAYS)).astype(float),
            chronic,
            chronic * econ,
            chronic * el,
        ]
    )
    beta, _ = ols(x, growth.to_numpy(float))
    return {
        "absence_few_days_effect": float(beta[6]),
        "absence_chronic_effect": float(beta[8]),
        "absence_chronic_extra_econ": float(beta[9]),
        "absence_chronic_extra_el": float(beta[10]),
    }


def realism_stats(district: SyntheticDistrict) -> dict[str, float]:
    """Every statistic of REALISM_TARGETS for a district (a few seconds even for 150k students)."""
    s = district.students
    schools = school_frame(district)
    school_x = np.column_stack(
        [np.ones(len(schools)), schools["charter"], schools["n_students"], schools["per_student_budget"]]
    )
    stats: dict[str, float] = {}
    for target, (cur, prior) in TARGETS.items():
        current = s[cur].astype(float)
        growth = (s[cur] - s[prior]).to_numpy(float)
        expected = district.truth[f"expected_{target}_growth"].to_numpy(float)
        priors = np.column_stack([np.ones(len(s)), s["prior_math_score"], s["prior_reading_score"]])
        noise_sd = float(district.meta[f"noise_sd_{target}"])
        effect = schools[f"{target}_effect"].to_numpy(float)
        slope = np.cov(s[prior], growth)[0, 1] / s[prior].var()
        stats |= {
            f"avg_score_{target}": float(current.mean()),
            f"pct_passing_{target}": float((current >= PASS_MARK).mean() * 100.0),
            f"corr_prior_current_{target}": float(np.corrcoef(s[prior], current)[0, 1]),
            f"icc_growth_{target}": icc_anova(growth, s["school_name"].to_numpy()),
            f"gap_econ_sd_{target}": gap_sd(current, s["econ_disadvantaged"]),
            f"gap_el_sd_{target}": gap_sd(current, s["english_learner"]),
            f"gap_sped_sd_{target}": gap_sd(current, s["special_education"]),
            f"slope_growth_on_prior_{target}": float(slope),
            f"school_effect_sd_ratio_{target}": float(effect.std() / current.std(ddof=0)),
            f"school_effect_r2_{target}": float(1.0 - ols(school_x, effect)[1].var() / effect.var()),
            f"school_idiosyncratic_sd_{target}": float(schools[f"{target}_effect_idiosyncratic"].std(ddof=0)),
            f"unexplained_sd_ratio_{target}": float(ols(priors, expected)[1].std() / noise_sd),
            f"noise_sd_ratio_{target}": float((growth - expected).std() / noise_sd),
        }
    return stats | absence_effects(district)


def model_matrix(district: SyntheticDistrict) -> pd.DataFrame:
    """Every student column a model may use (categoricals ordinal, bools 0/1) plus school type,
    size, per-student budget and mean prior score (a prior-year aggregate); never the school's identity."""
    s = district.students
    schools = school_frame(district)[["charter", "n_students", "per_student_budget"]]
    x = s.drop(columns=["student_id", "student_name", "school_name", "math_score", "reading_score"]).copy()
    x["gender"] = (x["gender"] == GENDERS[1]).astype(float)
    x["grade"] = x["grade"].map({g: i for i, g in enumerate(GRADES)}).astype(float)
    x["parental_education"] = x["parental_education"].map({p: i for i, p in enumerate(PARENTAL_EDUCATION)})
    x = x.astype(float)
    for col in schools.columns:
        x[f"school_{col}"] = schools[col].reindex(s["school_name"]).to_numpy(float)
    both = (s["prior_math_score"] + s["prior_reading_score"]) / 2.0
    x["school_mean_prior"] = both.groupby(s["school_name"]).transform("mean").to_numpy(float)
    return x.reset_index(drop=True)


def learnability_rmse(
    district: SyntheticDistrict, seed: int = 0, test_share: float = 0.2
) -> dict[str, float]:
    """Test RMSE of (a) OLS on the two prior scores, (b) gradient boosting on all columns and
    (c) the noise floor, on one random split: (b) close to (c) and well below (a) means the
    signal beyond the priors is real and learnable."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    s = district.students
    x = model_matrix(district)
    rng = np.random.default_rng(seed)
    test = rng.random(len(s)) < test_share
    priors = np.column_stack([np.ones(len(s)), s["prior_math_score"], s["prior_reading_score"]])
    out: dict[str, float] = {}
    for target, (cur, prior) in TARGETS.items():
        y = (s[cur] - s[prior]).to_numpy(float)
        beta, _ = ols(priors[~test], y[~test])
        hgb = HistGradientBoostingRegressor(
            max_iter=1000, learning_rate=0.1, early_stopping=True, n_iter_no_change=20, random_state=seed
        )
        hgb.fit(x[~test], y[~test])
        expected = district.truth[f"expected_{target}_growth"].to_numpy(float)
        out |= {
            f"rmse_ols_priors_{target}": float(np.sqrt(np.mean((y[test] - priors[test] @ beta) ** 2))),
            f"rmse_hgb_all_{target}": float(np.sqrt(np.mean((y[test] - hgb.predict(x[test])) ** 2))),
            f"rmse_noise_floor_{target}": float(np.sqrt(np.mean((y[test] - expected[test]) ** 2))),
        }
    return out


def realism_markdown(stats: dict[str, float]) -> str:
    """The realism table for docs/data.md: statistic | target range | value."""
    lines = ["| statistic | meaning | target range | value |", "|---|---|---|---|"]
    for name, (low, high, meaning) in REALISM_TARGETS.items():
        lines.append(f"| `{name}` | {meaning} | {low:g} to {high:g} | {stats[name]:.3f} |")
    return "\n".join(lines)
