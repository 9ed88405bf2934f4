"""Growth measures a district acts on, from the growth pairs of one school year: each student's growth
percentile (SGP, training.sgp), medians per school, grade and group; each school's value-added with
its uncertainty (training.value_added); and, on the synthetic district, both against the truth.

One usable pair definition (features.pairs.USABLE) feeds all of them, as it feeds the growth model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import prior_score_column, score_column
from features.pairs import status_column, usable
from training.data import DistrictData
from training.sgp import SGPConfig, SGPInput, SGPRun, district_knots, median_sgp
from training.value_added import VAConfig, ValueAdded, school_value_added

GROUPS = ("econ_disadvantaged", "english_learner", "special_education", "gender", "grade")


def report_year(data: DistrictData, year: int | None) -> int:
    """The target year to measure (default: the latest year that has growth pairs)."""
    years = target_years(data)
    if not years:
        raise ValueError("no growth pairs: growth measures need two consecutive school years")
    if year is None:
        return years[-1]
    if year not in years:
        raise ValueError(f"no growth pairs for {year}; target years with pairs: {', '.join(map(str, years))}")
    return year


def _prior2_in_step(frame: pd.DataFrame, subject: str, grades: list[str]) -> pd.Series:
    """The score two years back, only when the student moved up one grade each year (the SGP package's
    grade progression); otherwise missing, so that student gets an order-1 SGP."""
    now, before = _grade_positions(frame["grade"], grades), _grade_positions(frame["prior2_grade"], grades)
    return frame[prior_score_column(subject, 2)].where(now - before == 2)


def _grade_positions(column: pd.Series, grades: list[str]) -> np.ndarray:
    """Each row's position in ``grades`` (NaN: missing or not a grade), looked up once per distinct value."""
    codes, values = pd.factorize(column)
    position = {g: i for i, g in enumerate(grades)}
    found = np.array([position.get(str(v), np.nan) for v in values] + [np.nan], dtype=float)
    return found[codes]  # code -1 (missing) reads the NaN at the end


@dataclass
class PendingSGPs:
    """Every student's SGP of some target years, being fitted in worker processes (``start_sgps``):
    the caller can work meanwhile; ``frame()`` waits for them. Use it in a ``with`` block, or call
    ``close()``, so the workers stop if the caller fails first."""

    run: SGPRun
    rows: list[pd.DataFrame]  # per fitted frame: the students and their groups, with the subject

    def frame(self) -> pd.DataFrame:
        """One row per student x subject x year: SGP, its order and the student's groups."""
        parts = []
        for rows, result in zip(self.rows, self.run.results(), strict=True):
            parts.append(rows.assign(**{c: result[c] for c in SGP_COLUMNS}))
        out = pd.concat(parts, ignore_index=True)
        for column in ("student_id", "school_id", "school_name", "grade"):
            out[column] = out[column].astype(str)
        return out

    def wide(self) -> pd.DataFrame:
        """For batch scoring: ``<subject>_sgp`` and ``<subject>_sgp_order`` per student (one year)."""
        wide = self.frame().pivot_table(
            index="student_id", columns="subject", values=["sgp", "sgp_order"], aggfunc="first"
        )
        wide.columns = [f"{subject}_{value}" for value, subject in wide.columns]
        return wide.reset_index()

    def close(self) -> None:
        self.run.close()

    def __enter__(self) -> PendingSGPs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


SGP_COLUMNS = ("sgp", "sgp_order", "sgp_order_1", "sgp_order_2", "sgp_note")


def start_sgps(
    data: DistrictData, years: list[int], progress: bool = False, config: SGPConfig = SGPConfig()
) -> PendingSGPs:
    """Start fitting the SGPs of every subject in each of ``years``, all in one pool of workers.

    Raises ValueError for a year without usable growth pairs."""
    grades = list(data.district.grades)
    students = data.district.students
    knots = {s: district_knots(students[score_column(s)], students["grade"], config) for s in data.subjects}
    keep = dict.fromkeys(("student_id", "school_year", "grade", "school_id", "school_name", *GROUPS))
    needed = [
        *keep,
        "prior_grade",
        "prior2_grade",
        *(status_column(s) for s in data.subjects),
        *(c for s in data.subjects for c in (score_column(s), *(prior_score_column(s, k) for k in (1, 2)))),
    ]
    needed = [c for c in dict.fromkeys(needed) if c in data.pairs]
    inputs, rows_of = [], []
    for year in years:
        # the year's rows and the columns used, in one copy: the pairs have every year and many more
        pairs = data.pairs.loc[data.pairs["school_year"].to_numpy() == year, needed]
        found = 0
        for subject in data.subjects:
            rows = usable(pairs, subject).copy()
            if rows.empty:
                continue
            rows["_prior2"] = _prior2_in_step(rows, subject, grades)
            inputs.append(
                SGPInput(
                    rows,
                    score_column(subject),
                    [prior_score_column(subject), "_prior2"],
                    ["school_year", "grade"],
                    knot_keys=["prior_grade", "prior2_grade"],
                    knot_table=knots[subject],
                )
            )
            rows_of.append(rows[[c for c in keep if c in rows]].assign(subject=subject))
            found += 1
        if not found:
            raise ValueError(f"no usable growth pairs in {year}")
    return PendingSGPs(SGPRun(inputs, config, progress=progress), rows_of)


def student_sgps(
    data: DistrictData, year: int | None = None, progress: bool = False, config: SGPConfig = SGPConfig()
) -> pd.DataFrame:
    """One row per student and subject with an SGP in ``year``: SGP, its order and the student's groups."""
    with start_sgps(data, [report_year(data, year)], progress, config) as pending:
        return pending.frame()


def target_years(data: DistrictData) -> list[int]:
    """School years that have growth pairs (a score the year before)."""
    return sorted(int(y) for y in pd.unique(data.pairs["school_year"])) if len(data.pairs) else []


def all_sgps(data: DistrictData, years: list[int] | None = None, progress: bool = False) -> pd.DataFrame:
    """Every student's SGP in every target year (or the given ones), one row per student x subject x year."""
    years = years or target_years(data)
    if not years:
        raise ValueError("no growth pairs: SGPs need two consecutive school years")
    with start_sgps(data, years, progress) as pending:
        return pending.frame()


def start_year_sgps(data: DistrictData, year: int) -> PendingSGPs | None:
    """Batch scoring of a past year: its SGPs, started (None when the year has no usable pairs)."""
    try:
        return start_sgps(data, [year])
    except ValueError:
        return None


def group_medians(sgps: pd.DataFrame, min_n: int, level: float = 0.9) -> pd.DataFrame:
    """Median SGP with a 90% interval and the count per subject and school, grade and group; groups of
    fewer than ``min_n`` students are suppressed."""
    parts = [
        median_sgp(sgps, ["subject", "school_id", "school_name"], level=level, min_n=min_n).assign(
            by="school"
        )
    ]
    for column in GROUPS:
        if column not in sgps:
            continue
        values = sgps[column]
        if column in ("econ_disadvantaged", "english_learner", "special_education"):
            values = values.map({1.0: "yes", 0.0: "no"})
        frame = sgps.assign(value=values.astype(object).where(values.notna(), "missing").astype(str))
        parts.append(median_sgp(frame, ["subject", "value"], level=level, min_n=min_n).assign(by=column))
    parts.append(
        median_sgp(sgps.assign(value="all students"), ["subject", "value"], level=level, min_n=min_n).assign(
            by="all"
        )
    )
    return pd.concat(parts, ignore_index=True)


def value_added(data: DistrictData, year: int | None = None, min_n: int = 10) -> dict[str, ValueAdded]:
    """Each subject's school value-added on every usable pair of ``year`` (all students, not a test split)."""
    year = report_year(data, year)
    pairs = data.pairs[data.pairs["school_year"] == year]
    config = VAConfig(min_students=min_n)
    return {
        s: school_value_added(pairs, s, data.subjects, config)
        for s in data.subjects
        if usable(pairs, s).shape[0] > 0
    }


@dataclass(frozen=True)
class TruthCheck:
    """How an estimate compares with the synthetic truth, per subject and view."""

    subject: str
    view: str
    truth: str
    schools: int
    correlation: float
    coverage: float


def truth_school_effects(folder: Path) -> pd.DataFrame | None:
    path = Path(folder) / "truth" / "school_effects.csv"
    if not path.exists():
        return None
    return pd.read_csv(path, dtype={"school_id": str})


def va_truth(
    va: dict[str, ValueAdded], truth: pd.DataFrame | None, pairs: pd.DataFrame, year: int
) -> list[TruthCheck]:
    """Correlation with the true effect and interval coverage: view A against the effect including peers
    (what view A estimates), view B against the school's own effect. The estimates compare a school with
    the average school of the same grade and year, so the truth is centred the same way, student by
    student, before it is averaged per school."""
    if truth is None:
        return []
    checks = []
    for subject, result in va.items():
        rows = usable(pairs[pairs["school_year"] == year], subject)
        rows = rows[["school_id", "school_year", "grade"]].astype({"school_id": str, "grade": str})
        mine = truth[truth["subject"] == subject]
        joined = rows.merge(mine, on=["school_id", "school_year"], how="inner")
        level = joined["grade"] + "|" + joined["school_year"].astype(str)
        table = result.table[~result.table["suppressed"]].set_index("school_id")
        for view, suffix, target in (("A", "", "effect_with_peers"), ("B", "_b", "effect_with_peers")):
            centred = joined[target] - joined.groupby(level)[target].transform("mean")
            true = centred.groupby(joined["school_id"]).mean()
            both = table.join(true.rename("truth"), how="inner")
            if view == "B":  # view B estimates the effect net of what intake predicts: so is its truth
                both["truth"] = net_of_intake(
                    both["truth"],
                    both[[c for c in both if c.startswith("intake_")]],
                    1.0 / (result.tau_b**2 + both["fe_se"] ** 2),
                    both["n"],
                )
            inside = (both["truth"] >= both[f"low{suffix}"]) & (both["truth"] <= both[f"high{suffix}"])
            checks.append(
                TruthCheck(
                    subject,
                    view,
                    target if view == "A" else "effect_with_peers net of intake",
                    len(both),
                    float(both[f"estimate{suffix}"].corr(both["truth"])),
                    float(inside.mean()),
                )
            )
    return checks


def net_of_intake(
    truth: pd.Series, intake: pd.DataFrame, weights: pd.Series, students: pd.Series
) -> pd.Series:
    """The true effects net of intake, computed as view B computes its estimate: the residual of a
    regression on the schools' intake with the estimator's GLS weights (1 / (tau_B^2 + se^2)), re-centred
    on the student-weighted mean. (Weighting the truth otherwise, e.g. by students, would compare view B
    with another estimand and show a bias the estimator does not have.)"""
    design = np.column_stack([np.ones(len(truth)), intake.to_numpy(dtype=float)])
    root = np.sqrt(weights.to_numpy(dtype=float))
    beta = np.linalg.lstsq(design * root[:, None], truth.to_numpy() * root, rcond=None)[0]
    residual = truth - design @ beta
    return residual - np.average(residual, weights=students.to_numpy(dtype=float))


def status_summary(data: DistrictData, year: int) -> pd.DataFrame:
    """Students of the year by pair status and subject (who is measured, who is not, and why)."""
    pairs = data.pairs[data.pairs["school_year"] == year]
    return (
        pd.DataFrame({s: pairs[status_column(s)].value_counts() for s in data.subjects}).fillna(0).astype(int)
    )
