"""The classic two-table format as a special case of the student-year table.

The classic students table is one target year (school year 1) whose optional prior-year columns
describe school year 0: ``prior_math_score`` becomes year 0's math score, ``prior_days_absent``
year 0's absences, and so on. The classic format has no prior-year school or grade, so year 0 uses
the target-year school and the grade below (documented in docs/data.md). Files in that format load
exactly as before (``features.io.load_classic_tables`` validates them with the classic messages).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.contract import (
    ATTRIBUTE_COLUMNS,
    CLASSIC_GRADES,
    TARGETS,
    prior_engagement_column,
    score_column,
)
from features.district_config import DistrictConfig
from features.ingest import District, ValidationSummary, add_proficiency, resolve_subjects
from features.io import load_classic_tables

TARGET_YEAR, PRIOR_YEAR = 1, 0
# Classic columns that describe the year before the target year, by student-year column.
PRIOR_YEAR_ENGAGEMENT = (
    "days_absent",
    "homework_completion_pct",
    "extracurricular_count",
    "platform_logins_per_week",
)
CLASSIC_ENGAGEMENT_NAMES = {
    "days_absent": "prior_days_absent",
    "homework_completion_pct": "homework_completion_pct",
    "extracurricular_count": "extracurricular_count",
    "platform_logins_per_week": "platform_logins_per_week",
}


def load_classic(config: DistrictConfig) -> District:
    """Validate the classic tables and return them as a two-year student-year table."""
    tables = load_classic_tables(
        config.resolve(config.files.schools or ""), config.resolve(config.files.students or "")
    )
    subjects = resolve_subjects(config)
    classic = tables.students
    target = year_rows(classic, TARGET_YEAR, classic["grade"].astype(str))
    for subject, (current, _prior) in TARGETS.items():
        target[score_column(subject)] = classic[current].to_numpy(dtype=np.float32)
    frames = [target]
    priors = {s: prior for s, (_c, prior) in TARGETS.items() if prior in classic}
    if priors:
        previous = {g: CLASSIC_GRADES[i - 1] for i, g in enumerate(CLASSIC_GRADES) if i}
        prior = year_rows(classic, PRIOR_YEAR, classic["grade"].astype(str).map(previous))
        for subject, column in priors.items():
            prior[score_column(subject)] = classic[column].to_numpy(dtype=np.float32)
        for name, source in CLASSIC_ENGAGEMENT_NAMES.items():
            if source in classic:
                prior[name] = classic[source].to_numpy(dtype=np.float32)
        frames.insert(0, prior)
    students = pd.concat(frames, ignore_index=True)
    for subject in TARGETS:
        students[score_column(subject)] = students[score_column(subject)].astype(np.float32)
    students["student_id"] = students["student_id"].astype("category")
    students["grade"] = pd.Categorical(students["grade"], categories=list(CLASSIC_GRADES), ordered=True)
    for name in ("school_id", "school_name"):
        students[name] = students[name].astype("category")
    students = students.sort_values(["student_id", "school_year"], kind="stable").reset_index(drop=True)
    summary = ValidationSummary(
        files=[(str(config.files.schools), len(tables.schools)), (str(config.files.students), len(classic))],
        rows_read=len(classic),
        subjects=tuple(TARGETS),
        classic=True,
    )
    add_proficiency(students, subjects, summary)
    summary.student_years = len(students)
    summary.students = int(classic["student_id"].nunique())
    summary.schools = int(tables.schools["school_name"].nunique())
    summary.years = tuple(sorted(int(y) for y in pd.unique(students["school_year"])))
    schools = tables.schools.rename(columns={"school_id": "district_school_id"}).assign(
        school_id=tables.schools["school_name"].astype(str)
    )
    return District(
        config=config,
        students=students,
        schools=schools[["school_id", "school_name", "type", "size", "budget"]],
        subjects=subjects,
        grades=CLASSIC_GRADES,
        summary=summary,
        warnings=tables.warnings,
        source_files=(
            config.resolve(config.files.schools or ""),
            config.resolve(config.files.students or ""),
        ),
    )


def year_rows(classic: pd.DataFrame, year: int, grade: pd.Series) -> pd.DataFrame:
    """Identity, school and the attributes known at the start of the year, for one school year."""
    frame = pd.DataFrame(
        {
            "student_id": classic["student_id"].astype(str),
            "school_year": np.int16(year),
            "grade": grade.to_numpy(),
            "school_id": classic["school_name"].astype(str),
            "school_name": classic["school_name"].astype(str),
        }
    )
    for spec in ATTRIBUTE_COLUMNS:
        if spec.name in classic:
            values = classic[spec.name]
            frame[spec.name] = (
                values.to_numpy(dtype=np.float32) if spec.kind in ("bool", "float") else values.to_numpy()
            )
    if "gender" in frame:
        frame["gender"] = pd.Categorical(frame["gender"], categories=["F", "M", "X"])
    if "parental_education" in frame:
        from features.contract import PARENTAL_EDUCATION

        frame["parental_education"] = pd.Categorical(
            frame["parental_education"], categories=list(PARENTAL_EDUCATION), ordered=True
        )
    return frame


__all__ = ["load_classic", "prior_engagement_column"]
