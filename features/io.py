"""Reading the classic two-table format from CSV or Parquet into validated frames (raw -> validated).

``features.classic`` turns these frames into the student-year table every other format becomes.

Real district exports are messy: a UTF-8 byte-order mark, an index column saved by accident,
stray spaces. Those are tolerated with a warning; anything that changes meaning is an error.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from features.contract import SCHOOL_COLUMNS, STUDENT_COLUMNS
from features.validation import ContractError, Problem, data_rows, validate_table

log = logging.getLogger(__name__)
UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class ClassicTables:
    """The two classic tables, validated: contract column names and types, plus what was tolerated."""

    schools: pd.DataFrame
    students: pd.DataFrame
    warnings: tuple[str, ...] = ()


def normalise_header(name: object) -> str:
    """'Student ID' -> 'student_id', ' Math Score ' -> 'math_score': one rule for every header."""
    text = str(name).strip().lower()
    return re.sub(r"[^0-9a-z]+", "_", text).strip("_")


def read_table(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Read a CSV or Parquet file as text columns, tidying harmless mess and reporting it."""
    if not path.exists():
        raise ContractError([Problem(str(path), None, (), "an existing file; it was not found")])
    notes: list[str] = []
    if path.suffix.lower() in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    else:
        with path.open("rb") as handle:
            if handle.read(3) == UTF8_BOM:
                notes.append(f"{path}: removed a UTF-8 byte-order mark")
        try:
            frame = pd.read_csv(
                path, dtype=str, keep_default_na=True, encoding="utf-8-sig", skipinitialspace=True
            )
        except pd.errors.EmptyDataError:
            frame = pd.DataFrame()
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise ContractError([Problem(str(path), None, (), f"a UTF-8 CSV file ({err})")]) from err
    return tidy_frame(frame, str(path), notes)


def tidy_frame(frame: pd.DataFrame, file: str, notes: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """Drop unnamed empty columns, normalise headers, strip surrounding whitespace in cells."""
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed:") or not str(c).strip()]
    empty_unnamed = [c for c in unnamed if frame[c].isna().all()]
    if empty_unnamed:
        notes.append(f"{file}: dropped {len(empty_unnamed)} unnamed empty column(s)")
        frame = frame.drop(columns=empty_unnamed)
    frame = frame.rename(columns=normalise_header)
    duplicated = frame.columns[frame.columns.duplicated()].tolist()
    if duplicated:
        raise ContractError(
            [Problem(file, name, (), "each column once after header normalisation") for name in duplicated]
        )
    text_cols = [
        c for c in frame.columns if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c])
    ]
    padded = 0
    for col in text_cols:
        stripped = frame[col].str.strip()
        padded += int((stripped != frame[col]).fillna(False).sum())
        frame[col] = stripped
    if padded:
        notes.append(f"{file}: stripped surrounding whitespace from {padded} cell(s)")
    return frame, notes


def cross_check(
    schools: pd.DataFrame, students: pd.DataFrame, schools_file: str, students_file: str
) -> tuple[list[Problem], list[str]]:
    """Rules spanning both tables: every student's school exists; enrolment roughly matches."""
    problems: list[Problem] = []
    unknown = ~students["school_name"].isin(set(schools["school_name"]))
    if unknown.any():
        rows = data_rows(students.index[unknown])
        problems.append(
            Problem(
                students_file,
                "school_name",
                rows,
                f"a school listed in {schools_file}",
                tuple(students.loc[unknown, "school_name"].unique()[:5]),
            )
        )
    duplicate_schools = schools["school_name"].duplicated(keep=False)
    if duplicate_schools.any():
        problems.append(
            Problem(
                schools_file,
                "school_name",
                data_rows(schools.index[duplicate_schools]),
                "a unique school name (duplicate found)",
            )
        )
    counts = students.groupby("school_name").size()
    stated = schools.set_index("school_name")["size"]
    actual = counts.reindex(stated.index).fillna(0).astype(int)
    mismatch = stated[stated != actual]
    warnings = [
        f"{schools_file}: school '{name}' states size {int(size)} but has {actual[name]} students "
        "in the student table; reports use the student count"
        for name, size in mismatch.items()
    ]
    return problems, warnings


def load_classic_tables(schools_path: Path | str, students_path: Path | str) -> ClassicTables:
    """Load and validate both tables; raise ContractError with every problem, log what was tolerated."""
    schools_path, students_path = Path(schools_path), Path(students_path)
    problems: list[Problem] = []
    frames: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    for key, path, columns, unique in (
        ("schools", schools_path, SCHOOL_COLUMNS, ("school_id",)),
        ("students", students_path, STUDENT_COLUMNS, ("student_id",)),
    ):
        try:
            raw, tidy_notes = read_table(path)
            notes.extend(tidy_notes)
            frames[key] = validate_table(raw, columns, str(path), unique)
        except ContractError as err:
            problems.extend(err.problems)
    if problems:
        raise ContractError(problems)
    cross_problems, cross_warnings = cross_check(
        frames["schools"], frames["students"], str(schools_path), str(students_path)
    )
    if cross_problems:
        raise ContractError(cross_problems)
    warnings = tuple(notes + cross_warnings)
    for message in warnings:
        log.warning(message)
    return ClassicTables(schools=frames["schools"], students=frames["students"], warnings=warnings)
