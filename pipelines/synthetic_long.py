"""A multi-year synthetic district in a state assessment vendor's export format, with an exact truth.

The district is followed over several school years: students move up a grade, repeat, skip, leave,
change schools, and new cohorts and movers-in arrive; elementary schools feed middle schools and
middle schools feed high schools. Every year is written the way a vendor exports it (long: one row
per student x content area; wide: one row per student with a score column per content area), beside
a ``district.toml`` that maps the export to the project's contract (docs/architecture.md) and the
truth files that make the growth model's noise floor known exactly (docs/synthetic_long.md).

The truth is exact because every score after a student's first is

    score_t = round(expected_t + noise_t)

where ``expected_t`` is a deterministic function of *stored* values only (the exported prior scores,
demographics, last year's engagement, the target-year school's value-added and its prior-year peer
context computed from the exported scores) and ``noise_t`` is additive, independent of everything,
truncated normal with an exactly known SD. Missingness of year t is decided before year t+1 is
generated, so nothing the next year uses is ever unobserved.

Everything is vectorised numpy driven by one seed (one child stream per step).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit, ndtr, ndtri

from pipelines.realism import icc_anova as _icc
from pipelines.realism import ols as _ols
from pipelines.synthetic import (
    CHARTER_SHARE,
    CHARTER_SIZE_RANGE,
    DISTRICT_SIZE_RANGE,
    FEMALE_FIRST_NAMES,
    LAST_NAMES,
    MALE_FIRST_NAMES,
    SPENDING_RANGES,
    SPENDING_SHARES,
    STUDENTS_PER_SCHOOL,
    TRUNCATION_Z,
    _steps,
    apportion,
    orthogonal_normal,
    soft_clip,
    stratified_normal,
    stratified_uniform,
    truncated_sd_factor,
    unit_sd,
)

VERSION = "1.0.0"

# --------------------------------------------------------------------------------------------
# Export vocabulary
# --------------------------------------------------------------------------------------------

SUBJECT_CODES: dict[str, str] = {"math": "MATH", "reading": "ELA"}  # ContentArea codes
SUBJECT_PREFIXES: dict[str, str] = {"math": "Math", "reading": "ELA"}  # wide-layout column prefixes
SUBJECT_LABELS: dict[str, str] = {"math": "Math", "reading": "Reading"}
LEVEL_NAMES: tuple[str, ...] = ("Level 1", "Level 2", "Level 3", "Level 4")
PROFICIENT_LEVEL = "Level 3"
CUT_Z: tuple[float, ...] = (-0.9, -0.1, 0.9)  # lowest z of Level 2, 3, 4 in the grade's distribution
SCHOOL_LEVELS: tuple[str, ...] = ("Elementary", "Middle", "High")
PARENT_CODES: tuple[str, ...] = ("1", "2", "3", "4", "5")
PARENT_VALUES: tuple[str, ...] = (
    "less_than_high_school",
    "high_school",
    "some_college",
    "bachelors",
    "graduate",
)
SINGLE_DISTRICT_NAME = "Synthetic Unified School District"
LEA_PLACES: tuple[str, ...] = (
    "Riverside", "Lakeview", "Cedar Valley", "Maple Grove", "Pine Ridge", "Oak Hill", "Fairview",
    "Brookfield", "Clearwater", "Highland", "Westfield", "Eastport", "Northgate", "Silver Lake",
    "Granite Falls", "Willow Creek",
)  # fmt: skip

STUDENT_COLUMNS: tuple[str, ...] = (
    "LEAName", "SchoolCode", "SchoolName", "AcademicYear", "StudentIdentifier", "GradeLevelWhenAssessed",
    "Sex", "EconomicDisadvantageStatus", "EnglishLearnerStatus", "IEPStatus", "ParentEducationLevel",
    "HomeInternetAccess", "CommuteMinutes", "DaysAbsent", "HomeworkCompletionPct",
    "ExtracurricularActivities", "PlatformLoginsPerWeek",
)  # fmt: skip
LONG_COLUMNS: tuple[str, ...] = (*STUDENT_COLUMNS, "ContentArea", "ScaleScore", "PerformanceLevel")
SCHOOL_FILE_COLUMNS: tuple[str, ...] = (
    "SchoolCode", "SchoolName", "Governance", "SchoolLevel", "Enrollment", "TotalBudget",
)  # fmt: skip
# contract column -> export column (docs/architecture.md, [columns])
CONTRACT_COLUMNS: dict[str, str] = {
    "student_id": "StudentIdentifier",
    "school_year": "AcademicYear",
    "subject": "ContentArea",
    "grade": "GradeLevelWhenAssessed",
    "scale_score": "ScaleScore",
    "achievement_level": "PerformanceLevel",
    "school_id": "SchoolCode",
    "school_name": "SchoolName",
    "district": "LEAName",
    "gender": "Sex",
    "econ_disadvantaged": "EconomicDisadvantageStatus",
    "english_learner": "EnglishLearnerStatus",
    "special_education": "IEPStatus",
    "parental_education": "ParentEducationLevel",
    "home_internet": "HomeInternetAccess",
    "commute_minutes": "CommuteMinutes",
    "days_absent": "DaysAbsent",
    "homework_completion_pct": "HomeworkCompletionPct",
    "extracurricular_count": "ExtracurricularActivities",
    "platform_logins_per_week": "PlatformLoginsPerWeek",
}
CONTRACT_SCHOOL_COLUMNS: dict[str, str] = {
    "school_id": "SchoolCode",
    "school_name": "SchoolName",
    "type": "Governance",
    "size": "Enrollment",
    "budget": "TotalBudget",
    "level": "SchoolLevel",
}
FLAG_CODES: dict[str, tuple[str, str]] = {  # export column -> (code of false, code of true)
    "EconomicDisadvantageStatus": ("No", "Yes"),
    "EnglishLearnerStatus": ("N", "Y"),
    "IEPStatus": ("N", "Y"),
    "HomeInternetAccess": ("No", "Yes"),
}

# --------------------------------------------------------------------------------------------
# Population dynamics
# --------------------------------------------------------------------------------------------

P_LEAVE = 0.035  # leave the district (any grade but the top one, which always leaves)
P_REPEAT = 0.01  # of those who stay: repeat the grade (more likely for low-ability students)
P_SKIP = 0.002  # of those who stay: skip a grade (more likely for high-ability students)
P_SCHOOL_CHANGE = 0.03  # change school within the level (and LEA when it has another)
P_ECON_REDRAW = 0.065  # economic status redrawn from the student's own probability: ~3% change a year
P_EL_RECLASSIFY = 0.10  # English learners reclassified a year (more likely for high ability)
P_UNTESTED_ALL = 0.006  # student-year not tested at all (scaled by absences)
P_UNTESTED_SUBJECT = 0.014  # student x subject not tested (scaled by absences)
SCHOOL_DAYS = 180
ENGAGEMENT_PERSISTENCE = 0.2  # scales the persistent (student trait) part of engagement
TRAIT_ABILITY = 0.3  # correlation of the hidden engagement trait with ability (within school)

# --------------------------------------------------------------------------------------------
# Scale and noise
# --------------------------------------------------------------------------------------------

SD_PER_RANGE = 1.0 / 20.0  # within-grade SD s = (highest - lowest) / 20
MEAN_SPAN = 0.40  # grade means span 40% of the scale range, centred
GROWTH_DECAY = 0.85  # mean growth from grade g+1 to g+2 = 0.85 x that from g to g+1
NOISE_RATIO = 0.40  # noise SD = 0.4 s
KNEE_MARGIN = 1.5  # the smooth bound is the identity until 1.5 s inside the noise-safe interval

# --------------------------------------------------------------------------------------------
# Schools and value-added (in units of s)
# --------------------------------------------------------------------------------------------

SCHOOL_EFFECT_SD: dict[str, float] = {"math": 0.15, "reading": 0.15}
SCHOOL_EFFECT_R2 = 0.65  # share of the effect's variance explained by type, size, per-student budget
SCHOOL_EFFECT_WEIGHTS: dict[str, tuple[float, float, float]] = {  # charter, enrolment, per-student budget
    "math": (0.8, -0.5, 0.25),
    "reading": (0.6, -0.5, 0.1),
}
IDIOSYNCRATIC_CORRELATION = 0.5  # of the idiosyncratic effects across subjects
DEFAULT_EFFECT_SD = 0.15
DEFAULT_EFFECT_WEIGHTS = (0.7, -0.5, 0.2)


@dataclass(frozen=True)
class LongCoefficients:
    """Expected current score of one subject, in units of s around the target grade's mean:

    expected = mean(grade_t) + s * (intercept + persistence + demographics + engagement + grade step
                                     + (school effect + peer effect) / s), smoothly bounded."""

    intercept: float
    prior: float  # b1: per within-grade z of last year's score, when the score two years back is stored
    prior2: float  # b2: per within-grade z of the score two years back
    prior_alone: float  # b1 when the score two years back is not stored
    other_prior: float  # per within-grade z of the other subjects' prior (own prior when missing)
    econ: float
    english_learner: float
    special_education: float
    female: float
    parental_education: float  # per level above high school
    absence_max: float  # penalty approached by very long absence last year
    absence_scale: float  # days: penalty = max * (1 - exp(-(days / scale) ** 2))
    absence_extra_econ: float  # relative increase of the absence penalty
    absence_extra_el: float
    homework: float  # amplitude of tanh((pct - 75) / 15), last year's homework completion
    logins: float  # per log(1 + logins) last year above LOGIN_CENTRE, halved without home internet
    internet: float
    extracurricular: float  # per activity up to 3 last year; each above 4 costs 0.8 of it
    repeated_grade: float  # a second year in the same grade
    skipped_grade: float
    peer: float  # c: peer effect = c * s * (school's mean within-grade z of its prior-year records)


# The same in every subject: the shape of the absence penalty, homework, internet, grade steps, peers.
_SHARED_COEFFICIENTS = dict(
    absence_scale=20.0,
    absence_extra_econ=0.3,
    absence_extra_el=0.6,
    homework=0.52,
    internet=0.02,
    repeated_grade=0.25,
    skipped_grade=-0.25,
    peer=0.2,
)
COEFFICIENTS: dict[str, LongCoefficients] = {
    "math": LongCoefficients(
        **_SHARED_COEFFICIENTS,
        intercept=-0.011,
        prior=0.433,
        prior2=0.178,
        prior_alone=0.611,
        other_prior=0.05,
        econ=0.015,
        english_learner=-0.109,
        special_education=-0.258,
        female=-0.03,
        parental_education=0.02,
        absence_max=-0.30,
        logins=0.17,
        extracurricular=0.08,
    ),
    "reading": LongCoefficients(
        **_SHARED_COEFFICIENTS,
        intercept=-0.06,
        prior=0.427,
        prior2=0.176,
        prior_alone=0.604,
        other_prior=0.05,
        econ=0.01,
        english_learner=-0.136,
        special_education=-0.269,
        female=0.06,
        parental_education=0.03,
        absence_max=-0.27,
        logins=0.15,
        extracurricular=0.06,
    ),
}

# Neutral engagement used when last year's record is not stored (the term then is about average).
NEUTRAL_ENGAGEMENT = {"days_absent": 7.0, "homework": 77.0, "activities": 1.0, "logins": 4.0}
LOGIN_CENTRE = 1.6  # log(1 + logins) of a typical student with home internet


@dataclass(frozen=True)
class FirstScoreModel:
    """A student's first observed score (year 1 or on entry): grade mean + s * z, with z linear in the
    student's (hidden and stored) traits plus a residual, standardised on the first year. The loadings
    are those of the growth process's stationary distribution (a long run regressed z on the traits),
    so first scores look like scores with a full history and the district is stationary from year 1."""

    ability: float  # school intake + N(0, 1)
    trait: float  # hidden engagement trait
    absence_trait: float  # hidden absence propensity
    econ: float
    english_learner: float
    special_education: float
    parental_education: float  # per level above high school
    female: float
    internet: float
    residual: float  # SD of the residual
    residual_shared: float  # correlation of the residual across subjects


FIRST_SCORE: dict[str, FirstScoreModel] = {
    "math": FirstScoreModel(0.593, 0.093, -0.04, -0.322, -0.679, -0.937, 0.275, -0.055, 0.297, 0.415, 0.0),
    "reading": FirstScoreModel(0.591, 0.083, -0.042, -0.341, -0.741, -0.942, 0.29, 0.139, 0.291, 0.413, 0.0),
}
DEFAULT_COEFFICIENTS = COEFFICIENTS["math"]
DEFAULT_FIRST_SCORE = FIRST_SCORE["math"]


# --------------------------------------------------------------------------------------------
# The scale specification: grade means, s, noise, cuts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LongSpec:
    """Everything the truth needs besides the data: grades, subjects, scale and coefficients."""

    grades: tuple[str, ...]
    subjects: tuple[str, ...]
    scale: tuple[int, int]
    vertical: bool
    grade_means: tuple[float, ...]
    s: float
    noise_sd: float
    coefficients: dict[str, LongCoefficients] = field(hash=False)

    @property
    def grade_numbers(self) -> np.ndarray:
        return np.array([int(g) for g in self.grades])

    @property
    def noise_sigma(self) -> float:
        """Scale of the normal before truncation, so the truncated SD is exactly noise_sd."""
        return self.noise_sd / truncated_sd_factor(TRUNCATION_Z)

    @property
    def noise_bound(self) -> float:
        """Largest possible |noise|: the expected score stays this far inside the scale."""
        return TRUNCATION_Z * self.noise_sigma

    @property
    def knees(self) -> tuple[float, float]:
        lo, hi = self.scale
        return lo + self.noise_bound + KNEE_MARGIN * self.s, hi - self.noise_bound - KNEE_MARGIN * self.s

    def cuts(self, grade_index: int) -> tuple[int, ...]:
        """Lowest score of Level 2, 3 and 4 in a grade: fixed z of the grade's distribution."""
        return tuple(int(round(self.grade_means[grade_index] + z * self.s)) for z in CUT_Z)

    def cut_table(self) -> np.ndarray:
        return np.array([self.cuts(g) for g in range(len(self.grades))], dtype=float)

    def levels(self, scores: np.ndarray, grade_index: np.ndarray) -> np.ndarray:
        """Achievement level index 0-3 of each score (level k: score >= cut k-1)."""
        cuts = self.cut_table()[grade_index]
        return (np.asarray(scores, dtype=float)[:, None] >= cuts).sum(axis=1).astype(np.int8)

    def z(self, scores: np.ndarray, grade_index: np.ndarray) -> np.ndarray:
        """Within-grade z on the design constants (grade mean and s), the truth's prior-score unit."""
        return (np.asarray(scores, dtype=float) - np.asarray(self.grade_means)[grade_index]) / self.s


def normalise_grades(grades: Sequence[str | int]) -> tuple[str, ...]:
    """Two-digit grade codes ("03") of a contiguous range of grade numbers."""
    numbers = [int(g) for g in grades]
    if not numbers or numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        raise ValueError(f"grades must be a contiguous increasing range of grade numbers; got {list(grades)}")
    if numbers[0] < 1 or numbers[-1] > 12:
        raise ValueError(f"grades must lie within 1-12; got {list(grades)}")
    return tuple(f"{n:02d}" for n in numbers)


def grade_means(n_grades: int, scale: tuple[int, int], vertical: bool) -> tuple[float, ...]:
    """Vertical scale: means spanning MEAN_SPAN of the range, centred, with yearly growth declining
    by GROWTH_DECAY per grade; otherwise every grade at the centre of the scale."""
    lo, hi = scale
    mid = (lo + hi) / 2.0
    if not vertical or n_grades == 1:
        return tuple([mid] * n_grades)
    steps = GROWTH_DECAY ** np.arange(n_grades - 1)
    cumulative = np.concatenate([[0.0], np.cumsum(steps)]) / steps.sum()
    span = MEAN_SPAN * (hi - lo)
    return tuple(float(v) for v in mid - span / 2.0 + span * cumulative)


def make_spec(
    grades: Sequence[str | int], subjects: Sequence[str], scale: tuple[int, int], vertical: bool
) -> LongSpec:
    """The scale specification of a district (pure: the same arguments give the same truth)."""
    codes = normalise_grades(grades)
    lo, hi = int(scale[0]), int(scale[1])
    if not lo < hi:
        raise ValueError(f"scale must be (lowest, highest) with lowest < highest; got {scale}")
    if not subjects or len(set(subjects)) != len(subjects):
        raise ValueError(f"subjects must be distinct names; got {subjects}")
    for subject in subjects:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", subject):
            raise ValueError(f"subject names are lower-case identifiers (e.g. math); got {subject!r}")
    s = (hi - lo) * SD_PER_RANGE
    return LongSpec(
        grades=codes,
        subjects=tuple(subjects),
        scale=(lo, hi),
        vertical=vertical,
        grade_means=grade_means(len(codes), (lo, hi), vertical),
        s=s,
        noise_sd=NOISE_RATIO * s,
        coefficients={sub: COEFFICIENTS.get(sub, DEFAULT_COEFFICIENTS) for sub in subjects},
    )


def level_of_grade(grade_number: int) -> int:
    """0 elementary (grades <= 5), 1 middle (6-8), 2 high (>= 9)."""
    return 0 if grade_number <= 5 else (1 if grade_number <= 8 else 2)


def truncated_normal(n: int, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Normal truncated at +-TRUNCATION_Z sigma by inverse CDF, sigma set so the SD is exactly sd."""
    sigma = sd / truncated_sd_factor(TRUNCATION_Z)
    u = rng.uniform(ndtr(-TRUNCATION_Z), ndtr(TRUNCATION_Z), size=n)
    return sigma * ndtri(u)


# --------------------------------------------------------------------------------------------
# The truth: expected score from stored values only
# --------------------------------------------------------------------------------------------


@dataclass
class GrowthInputs:
    """Stored values behind one subject's expected score, aligned arrays (one entry per student).

    Scores are the exported integers; grades are indices into ``LongSpec.grades``; NaN marks what
    is not stored (``prior2_score``, ``other_prior_z``, last year's engagement)."""

    grade: np.ndarray  # target year
    prior_score: np.ndarray  # last year's score (for a growth pair) or the latest stored score
    prior_grade: np.ndarray
    years_since_prior: np.ndarray  # 1 for a growth pair
    prior2_score: np.ndarray  # the score two years back (growth pairs only), NaN if not stored
    prior2_grade: np.ndarray
    other_prior_z: np.ndarray  # mean within-grade z (design constants) of the other subjects' priors
    econ: np.ndarray  # target-year record
    english_learner: np.ndarray
    special_education: np.ndarray
    female: np.ndarray
    parental_education: np.ndarray  # 0 (less than high school) to 4 (graduate)
    home_internet: np.ndarray
    days_absent: np.ndarray  # last year's record
    homework: np.ndarray
    activities: np.ndarray
    logins: np.ndarray
    school_effect: np.ndarray  # points: the target-year school's value-added
    peer_effect: np.ndarray  # points: c * s * the target-year school's prior-year mean z


def absence_penalty(days: np.ndarray, coef: LongCoefficients) -> np.ndarray:
    """S-shaped: about 0 for a few days, most of absence_max beyond ~25 days (units of s)."""
    return coef.absence_max * (1.0 - np.exp(-((days / coef.absence_scale) ** 2)))


def expected_scores(spec: LongSpec, subject: str, x: GrowthInputs) -> np.ndarray:
    """The noise-free current score: a deterministic function of stored values only, smoothly
    bounded so that adding the largest possible noise stays inside the scale."""
    coef = spec.coefficients[subject]
    s = spec.s
    z1 = spec.z(x.prior_score, x.prior_grade.astype(np.int64))
    has2 = ~np.isnan(x.prior2_score)
    z2 = np.where(has2, spec.z(np.nan_to_num(x.prior2_score), x.prior2_grade.astype(np.int64)), 0.0)
    other = np.where(np.isnan(x.other_prior_z), z1, x.other_prior_z)
    persistence = np.where(has2, coef.prior * z1 + coef.prior2 * z2, coef.prior_alone * z1)
    persistence = persistence + coef.other_prior * other
    econ, el = x.econ.astype(float), x.english_learner.astype(float)
    internet = x.home_internet.astype(float)
    days = np.where(np.isnan(x.days_absent), NEUTRAL_ENGAGEMENT["days_absent"], x.days_absent)
    homework = np.where(np.isnan(x.homework), NEUTRAL_ENGAGEMENT["homework"], x.homework)
    activities = np.where(np.isnan(x.activities), NEUTRAL_ENGAGEMENT["activities"], x.activities)
    logins = np.where(np.isnan(x.logins), NEUTRAL_ENGAGEMENT["logins"], x.logins)
    step = (x.grade.astype(np.int64) - x.prior_grade.astype(np.int64)) - x.years_since_prior.astype(np.int64)
    lin = (
        coef.intercept
        + persistence
        + coef.econ * econ
        + coef.english_learner * el
        + coef.special_education * x.special_education.astype(float)
        + coef.female * x.female.astype(float)
        + coef.parental_education * (x.parental_education.astype(float) - 1.0)
        + absence_penalty(days, coef) * (1.0 + coef.absence_extra_econ * econ + coef.absence_extra_el * el)
        + coef.homework * np.tanh((homework - 75.0) / 15.0)
        + coef.logins * (np.log1p(logins) - LOGIN_CENTRE) * (1.0 + internet) / 2.0
        + coef.internet * internet
        + coef.extracurricular * (np.minimum(activities, 3.0) - 0.8 * np.maximum(activities - 4.0, 0.0) - 1.0)
        + coef.repeated_grade * (step < 0)
        + coef.skipped_grade * (step > 0)
    )
    raw = np.asarray(spec.grade_means)[x.grade.astype(np.int64)] + s * lin + x.school_effect + x.peer_effect
    lo, hi = spec.scale
    return soft_clip(raw, lo + spec.noise_bound, hi - spec.noise_bound, *spec.knees)


def school_context(
    scores: np.ndarray, grade: np.ndarray, school: np.ndarray, n_grades: int, n_schools: int
) -> np.ndarray:
    """Per school: mean within-grade z of its stored scores of one school year, averaged over subjects.

    ``scores`` is (subjects, students) with NaN where not stored. The z is empirical, exactly as the
    project's features compute it: (score - mean) / SD over every stored score of that subject and
    grade of the year (population SD); then averaged over the school's stored scores per subject,
    then over the subjects the school has scores in. NaN for a school without stored scores."""
    means = np.full((scores.shape[0], n_schools), np.nan)
    for j in range(scores.shape[0]):
        stored = ~np.isnan(scores[j])
        x = scores[j][stored]
        g = grade[stored]
        count = np.bincount(g, minlength=n_grades)
        safe = np.maximum(count, 1)
        mean = np.bincount(g, weights=x, minlength=n_grades) / safe
        var = np.bincount(g, weights=(x - mean[g]) ** 2, minlength=n_grades) / safe
        sd = np.sqrt(var)
        z = np.where(sd[g] > 0, (x - mean[g]) / np.where(sd[g] > 0, sd[g], 1.0), 0.0)
        n_school = np.bincount(school[stored], minlength=n_schools)
        total = np.bincount(school[stored], weights=z, minlength=n_schools)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[j] = np.where(n_school > 0, total / n_school, np.nan)
    with np.errstate(invalid="ignore"):
        present = ~np.isnan(means)
        count = present.sum(axis=0)
        return np.where(count > 0, np.nansum(means, axis=0) / np.maximum(count, 1), np.nan)


def peer_effects(spec: LongSpec, subject: str, context: np.ndarray) -> np.ndarray:
    """Peer effect in points: c * s * the school's prior-year context; 0 when it had no stored scores."""
    return spec.coefficients[subject].peer * spec.s * np.nan_to_num(np.asarray(context, dtype=float))


# --------------------------------------------------------------------------------------------
# Schools
# --------------------------------------------------------------------------------------------


@dataclass
class Schools:
    """Internal school arrays (index = school number)."""

    code: np.ndarray  # "0042"
    name: np.ndarray
    level: np.ndarray  # 0/1/2
    charter: np.ndarray
    lea: np.ndarray  # index into lea_names
    lea_names: list[str]
    share: np.ndarray  # share of its level's students in each grade
    receiver: np.ndarray  # school of the next level its students move on to, -1 at the top
    poverty: np.ndarray
    english: np.ndarray
    intake: np.ndarray
    per_student_budget: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __len__(self) -> int:
        return len(self.code)


def _orthogonal(draws: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """``orthogonal_normal`` when there are enough schools for it; plain standardisation otherwise."""
    if len(draws) > len(others) + 2:
        x = np.column_stack([np.ones(len(draws)), *others]).astype(float)
        if np.linalg.matrix_rank(x) == x.shape[1]:
            resid = draws - x @ np.linalg.lstsq(x, draws, rcond=None)[0]
            if resid.std() > 1e-9:
                return orthogonal_normal(draws, *others)
    return unit_sd(draws) if np.std(draws) > 0 else np.zeros(len(draws))


def school_counts(
    n_students: int, levels: list[int], grades_in_level: list[int], n_districts: int
) -> list[int]:
    """About one school per STUDENTS_PER_SCHOOL students, at least 2 per level, split by the number of
    grades in each level, never more schools in a level than in the level feeding it, and at least one
    top-level school per LEA."""
    k = max(round(n_students / STUDENTS_PER_SCHOOL), 2 * len(levels))
    counts = [int(c) for c in apportion(k, np.array(grades_in_level, dtype=float), minimum=2)]
    changed = True
    while changed:  # feeders at least as many as receivers, keeping the total
        changed = False
        for i in range(1, len(counts)):
            if counts[i] > counts[i - 1]:
                pool = counts[i] + counts[i - 1]
                counts[i - 1], counts[i] = pool - pool // 2, pool // 2
                changed = True
    counts[-1] = max(counts[-1], n_districts)
    for i in range(len(counts) - 2, -1, -1):
        counts[i] = max(counts[i], counts[i + 1])
    return counts


def school_names(levels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unique names like "Huang Elementary School"; two-word names only when surnames run out."""
    surnames = list(dict.fromkeys(LAST_NAMES))
    pool = list(surnames)
    if len(levels) > len(pool):
        pool += [f"{f} {s}" for f in FEMALE_FIRST_NAMES + MALE_FIRST_NAMES for s in surnames]
    base = np.array(pool, dtype=object)[rng.choice(len(pool), size=len(levels), replace=False)]
    return np.array(
        [f"{b} {SCHOOL_LEVELS[lv]} School" for b, lv in zip(base, levels, strict=True)], dtype=object
    )


def assign_receivers(flows: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Each feeder school (per-grade flow) gets one receiving school: the largest feeders go to the
    largest receivers one-to-one, the rest to the receiver with the most room left."""
    receiver = np.empty(len(flows), dtype=np.int64)
    room = capacity.astype(float).copy()
    order_f = np.argsort(-flows, kind="stable")
    order_r = np.argsort(-capacity, kind="stable")
    m = min(len(flows), len(capacity))
    receiver[order_f[:m]] = order_r[:m]
    room[order_r[:m]] -= flows[order_f[:m]]
    for f in order_f[m:]:
        r = int(np.argmax(room))
        receiver[f] = r
        room[r] -= flows[f]
    return receiver


def make_schools(
    n_students: int, spec: LongSpec, n_districts: int, rng: np.random.Generator
) -> tuple[Schools, np.ndarray]:
    """Schools of every level the grades need, with feeder links, LEAs and hidden enrolment traits.

    Returns the schools and the number of students per grade each year (the grade targets)."""
    level_of = np.array([level_of_grade(g) for g in spec.grade_numbers])
    levels = sorted(set(level_of.tolist()))
    grades_in_level = [int((level_of == lv).sum()) for lv in levels]
    counts = school_counts(n_students, levels, grades_in_level, n_districts)
    per_grade = apportion(n_students, np.ones(len(spec.grades)))

    level = np.concatenate([np.full(c, lv) for lv, c in zip(levels, counts, strict=True)])
    k = len(level)
    charter = np.zeros(k, dtype=bool)
    raw = np.empty(k)
    for lv in levels:
        members = np.flatnonzero(level == lv)
        n_charter = round(CHARTER_SHARE * len(members))
        chosen = members[rng.permutation(len(members))[:n_charter]]
        charter[chosen] = True
        ch = members[charter[members]]
        tr = members[~charter[members]]
        raw[ch] = stratified_uniform(len(ch), *CHARTER_SIZE_RANGE, rng)
        raw[tr] = stratified_uniform(len(tr), *DISTRICT_SIZE_RANGE, rng)

    share = np.zeros(k)
    receiver = np.full(k, -1, dtype=np.int64)
    poverty = np.zeros(k)
    english = np.zeros(k)
    intake = np.zeros(k)
    bottom = np.flatnonzero(level == levels[0])
    share[bottom] = raw[bottom] / raw[bottom].sum()
    n = len(bottom)
    poverty[bottom] = _orthogonal(stratified_normal(n, rng), charter[bottom], raw[bottom])
    english[bottom] = 0.5 * poverty[bottom] + math.sqrt(0.75) * _orthogonal(
        stratified_normal(n, rng), poverty[bottom]
    )
    noise = _orthogonal(stratified_normal(n, rng), charter[bottom], poverty[bottom])
    intake[bottom] = -0.25 * poverty[bottom] + 0.2 * noise
    for lower, upper in zip(levels, levels[1:], strict=False):
        feeders = np.flatnonzero(level == lower)
        receivers = np.flatnonzero(level == upper)
        capacity = raw[receivers] / raw[receivers].sum()
        local = assign_receivers(share[feeders], capacity)
        receiver[feeders] = receivers[local]
        inflow = np.bincount(local, weights=share[feeders], minlength=len(receivers))
        share[receivers] = inflow / inflow.sum()
        for latent in (poverty, english, intake):  # a receiving school's intake is that of its feeders
            latent[receivers] = np.bincount(
                local, weights=share[feeders] * latent[feeders], minlength=len(receivers)
            )
            latent[receivers] /= np.maximum(inflow, 1e-12)

    top = np.flatnonzero(level == levels[-1])
    lea = np.full(k, -1, dtype=np.int64)
    lea[top] = rng.permutation(len(top)) % n_districts
    for lv in reversed(levels[:-1]):
        members = np.flatnonzero(level == lv)
        lea[members] = lea[receiver[members]]
    if n_districts == 1:
        lea_names = [SINGLE_DISTRICT_NAME]
    else:
        places = [LEA_PLACES[i % len(LEA_PLACES)] for i in range(n_districts)]
        rounds = [i // len(LEA_PLACES) for i in range(n_districts)]
        lea_names = [
            f"{place}{f' {r + 1}' if r else ''} Unified School District"
            for place, r in zip(places, rounds, strict=True)
        ]
    codes = rng.choice(np.arange(1, 10_000), size=k, replace=False)
    schools = Schools(
        code=np.array([f"{c:04d}" for c in codes], dtype=object),
        name=school_names(level, rng),
        level=level,
        charter=charter,
        lea=lea,
        lea_names=lea_names,
        share=share,
        receiver=receiver,
        poverty=poverty,
        english=english,
        intake=intake,
    )
    return schools, per_grade


def assign_budgets(schools: Schools, rng: np.random.Generator) -> None:
    """Per-student budgets with every standard spending bin populated; high-poverty traditional
    schools tend to get more (as Title I funding does), charters less."""
    k = len(schools)
    per_bin = apportion(k, np.array(SPENDING_SHARES), minimum=1 if k >= len(SPENDING_SHARES) else 0)
    rank = np.argsort(0.7 * schools.poverty - 0.8 * schools.charter + rng.standard_normal(k), kind="stable")
    bin_of_rank = np.repeat(np.arange(len(per_bin)), per_bin)
    lo = np.array([r[0] for r in SPENDING_RANGES])[bin_of_rank]
    hi = np.array([r[1] for r in SPENDING_RANGES])[bin_of_rank]
    per_student = np.empty(k)
    per_student[rank] = lo + (hi - lo) * rng.random(k)
    schools.per_student_budget = per_student


def school_effects(
    schools: Schools, enrolment: np.ndarray, spec: LongSpec, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """True value-added per school and subject, points (the same every year): an explained part linear
    in (charter, enrolment, per-student budget) plus an idiosyncratic part orthogonal to them and to
    the school's hidden intake and poverty, so the realised SD and R^2 are exactly the designed ones."""
    k = len(schools)
    design = np.column_stack(
        [schools.charter.astype(float), enrolment.astype(float), schools.per_student_budget]
    )
    sd = design.std(axis=0)
    design = (design - design.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    shared = rng.standard_normal(k)
    out = {}
    for subject in spec.subjects:
        total = SCHOOL_EFFECT_SD.get(subject, DEFAULT_EFFECT_SD) * spec.s
        own = rng.standard_normal(k)
        raw = math.sqrt(IDIOSYNCRATIC_CORRELATION) * shared + math.sqrt(1 - IDIOSYNCRATIC_CORRELATION) * own
        idio = _orthogonal(raw, *design.T, schools.poverty, schools.intake)
        weights = np.array(SCHOOL_EFFECT_WEIGHTS.get(subject, DEFAULT_EFFECT_WEIGHTS))
        explained = unit_sd(design @ weights) if (design @ weights).std() > 0 else np.zeros(k)
        out[subject] = total * (
            math.sqrt(SCHOOL_EFFECT_R2) * explained + math.sqrt(1 - SCHOOL_EFFECT_R2) * idio
        )
    return out


# --------------------------------------------------------------------------------------------
# Rosters: who is enrolled where, in which grade, each year
# --------------------------------------------------------------------------------------------


@dataclass
class Rosters:
    grade: np.ndarray  # (years, students) grade index, -1 when not enrolled
    school: np.ndarray  # (years, students) school number, -1 when not enrolled
    entry_year: np.ndarray  # year index the student entered
    ability: np.ndarray  # hidden: shapes first scores, engagement, repeating and skipping
    counts: list[dict[str, int]]


def _choose_other_school(
    current: np.ndarray, candidates: np.ndarray, share: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A random other school among candidates (probability by size), -1 when there is none."""
    if len(candidates) < 2:
        return np.full(len(current), -1)
    p = share[candidates] / share[candidates].sum()
    dest = candidates[rng.choice(len(candidates), size=len(current), p=p)]
    for _ in range(30):
        same = dest == current
        if not same.any():
            break
        dest[same] = candidates[rng.choice(len(candidates), size=int(same.sum()), p=p)]
    dest[dest == current] = -1
    return dest


def simulate_rosters(
    schools: Schools, spec: LongSpec, per_grade: np.ndarray, years: int, rng: np.random.Generator,
    rng_ability: np.random.Generator,
) -> Rosters:  # fmt: skip
    """Year 1: every grade filled; then each year promote / repeat / skip / leave, change schools,
    move on to the receiving school at a level change, and fill each grade back to its size with
    a new lowest-grade cohort and movers-in (placed where schools are short of their share)."""
    n_grades = len(spec.grades)
    level_of = np.array([level_of_grade(g) for g in spec.grade_numbers])
    members = {lv: np.flatnonzero(schools.level == lv) for lv in set(level_of.tolist())}
    abilities: list[np.ndarray] = []
    entry: list[np.ndarray] = []
    n_total = 0

    def enter(grade: np.ndarray, school: np.ndarray, year: int) -> np.ndarray:
        nonlocal n_total
        idx = np.arange(n_total, n_total + len(grade))
        n_total += len(grade)
        abilities.append(schools.intake[school] + rng_ability.standard_normal(len(grade)))
        entry.append(np.full(len(grade), year, dtype=np.int16))
        return idx

    def fill(grade_index: int, need: int, current: np.ndarray) -> np.ndarray:
        level_schools = members[int(level_of[grade_index])]
        target = per_grade[grade_index] * schools.share[level_schools]
        deficit = np.maximum(target - current[level_schools], 0.0)
        counts = apportion(need, deficit + 1e-6 * target)
        return np.repeat(level_schools, counts)

    years_idx, years_grade, years_school = [], [], []
    counts: list[dict[str, int]] = []
    empty = np.zeros(len(schools))
    grade_parts, school_parts = [], []
    for g in range(n_grades):
        school_parts.append(fill(g, int(per_grade[g]), empty))
        grade_parts.append(np.full(len(school_parts[-1]), g, dtype=np.int64))
    grade = np.concatenate(grade_parts)
    school = np.concatenate(school_parts)
    idx = enter(grade, school, 0)
    years_idx.append(idx)
    years_grade.append(grade)
    years_school.append(school)
    counts.append({"enrolled": len(idx), "new_cohort": len(idx), "movers_in": 0})

    for year in range(1, years):
        idx, grade, school = years_idx[-1], years_grade[-1], years_school[-1]
        ability = np.concatenate(abilities)[idx]
        top = grade == n_grades - 1
        leave = top | (rng.random(len(idx)) < P_LEAVE)
        p_repeat = np.exp(-0.8 * ability)
        p_repeat *= P_REPEAT / p_repeat[~leave].mean()
        can_skip = grade + 2 <= n_grades - 1
        p_skip = np.exp(1.0 * ability) * can_skip
        p_skip *= P_SKIP / max(p_skip[~leave].mean(), 1e-12) if can_skip.any() else 0.0
        v = rng.random(len(idx))
        repeat = ~leave & (v < p_repeat)
        skip = ~leave & ~repeat & (v > 1.0 - p_skip)
        new_grade = grade + 1
        new_grade[repeat] = grade[repeat]
        new_grade[skip] = grade[skip] + 2
        new_grade = np.minimum(new_grade, n_grades - 1)
        new_school = school.copy()
        transition = ~leave & (level_of[new_grade] != schools.level[school])
        while True:
            up = ~leave & (schools.level[new_school] < level_of[new_grade])
            if not up.any():
                break
            new_school[up] = schools.receiver[new_school[up]]
        movers = ~leave & ~transition & (rng.random(len(idx)) < P_SCHOOL_CHANGE)
        changed = 0
        for level_schools in members.values():
            for lea in np.unique(schools.lea[level_schools]):
                group = level_schools[schools.lea[level_schools] == lea]
                candidates = group if len(group) >= 2 else level_schools
                mine = movers & np.isin(new_school, group)
                if not mine.any():
                    continue
                dest = _choose_other_school(new_school[mine], candidates, schools.share, rng)
                rows = np.flatnonzero(mine)
                ok = dest >= 0
                new_school[rows[ok]] = dest[ok]
                changed += int(ok.sum())
        keep = ~leave
        idx_k, grade_k, school_k = idx[keep], new_grade[keep], new_school[keep]
        new_parts = [(idx_k, grade_k, school_k)]
        new_cohort = movers_in = 0
        for g in range(n_grades):
            in_grade = grade_k == g
            need = int(per_grade[g] - in_grade.sum())
            if need <= 0:
                continue
            current = np.bincount(school_k[in_grade], minlength=len(schools)).astype(float)
            placed = fill(g, need, current)
            entrant_grade = np.full(need, g, dtype=np.int64)
            new_parts.append((enter(entrant_grade, placed, year), entrant_grade, placed))
            if g == 0:
                new_cohort += need
            else:
                movers_in += need
        years_idx.append(np.concatenate([p[0] for p in new_parts]))
        years_grade.append(np.concatenate([p[1] for p in new_parts]))
        years_school.append(np.concatenate([p[2] for p in new_parts]))
        counts.append(
            {
                "enrolled": len(years_idx[-1]),
                "graduates": int(top.sum()),
                "leavers": int((leave & ~top).sum()),
                "repeaters": int(repeat.sum()),
                "skippers": int(skip.sum()),
                "level_transitions": int(transition.sum()),
                "school_changes": changed,
                "new_cohort": new_cohort,
                "movers_in": movers_in,
            }
        )

    grade_panel = np.full((years, n_total), -1, dtype=np.int8)
    school_panel = np.full((years, n_total), -1, dtype=np.int32)
    for year in range(years):
        grade_panel[year, years_idx[year]] = years_grade[year]
        school_panel[year, years_idx[year]] = years_school[year]
    return Rosters(
        grade=grade_panel,
        school=school_panel,
        entry_year=np.concatenate(entry),
        ability=np.concatenate(abilities),
        counts=counts,
    )


# --------------------------------------------------------------------------------------------
# Students: persistent traits, yearly demographics and engagement
# --------------------------------------------------------------------------------------------


@dataclass
class Students:
    """Per-student traits (index = student number) and (years, students) panels."""

    number: np.ndarray  # the 10-digit identifier as an integer
    female: np.ndarray
    special_education: np.ndarray
    parent: np.ndarray  # 0-4
    internet: np.ndarray
    trait: np.ndarray  # hidden engagement trait (correlated with ability)
    absence_trait: np.ndarray  # hidden absence propensity
    shared_residual: np.ndarray  # hidden: the part of a first score's residual shared across subjects
    econ: np.ndarray  # (years, students)
    english_learner: np.ndarray
    commute: np.ndarray  # tenths of a minute
    days_absent: np.ndarray
    homework: np.ndarray  # tenths of a percent
    activities: np.ndarray
    logins: np.ndarray  # tenths


def unique_ids(n: int, rng: np.random.Generator) -> np.ndarray:
    """n distinct random integers below 10**10 (10-digit identifiers with leading zeros)."""
    ids = rng.integers(0, 10**10, size=n, dtype=np.int64)
    while True:
        _, first = np.unique(ids, return_index=True)
        if len(first) == n:
            return ids
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        ids[dup] = rng.integers(0, 10**10, size=int(dup.sum()), dtype=np.int64)


def make_students(
    schools: Schools, rosters: Rosters, rng_traits: np.random.Generator, rng_years: np.random.Generator
) -> Students:
    """Persistent demographics drawn at entry (from the entry school's traits), economic status and
    English-learner status evolving each year, and each year's engagement and commute."""
    years, n = rosters.grade.shape
    ability = rosters.ability
    entry_school = rosters.school[rosters.entry_year, np.arange(n)]
    number = unique_ids(n, rng_traits)
    female = rng_traits.random(n) < 0.5
    p_econ = expit(-0.2 + 1.0 * schools.poverty[entry_school])
    econ0 = rng_traits.random(n) < p_econ
    el0 = rng_traits.random(n) < expit(-2.7 + 0.9 * econ0 + 0.7 * schools.english[entry_school])
    sped = rng_traits.random(n) < expit(-2.0 + 0.3 * econ0)
    parent = np.searchsorted(
        np.array([-1.7, -0.6, 0.2, 0.95]),
        -0.6 * econ0 - 0.4 * el0 + 0.3 * ability + rng_traits.standard_normal(n),
    )
    internet = rng_traits.random(n) < expit(2.6 - 1.3 * econ0 - 0.5 * el0 + 0.3 * (parent - 1))
    trait = TRAIT_ABILITY * (ability - schools.intake[entry_school]) + math.sqrt(1 - TRAIT_ABILITY**2) * (
        rng_traits.standard_normal(n)
    )
    absence_trait = rng_traits.standard_normal(n)
    shared_residual = rng_traits.standard_normal(n)
    reclassify = np.exp(0.7 * ability)
    reclassify *= P_EL_RECLASSIFY / reclassify.mean()

    econ = np.zeros((years, n), dtype=bool)
    el = np.zeros((years, n), dtype=bool)
    commute = np.zeros((years, n), dtype=np.int16)
    days = np.zeros((years, n), dtype=np.int16)
    homework = np.zeros((years, n), dtype=np.int16)
    activities = np.zeros((years, n), dtype=np.int8)
    logins = np.zeros((years, n), dtype=np.int16)
    commute_mean = np.array([12.0, 18.0, 22.0])[schools.level] + 8.0 * schools.charter
    for year in range(years):
        new = rosters.entry_year == year
        if year == 0:
            econ[0], el[0] = econ0, el0
        else:
            redraw = rng_years.random(n) < P_ECON_REDRAW
            econ[year] = np.where(redraw, rng_years.random(n) < p_econ, econ[year - 1])
            el[year] = el[year - 1] & ~(rng_years.random(n) < reclassify)
            econ[year, new] = econ0[new]
            el[year, new] = el0[new]
        enrolled = np.flatnonzero(rosters.grade[year] >= 0)
        school = rosters.school[year, enrolled]
        e, l_, sp = econ[year, enrolled], el[year, enrolled], sped[enrolled]
        pa, tr = parent[enrolled], ENGAGEMENT_PERSISTENCE * trait[enrolled]
        mean_absent = 7.0 * np.exp(
            0.3 * e
            + 0.25 * l_
            + 0.3 * sp
            - 0.08 * (pa - 1)
            - 0.2 * tr
            + 0.45 * ENGAGEMENT_PERSISTENCE * absence_trait[enrolled]
            - 0.05
        )
        d = np.minimum(rng_years.poisson(rng_years.gamma(2.0, mean_absent / 2.0)), SCHOOL_DAYS)
        hw_mean = expit(1.5 + 0.35 * tr - 0.15 * e + 0.1 * (pa - 1) - 0.02 * np.minimum(d, 60))
        hw = np.round(1000.0 * rng_years.beta(8.0 * hw_mean, 8.0 * (1.0 - hw_mean)))
        net = internet[enrolled]
        login_mean = np.where(net, np.maximum(4.5 + 0.5 * (pa - 1) + 0.8 * tr, 0.5), 1.2)
        lg = np.minimum(np.round(10.0 * rng_years.gamma(2.0, login_mean / 2.0)), 1000)
        act = np.minimum(rng_years.poisson(1.3 * np.exp(0.12 * (pa - 1) - 0.15 * e + 0.15 * tr)), 10)
        fresh = np.minimum(np.round(10.0 * rng_years.gamma(3.0, commute_mean[school] / 3.0)), 2400)
        if year > 0:
            same = rosters.school[year - 1, enrolled] == school
            fresh = np.where(same, commute[year - 1, enrolled], fresh)
        days[year, enrolled] = d
        homework[year, enrolled] = hw
        logins[year, enrolled] = lg
        activities[year, enrolled] = act
        commute[year, enrolled] = fresh
    return Students(
        number=number, female=female, special_education=sped, parent=parent, internet=internet, trait=trait,
        absence_trait=absence_trait, shared_residual=shared_residual,
        econ=econ, english_learner=el, commute=commute, days_absent=days, homework=homework,
        activities=activities, logins=logins,
    )  # fmt: skip


def decide_tested(
    rosters: Rosters, students: Students, year: int, n_subjects: int, rng: np.random.Generator
) -> np.ndarray:
    """(subjects, students) tested flags of one year: ~2% of scores missing, more often for students
    who missed many days; decided before the next year is generated."""
    enrolled = rosters.grade[year] >= 0
    scale = (students.days_absent[year].astype(float) + 3.0) / 13.0
    n = enrolled.size
    absent_all = rng.random(n) < np.minimum(P_UNTESTED_ALL * scale, 0.5)
    tested = np.zeros((n_subjects, n), dtype=bool)
    for j in range(n_subjects):
        tested[j] = enrolled & ~absent_all & ~(rng.random(n) < np.minimum(P_UNTESTED_SUBJECT * scale, 0.5))
    return tested


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------


def first_scores(
    spec: LongSpec,
    subject: str,
    students: Students,
    ability: np.ndarray,
    idx: np.ndarray,
    year: int,
    grade: np.ndarray,
    rng: np.random.Generator,
    standardise: tuple[float, float] | None,
) -> tuple[np.ndarray, tuple[float, float]]:
    """Cross-sectional first scores: grade mean + s * z, z from ability and demographic gaps,
    standardised with the constants of the first year's population (returned for later entrants)."""
    m = FIRST_SCORE.get(subject, DEFAULT_FIRST_SCORE)
    residual = math.sqrt(m.residual_shared) * students.shared_residual[idx] + math.sqrt(
        1.0 - m.residual_shared
    ) * rng.standard_normal(len(idx))
    raw = (
        m.ability * ability[idx]
        + m.trait * students.trait[idx]
        + m.absence_trait * students.absence_trait[idx]
        + m.internet * students.internet[idx]
        + m.residual * residual
        + m.econ * students.econ[year, idx]
        + m.english_learner * students.english_learner[year, idx]
        + m.special_education * students.special_education[idx]
        + m.parental_education * (students.parent[idx] - 1.0)
        + m.female * students.female[idx]
    )
    if standardise is None:
        standardise = (float(raw.mean()), float(raw.std()))
    z = (raw - standardise[0]) / standardise[1]
    lo, hi = spec.scale
    value = soft_clip(np.asarray(spec.grade_means)[grade] + spec.s * z, lo, hi, *spec.knees)
    return np.round(value), standardise  # strictly inside (lo, hi) before rounding: never clipped


@dataclass
class ScoreResult:
    scores: np.ndarray  # (years, subjects, students) float32, NaN when not stored
    truth: dict[int, pd.DataFrame]  # year index -> pairs (student number, subject index, prior, expected)
    context: np.ndarray  # (years, schools) prior-year mean within-grade z (NaN in year 0 / no scores)
    counts: list[dict[str, int]]


def growth_inputs(
    spec: LongSpec, j: int, year: int, idx: np.ndarray, rosters: Rosters, students: Students,
    scores: np.ndarray, stored_record: np.ndarray, last: tuple[np.ndarray, np.ndarray, np.ndarray],
    effect: np.ndarray, peer: np.ndarray,
) -> tuple[GrowthInputs, np.ndarray, np.ndarray]:  # fmt: skip
    """The stored values behind subject j's expected score in ``year`` for students ``idx`` who have a
    stored score in j; returns the inputs, the growth-pair flag and the has-history flag."""
    last_score, last_grade, last_year = last
    grade = rosters.grade[year, idx].astype(np.int64)
    p1 = scores[year - 1, j, idx].astype(float)
    pair = ~np.isnan(p1)
    has_history = ~np.isnan(last_score[j, idx])
    prior = np.where(pair, p1, last_score[j, idx])
    prior_grade = np.where(pair, rosters.grade[year - 1, idx], last_grade[j, idx]).astype(np.int64)
    since = np.where(pair, 1, year - last_year[j, idx]).astype(np.int64)
    if year >= 2:
        p2 = np.where(pair, scores[year - 2, j, idx], np.nan)
        g2 = np.maximum(rosters.grade[year - 2, idx], 0).astype(np.int64)
    else:
        p2 = np.full(len(idx), np.nan)
        g2 = np.zeros(len(idx), dtype=np.int64)
    others = [k for k in range(len(spec.subjects)) if k != j]
    prev_grade = np.maximum(rosters.grade[year - 1, idx], 0).astype(np.int64)
    if others:
        z_other = np.vstack([spec.z(scores[year - 1, k, idx], prev_grade) for k in others])
        with np.errstate(invalid="ignore"):
            n_other = (~np.isnan(z_other)).sum(axis=0)
            other = np.where(n_other > 0, np.nansum(z_other, axis=0) / np.maximum(n_other, 1), np.nan)
    else:
        other = np.full(len(idx), np.nan)
    record = stored_record[year - 1, idx]

    def last_year_value(panel: np.ndarray, scale: float = 1.0) -> np.ndarray:
        # tenths / 10.0 is the double a reader parses from the exported decimal
        return np.where(record, panel[year - 1, idx].astype(float) / scale, np.nan)

    school = rosters.school[year, idx]
    inputs = GrowthInputs(
        grade=grade,
        prior_score=np.nan_to_num(prior),
        prior_grade=prior_grade,
        years_since_prior=since,
        prior2_score=p2,
        prior2_grade=g2,
        other_prior_z=other,
        econ=students.econ[year, idx],
        english_learner=students.english_learner[year, idx],
        special_education=students.special_education[idx],
        female=students.female[idx],
        parental_education=students.parent[idx],
        home_internet=students.internet[idx],
        days_absent=last_year_value(students.days_absent),
        homework=last_year_value(students.homework, 10.0),
        activities=last_year_value(students.activities),
        logins=last_year_value(students.logins, 10.0),
        school_effect=effect[school],
        peer_effect=peer[school],
    )
    return inputs, pair, has_history


def generate_scores(
    spec: LongSpec, schools: Schools, rosters: Rosters, students: Students, effects: dict[str, np.ndarray],
    tested_panel: np.ndarray, rng_noise: np.random.Generator, rng_first: np.random.Generator, advance: Any,
) -> ScoreResult:  # fmt: skip
    """Scores year by year: first scores cross-sectionally, every later score expected + noise."""
    years, n = rosters.grade.shape
    n_sub = len(spec.subjects)
    scores = np.full((years, n_sub, n), np.nan, dtype=np.float32)
    stored_record = np.zeros((years, n), dtype=bool)
    last_score = np.full((n_sub, n), np.nan)
    last_grade = np.zeros((n_sub, n), dtype=np.int8)
    last_year = np.zeros((n_sub, n), dtype=np.int16)
    context = np.full((years, len(schools)), np.nan)
    truth: dict[int, pd.DataFrame] = {}
    counts: list[dict[str, int]] = []
    standardise: dict[str, tuple[float, float] | None] = dict.fromkeys(spec.subjects)
    for year in range(years):
        tested = tested_panel[year]
        idx = np.flatnonzero(rosters.grade[year] >= 0)
        grade = rosters.grade[year, idx].astype(np.int64)
        year_counts = {"untested_scores": int((~tested[:, idx]).sum()), "first_scores": 0}
        if year > 0:
            # The target-year school's prior-year records (students not enrolled have NaN scores).
            context[year] = school_context(
                scores[year - 1].astype(float), np.maximum(rosters.grade[year - 1], 0).astype(np.int64),
                np.maximum(rosters.school[year - 1], 0), len(spec.grades), len(schools),
            )  # fmt: skip
        parts = []
        for j, subject in enumerate(spec.subjects):
            noise = truncated_normal(len(idx), spec.noise_sd, rng_noise)
            first, standardise[subject] = first_scores(
                spec, subject, students, rosters.ability, idx, year, grade, rng_first, standardise[subject]
            )
            value = first
            if year > 0:
                peer = peer_effects(spec, subject, context[year])
                inputs, pair, has_history = growth_inputs(
                    spec, j, year, idx, rosters, students, scores, stored_record,
                    (last_score, last_grade, last_year), effects[subject], peer,
                )  # fmt: skip
                expected = expected_scores(spec, subject, inputs)
                value = np.where(has_history, np.round(expected + noise), first)
                year_counts["first_scores"] += int((~has_history & tested[j, idx]).sum())
                keep = pair & tested[j, idx]
                year_counts[f"growth_pairs_{subject}"] = int(keep.sum())
                parts.append(
                    pd.DataFrame(
                        {
                            "student": idx[keep],
                            "subject": np.full(int(keep.sum()), j, dtype=np.int8),
                            "prior_score": inputs.prior_score[keep],
                            "expected_score": expected[keep],
                            "score": value[keep],
                        }
                    )
                )
            else:
                year_counts["first_scores"] += int(tested[j, idx].sum())
            mine = tested[j, idx]
            scores[year, j, idx[mine]] = value[mine]
            last_score[j, idx[mine]] = value[mine]
            last_grade[j, idx[mine]] = grade[mine]
            last_year[j, idx[mine]] = year
        stored_record[year] = tested.any(axis=0)
        if parts:
            truth[year] = pd.concat(parts, ignore_index=True)
        counts.append(year_counts)
        advance(f"scores {year + 1}/{years}")
    return ScoreResult(scores=scores, truth=truth, context=context, counts=counts)


# --------------------------------------------------------------------------------------------
# Export frames
# --------------------------------------------------------------------------------------------


@dataclass
class LongDistrict:
    """A generated multi-year district: export frames, schools file, truth and the config text."""

    records: dict[int, pd.DataFrame]  # school year (year it ends) -> that year's export file
    schools: pd.DataFrame  # schools.csv
    expected_growth: dict[int, pd.DataFrame]  # target school year -> truth/expected_growth_<year>.csv
    school_effects: pd.DataFrame  # truth/school_effects.csv
    meta: dict  # truth/truth.json
    config_text: str  # district.toml
    file_format: str = "csv"
    layout: str = "long"

    def record_file(self, year: int) -> str:
        stem = "assessments" if self.layout == "long" else "students"
        return f"{stem}_{year}.{self.file_format}"


def academic_year(year: int) -> str:
    return f"{year - 1}-{year}"


def _categorical(codes: np.ndarray, dtype: pd.CategoricalDtype) -> pd.Categorical:
    return pd.Categorical.from_codes(np.asarray(codes), dtype=dtype)


def _dtype(values: Sequence[str], ordered: bool = False) -> pd.CategoricalDtype:
    return pd.CategoricalDtype(pd.Index(list(values), dtype=object), ordered=ordered)


def export_frames(
    spec: LongSpec, schools: Schools, rosters: Rosters, students: Students, result: ScoreResult,
    first_year: int, layout: str, id_dtype: pd.CategoricalDtype,
) -> dict[int, pd.DataFrame]:  # fmt: skip
    """Each year's records in the vendor's format, memory-lean (categoricals, small integers)."""
    lea_dtype = _dtype(schools.lea_names)
    code_dtype = _dtype(list(schools.code))
    name_dtype = _dtype(list(schools.name))
    grade_dtype = _dtype(spec.grades, ordered=True)
    level_dtype = _dtype(LEVEL_NAMES, ordered=True)
    sex_dtype = _dtype(["Male", "Female"])
    parent_dtype = _dtype(PARENT_CODES)
    flag_dtypes = {col: _dtype(codes) for col, codes in FLAG_CODES.items()}
    subject_dtype = _dtype([SUBJECT_CODES.get(s, s.upper()) for s in spec.subjects])
    score_type = np.int16 if spec.scale[1] < 32_000 and spec.scale[0] > -32_000 else np.int32
    frames: dict[int, pd.DataFrame] = {}
    years = rosters.grade.shape[0]
    for year in range(years):
        scores = result.scores[year]
        tested = ~np.isnan(scores)
        stored = tested.any(axis=0)
        idx = np.flatnonzero(stored)
        school = rosters.school[year, idx]
        idx = idx[np.lexsort((students.number[idx], schools.code[school].astype(np.int64)))]
        school = rosters.school[year, idx]
        grade = rosters.grade[year, idx].astype(np.int64)
        label = academic_year(first_year + year)
        base: dict[str, Any] = {
            "LEAName": _categorical(schools.lea[school], lea_dtype),
            "SchoolCode": _categorical(school, code_dtype),
            "SchoolName": _categorical(school, name_dtype),
            "AcademicYear": _categorical(np.zeros(len(idx), dtype=np.int8), _dtype([label])),
            "StudentIdentifier": _categorical(idx, id_dtype),
            "GradeLevelWhenAssessed": _categorical(grade, grade_dtype),
            "Sex": _categorical(students.female[idx].astype(np.int8), sex_dtype),
            "EconomicDisadvantageStatus": _categorical(
                students.econ[year, idx].astype(np.int8), flag_dtypes["EconomicDisadvantageStatus"]
            ),
            "EnglishLearnerStatus": _categorical(
                students.english_learner[year, idx].astype(np.int8), flag_dtypes["EnglishLearnerStatus"]
            ),
            "IEPStatus": _categorical(
                students.special_education[idx].astype(np.int8), flag_dtypes["IEPStatus"]
            ),
            "ParentEducationLevel": _categorical(students.parent[idx], parent_dtype),
            "HomeInternetAccess": _categorical(
                students.internet[idx].astype(np.int8), flag_dtypes["HomeInternetAccess"]
            ),
            "CommuteMinutes": students.commute[year, idx] / 10.0,
            "DaysAbsent": students.days_absent[year, idx].astype(np.int16),
            "HomeworkCompletionPct": students.homework[year, idx] / 10.0,
            "ExtracurricularActivities": students.activities[year, idx].astype(np.int8),
            "PlatformLoginsPerWeek": students.logins[year, idx] / 10.0,
        }
        if layout == "wide":
            frame = pd.DataFrame(base)
            for j, subject in enumerate(spec.subjects):
                prefix = SUBJECT_PREFIXES.get(subject, subject.title())
                values = scores[j, idx]
                has = ~np.isnan(values)
                level = np.where(has, spec.levels(np.nan_to_num(values), grade), -1)
                frame[f"{prefix}ScaleScore"] = (
                    pd.Series(values).astype("Int16" if score_type is np.int16 else "Int32").to_numpy()
                )
                frame[f"{prefix}PerformanceLevel"] = _categorical(level, level_dtype)
            frames[first_year + year] = frame
            continue
        rows, subject_codes = [], []
        for j in range(len(spec.subjects)):
            mine = np.flatnonzero(tested[j, idx])
            rows.append(mine)
            subject_codes.append(np.full(len(mine), j, dtype=np.int8))
        row = np.concatenate(rows)
        subject = np.concatenate(subject_codes)
        order = np.lexsort((subject, row))
        row, subject = row[order], subject[order]
        frame = pd.DataFrame({name: (col[row]) for name, col in base.items()})
        values = scores[subject, idx[row]]
        frame["ContentArea"] = _categorical(subject, subject_dtype)
        frame["ScaleScore"] = values.astype(score_type)
        frame["PerformanceLevel"] = _categorical(spec.levels(values, grade[row]), level_dtype)
        frames[first_year + year] = frame
    return frames


def schools_frame(schools: Schools, enrolment: np.ndarray) -> pd.DataFrame:
    """schools.csv: code, name, governance, level, latest year's enrolment and total budget."""
    return pd.DataFrame(
        {
            "SchoolCode": schools.code.astype(str),
            "SchoolName": schools.name.astype(str),
            "Governance": np.where(schools.charter, "Charter", "Traditional"),
            "SchoolLevel": np.array(SCHOOL_LEVELS, dtype=object)[schools.level],
            "Enrollment": enrolment.astype(np.int64),
            "TotalBudget": np.round(schools.per_student_budget * enrolment).astype(np.int64),
        }
    ).sort_values("SchoolCode", ignore_index=True)


# --------------------------------------------------------------------------------------------
# The district config (docs/architecture.md)
# --------------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) and not float(value).is_integer() else str(int(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer: scalars and lists first in each table (top-level keys before any
    [header], as TOML requires), then nested tables as [dotted.headers]."""
    lines: list[str] = []

    def table(prefix: list[str], body: Mapping[str, Any]) -> None:
        scalars = [(k, v) for k, v in body.items() if not isinstance(v, Mapping)]
        tables = [(k, v) for k, v in body.items() if isinstance(v, Mapping)]
        if prefix and (scalars or not tables):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in prefix) + "]")
        for key, value in scalars:
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        for key, value in tables:
            table([*prefix, key], value)

    table([], data)
    return "\n".join(lines) + "\n"


def district_config(
    spec: LongSpec, layout: str, file_format: str, name: str, has_district_column: bool = True
) -> dict[str, Any]:
    """The config mapping this export to the contract, as a dict (``to_toml`` writes it)."""
    stem = "assessments" if layout == "long" else "students"
    columns = dict(CONTRACT_COLUMNS)
    if layout == "wide":
        for key in ("subject", "scale_score", "achievement_level"):
            columns.pop(key)
    if not has_district_column:
        columns.pop("district")
    values: dict[str, dict[str, Any]] = {"gender": {"Female": "F", "Male": "M"}}
    for contract, column in (
        ("econ_disadvantaged", "EconomicDisadvantageStatus"),
        ("english_learner", "EnglishLearnerStatus"),
        ("special_education", "IEPStatus"),
        ("home_internet", "HomeInternetAccess"),
    ):
        no, yes = FLAG_CODES[column]
        values[contract] = {yes: True, no: False}
    values["parental_education"] = dict(zip(PARENT_CODES, PARENT_VALUES, strict=True))
    values["type"] = {"Traditional": "District", "Charter": "Charter"}
    subjects: dict[str, Any] = {}
    for subject in spec.subjects:
        entry: dict[str, Any] = {}
        if layout == "long":
            entry["codes"] = [SUBJECT_CODES.get(subject, subject.upper())]
        else:
            prefix = SUBJECT_PREFIXES.get(subject, subject.title())
            entry["score_column"] = f"{prefix}ScaleScore"
            entry["level_column"] = f"{prefix}PerformanceLevel"
        entry |= {
            "label": SUBJECT_LABELS.get(subject, subject.replace("_", " ").title()),
            "scale": list(spec.scale),
            "vertical": spec.vertical,
            "levels": list(LEVEL_NAMES),
            "proficient": PROFICIENT_LEVEL,
            "cuts": {g: list(spec.cuts(i)) for i, g in enumerate(spec.grades)},
        }
        subjects[subject] = entry
    return {
        "name": name,
        "format": layout,
        "grades": list(spec.grades),
        "duplicates": "error",
        "files": {"records": [f"{stem}_*.{file_format}"], "schools": "schools.csv"},
        "columns": columns,
        "school_columns": dict(CONTRACT_SCHOOL_COLUMNS),
        "values": values,
        "subjects": subjects,
        "report": {"passing_word": "Proficient", "min_group_size": 10},
    }


# --------------------------------------------------------------------------------------------
# The district
# --------------------------------------------------------------------------------------------


def generate_long_district(
    n_students: int = 150_000,
    years: int = 4,
    first_year: int = 2022,
    grades: Sequence[str | int] = ("03", "04", "05", "06", "07", "08", "09", "10"),
    subjects: Sequence[str] = ("math", "reading"),
    scale: tuple[int, int] = (150, 950),
    vertical: bool = True,
    n_districts: int = 1,
    seed: int = 42,
    file_format: str = "csv",
    layout: str = "long",
    progress: bool = False,
) -> LongDistrict:
    """Generate a reproducible multi-year district (n_students enrolled each year)."""
    if file_format not in ("csv", "parquet"):
        raise ValueError(f"file_format must be 'csv' or 'parquet'; got {file_format!r}")
    if layout not in ("long", "wide"):
        raise ValueError(f"layout must be 'long' or 'wide'; got {layout!r}")
    if years < 2:
        raise ValueError(f"need at least 2 school years for growth; got {years}")
    if n_districts < 1:
        raise ValueError(f"n_districts must be at least 1; got {n_districts}")
    spec = make_spec(grades, subjects, scale, vertical)
    if n_students < 50 * len(spec.grades):
        raise ValueError(f"need at least {50 * len(spec.grades)} students for {len(spec.grades)} grades")
    streams = np.random.default_rng(seed).spawn(10)
    rng_schools, rng_moves, rng_ability, rng_traits, rng_years = streams[:5]
    rng_budget, rng_effects, rng_missing, rng_noise, rng_first = streams[5:]
    with _steps(6 + years, progress) as advance:
        schools, per_grade = make_schools(n_students, spec, n_districts, rng_schools)
        assign_budgets(schools, rng_budget)
        advance("schools")
        rosters = simulate_rosters(schools, spec, per_grade, years, rng_moves, rng_ability)
        advance("enrolment over the years")
        students = make_students(schools, rosters, rng_traits, rng_years)
        advance("demographics and engagement")
        # Who is tested depends on enrolment and absences only, so every year's missingness is decided
        # before any score is drawn (in particular before the next year is generated).
        tested = np.stack(
            [decide_tested(rosters, students, y, len(spec.subjects), rng_missing) for y in range(years)]
        )
        last = years - 1
        enrolment = np.bincount(rosters.school[last][tested[last].any(axis=0)], minlength=len(schools))
        effects = school_effects(schools, enrolment, spec, rng_effects)
        advance("school value-added")
        result = generate_scores(
            spec, schools, rosters, students, effects, tested, rng_noise, rng_first, advance
        )
        ids = pd.Index(_id_strings(students.number), dtype=object)
        id_dtype = pd.CategoricalDtype(ids)
        records = export_frames(spec, schools, rosters, students, result, first_year, layout, id_dtype)
        advance("export frames")
        truth, effects_frame = truth_frames(spec, schools, result, effects, first_year, id_dtype)
        name = SINGLE_DISTRICT_NAME if n_districts == 1 else f"Synthetic County ({n_districts} districts)"
        config_text = to_toml(district_config(spec, layout, file_format, name))
        advance("truth and config")
    meta = truth_meta(spec, schools, rosters, result, effects, seed, first_year, n_students, n_districts)
    return LongDistrict(
        records=records,
        schools=schools_frame(schools, enrolment),
        expected_growth=truth,
        school_effects=effects_frame,
        meta=meta,
        config_text=config_text,
        file_format=file_format,
        layout=layout,
    )


def _id_strings(numbers: np.ndarray) -> np.ndarray:
    """10-digit strings with leading zeros (vectorised through Arrow)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pc.utf8_lpad(pc.cast(pa.array(numbers), pa.string()), width=10, padding="0")
    return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)


def truth_frames(
    spec: LongSpec, schools: Schools, result: ScoreResult, effects: dict[str, np.ndarray], first_year: int,
    id_dtype: pd.CategoricalDtype,
) -> tuple[dict[int, pd.DataFrame], pd.DataFrame]:  # fmt: skip
    """truth/expected_growth_<year>.csv frames and truth/school_effects.csv."""
    subject_dtype = _dtype(spec.subjects)
    growth: dict[int, pd.DataFrame] = {}
    for year, pairs in result.truth.items():
        pairs = pairs.sort_values(["subject", "student"], kind="stable")
        growth[first_year + year] = pd.DataFrame(
            {
                "student_id": _categorical(pairs["student"].to_numpy(), id_dtype),
                "subject": _categorical(pairs["subject"].to_numpy(), subject_dtype),
                "prior_score": pairs["prior_score"].to_numpy().astype(np.int32),
                "expected_score": pairs["expected_score"].to_numpy(),
                "expected_growth": pairs["expected_score"].to_numpy() - pairs["prior_score"].to_numpy(),
            }
        )
    rows = []
    years = result.context.shape[0]
    order = np.argsort(schools.code.astype(np.int64))
    for year in range(1, years):
        for subject in spec.subjects:
            peer = peer_effects(spec, subject, result.context[year])
            rows.append(
                pd.DataFrame(
                    {
                        "school_id": schools.code[order].astype(str),
                        "school_year": first_year + year,
                        "subject": subject,
                        "effect": effects[subject][order],
                        "peer_effect": peer[order],
                        "effect_with_peers": effects[subject][order] + peer[order],
                    }
                )
            )
    return growth, pd.concat(rows, ignore_index=True)


def truth_meta(
    spec: LongSpec, schools: Schools, rosters: Rosters, result: ScoreResult, effects: dict[str, np.ndarray],
    seed: int, first_year: int, n_students: int, n_districts: int,
) -> dict:  # fmt: skip
    """truth/truth.json: settings, scale, noise, coefficients and the yearly counts."""
    counts = {}
    for year in range(rosters.grade.shape[0]):
        counts[str(first_year + year)] = {**rosters.counts[year], **result.counts[year]}
    return {
        "version": VERSION,
        "seed": seed,
        "n_students": n_students,
        "n_districts": n_districts,
        "n_schools": len(schools),
        "years": [first_year + y for y in range(rosters.grade.shape[0])],
        "academic_years": [academic_year(first_year + y) for y in range(rosters.grade.shape[0])],
        "grades": list(spec.grades),
        "subjects": list(spec.subjects),
        "scale": list(spec.scale),
        "vertical": spec.vertical,
        "s": spec.s,
        "grade_means": dict(zip(spec.grades, spec.grade_means, strict=True)),
        "cuts": {g: list(spec.cuts(i)) for i, g in enumerate(spec.grades)},
        "noise_sd": dict.fromkeys(spec.subjects, spec.noise_sd),
        "noise_distribution": (
            f"additive, independent of every column; normal truncated at +-{TRUNCATION_Z} sigma "
            f"(sigma = noise_sd / {truncated_sd_factor(TRUNCATION_Z):.5f}), mean 0, SD = noise_sd; "
            "score = round(expected_score + noise)"
        ),
        "truncation_z": TRUNCATION_Z,
        "noise_bound": spec.noise_bound,
        "smooth_bound": {
            "interval": [spec.scale[0] + spec.noise_bound, spec.scale[1] - spec.noise_bound],
            "knees": list(spec.knees),
        },
        "coefficients": {
            subject: {"units": "s (within-grade SD) unless noted", **asdict(spec.coefficients[subject])}
            for subject in spec.subjects
        },
        "engagement_terms": {
            "login_centre": LOGIN_CENTRE,
            "neutral_when_no_prior_record": NEUTRAL_ENGAGEMENT,
        },
        "first_score_model": {
            sub: asdict(FIRST_SCORE.get(sub, DEFAULT_FIRST_SCORE)) for sub in spec.subjects
        },
        "dynamics": {
            "p_leave": P_LEAVE,
            "p_repeat": P_REPEAT,
            "p_skip": P_SKIP,
            "p_school_change": P_SCHOOL_CHANGE,
            "p_econ_redraw": P_ECON_REDRAW,
            "p_el_reclassify": P_EL_RECLASSIFY,
            "p_untested_all": P_UNTESTED_ALL,
            "p_untested_subject": P_UNTESTED_SUBJECT,
        },
        "school_effect_sd": {sub: float(effects[sub].std()) for sub in spec.subjects},
        "school_effect_r2_design": SCHOOL_EFFECT_R2,
        "peer_effect_sd": {
            sub: float(np.std(peer_effects(spec, sub, result.context[1:].ravel()))) for sub in spec.subjects
        },
        "counts": counts,
    }


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _arrow_table(frame: pd.DataFrame, cache: dict[int, Any]) -> Any:
    """An Arrow table of plain columns: categoricals as strings, nullable integers with nulls."""
    import pyarrow as pa

    arrays = []
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            cats = column.cat.categories
            key = id(cats)
            if key not in cache:
                cache[key] = (cats, pa.array(cats.to_numpy(dtype=object), type=pa.string()))
            codes = column.cat.codes.to_numpy()
            arrays.append(cache[key][1].take(pa.array(codes, mask=codes < 0)))
        elif pd.api.types.is_string_dtype(column.dtype):
            arrays.append(pa.array(column.to_numpy(dtype=object), type=pa.string(), from_pandas=True))
        elif isinstance(column.dtype, pd.api.extensions.ExtensionDtype):  # nullable integers
            values = column.array
            dense = values.to_numpy(dtype=column.dtype.numpy_dtype, na_value=0)
            arrays.append(pa.array(dense, mask=np.asarray(values.isna())))
        else:
            arrays.append(pa.array(column.to_numpy()))
    return pa.Table.from_arrays(arrays, names=list(frame.columns))


def write_frame(
    frame: pd.DataFrame, path: Path, cache: dict[int, Any] | None = None, chunk: int = 500_000
) -> None:
    """CSV (unquoted, like vendor exports) or Parquet by extension, in chunks to stay memory-lean."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    cache = {} if cache is None else cache
    first = _arrow_table(frame.iloc[:0], cache)
    if path.suffix == ".parquet":
        writer: Any = pq.ParquetWriter(path, first.schema, compression="zstd")
    else:
        options = pacsv.WriteOptions(quoting_style="none", quoting_header="none")
        writer = pacsv.CSVWriter(path, first.schema, write_options=options)
    with writer:
        for start in range(0, len(frame), chunk):
            writer.write_table(_arrow_table(frame.iloc[start : start + chunk], cache))


GENERATED_PATTERNS = ("assessments_*.csv", "assessments_*.parquet", "students_*.csv", "students_*.parquet")


def write_long_district(district: LongDistrict, out_dir: Path | str, progress: bool = False) -> None:
    """Write district.toml, schools.csv, one records file per year and truth/ (expected growth per
    target year, school effects, truth.json). Files are written to a temporary folder next to
    out_dir and moved into place with os.replace; record and truth files of an earlier run that
    this district does not have are removed, so the config's glob sees exactly this district."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    cache: dict[int, Any] = {}
    total = len(district.records) + len(district.expected_growth) + 2
    try:
        (tmp / "truth").mkdir()
        with _steps(total, progress) as advance:
            (tmp / "district.toml").write_text(district.config_text, encoding="utf-8")
            write_frame(district.schools, tmp / "schools.csv", cache)
            advance("config and schools")
            for year, frame in district.records.items():
                write_frame(frame, tmp / district.record_file(year), cache)
                advance(f"records {year}")
            for year, frame in district.expected_growth.items():
                write_frame(frame, tmp / "truth" / f"expected_growth_{year}.csv", cache)
                advance(f"truth {year}")
            write_frame(district.school_effects, tmp / "truth" / "school_effects.csv", cache)
            (tmp / "truth" / "truth.json").write_text(json.dumps(district.meta, indent=2) + "\n")
            advance("truth files")
        (out_dir / "truth").mkdir(parents=True, exist_ok=True)
        written = {p.relative_to(tmp) for p in tmp.rglob("*") if p.is_file()}
        for rel in sorted(written):
            os.replace(tmp / rel, out_dir / rel)
        stale = [p for pattern in GENERATED_PATTERNS for p in out_dir.glob(pattern)]
        stale += list((out_dir / "truth").glob("expected_growth_*.csv"))
        for path in stale:
            if path.relative_to(out_dir) not in written:
                path.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Reading back: the student-year table of an export (for realism, learnability and tests)
# --------------------------------------------------------------------------------------------


def read_records(folder: Path | str) -> dict[int, pd.DataFrame]:
    """The records files of a written district as they are on disk (text columns as strings)."""
    folder = Path(folder)
    frames = {}
    text = {c: str for c in ("LEAName", "SchoolCode", "SchoolName", "AcademicYear", "StudentIdentifier",
                             "GradeLevelWhenAssessed", "ParentEducationLevel")}  # fmt: skip
    for path in sorted(folder.glob("assessments_*.*")) + sorted(folder.glob("students_*.*")):
        year = int(re.search(r"_(\d{4})\.", path.name).group(1))  # type: ignore[union-attr]
        if path.suffix == ".parquet":
            frames[year] = pd.read_parquet(path)
        else:
            frames[year] = pd.read_csv(path, dtype=text, keep_default_na=False, na_values=[""])
    return frames


def read_long_district(folder: Path | str) -> LongDistrict:
    """A written district read back from its files only (records, schools, truth, config), so every
    check in this module can run on exactly what a consumer sees."""
    folder = Path(folder)
    records = read_records(folder)
    layout = "long" if any(folder.glob("assessments_*.*")) else "wide"
    file_format = "parquet" if any(folder.glob("*_*.parquet")) else "csv"
    truth = {}
    for path in sorted((folder / "truth").glob("expected_growth_*.csv")):
        year = int(re.search(r"_(\d{4})\.csv$", path.name).group(1))  # type: ignore[union-attr]
        truth[year] = pd.read_csv(path, dtype={"student_id": str, "subject": str})
    return LongDistrict(
        records=records,
        schools=pd.read_csv(folder / "schools.csv", dtype={"SchoolCode": str, "SchoolName": str}),
        expected_growth=truth,
        school_effects=pd.read_csv(folder / "truth" / "school_effects.csv", dtype={"school_id": str}),
        meta=json.loads((folder / "truth" / "truth.json").read_text()),
        config_text=(folder / "district.toml").read_text(encoding="utf-8"),
        file_format=file_format,
        layout=layout,
    )


def student_years(district: LongDistrict) -> pd.DataFrame:
    """One row per student-year with contract names (0/1 flags, grade index, score_<subject>),
    rebuilt from the export frames only."""
    spec_subjects = list(district.meta["subjects"])
    grades = list(district.meta["grades"])
    parts = []
    for year, frame in sorted(district.records.items()):
        if district.layout == "long":
            ids = frame["StudentIdentifier"].astype(str).to_numpy()
            first = ~pd.Series(ids).duplicated().to_numpy()
            base = frame.loc[first, list(STUDENT_COLUMNS)].reset_index(drop=True)
            key = pd.Index(ids[first])
            for subject in spec_subjects:
                code = SUBJECT_CODES.get(subject, subject.upper())
                mine = (frame["ContentArea"].astype(str) == code).to_numpy()
                series = pd.Series(frame["ScaleScore"].to_numpy(float)[mine], index=ids[mine])
                base[f"score_{subject}"] = series.reindex(key).to_numpy()
        else:
            base = frame[list(STUDENT_COLUMNS)].reset_index(drop=True)
            for subject in spec_subjects:
                prefix = SUBJECT_PREFIXES.get(subject, subject.title())
                base[f"score_{subject}"] = frame[f"{prefix}ScaleScore"].astype(float).to_numpy()
        out = pd.DataFrame(
            {
                "student_id": base["StudentIdentifier"].astype(str).to_numpy(),
                "school_year": year,
                "grade": pd.Index(grades).get_indexer(base["GradeLevelWhenAssessed"].astype(str)),
                "school_id": base["SchoolCode"].astype(str).to_numpy(),
                "female": (base["Sex"].astype(str) == "Female").to_numpy(float),
                "parental_education": base["ParentEducationLevel"].astype(str).astype(int).to_numpy() - 1,
                "commute_minutes": base["CommuteMinutes"].to_numpy(float),
                "days_absent": base["DaysAbsent"].to_numpy(float),
                "homework": base["HomeworkCompletionPct"].to_numpy(float),
                "activities": base["ExtracurricularActivities"].to_numpy(float),
                "logins": base["PlatformLoginsPerWeek"].to_numpy(float),
            }
        )
        for column, name in (
            ("EconomicDisadvantageStatus", "econ"),
            ("EnglishLearnerStatus", "english_learner"),
            ("IEPStatus", "special_education"),
            ("HomeInternetAccess", "home_internet"),
        ):
            out[name] = (base[column].astype(str) == FLAG_CODES[column][1]).to_numpy(float)
        for subject in spec_subjects:
            out[f"score_{subject}"] = base[f"score_{subject}"].to_numpy(float)
        parts.append(out)
    return pd.concat(parts, ignore_index=True)


def pair_table(panel: pd.DataFrame, spec: LongSpec, target_year: int) -> pd.DataFrame:
    """Target-year rows beside the same students' t-1 and t-2 rows (suffixes _p1, _p2)."""
    cur = panel[panel["school_year"] == target_year].reset_index(drop=True)
    out = cur.copy()
    for back, suffix in ((1, "_p1"), (2, "_p2")):
        prev = panel[panel["school_year"] == target_year - back].set_index("student_id")
        position = prev.index.get_indexer(cur["student_id"])
        found = position >= 0
        for column in ["grade", "school_id", "days_absent", "homework", "activities", "logins",
                       *[f"score_{s}" for s in spec.subjects]]:  # fmt: skip
            source = prev[column].to_numpy()
            if len(source) == 0:
                out[column + suffix] = np.full(len(cur), np.nan if source.dtype.kind in "fi" else None)
                continue
            values = source[np.maximum(position, 0)]
            if values.dtype.kind in "fi":
                values = np.where(found, values.astype(float), np.nan)
            else:
                values = np.where(found, values, None)
            out[column + suffix] = values
    return out


def inputs_from_pairs(
    pairs: pd.DataFrame, spec: LongSpec, subject: str, effects: pd.DataFrame, target_year: int
) -> GrowthInputs:
    """GrowthInputs for growth pairs (stored prior-year score) from exported values and the truth's
    school effects: the truth recomputed from the files."""
    eff = effects[(effects["school_year"] == target_year) & (effects["subject"] == subject)]
    eff = eff.set_index(eff["school_id"].astype(str))
    school = pairs["school_id"].astype(str)
    others = [s for s in spec.subjects if s != subject]
    prior_grade = pairs["grade_p1"].to_numpy(float).astype(np.int64)
    if others:
        z = np.vstack([spec.z(pairs[f"score_{o}_p1"].to_numpy(float), prior_grade) for o in others])
        with np.errstate(invalid="ignore"):
            n = (~np.isnan(z)).sum(axis=0)
            other = np.where(n > 0, np.nansum(z, axis=0) / np.maximum(n, 1), np.nan)
    else:
        other = np.full(len(pairs), np.nan)
    return GrowthInputs(
        grade=pairs["grade"].to_numpy(np.int64),
        prior_score=pairs[f"score_{subject}_p1"].to_numpy(float),
        prior_grade=prior_grade,
        years_since_prior=np.ones(len(pairs), dtype=np.int64),
        prior2_score=pairs[f"score_{subject}_p2"].to_numpy(float),
        prior2_grade=np.nan_to_num(pairs["grade_p2"].to_numpy(float)).astype(np.int64),
        other_prior_z=other,
        econ=pairs["econ"].to_numpy(float),
        english_learner=pairs["english_learner"].to_numpy(float),
        special_education=pairs["special_education"].to_numpy(float),
        female=pairs["female"].to_numpy(float),
        parental_education=pairs["parental_education"].to_numpy(float),
        home_internet=pairs["home_internet"].to_numpy(float),
        days_absent=pairs["days_absent_p1"].to_numpy(float),
        homework=pairs["homework_p1"].to_numpy(float),
        activities=pairs["activities_p1"].to_numpy(float),
        logins=pairs["logins_p1"].to_numpy(float),
        school_effect=eff["effect"].reindex(school).to_numpy(float),
        peer_effect=eff["peer_effect"].reindex(school).to_numpy(float),
    )


def spec_of(district: LongDistrict) -> LongSpec:
    meta = district.meta
    return make_spec(meta["grades"], meta["subjects"], tuple(meta["scale"]), meta["vertical"])


# --------------------------------------------------------------------------------------------
# Realism and learnability
# --------------------------------------------------------------------------------------------


def _realism_targets() -> dict[str, tuple[float, float, str]]:
    targets: dict[str, tuple[float, float, str]] = {}
    for t in ("math", "reading"):
        targets |= {
            f"corr_prior_current_{t}": (0.70, 0.85, f"within-grade corr(prior, current) {t}, pooled"),
            f"corr_prior_current_min_{t}": (0.70, 0.85, f"lowest within-grade corr(prior, current) {t}"),
            f"corr_prior_current_max_{t}": (0.70, 0.85, f"highest within-grade corr(prior, current) {t}"),
            f"sd_ratio_min_{t}": (0.85, 1.15, f"lowest within-grade SD of {t} / s (grade x year)"),
            f"sd_ratio_max_{t}": (0.85, 1.15, f"highest within-grade SD of {t} / s (grade x year)"),
            f"mean_offset_max_{t}": (0.0, 0.25, f"largest |grade x year mean - design mean| of {t} / s"),
            f"pct_proficient_{t}": (40.0, 65.0, f"% of {t} scores at Level 3 or above"),
            f"gap_econ_sd_{t}": (0.6, 0.8, f"econ. disadvantaged gap in current {t}, within-grade SD"),
            f"gap_el_sd_{t}": (0.8, 1.2, f"English learner gap in current {t}, within-grade SD"),
            f"gap_sped_sd_{t}": (0.8, 1.2, f"special education gap in current {t}, within-grade SD"),
            f"icc_growth_{t}": (0.03, 0.10, f"school share of {t} growth variance (ANOVA ICC, by school)"),
            f"school_effect_sd_ratio_{t}": (0.10, 0.16, f"SD of true school {t} effect / s"),
            f"school_effect_r2_{t}": (
                0.5,
                0.8,
                f"R^2 of school {t} effect on type, enrolment, budget/student",
            ),
            f"peer_to_effect_sd_{t}": (0.35, 0.65, f"SD of the {t} peer effect / SD of the school effect"),
            f"noise_sd_ratio_{t}": (0.97, 1.03, f"realised SD of {t} score - expected / documented noise SD"),
            f"unexplained_sd_ratio_{t}": (0.5, 1.2, f"SD of expected {t} not linear in priors / noise SD"),
        }
    return targets | {
        "absence_few_days_effect": (-0.05, 0.05, "growth effect of 1-5 vs 0 prior absences, units of s"),
        "absence_chronic_effect": (-0.8, -0.2, "growth effect of >18 vs 0 prior absences, units of s"),
        "missing_share": (0.015, 0.025, "share of student x subject x year scores not stored"),
        "repeat_rate": (0.007, 0.013, "repeaters / students who stay in the district, per year"),
        "skip_rate": (0.001, 0.003, "grade skippers / students who stay in the district, per year"),
        "school_change_rate": (0.02, 0.04, "within-level school changes / stayers not changing level"),
        "stayer_rate": (0.95, 0.975, "students below the top grade who stay in the district"),
        "movers_in_share": (0.02, 0.05, "movers-in (entering above the lowest grade) / enrolled"),
    }


REALISM_TARGETS = _realism_targets()


def growth_pairs_frame(district: LongDistrict, panel: pd.DataFrame | None = None) -> pd.DataFrame:
    """All truth pairs of every target year joined to the export: one row per student x subject x
    target year, with the target and prior rows' columns, the score and the truth."""
    spec = spec_of(district)
    panel = student_years(district) if panel is None else panel
    parts = []
    for year, truth in sorted(district.expected_growth.items()):
        pairs = pair_table(panel, spec, year)
        position = pd.Index(pairs["student_id"]).get_indexer(truth["student_id"].astype(str))
        rows = pairs.iloc[position].reset_index(drop=True)
        subject = truth["subject"].astype(str).to_numpy()
        rows["subject"] = subject
        rows["score"] = np.select(
            [subject == s for s in spec.subjects], [rows[f"score_{s}"] for s in spec.subjects], np.nan
        )
        rows["prior_score"] = truth["prior_score"].to_numpy(float)
        rows["expected_score"] = truth["expected_score"].to_numpy()
        parts.append(rows)
    return pd.concat(parts, ignore_index=True)


def realism_long_stats(district: LongDistrict) -> dict[str, float]:
    """Every statistic of REALISM_TARGETS for a district (from the export and the truth)."""
    spec = spec_of(district)
    panel = student_years(district)
    pairs = growth_pairs_frame(district, panel)
    schools = district.schools.set_index("SchoolCode")
    effects = district.school_effects
    stats: dict[str, float] = {}
    means = np.asarray(spec.grade_means)
    normal = (pairs["grade"] - pairs["grade_p1"]) == 1
    for t in spec.subjects:
        col = f"score_{t}"
        scored = panel[~panel[col].isna()]
        cell = scored.groupby(["school_year", "grade"])[col]
        sd = cell.std(ddof=0) / spec.s
        offset = (cell.mean() - means[sd.index.get_level_values("grade")]).abs() / spec.s
        z = (scored[col] - cell.transform("mean")) / cell.transform("std", ddof=0)
        mine = pairs[(pairs["subject"] == t) & normal]
        key = [mine["school_year"], mine["grade"]]
        cur = mine["score"] - mine.groupby(key)["score"].transform("mean")
        pri = mine["prior_score"] - mine.groupby(key)["prior_score"].transform("mean")
        corr_cells = mine.groupby(key)[["score", "prior_score"]].corr().xs("score", level=2)["prior_score"]
        growth = (mine["score"] - mine["prior_score"]).to_numpy()
        growth = growth - pd.Series(growth).groupby([k.to_numpy() for k in key]).transform("mean").to_numpy()
        groups = mine["school_id"].astype(str)  # the target-year school, pooled over target years
        eff = effects[effects["subject"] == t]
        per_school = eff.groupby("school_id")["effect"].first()  # constant over the years
        design = schools.reindex(per_school.index)
        x = np.column_stack(
            [
                np.ones(len(design)),
                (design["Governance"] == "Charter").to_numpy(float),
                design["Enrollment"].to_numpy(float),
                (design["TotalBudget"] / design["Enrollment"]).to_numpy(float),
            ]
        )
        all_t = pairs[pairs["subject"] == t]
        resid = (all_t["score"] - all_t["expected_score"]).to_numpy()
        prior_x = np.column_stack(
            [np.ones(len(mine)), mine["prior_score"], pd.get_dummies(mine["grade"]).to_numpy(float)]
        )
        stats |= {
            f"corr_prior_current_{t}": float(np.corrcoef(cur, pri)[0, 1]),
            f"corr_prior_current_min_{t}": float(corr_cells.min()),
            f"corr_prior_current_max_{t}": float(corr_cells.max()),
            f"sd_ratio_min_{t}": float(sd.min()),
            f"sd_ratio_max_{t}": float(sd.max()),
            f"mean_offset_max_{t}": float(offset.max()),
            f"pct_proficient_{t}": float(
                (scored[col].to_numpy() >= spec.cut_table()[scored["grade"].to_numpy(), 1]).mean() * 100
            ),
            f"gap_econ_sd_{t}": float(z[scored["econ"] == 0].mean() - z[scored["econ"] == 1].mean()),
            f"gap_el_sd_{t}": float(
                z[scored["english_learner"] == 0].mean() - z[scored["english_learner"] == 1].mean()
            ),
            f"gap_sped_sd_{t}": float(
                z[scored["special_education"] == 0].mean() - z[scored["special_education"] == 1].mean()
            ),
            f"icc_growth_{t}": _icc(growth, groups.to_numpy()),
            f"school_effect_sd_ratio_{t}": float(per_school.std(ddof=0) / spec.s),
            f"school_effect_r2_{t}": float(
                1 - _ols(x, per_school.to_numpy())[1].var() / per_school.var(ddof=0)
            ),
            f"peer_to_effect_sd_{t}": float(eff["peer_effect"].std(ddof=0) / per_school.std(ddof=0)),
            f"noise_sd_ratio_{t}": float(resid.std() / spec.noise_sd),
            f"unexplained_sd_ratio_{t}": float(
                _ols(prior_x, mine["expected_score"].to_numpy())[1].std() / spec.noise_sd
            ),
        }
    stats |= absence_effects_long(pairs, spec)
    counts = district.meta["counts"]
    first = district.meta["years"][0]
    later = [c for y, c in counts.items() if int(y) > first]
    previous = [counts[str(int(y) - 1)] for y in counts if int(y) > first]
    base = sum(p["enrolled"] for p in previous) - sum(c["graduates"] for c in later)  # could continue
    stayers = base - sum(c["leavers"] for c in later)
    within_level = stayers - sum(c["level_transitions"] for c in later)
    total_scores = sum(c["enrolled"] for c in counts.values()) * len(spec.subjects)
    stats |= {
        "missing_share": sum(c["untested_scores"] for c in counts.values()) / total_scores,
        "repeat_rate": sum(c["repeaters"] for c in later) / stayers,
        "skip_rate": sum(c["skippers"] for c in later) / stayers,
        "school_change_rate": sum(c["school_changes"] for c in later) / within_level,
        "stayer_rate": stayers / base,
        "movers_in_share": sum(c["movers_in"] for c in later) / sum(c["enrolled"] for c in later),
    }
    return stats


def absence_effects_long(pairs: pd.DataFrame, spec: LongSpec) -> dict[str, float]:
    """OLS of growth (both subjects, units of s) on prior-year absence bands with prior-score,
    grade and demographic controls: the cost of 1-5 and of more than 18 days vs none."""
    mine = pairs[(pairs["grade"] - pairs["grade_p1"]) == 1]
    days = mine["days_absent_p1"].to_numpy()
    growth = (mine["score"] - mine["prior_score"]).to_numpy() / spec.s
    x = np.column_stack(
        [
            np.ones(len(mine)),
            mine["prior_score"].to_numpy() / spec.s,
            pd.get_dummies(mine["grade"].astype(str) + mine["subject"]).to_numpy(float),
            mine["econ"],
            mine["english_learner"],
            mine["special_education"],
            ((days >= 1) & (days <= 5)).astype(float),
            ((days > 5) & (days <= 18)).astype(float),
            (days > 18).astype(float),
        ]
    )
    beta, _ = _ols(x, growth)
    return {"absence_few_days_effect": float(beta[-3]), "absence_chronic_effect": float(beta[-1])}


def realism_markdown(
    stats: dict[str, float], targets: Mapping[str, tuple[float, float, str]] | None = None
) -> str:
    """The realism table: statistic | meaning | target range | value."""
    targets = REALISM_TARGETS if targets is None else targets
    lines = ["| statistic | meaning | target range | value |", "|---|---|---|---|"]
    for name, (low, high, meaning) in targets.items():
        if name in stats:
            lines.append(f"| `{name}` | {meaning} | {low:g} to {high:g} | {stats[name]:.3f} |")
    return "\n".join(lines)


def learnability_features(district: LongDistrict, pairs: pd.DataFrame, panel: pd.DataFrame) -> pd.DataFrame:
    """Every student column a model may use, the school's attributes and its prior-year aggregates
    (mean within-grade z, mean score, shares, mean growth), never the school's identity."""
    spec = spec_of(district)
    schools = district.schools.set_index("SchoolCode")
    x = pd.DataFrame(
        {
            "grade": pairs["grade"],
            "prior_grade": pairs["grade_p1"],
            "female": pairs["female"],
            "econ": pairs["econ"],
            "english_learner": pairs["english_learner"],
            "special_education": pairs["special_education"],
            "parental_education": pairs["parental_education"],
            "home_internet": pairs["home_internet"],
            "commute_minutes": pairs["commute_minutes"],
            "prior_days_absent": pairs["days_absent_p1"],
            "prior_homework": pairs["homework_p1"],
            "prior_activities": pairs["activities_p1"],
            "prior_logins": pairs["logins_p1"],
            "school_changed": (pairs["school_id"] != pairs["school_id_p1"]).astype(float),
        }
    )
    for s in spec.subjects:
        x[f"prior_{s}"] = pairs[f"score_{s}_p1"]
        x[f"prior2_{s}"] = pairs[f"score_{s}_p2"]
    x["own_prior"] = pairs["prior_score"]
    school = pairs["school_id"].astype(str)
    x["school_charter"] = (schools["Governance"] == "Charter").reindex(school).to_numpy(float)
    x["school_enrolment"] = schools["Enrollment"].reindex(school).to_numpy(float)
    x["school_per_student"] = (schools["TotalBudget"] / schools["Enrollment"]).reindex(school).to_numpy(float)
    level = schools["SchoolLevel"].map({n: i for i, n in enumerate(SCHOOL_LEVELS)})
    x["school_level"] = level.reindex(school).to_numpy(float)
    agg = school_year_aggregates(panel, spec)
    key = pd.MultiIndex.from_arrays([school, pairs["school_year"].to_numpy() - 1])
    for column in agg.columns:
        x[f"school_prior_{column}"] = agg[column].reindex(key).to_numpy(float)
    return x.astype(float)


def school_year_aggregates(panel: pd.DataFrame, spec: LongSpec) -> pd.DataFrame:
    """Per (school, year): mean within-grade z per subject and their mean, shares of student groups,
    mean absences, mean growth in z (current minus prior-year z of the school's students) and a simple
    value-added (mean residual of z on last year's z, district-wide OLS of that year)."""
    frame = panel.copy()
    zcols = []
    for s in spec.subjects:
        col = f"score_{s}"
        cell = frame.groupby(["school_year", "grade"])[col]
        frame[f"z_{s}"] = (frame[col] - cell.transform("mean")) / cell.transform("std", ddof=0)
        zcols.append(f"z_{s}")
    prev = frame.set_index(["student_id", "school_year"])[zcols]
    key = pd.MultiIndex.from_arrays([frame["student_id"], frame["school_year"] - 1])
    for s in spec.subjects:
        before = prev[f"z_{s}"].reindex(key).to_numpy()
        frame[f"zgrowth_{s}"] = frame[f"z_{s}"].to_numpy() - before
        # A simple value-added of that year: z minus its district-wide OLS prediction from last year's z.
        frame[f"va_{s}"] = np.nan
        for _, rows in frame.groupby("school_year").groups.items():
            rows = frame.index.get_indexer(rows)
            ok = rows[~np.isnan(before[rows]) & ~frame[f"z_{s}"].iloc[rows].isna().to_numpy()]
            if len(ok) > 10:
                x = np.column_stack([np.ones(len(ok)), before[ok]])
                frame.iloc[ok, frame.columns.get_loc(f"va_{s}")] = _ols(x, frame[f"z_{s}"].to_numpy()[ok])[1]
    columns = zcols + [f"zgrowth_{s}" for s in spec.subjects] + [f"va_{s}" for s in spec.subjects] + [
        "econ", "english_learner", "special_education", "days_absent"]  # fmt: skip
    agg = frame.groupby(["school_id", "school_year"])[columns].mean()
    agg["mean_z"] = agg[zcols].mean(axis=1)
    agg["students"] = frame.groupby(["school_id", "school_year"]).size()
    return agg


def learnability_long(district: LongDistrict, seed: int = 0) -> dict[str, float]:
    """Test RMSE on the latest target year, trained on the earlier ones, of (a) OLS on prior scores
    and grade, (b) gradient boosting on every column plus school attributes and the school's
    prior-year aggregates, (c) the noise floor RMSE(score - expected)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    spec = spec_of(district)
    panel = student_years(district)
    pairs = growth_pairs_frame(district, panel)
    x = learnability_features(district, pairs, panel)
    last = max(district.expected_growth)
    test = (pairs["school_year"] == last).to_numpy()
    out: dict[str, float] = {}
    for t in spec.subjects:
        mine = (pairs["subject"] == t).to_numpy()
        y = (pairs["score"] - pairs["prior_score"]).to_numpy()
        floor = (pairs["score"] - pairs["expected_score"]).to_numpy()
        others = [f"prior_{s}" for s in spec.subjects if s != t]
        prior_x = np.column_stack(
            [np.ones(len(pairs)), x["own_prior"], *(x[o].fillna(x["own_prior"]) for o in others),
             pd.get_dummies(pairs["grade"]).to_numpy(float)]
        )  # fmt: skip
        train, held = mine & ~test, mine & test
        beta, _ = _ols(prior_x[train], y[train])
        hgb = HistGradientBoostingRegressor(
            max_iter=3000,
            learning_rate=0.05,
            max_leaf_nodes=63,
            early_stopping=True,
            n_iter_no_change=30,
            random_state=seed,
        )
        hgb.fit(x[train], y[train])
        out |= {
            f"rmse_ols_priors_{t}": float(np.sqrt(np.mean((y[held] - prior_x[held] @ beta) ** 2))),
            f"rmse_hgb_all_{t}": float(np.sqrt(np.mean((y[held] - hgb.predict(x[held])) ** 2))),
            f"rmse_noise_floor_{t}": float(np.sqrt(np.mean(floor[held] ** 2))),
        }
        out[f"hgb_to_floor_{t}"] = out[f"rmse_hgb_all_{t}"] / out[f"rmse_noise_floor_{t}"]
    return out


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a multi-year synthetic district in a vendor format.")
    parser.add_argument("--students", type=int, default=150_000)
    parser.add_argument("--years", type=int, default=4)
    parser.add_argument("--first-year", type=int, default=2022)
    parser.add_argument("--grades", default="03-10", help="first-last grade, e.g. 03-10 or 3-8")
    parser.add_argument("--scale", default="150,950")
    parser.add_argument("--not-vertical", action="store_true")
    parser.add_argument("--districts", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv")
    parser.add_argument("--layout", choices=["long", "wide"], default="long")
    parser.add_argument("--out", type=Path, default=Path("data/long_district"))
    parser.add_argument("--realism", action="store_true", help="also print the realism table")
    args = parser.parse_args(argv)
    first, last = (int(g) for g in args.grades.split("-"))
    lo, hi = (int(v) for v in args.scale.split(","))
    start = time.perf_counter()
    district = generate_long_district(
        n_students=args.students, years=args.years, first_year=args.first_year,
        grades=tuple(range(first, last + 1)), scale=(lo, hi), vertical=not args.not_vertical,
        n_districts=args.districts, seed=args.seed, file_format=args.format, layout=args.layout,
        progress=True,
    )  # fmt: skip
    generated = time.perf_counter()
    write_long_district(district, args.out, progress=True)
    done = time.perf_counter()
    rows = sum(len(f) for f in district.records.values())
    print(
        f"{rows:,} record rows: generated in {generated - start:.1f} s, written in {done - generated:.1f} s"
    )
    if args.realism:
        print(realism_markdown(realism_long_stats(district)))


if __name__ == "__main__":
    main()
