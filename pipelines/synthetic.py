"""A realistic synthetic district with a known truth, so the growth model can be checked
against the noise floor instead of against itself.

The generative story (docs/data.md has the full table):

* schools: high schools (grades 9th-12th), District and Charter (charters smaller), with a
  per-student budget spread over the standard spending bins and a true value-added that is
  partly explained by type, size and per-student budget and partly idiosyncratic;
* students: demographics, last year's behaviour (absences, homework, logins, activities)
  and last year's scores, all known before the target year starts;
* expected growth: a deterministic function of those observed columns plus the school's
  value-added, bent by a smooth ceiling so every score stays within 0-100;
* target-year score = prior + expected growth + independent, additive, truncated-normal noise.

Everything is vectorised numpy, driven by one seed, so a district is reproducible.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import expit, ndtr, ndtri

from features.contract import (
    GENDERS,
    GRADES,
    PARENTAL_EDUCATION,
    SCHOOL_COLUMNS,
    SCHOOL_DAYS_PER_YEAR,
    SCHOOL_TYPES,
    STUDENT_COLUMNS,
)

VERSION = "1.0.0"
SUBJECTS: tuple[str, ...] = ("math", "reading")

# Noise on each growth target: N(0, sigma) truncated at +-TRUNCATION_Z * sigma, with sigma set
# so that the SD of the truncated distribution is exactly NOISE_SD points.
NOISE_SD: dict[str, float] = {"math": 3.5, "reading": 3.5}
TRUNCATION_Z = 2.5

# Schools.
STUDENTS_PER_SCHOOL = 2_600
MIN_SCHOOLS = 8
MIN_STUDENTS = 200
CHARTER_SHARE = 0.35
CHARTER_SIZE_RANGE = (400.0, 1_900.0)
DISTRICT_SIZE_RANGE = (2_000.0, 4_700.0)
# Per-student budget ranges, one inside each standard spending bin (0,585], (585,630], (630,645], (645,680].
SPENDING_RANGES: tuple[tuple[float, float], ...] = (
    (571.0, 584.0),
    (586.0, 629.0),
    (631.0, 644.0),
    (646.0, 679.0),
)
SPENDING_SHARES: tuple[float, ...] = (0.2, 0.35, 0.2, 0.25)

# True school value-added, points: total SD and idiosyncratic SD (the model cannot see the latter).
SCHOOL_EFFECT_SD: dict[str, float] = {"math": 1.0, "reading": 0.95}
SCHOOL_IDIOSYNCRATIC_SD: dict[str, float] = {"math": 0.55, "reading": 0.5}
# Direction of the explained part on (charter, size, per-student budget), standardised school-level.
SCHOOL_EFFECT_WEIGHTS: dict[str, tuple[float, float, float]] = {
    "math": (0.8, -0.5, 0.25),
    "reading": (0.6, -0.5, 0.1),
}
IDIOSYNCRATIC_CORRELATION = 0.5

# Smooth bounds: identity between the knees, tanh-compressed beyond them.
PRIOR_KNEES = (40.0, 85.0)
CURRENT_KNEES = (35.0, 80.0)
PRIOR_CENTRE = 74.0


@dataclass(frozen=True)
class GrowthCoefficients:
    """Effect of each observed column on a subject's expected growth, in score points."""

    base: float
    own_prior: float  # per point of the same subject's prior above PRIOR_CENTRE (regression to the mean)
    other_prior: float  # per point of the other subject's prior above PRIOR_CENTRE
    econ: float
    english_learner: float
    special_education: float
    absence_max: float  # penalty approached by very long absence
    absence_scale: float  # days; penalty = max * (1 - exp(-(days / scale) ** 2))
    absence_extra_econ: float  # relative increase of the absence penalty
    absence_extra_el: float
    homework: float  # amplitude of tanh((pct - 75) / 15)
    logins: float  # per log(1 + logins), halved without home internet
    internet: float
    parental_education: float  # per level above high school
    extracurricular: float  # per activity up to 3; each above 4 costs 0.8 of it
    school_context: float  # per point of the school's mean prior score (both subjects) above PRIOR_CENTRE
    female: float
    grade: tuple[float, float, float, float]


GROWTH: dict[str, GrowthCoefficients] = {
    "math": GrowthCoefficients(
        base=1.0,
        own_prior=-0.42,
        other_prior=0.06,
        econ=-0.5,
        english_learner=-1.2,
        special_education=-1.8,
        absence_max=-4.0,
        absence_scale=20.0,
        absence_extra_econ=0.6,
        absence_extra_el=0.6,
        homework=1.5,
        logins=0.8,
        internet=0.6,
        parental_education=0.35,
        extracurricular=0.4,
        school_context=0.38,
        female=-0.3,
        grade=(0.8, 0.3, 0.0, -0.5),
    ),
    "reading": GrowthCoefficients(
        base=1.0,
        own_prior=-0.42,
        other_prior=0.06,
        econ=-0.5,
        english_learner=-2.0,
        special_education=-1.6,
        absence_max=-3.5,
        absence_scale=20.0,
        absence_extra_econ=0.6,
        absence_extra_el=0.6,
        homework=1.7,
        logins=0.7,
        internet=0.6,
        parental_education=0.5,
        extracurricular=0.3,
        school_context=0.40,
        female=0.5,
        grade=(0.6, 0.3, 0.0, -0.3),
    ),
}

FEMALE_FIRST_NAMES = (
    "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Nancy Lisa Betty Sandra "
    "Ashley Emily Donna Michelle Amanda Melissa Deborah Stephanie Rebecca Laura Sharon Cynthia Kathleen "
    "Amy Angela Anna Brenda Emma Olivia Sophia Isabella Mia Ava Chloe Grace Lily Maria Camila Valentina "
    "Aaliyah Zoe Priya Mei Yuna Fatima Amara"
).split()
MALE_FIRST_NAMES = (
    "James Robert John Michael David William Richard Joseph Thomas Charles Christopher Daniel Matthew "
    "Anthony Mark Donald Steven Paul Andrew Joshua Kevin Brian George Timothy Ronald Jason Edward Jeffrey "
    "Ryan Jacob Gary Nicholas Eric Jonathan Liam Noah Ethan Lucas Mason Logan Diego Mateo Santiago Omar "
    "Hiroshi Wei Arjun Kwame Malik Andre"
).split()
LAST_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark "
    "Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams "
    "Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Huang Chen Wang Kim Patel Shah Singh Cabrera "
    "Figueroa Wilkinson Holden Pena Bailey Griffin Ford Thomas Rodriguez Reed Cook Morgan Bell Murphy "
    "Rogers Cooper Richardson Cox Howard Ward Peterson Gray Ramos Watson Brooks Kelly Sanders Price Bennett "
    "Wood Barnes Ross Henderson Coleman Jenkins Perry Powell Long Patterson Hughes Washington Butler "
    "Simmons Foster Gonzales Bryant Alexander Russell Hayes Myers Ford Graham Sullivan Wallace Woods Cole"
).split()


@dataclass
class SyntheticDistrict:
    """A generated district: the two contract tables, the noise-free truth and the settings."""

    schools: pd.DataFrame
    students: pd.DataFrame
    truth: pd.DataFrame
    truth_schools: pd.DataFrame
    meta: dict


@dataclass(frozen=True)
class SchoolLatents:
    """Hidden school-level traits that shape who enrols (never growth itself)."""

    poverty: np.ndarray  # standard-normal index of the school's share of disadvantaged students
    english_learners: np.ndarray  # standard-normal index of its share of English learners
    intake: np.ndarray  # mean ability of the students it enrols (selection, neighbourhood), student SDs


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


def truncated_sd_factor(z: float = TRUNCATION_Z) -> float:
    """SD of a standard normal truncated at +-z; turns the documented SD into the normal's sigma."""
    phi = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    mass = math.erf(z / math.sqrt(2.0))
    return math.sqrt(1.0 - 2.0 * z * phi / mass)


def noise_bound(subject: str) -> float:
    """Largest possible |noise| for a subject; the expected current score keeps this far from 0 and 100."""
    return TRUNCATION_Z * NOISE_SD[subject] / truncated_sd_factor()


def soft_clip(x: np.ndarray, lo: float, hi: float, knee_lo: float, knee_hi: float) -> np.ndarray:
    """Identity between the knees and tanh-compressed beyond them (continuous slope), so the
    output always lies strictly inside (lo, hi) without the kink a hard clip would create."""
    out = np.array(x, dtype=float, copy=True)
    above = out > knee_hi
    out[above] = knee_hi + (hi - knee_hi) * np.tanh((out[above] - knee_hi) / (hi - knee_hi))
    below = out < knee_lo
    out[below] = knee_lo - (knee_lo - lo) * np.tanh((knee_lo - out[below]) / (knee_lo - lo))
    return out


def stratified_uniform(k: int, lo: float, hi: float, rng: np.random.Generator) -> np.ndarray:
    """k draws covering [lo, hi] evenly (one per stratum, shuffled): small districts still span it."""
    return lo + (hi - lo) * (rng.permutation(k) + rng.random(k)) / k


def stratified_normal(k: int, rng: np.random.Generator) -> np.ndarray:
    """k standard-normal draws, one per probability stratum: even a district of 8 schools gets
    the full spread of school traits, so its realism does not hinge on a lucky draw."""
    return ndtri(stratified_uniform(k, 0.0, 1.0, rng))


def orthogonal_normal(draws: np.ndarray, *others: np.ndarray) -> np.ndarray:
    """Draws made exactly uncorrelated with the given school traits and rescaled to SD 1, so
    the designed links between school traits hold in every district, not just on average."""
    x = np.column_stack([np.ones(len(draws)), *others]).astype(float)
    resid = draws - x @ np.linalg.lstsq(x, draws, rcond=None)[0]
    return resid / resid.std()


def apportion(total: int, weights: np.ndarray, minimum: int = 0) -> np.ndarray:
    """Integer counts proportional to weights that sum exactly to total (largest remainder)."""
    base = np.full(len(weights), minimum, dtype=np.int64)
    exact = (total - base.sum()) * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - base.sum() - counts.sum()
    counts[np.argsort(-(exact - counts), kind="stable")[:short]] += 1
    return base + counts


def n_schools_for(n_students: int) -> int:
    """About one school per 2,600 students (55-60 for the default 150k), never fewer than 8."""
    return max(MIN_SCHOOLS, round(n_students / STUDENTS_PER_SCHOOL))


def school_names(k: int, rng: np.random.Generator) -> np.ndarray:
    """Unique names like "Huang High School"; two-word names only when surnames run out."""
    surnames = list(dict.fromkeys(LAST_NAMES))
    pool = [f"{s} High School" for s in surnames]
    if k > len(pool):
        pool += [f"{f} {s} High School" for f in FEMALE_FIRST_NAMES + MALE_FIRST_NAMES for s in surnames]
    return np.array(pool, dtype=object)[rng.choice(len(pool), size=k, replace=False)]


def student_names(female: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vectorised "First Last" names, first name drawn by gender."""
    last = np.array(LAST_NAMES, dtype=object)
    full = {
        sex: np.array([f"{f} {s}" for f in firsts for s in last], dtype=object)
        for sex, firsts in (("F", FEMALE_FIRST_NAMES), ("M", MALE_FIRST_NAMES))
    }
    first_f = rng.integers(len(FEMALE_FIRST_NAMES), size=len(female))
    first_m = rng.integers(len(MALE_FIRST_NAMES), size=len(female))
    surname = rng.integers(len(last), size=len(female))
    female_names = full["F"][first_f * len(last) + surname]
    return np.where(female, female_names, full["M"][first_m * len(last) + surname])


def truncated_noise(n: int, subject: str, rng: np.random.Generator) -> np.ndarray:
    """Additive growth noise: normal truncated at +-TRUNCATION_Z sigma by inverse CDF (no rejection loop)."""
    sigma = NOISE_SD[subject] / truncated_sd_factor()
    u = rng.uniform(ndtr(-TRUNCATION_Z), ndtr(TRUNCATION_Z), size=n)
    return sigma * ndtri(u)


# --------------------------------------------------------------------------------------------
# Schools
# --------------------------------------------------------------------------------------------


def make_schools(n_students: int, rng: np.random.Generator) -> tuple[pd.DataFrame, SchoolLatents]:
    """Schools table (sizes summing to n_students) plus the hidden enrolment traits.

    Sizes and per-student budgets are stratified so every standard size and spending bin is
    populated; spending leans towards high-poverty district schools (as Title I funding does)."""
    k = n_schools_for(n_students)
    n_charter = max(2, round(CHARTER_SHARE * k))
    charter = np.zeros(k, dtype=bool)
    charter[rng.permutation(k)[:n_charter]] = True
    raw = np.empty(k)
    raw[charter] = stratified_uniform(n_charter, *CHARTER_SIZE_RANGE, rng)
    raw[~charter] = stratified_uniform(k - n_charter, *DISTRICT_SIZE_RANGE, rng)
    sizes = apportion(n_students, raw, minimum=1)

    poverty = orthogonal_normal(stratified_normal(k, rng), charter, sizes)
    english = 0.5 * poverty + math.sqrt(0.75) * orthogonal_normal(stratified_normal(k, rng), poverty)
    noise = orthogonal_normal(stratified_normal(k, rng), charter, poverty)
    intake = -0.25 * poverty + 0.3 * (charter - charter.mean()) + 0.2 * noise

    per_bin = apportion(k, np.array(SPENDING_SHARES), minimum=1)
    spending_rank = np.argsort(0.7 * poverty - 0.8 * charter + rng.standard_normal(k), kind="stable")
    bin_of_rank = np.repeat(np.arange(len(per_bin)), per_bin)
    lo = np.array([r[0] for r in SPENDING_RANGES])[bin_of_rank]
    hi = np.array([r[1] for r in SPENDING_RANGES])[bin_of_rank]
    per_student = np.empty(k)
    per_student[spending_rank] = lo + (hi - lo) * rng.random(k)
    budget = np.round(per_student * sizes).astype(float)

    schools = pd.DataFrame(
        {
            "school_name": school_names(k, rng),
            "type": np.where(charter, SCHOOL_TYPES[1], SCHOOL_TYPES[0]),
            "size": sizes,
            "budget": budget,
            "school_id": np.arange(k, dtype=np.int64),
        }
    )
    schools["school_name"] = schools["school_name"].astype(str)
    order = ["school_id", *(c.name for c in SCHOOL_COLUMNS if c.name != "school_id")]
    return schools[order], SchoolLatents(poverty=poverty, english_learners=english, intake=intake)


def school_design(schools: pd.DataFrame) -> np.ndarray:
    """Standardised (charter, size, per-student budget): what the explained value-added rests on."""
    x = np.column_stack(
        [
            (schools["type"] == SCHOOL_TYPES[1]).to_numpy(float),
            schools["size"].to_numpy(float),
            (schools["budget"] / schools["size"]).to_numpy(float),
        ]
    )
    sd = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def unit_sd(x: np.ndarray) -> np.ndarray:
    """Centre and scale to SD 1 (population), so realised spreads equal the documented ones."""
    centred = x - x.mean()
    sd = centred.std()
    return centred / sd if sd > 0 else centred


def make_school_effects(
    schools: pd.DataFrame, latents: SchoolLatents, rng: np.random.Generator
) -> pd.DataFrame:
    """True value-added per school: an explained part linear in type/size/budget plus an
    idiosyncratic part made orthogonal to them (so its realised SD and R^2 are exact) and to
    the school's intake (so a small district's school variance does not hinge on chance overlap)."""
    design = school_design(schools)
    with_const = np.column_stack([np.ones(len(schools)), design, latents.poverty, latents.intake])
    shared = rng.standard_normal(len(schools))
    out = pd.DataFrame({"school_name": schools["school_name"]})
    for subject in SUBJECTS:
        own = rng.standard_normal(len(schools))
        raw = IDIOSYNCRATIC_CORRELATION**0.5 * shared + (1 - IDIOSYNCRATIC_CORRELATION) ** 0.5 * own
        resid = raw - with_const @ np.linalg.lstsq(with_const, raw, rcond=None)[0]
        idio = SCHOOL_IDIOSYNCRATIC_SD[subject] * unit_sd(resid)
        explained_sd = math.sqrt(SCHOOL_EFFECT_SD[subject] ** 2 - SCHOOL_IDIOSYNCRATIC_SD[subject] ** 2)
        explained = explained_sd * unit_sd(design @ np.array(SCHOOL_EFFECT_WEIGHTS[subject]))
        out[f"{subject}_effect"] = explained + idio
        out[f"{subject}_effect_explained"] = explained
        out[f"{subject}_effect_idiosyncratic"] = idio
    return out


# --------------------------------------------------------------------------------------------
# Students
# --------------------------------------------------------------------------------------------


def make_students(
    schools: pd.DataFrame, latents: SchoolLatents, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray]:
    """Demographics and last year's behaviour, plus a hidden ability that shapes only last
    year's record (scores, absences, homework, logins); it feeds the prior scores, never growth."""
    sizes = schools["size"].to_numpy()
    school = np.repeat(np.arange(len(schools)), sizes)
    n = len(school)
    charter = (schools["type"] == SCHOOL_TYPES[1]).to_numpy()[school]
    female = rng.random(n) < 0.5
    grade = rng.choice(len(GRADES), size=n, p=[0.27, 0.26, 0.24, 0.23])
    ability = latents.intake[school] + rng.standard_normal(n)
    econ = rng.random(n) < expit(-0.2 + 1.0 * latents.poverty[school])
    el = rng.random(n) < expit(-2.7 + 0.9 * econ + 0.7 * latents.english_learners[school])
    sped = rng.random(n) < expit(-2.0 + 0.3 * econ)
    parent = np.searchsorted(
        np.array([-1.7, -0.6, 0.2, 0.95]), -0.6 * econ - 0.4 * el + 0.3 * ability + rng.standard_normal(n)
    )
    internet = rng.random(n) < expit(2.6 - 1.3 * econ - 0.5 * el + 0.3 * (parent - 1))
    mean_absent = 7.0 * np.exp(0.5 * econ + 0.25 * el + 0.3 * sped - 0.08 * (parent - 1) - 0.15 * ability)
    absent = np.minimum(rng.poisson(rng.gamma(1.2, mean_absent / 1.2)), SCHOOL_DAYS_PER_YEAR)
    hw_mean = expit(1.5 + 0.35 * ability - 0.3 * econ + 0.1 * (parent - 1) - 0.02 * np.minimum(absent, 60))
    homework = np.round(100.0 * rng.beta(8.0 * hw_mean, 8.0 * (1.0 - hw_mean)), 1)
    login_mean = np.where(internet, np.maximum(4.5 + 0.5 * (parent - 1) + 0.8 * ability, 0.5), 1.2)
    logins = np.minimum(np.round(rng.gamma(2.0, login_mean / 2.0), 1), 100.0)
    activities = np.minimum(rng.poisson(1.3 * np.exp(0.12 * (parent - 1) - 0.3 * econ + 0.15 * ability)), 10)
    commute = np.minimum(np.round(rng.gamma(3.0, (22.0 + 8.0 * charter) / 3.0), 1), 240.0)

    students = pd.DataFrame(
        {
            "student_id": np.arange(n, dtype=np.int64),
            "student_name": student_names(female, rng),
            "gender": np.where(female, GENDERS[1], GENDERS[0]),
            "grade": np.array(GRADES, dtype=object)[grade],
            "school_name": schools["school_name"].to_numpy(dtype=object)[school],
            "econ_disadvantaged": econ,
            "english_learner": el,
            "special_education": sped,
            "prior_days_absent": absent.astype(np.int64),
            "homework_completion_pct": homework,
            "extracurricular_count": activities.astype(np.int64),
            "platform_logins_per_week": logins,
            "home_internet": internet,
            "commute_minutes": commute,
            "parental_education": np.array(PARENTAL_EDUCATION, dtype=object)[parent],
        }
    )
    return students, ability


def prior_scores(
    students: pd.DataFrame, ability: np.ndarray, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Last year's scores: ability plus demographic gaps, smoothly bounded to 0-100 and rounded
    to 2 decimals (as they are stored) before anything is computed from them."""
    n = len(students)
    econ = students["econ_disadvantaged"].to_numpy(float)
    el = students["english_learner"].to_numpy(float)
    sped = students["special_education"].to_numpy(float)
    female = (students["gender"] == GENDERS[1]).to_numpy(float)
    parent = parental_level(students) - 1.0
    math_raw = 74.0 + 7.0 * (0.8 * ability + 0.6 * rng.standard_normal(n))
    math_raw += -0.2 * econ - 5.5 * el - 8.5 * sped + 0.8 * parent - 0.6 * female
    reading_raw = 75.0 + 7.0 * (0.8 * ability + 0.6 * rng.standard_normal(n))
    reading_raw += -0.2 * econ - 5.5 * el - 8.0 * sped + 1.0 * parent + 1.8 * female
    return {
        subject: np.round(soft_clip(raw, 0.0, 100.0, *PRIOR_KNEES), 2)
        for subject, raw in (("math", math_raw), ("reading", reading_raw))
    }


def parental_level(students: pd.DataFrame) -> np.ndarray:
    """Parental education as 0 (less than high school) to 4 (graduate)."""
    codes = {name: i for i, name in enumerate(PARENTAL_EDUCATION)}
    return students["parental_education"].map(codes).to_numpy(float)


# --------------------------------------------------------------------------------------------
# Growth
# --------------------------------------------------------------------------------------------


def absence_penalty(days: np.ndarray, coef: GrowthCoefficients) -> np.ndarray:
    """Smooth, S-shaped absence cost: ~0 for a few days, most of absence_max beyond ~25 days."""
    return coef.absence_max * (1.0 - np.exp(-((days / coef.absence_scale) ** 2)))


def school_mean_prior(students: pd.DataFrame) -> np.ndarray:
    """Per student, the mean prior score (both subjects) of everyone in the same school: the
    school's achievement context, observable before the year from the prior-year aggregates."""
    both = (students["prior_math_score"] + students["prior_reading_score"]) / 2.0
    return both.groupby(students["school_name"]).transform("mean").to_numpy(float)


def raw_growth(students: pd.DataFrame, subject: str) -> np.ndarray:
    """Student part of expected growth before the school effect and the ceiling, points."""
    coef = GROWTH[subject]
    other = "reading" if subject == "math" else "math"
    econ = students["econ_disadvantaged"].to_numpy(float)
    el = students["english_learner"].to_numpy(float)
    sped = students["special_education"].to_numpy(float)
    internet = students["home_internet"].to_numpy(float)
    activities = students["extracurricular_count"].to_numpy(float)
    grade = students["grade"].map({g: i for i, g in enumerate(GRADES)}).to_numpy(int)
    absence = absence_penalty(students["prior_days_absent"].to_numpy(float), coef)
    homework = students["homework_completion_pct"].to_numpy(float)
    logins = students["platform_logins_per_week"].to_numpy(float)
    return (
        coef.base
        + coef.own_prior * (students[f"prior_{subject}_score"].to_numpy(float) - PRIOR_CENTRE)
        + coef.other_prior * (students[f"prior_{other}_score"].to_numpy(float) - PRIOR_CENTRE)
        + coef.econ * econ
        + coef.english_learner * el
        + coef.special_education * sped
        + absence * (1.0 + coef.absence_extra_econ * econ + coef.absence_extra_el * el)
        + coef.homework * np.tanh((homework - 75.0) / 15.0)
        + coef.logins * np.log1p(logins) * (1.0 + internet) / 2.0
        + coef.internet * internet
        + coef.parental_education * (parental_level(students) - 1.0)
        + coef.extracurricular * (np.minimum(activities, 3.0) - 0.8 * np.maximum(activities - 4.0, 0.0) - 1.0)
        + coef.school_context * (school_mean_prior(students) - PRIOR_CENTRE)
        + coef.female * (students["gender"] == GENDERS[1]).to_numpy(float)
        + np.array(coef.grade)[grade]
    )


def expected_growth(students: pd.DataFrame, school_effects: pd.DataFrame, subject: str) -> np.ndarray:
    """Noise-free growth: a deterministic function of the observed columns (the student's own
    and, for the school context, the school's mean prior score) and the school's value-added,
    with a smooth ceiling keeping prior + growth at least one maximal noise draw away from 0
    and 100, so the score never needs clipping."""
    effect = students["school_name"].map(school_effects.set_index("school_name")[f"{subject}_effect"])
    prior = students[f"prior_{subject}_score"].to_numpy(float)
    current = prior + raw_growth(students, subject) + effect.to_numpy(float)
    bound = noise_bound(subject)
    return soft_clip(current, bound, 100.0 - bound, *CURRENT_KNEES) - prior


# --------------------------------------------------------------------------------------------
# The district
# --------------------------------------------------------------------------------------------


@contextmanager
def _steps(total: int, enabled: bool) -> Iterator[Callable[[str], None]]:
    """Yield an ``advance(description)`` callable; a rich progress bar when enabled."""
    if not enabled:
        yield lambda _description: None
        return
    from rich.progress import Progress

    with Progress(transient=False) as progress:
        task = progress.add_task("generating district", total=total)

        def advance(description: str) -> None:
            progress.update(task, advance=1, description=description)

        yield advance


def generate_district(n_students: int = 150_000, seed: int = 42, progress: bool = False) -> SyntheticDistrict:
    """Generate a reproducible district of n_students high-school students."""
    if n_students < MIN_STUDENTS:
        raise ValueError(f"need at least {MIN_STUDENTS} students, got {n_students}")
    rng_schools, rng_effects, rng_students, rng_prior, rng_noise = np.random.default_rng(seed).spawn(5)
    with _steps(5, progress) as advance:
        schools, latents = make_schools(n_students, rng_schools)
        advance("schools")
        effects = make_school_effects(schools, latents, rng_effects)
        advance("school value-added")
        students, ability = make_students(schools, latents, rng_students)
        advance("students")
        for subject, prior in prior_scores(students, ability, rng_prior).items():
            students[f"prior_{subject}_score"] = prior
        advance("prior scores")
        truth = pd.DataFrame({"student_id": students["student_id"]})
        for subject in SUBJECTS:
            growth = expected_growth(students, effects, subject)
            noise = truncated_noise(len(students), subject, rng_noise)
            students[f"{subject}_score"] = np.round(students[f"prior_{subject}_score"] + growth + noise, 2)
            truth[f"expected_{subject}_growth"] = growth
        advance("growth and target-year scores")
    students = students[[c.name for c in STUDENT_COLUMNS]]
    meta = {
        "version": VERSION,
        "seed": seed,
        "n_students": int(len(students)),
        "n_schools": int(len(schools)),
        "noise_sd_math": NOISE_SD["math"],
        "noise_sd_reading": NOISE_SD["reading"],
        "noise_distribution": (
            f"additive, independent of every column; normal truncated at +-{TRUNCATION_Z} sigma "
            f"(sigma = noise_sd / {truncated_sd_factor():.5f}), mean 0, SD = noise_sd"
        ),
        "noise_truncation_z": TRUNCATION_Z,
        "noise_bound_math": noise_bound("math"),
        "noise_bound_reading": noise_bound("reading"),
        "school_effect_sd": dict(SCHOOL_EFFECT_SD),
        "school_idiosyncratic_sd": dict(SCHOOL_IDIOSYNCRATIC_SD),
    }
    return SyntheticDistrict(
        schools=schools, students=students, truth=truth, truth_schools=effects, meta=meta
    )


def _csv_ready(frame: pd.DataFrame, renames: dict[str, str]) -> pd.DataFrame:
    """Bools as 0/1 ints and the classic ID header; everything else untouched."""
    out = frame.copy()
    for col in out.columns:
        if out[col].dtype == bool:
            out[col] = out[col].astype(np.int8)
    return out.rename(columns=renames)


def write_district(district: SyntheticDistrict, out_dir: Path) -> None:
    """Write schools.csv, students.csv, truth.csv, truth_schools.csv and truth.json.

    Every file is written to a temporary folder next to out_dir and then moved into place, so
    an interrupted run never leaves a half-written file behind."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _csv_ready(district.schools, {"school_id": "School ID"}).to_csv(
            tmp / "schools.csv", index=False, float_format="%.2f"
        )
        _csv_ready(district.students, {"student_id": "Student ID"}).to_csv(
            tmp / "students.csv", index=False, float_format="%.2f"
        )
        district.truth.to_csv(tmp / "truth.csv", index=False, float_format="%.6f")
        district.truth_schools.to_csv(tmp / "truth_schools.csv", index=False, float_format="%.6f")
        (tmp / "truth.json").write_text(json.dumps(district.meta, indent=2) + "\n")
        out_dir.mkdir(exist_ok=True)
        for path in sorted(tmp.iterdir()):
            os.replace(path, out_dir / path.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
