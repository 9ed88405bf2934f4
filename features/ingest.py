"""A district config and its files -> one validated student-year table (raw data -> validated).

Long exports (one row per student x subject x year), wide exports (a score column per subject)
and the classic two tables all end in the same table (docs/architecture.md). Problems are
collected and raised together, each naming the file, rows, column and what was expected; a
mapped column missing from a file or a code without a mapping names the config key too.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from features import records as rec
from features.contract import (
    ATTRIBUTE_COLUMNS,
    CLASSIC_PASS_MARK,
    ENGAGEMENT_COLUMNS,
    PARENTAL_EDUCATION,
    RECORD_GENDERS,
    SCHOOL_TYPES,
    Column,
    level_column,
    proficient_column,
    score_column,
)
from features.district_config import ConfigError, DistrictConfig, SubjectSpec, classic_config
from features.validation import ContractError, Problem

log = logging.getLogger(__name__)
MISSING_GRADE = -1


@dataclass(frozen=True)
class Subject:
    """A subject as the pipeline uses it: scale, levels and cut scores resolved per grade."""

    name: str
    label: str
    scale: dict[str, tuple[float, float]]  # grade -> (lowest, highest)
    vertical: bool
    levels: tuple[str, ...]
    proficient: str | None
    cuts: dict[str, tuple[float, ...]]  # grade -> lowest score of each level above the first

    def proficient_cut(self, grade: str) -> float | None:
        """Lowest proficient score in ``grade``, or None without cut scores."""
        if self.proficient is None or grade not in self.cuts:
            return None
        return self.cuts[grade][self.levels.index(self.proficient) - 1]

    def scale_text(self, grade: str) -> str:
        low, high = self.scale[grade]
        return f"{low:g} to {high:g}"


def resolve_subjects(config: DistrictConfig) -> tuple[Subject, ...]:
    def one(name: str, spec: SubjectSpec) -> Subject:
        scale = {g: tuple(spec.scale_by_grade.get(g, spec.scale)) for g in config.grades}  # type: ignore[arg-type]
        return Subject(
            name=name,
            label=spec.label or name.replace("_", " ").title(),
            scale=scale,
            vertical=spec.vertical,
            levels=tuple(spec.levels),
            proficient=spec.proficient,
            cuts={g: tuple(c) for g, c in spec.cuts.items()},
        )

    return tuple(one(name, spec) for name, spec in config.subjects.items())


@dataclass
class ValidationSummary:
    """What ingestion read, dropped and resolved; printed by `growth validate`."""

    files: list[tuple[str, int]] = field(default_factory=list)
    rows_read: int = 0
    invalid_cases_dropped: int = 0
    duplicate_rule: str = "error"
    duplicate_groups: int = 0
    duplicate_rows_dropped: int = 0
    conflicting_student_years: int = 0
    level_mismatches: int = 0
    student_years: int = 0
    students: int = 0
    schools: int = 0
    years: tuple[int, ...] = ()
    subjects: tuple[str, ...] = ()
    pair_reasons: pd.DataFrame | None = None  # year x subject x status counts, from features.pairs
    classic: bool = False

    def lines(self) -> list[str]:
        out = [f"read {self.rows_read:,} rows from {len(self.files)} file(s)"]
        if self.invalid_cases_dropped:
            out.append(f"dropped {self.invalid_cases_dropped:,} row(s) coded as invalid cases")
        if self.duplicate_groups:
            out.append(
                f"duplicates: {self.duplicate_groups:,} student x subject x year group(s) had more than one "
                f"row; rule '{self.duplicate_rule}' dropped {self.duplicate_rows_dropped:,} row(s)"
            )
        if self.conflicting_student_years:
            out.append(
                f"{self.conflicting_student_years:,} student-year(s) had different grades or schools on "
                "different subject rows; the first row's grade and school are used"
            )
        if self.level_mismatches:
            out.append(
                f"{self.level_mismatches:,} achievement level(s) in the file disagree with the cut scores; "
                "the cut scores decide proficiency"
            )
        years = ", ".join(str(y) for y in self.years)
        if self.classic:
            priors = "with prior-year columns" if len(self.years) > 1 else "without prior-year columns"
            out.append(f"{self.students:,} students, {self.schools:,} schools, one target year ({priors}), "
                       f"subjects {', '.join(self.subjects)}")
            return out
        out.append(
            f"{self.students:,} students, {self.student_years:,} student-years, {self.schools:,} schools, "
            f"school years {years}, subjects {', '.join(self.subjects)}"
        )
        return out


@dataclass
class District:
    """A validated district: the student-year table, the optional schools table and the settings."""

    config: DistrictConfig
    students: pd.DataFrame
    schools: pd.DataFrame | None
    subjects: tuple[Subject, ...]
    grades: tuple[str, ...]
    summary: ValidationSummary
    warnings: tuple[str, ...] = ()
    source_files: tuple[Path, ...] = ()

    @property
    def years(self) -> list[int]:
        return sorted(int(y) for y in pd.unique(self.students["school_year"]))

    @property
    def subject_names(self) -> list[str]:
        return [s.name for s in self.subjects]

    def subject(self, name: str) -> Subject:
        for subject in self.subjects:
            if subject.name == name:
                return subject
        raise KeyError(f"unknown subject {name!r}; this district has {', '.join(self.subject_names)}")

    def year(self, year: int | None = None) -> pd.DataFrame:
        """The student-year rows of one school year (default: the latest)."""
        year = self.years[-1] if year is None else year
        if year not in self.years:
            raise ValueError(
                f"school year {year} is not in the data; it has {', '.join(map(str, self.years))}"
            )
        return self.students[self.students["school_year"] == year]

    def fingerprint(self) -> str:
        """Content hash of the files and the config: tags every study and run with the data it saw."""
        return data_fingerprint(self.config, self.source_files)


def data_fingerprint(config: DistrictConfig, files: Sequence[Path]) -> str:
    digest = hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode())
    for path in files:
        with Path(path).open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def record_files(config: DistrictConfig) -> list[Path]:
    """Every records file the config names, globs expanded, in a stable order."""
    paths: list[Path] = []
    problems = []
    for pattern in config.files.records:
        matched = sorted(Path(p) for p in glob.glob(str(config.resolve(pattern))))
        if not matched:
            problems.append(("files.records", f"'{pattern}' matched no file in {config.folder}"))
        paths.extend(matched)
    if problems:
        raise ConfigError(config.path, problems)
    return list(dict.fromkeys(paths))


def check_mapped_columns(
    config: DistrictConfig, path: Path, mapping: dict[str, str], section: str
) -> list[tuple[str, str]]:
    """A mapped column missing from a file is a config problem naming the key and the file's columns."""
    present = rec.header(path)
    return [
        (f"{section}.{key}", f"column '{name}' is not in {path.name}; its columns are {', '.join(present)}")
        for key, name in mapping.items()
        if name not in present
    ]


@contextmanager
def _steps(enabled: bool, total: int) -> Iterator[Callable[[str], None]]:
    if not enabled:
        yield lambda _d: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as progress:
        task = progress.add_task("reading", total=total)
        yield lambda d: progress.update(task, advance=1, description=d)


# ----------------------------------------------------------------------------------------------
# Long and wide records -> one long frame of contract values
# ----------------------------------------------------------------------------------------------


def record_mapping(config: DistrictConfig) -> dict[str, str]:
    mapping = config.columns.mapped()
    if config.format == "wide":
        for name, spec in config.subjects.items():
            mapping[f"score:{name}"] = spec.score_column or ""
            if spec.level_column:
                mapping[f"level:{name}"] = spec.level_column
    return mapping


def read_records(
    config: DistrictConfig, progress: bool = False, last_years: int | None = None
) -> tuple[pd.DataFrame, rec.Located, list[Path]]:
    """Read every records file (only the mapped columns) into one frame, long layout, text cells.

    ``last_years``: keep only the rows of the latest that many school years of the data; files without
    such rows are not read beyond their school-year column (see ``load``)."""
    paths = record_files(config)
    mapping = record_mapping(config)
    problems = []
    for path in paths:
        problems += check_mapped_columns(
            config, path, {k: v for k, v in mapping.items() if ":" not in k}, "columns"
        )
        problems += [
            (
                f"subjects.{k.split(':')[1]}.{'score' if k.startswith('score') else 'level'}_column",
                f"column '{v}' is not in {path.name}",
            )
            for k, v in mapping.items()
            if ":" in k and v not in rec.header(path)
        ]
    if config.columns.school_year is None:
        problems += [
            ("columns.school_year", f"a school-year column, or a 4-digit year in the file name ({path.name})")
            for path in paths
            if rec.year_from_filename(path) is None
        ]
    if problems:
        raise ConfigError(config.path, problems)
    row_years: dict[Path, np.ndarray] = {}
    if last_years is not None:
        paths, row_years = latest_years_files(config, paths, mapping, last_years)
    tables, file_index, rows = [], [], []
    with _steps(progress, len(paths)) as advance:
        for index, path in enumerate(paths):
            table = rec.read_table(path, mapping)
            if config.columns.school_year is None:
                year = pa.array([str(rec.year_from_filename(path))] * table.num_rows).dictionary_encode()
                table = table.append_column("school_year", year)
            positions = np.arange(1, table.num_rows + 1, dtype=np.int32)
            if path in row_years:
                wanted = row_years[path]
                table, positions = table.filter(pa.array(wanted)), positions[wanted]
            tables.append(table)
            file_index.append(np.full(table.num_rows, index, dtype=np.int16))
            rows.append(positions)
            advance(f"read {path.name}")
    located = rec.Located(tuple(str(p) for p in paths), np.concatenate(file_index), np.concatenate(rows))
    combined = rec.tables_to_frame(tables)
    if config.format == "wide":
        combined, located = melt_wide(combined, located, config)
    return combined, located, paths


def latest_years_files(
    config: DistrictConfig, paths: list[Path], mapping: dict[str, str], last_years: int
) -> tuple[list[Path], dict[Path, np.ndarray]]:
    """The files holding rows of the latest ``last_years`` school years, and for each file that also
    holds other rows, which of its rows to keep. Only the school-year column is read here (from the file
    name when the config has none): cheap in Parquet, one parse of the column in CSV."""
    if config.columns.school_year is None:
        years = {path: np.array([float(rec.year_from_filename(path) or np.nan)]) for path in paths}
    else:
        column = {"school_year": mapping["school_year"]}
        years = {
            path: rec.school_year_values(rec.read_text_columns(path, column)["school_year"])[0]
            for path in paths
        }
    present = np.unique(np.concatenate([y[~np.isnan(y)] for y in years.values()] or [np.array([])]))
    keep = present[-last_years:] if last_years > 0 else present[:0]
    kept: list[Path] = []
    masks: dict[Path, np.ndarray] = {}
    for path in paths:
        mask = np.isin(years[path], keep)
        if not mask.any():
            continue
        kept.append(path)
        if config.columns.school_year is not None and not mask.all():
            masks[path] = mask
    return kept, masks


def melt_wide(
    frame: pd.DataFrame, located: rec.Located, config: DistrictConfig
) -> tuple[pd.DataFrame, rec.Located]:
    """One row per student x year with a score column per subject -> one row per subject."""
    parts = []
    keep = []
    base = [c for c in frame.columns if ":" not in c]
    for name in config.subjects:
        part = frame[base].copy()
        part["subject"] = pd.Categorical([name] * len(frame))
        part["scale_score"] = frame[f"score:{name}"]
        if f"level:{name}" in frame:
            part["achievement_level"] = frame[f"level:{name}"]
        present = frame[f"score:{name}"].notna().to_numpy()
        parts.append(part[present])
        keep.append(np.flatnonzero(present))
    index = np.concatenate(keep)
    long = pd.concat(parts, ignore_index=True)
    for column in ("subject", "scale_score", "achievement_level"):
        if column in long and long[column].dtype == object:
            long[column] = long[column].astype("category")
    return long, located.take(index)


@dataclass
class Converted:
    """Records with contract values: numbers as float32, codes as small integers."""

    values: dict[str, np.ndarray]
    problems: list[Problem]


def convert_records(
    frame: pd.DataFrame, located: rec.Located, config: DistrictConfig, subjects: Sequence[Subject]
) -> Converted:
    """Every mapped column to its contract type; each bad cell becomes a located problem."""
    col = config.columns.mapped()
    if config.format == "wide":
        col = {
            **col,
            "subject": "(subject)",
            "scale_score": "(score column)",
            "achievement_level": "(level column)",
        }
    out: dict[str, np.ndarray] = {}
    problems: list[Problem] = []

    def file_column(name: str) -> str:
        return col.get(name, name)

    def config_problem(key: str, mask: np.ndarray, found: np.ndarray, name: str, expected: str) -> None:
        """Rows whose code the config does not map; ``found`` holds their texts."""
        problems.extend(located.problems(mask, file_column(name), f"{expected} (config key '{key}')", found))

    # Identity and time.
    ids = rec.tidy_text(frame["student_id"])
    missing = ids.isna().to_numpy()
    problems += located.problems(
        missing, file_column("student_id"), "a student id, found an empty cell"
    )
    out["student_id"] = ids
    years, bad = rec.school_year_values(frame["school_year"])
    original = rec.tidy_text(frame["school_year"]).astype(object).to_numpy()
    problems += located.problems(
        bad | np.isnan(years) & ~bad,
        file_column("school_year"),
        "a school year like 2023 or '2022-2023'",
        original[bad | np.isnan(years) & ~bad],
    )
    out["school_year"] = years

    # Subject.
    if config.format == "wide":
        subject_codes = {s.name: s.name for s in subjects}
    else:
        subject_codes = {code: name for name, spec in config.subjects.items() for code in spec.codes}
    skip = set(config.skip_subject_codes)
    coded = rec.Coded.of(frame["subject"])
    names, known = coded.mapped({**subject_codes, **{c: None for c in skip}})
    unmapped = coded.unmapped_rows(known)
    config_problem(
        "subjects.<name>.codes",
        unmapped,
        coded.text(unmapped),
        "subject",
        f"a subject code listed in a [subjects.*] codes list ({', '.join(subject_codes)}) "
        "or in skip_subject_codes",
    )
    order = {s.name: i for i, s in enumerate(subjects)}
    per_code = np.array([order.get(n, -1) if n is not None else -1 for n in names], dtype=np.int8)
    out["subject"] = coded.rows(per_code, np.int8(-1))
    skipped = np.array([k and n is None for n, k in zip(names, known, strict=True)], dtype=bool)
    out["_skipped"] = coded.rows(skipped, False)

    # Grade.
    coded = rec.Coded.of(frame["grade"])
    mapped, known = coded.mapped(config.values.get("grade"))
    grade_pos = {g: i for i, g in enumerate(config.grades)}
    per_code = np.array(
        [grade_pos.get(str(g), -2) if k else -2 for g, k in zip(mapped, known, strict=True)], dtype=np.int16
    )
    grade_index = coded.rows(per_code, np.int16(MISSING_GRADE))
    bad_grade = grade_index == -2
    problems += located.problems(
        bad_grade,
        file_column("grade"),
        f"one of the grades {', '.join(config.grades)} (config key 'grades')",
        coded.text(bad_grade),
    )
    empty_grade = grade_index == MISSING_GRADE
    problems += located.problems(
        empty_grade, file_column("grade"), "a grade, found an empty cell"
    )
    out["grade"] = np.where(bad_grade, MISSING_GRADE, grade_index).astype(np.int16)

    # Scale score, within the subject's declared scale for the grade.
    scores, bad = rec.numbers(frame["scale_score"])
    score_text = (
        rec.Coded.of(frame["scale_score"])
        if not pd.api.types.is_numeric_dtype(frame["scale_score"])
        else None
    )

    def text(mask: np.ndarray) -> np.ndarray:
        return score_text.text(mask) if score_text is not None else scores[mask]

    problems += located.problems(bad, file_column("scale_score"), "a number (a scale score)", text(bad))
    low = np.full((len(subjects), len(config.grades)), np.nan)
    high = np.full_like(low, np.nan)
    for i, subject in enumerate(subjects):
        for j, grade in enumerate(config.grades):
            low[i, j], high[i, j] = subject.scale[grade]
    ok = (out["subject"] >= 0) & (out["grade"] >= 0)
    s_i, g_i = np.maximum(out["subject"], 0), np.maximum(out["grade"], 0)
    lo, hi = low[s_i, g_i], high[s_i, g_i]
    outside = ok & ~np.isnan(scores) & ((scores < lo) | (scores > hi))
    for i, subject in enumerate(subjects):
        for j, grade in enumerate(config.grades):
            mask = outside & (out["subject"] == i) & (out["grade"] == j)
            problems += located.problems(
                mask,
                file_column("scale_score"),
                f"a {subject.label} score in grade {grade} within the declared scale "
                f"{subject.scale_text(grade)} "
                f"(config key 'subjects.{subject.name}.scale')",
                text(mask),
            )
    empty = ok & np.isnan(scores) & ~bad & ~out["_skipped"]
    problems += located.problems(
        empty, file_column("scale_score"), "a scale score, found an empty cell"
    )
    out["scale_score"] = scores.astype(np.float32)

    # Achievement level (optional).
    if "achievement_level" in frame:
        coded = rec.Coded.of(frame["achievement_level"])
        names, known = coded.mapped(config.values.get("achievement_level"))
        level_index = np.full(len(frame), -1, dtype=np.int8)
        for i, subject in enumerate(subjects):
            mine = out["subject"] == i
            position = {name: k for k, name in enumerate(subject.levels)}
            per_code = np.array(
                [position.get(str(v), -2) if k else -2 for v, k in zip(names, known, strict=True)],
                dtype=np.int8,
            )
            idx = coded.rows(per_code, np.int8(-1))
            bad_level = mine & (idx == -2)
            level_index[mine] = np.maximum(idx[mine], -1)
            if subject.levels:
                problems += located.problems(
                    bad_level,
                    file_column("achievement_level"),
                    f"one of the {subject.label} levels {', '.join(subject.levels)} "
                    f"(config key 'subjects.{subject.name}.levels')",
                    coded.text(bad_level),
                )
        out["achievement_level"] = level_index

    # School and district.
    school_key = "school_id" if "school_id" in frame else "school_name"
    schools = rec.tidy_text(frame[school_key])
    missing = schools.isna().to_numpy()
    problems += located.problems(
        missing, file_column(school_key), "a school, found an empty cell"
    )
    out["school_id"] = schools
    for name in ("school_name", "district"):
        if name in frame:
            out[name] = rec.tidy_text(frame[name])

    # Student attributes and engagement.
    for spec in (*ATTRIBUTE_COLUMNS, *ENGAGEMENT_COLUMNS):
        if spec.name in frame:
            values, found = convert_attribute(frame[spec.name], spec, config, located, file_column(spec.name))
            out[spec.name] = values
            problems += found
    if "valid_case" in frame:
        coded = rec.Coded.of(frame["valid_case"])
        values, known = coded.mapped(config.values.get("valid_case"), rec.BOOL_WORDS)
        unmapped = coded.unmapped_rows(known)
        problems += located.problems(
            unmapped,
            file_column("valid_case"),
            "a valid-case code mapped to true/false (config key 'values.valid_case')",
            coded.text(unmapped),
        )
        per_code = np.array([not k or bool(v) for v, k in zip(values, known, strict=True)], dtype=bool)
        out["valid_case"] = coded.rows(per_code, True)
    return Converted(out, problems)


def convert_attribute(
    series: pd.Series, spec: Column, config: DistrictConfig, located: rec.Located, file_column: str
) -> tuple[np.ndarray | pd.Categorical, list[Problem]]:
    """One attribute or engagement column: value map, type and range; problems name the config key."""
    key = f"values.{spec.name}"
    if spec.kind == "bool":
        coded = rec.Coded.of(series)
        values, known = coded.mapped(config.values.get(spec.name), rec.BOOL_WORDS)
        unmapped = coded.unmapped_rows(known)
        expected = (
            "a yes/no value (0/1, true/false, yes/no)"
            if spec.name not in config.values
            else f"a code listed in the config (key '{key}')"
        )
        problems = located.problems(unmapped, file_column, expected, coded.text(unmapped))
        per_code = np.array(
            [float(bool(v)) if k else np.nan for v, k in zip(values, known, strict=True)], dtype=np.float32
        )
        return coded.rows(per_code, np.float32(np.nan)), problems
    if spec.kind == "category":
        allowed = RECORD_GENDERS if spec.name == "gender" else PARENTAL_EDUCATION
        coded = rec.Coded.of(series)
        values, known = coded.mapped(config.values.get(spec.name))
        position = {a: i for i, a in enumerate(allowed)}
        per_code = np.array(
            [position.get(v, -2) if k else -2 for v, k in zip(values, known, strict=True)], dtype=np.int16
        )
        index = coded.rows(per_code, np.int16(-1))
        bad = index == -2
        expected = (
            f"one of {', '.join(allowed)}"
            if spec.name not in config.values
            else f"a code listed in the config (key '{key}') that maps to one of {', '.join(allowed)}"
        )
        problems = located.problems(bad, file_column, expected, coded.text(bad))
        return pd.Categorical.from_codes(
            np.maximum(index, -1), categories=list(allowed), ordered=spec.name == "parental_education"
        ), problems
    numbers, bad = rec.numbers(series)
    high = config.school_days if spec.name == "days_absent" else spec.max
    noun = "a whole number" if spec.kind == "int" else "a number"
    expected = f"{noun} {spec.min:g} to {high:g}" if high is not None else noun
    outside = ~np.isnan(numbers) & (
        (numbers < (spec.min or 0)) | (numbers > (high if high is not None else np.inf))
    )
    if spec.kind == "int":
        outside |= ~np.isnan(numbers) & (numbers != np.floor(numbers))
    wrong = bad | outside
    found = (
        rec.Coded.of(series).text(wrong)
        if wrong.any() and not pd.api.types.is_numeric_dtype(series)
        else numbers[wrong]
    )
    problems = located.problems(wrong, file_column, expected, found)
    numbers[wrong] = np.nan
    return numbers.astype(np.float32), problems


# ----------------------------------------------------------------------------------------------
# Long values -> the student-year table
# ----------------------------------------------------------------------------------------------


def drop_rows(values: dict[str, np.ndarray], located: rec.Located, keep: np.ndarray) -> rec.Located:
    for key in list(values):
        item = values[key]
        values[key] = item[keep] if not isinstance(item, pd.Series) else item[keep].reset_index(drop=True)
    return located.take(keep)


def resolve_duplicates(
    values: dict[str, np.ndarray], located: rec.Located, rule: str, summary: ValidationSummary
) -> tuple[rec.Located, list[Problem]]:
    """Two rows for one (student, subject, year): an error naming them, or the config's rule, counted."""
    student = values["student_id"].cat.codes.to_numpy().astype(np.int64)
    year = values["school_year"].astype(np.int64)
    subject = values["subject"].astype(np.int64)
    key = (student * 4096 + (year - 1800)) * 64 + subject
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    dup_sorted = np.zeros(len(key), dtype=bool)
    same = sorted_key[1:] == sorted_key[:-1]
    dup_sorted[1:] |= same
    dup_sorted[:-1] |= same
    if not dup_sorted.any():
        return located, []
    duplicated = np.zeros(len(key), dtype=bool)
    duplicated[order] = dup_sorted
    summary.duplicate_rule = rule
    summary.duplicate_groups = int(len(np.unique(key[duplicated])))
    if rule == "error":
        ids = values["student_id"].astype(object).to_numpy()
        return located, located.problems(
            duplicated,
            "student_id",
            "one row per student, subject and school year (duplicates found; set duplicates = "
            '"highest_score" or "last" in the config to resolve them)',
            ids[duplicated],
        )
    if rule == "highest_score":
        score = np.nan_to_num(values["scale_score"].astype(float), nan=-np.inf)
        order = np.lexsort((-score, key))
        first = np.ones(len(key), dtype=bool)
        first[1:] = key[order][1:] != key[order][:-1]
        keep_positions = order[first]
    else:  # last row in file order
        order = np.lexsort((np.arange(len(key))[::-1], key))
        first = np.ones(len(key), dtype=bool)
        first[1:] = key[order][1:] != key[order][:-1]
        keep_positions = order[first]
    keep = np.zeros(len(key), dtype=bool)
    keep[keep_positions] = True
    summary.duplicate_rows_dropped = int((~keep).sum())
    return drop_rows(values, located, keep), []


def student_year_table(
    values: dict[str, np.ndarray],
    config: DistrictConfig,
    subjects: Sequence[Subject],
    summary: ValidationSummary,
) -> pd.DataFrame:
    """Pivot subject rows into one row per student and year: attributes from the first row (file
    order), one score and level column per subject."""
    student = values["student_id"]
    codes = student.cat.codes.to_numpy().astype(np.int64)
    year = values["school_year"].astype(np.int64)
    key = codes * 4096 + (year - 1800)
    unique, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    grade = values["grade"]
    school = values["school_id"].cat.codes.to_numpy()
    conflict = (grade != grade[first][inverse]) | (school != school[first][inverse])
    summary.conflicting_student_years = int(len(np.unique(inverse[conflict])))
    table: dict[str, object] = {
        "student_id": pd.Categorical.from_codes(codes[first], categories=student.cat.categories),
        "school_year": year[first].astype(np.int16),
        "grade": pd.Categorical.from_codes(
            grade[first].astype(np.int16), categories=config.grades, ordered=True
        ),
    }
    for name in ("school_id", "school_name", "district"):
        if name in values:
            series = values[name]
            table[name] = pd.Categorical.from_codes(
                series.cat.codes.to_numpy()[first], categories=series.cat.categories
            )
    for spec in (*ATTRIBUTE_COLUMNS, *ENGAGEMENT_COLUMNS):
        if spec.name not in values:
            continue
        item = values[spec.name]
        if isinstance(item, pd.Categorical):
            table[spec.name] = pd.Categorical.from_codes(
                item.codes[first], categories=item.categories, ordered=item.ordered
            )
        else:
            # A student-year's attribute from its first non-missing subject row.
            table[spec.name] = first_present(item, inverse, len(unique))
    for i, subject in enumerate(subjects):
        mine = values["subject"] == i
        scores = np.full(len(unique), np.nan, dtype=np.float32)
        scores[inverse[mine]] = values["scale_score"][mine]
        table[score_column(subject.name)] = scores
        if "achievement_level" in values and subject.levels:
            levels = np.full(len(unique), -1, dtype=np.int16)
            levels[inverse[mine]] = values["achievement_level"][mine]
            table[level_column(subject.name)] = pd.Categorical.from_codes(
                levels, categories=list(subject.levels), ordered=True
            )
    frame = pd.DataFrame(table)
    if len(first) and (codes[first] >= 0).all() and 1800 <= year.min() and year.max() < 1800 + 4096:
        return frame  # np.unique sorted the rows by (student code, year): the order sorting gives
    return frame.sort_values(["student_id", "school_year"], kind="stable").reset_index(drop=True)


def first_present(values: np.ndarray, inverse: np.ndarray, n: int) -> np.ndarray:
    """Per group, the first non-missing value in row order (NaN when all are missing)."""
    out = np.full(n, np.nan, dtype=np.float32)
    present = ~np.isnan(values)
    positions = np.flatnonzero(present)[::-1]  # reversed so the first occurrence is written last
    out[inverse[positions]] = values[positions]
    return out


def add_proficiency(students: pd.DataFrame, subjects: Sequence[Subject], summary: ValidationSummary) -> None:
    """Achievement level from the cut scores (or the file) and the proficient flag, per subject."""
    grade_codes = students["grade"].cat.codes.to_numpy()
    grades = list(students["grade"].cat.categories)
    for subject in subjects:
        score = students[score_column(subject.name)].to_numpy(dtype=float)
        column = level_column(subject.name)
        if subject.cuts:
            cut_table = np.array([subject.cuts[g] for g in grades], dtype=float)  # grade x cuts
            safe = np.maximum(grade_codes, 0)
            derived = (score[:, None] >= cut_table[safe]).sum(axis=1).astype(np.int16)
            derived = np.where(np.isnan(score) | (grade_codes < 0), -1, derived)
            if column in students:
                reported = students[column].cat.codes.to_numpy()
                summary.level_mismatches += int(
                    ((reported >= 0) & (derived >= 0) & (reported != derived)).sum()
                )
            students[column] = pd.Categorical.from_codes(
                derived, categories=list(subject.levels), ordered=True
            )
        if column in students and subject.proficient is not None:
            codes = students[column].cat.codes.to_numpy()
            threshold = subject.levels.index(subject.proficient)
            students[proficient_column(subject.name)] = np.where(
                codes < 0, np.nan, codes >= threshold
            ).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Schools
# ----------------------------------------------------------------------------------------------


def read_schools(config: DistrictConfig) -> tuple[pd.DataFrame | None, list[Problem], Path | None]:
    """The optional schools file with contract names and types."""
    if not config.files.schools:
        return None, [], None
    path = config.resolve(config.files.schools)
    if not path.exists():
        raise ConfigError(config.path, [("files.schools", f"an existing file; {path} was not found")])
    mapping = config.school_columns.mapped()
    problems = check_mapped_columns(config, path, mapping, "school_columns")
    if problems:
        raise ConfigError(config.path, problems)
    frame = rec.read_text_columns(path, mapping)
    located = rec.Located(
        (str(path),), np.zeros(len(frame), np.int16), np.arange(1, len(frame) + 1, dtype=np.int32)
    )
    found: list[Problem] = []
    out = pd.DataFrame({"school_id": rec.tidy_text(frame["school_id"]).astype(str)})
    duplicated = out["school_id"].duplicated(keep=False).to_numpy()
    found += located.problems(
        duplicated,
        mapping["school_id"],
        "a unique school id (duplicate found)",
        out["school_id"].to_numpy()[duplicated],
    )
    if "school_name" in frame:
        out["school_name"] = rec.tidy_text(frame["school_name"]).astype(str)
    if "type" in frame:
        coded = rec.Coded.of(frame["type"])
        values, known = coded.mapped(config.values.get("type"))
        per_code = np.array(
            [v if k and v in SCHOOL_TYPES else None for v, k in zip(values, known, strict=True)], dtype=object
        )
        bad = coded.present & coded.rows(np.array([v is None for v in per_code]), False)
        found += located.problems(
            bad,
            mapping["type"],
            f"a school type mapping to {', '.join(SCHOOL_TYPES)} (config key 'values.type')",
            coded.text(bad),
        )
        out["type"] = pd.Categorical(coded.rows(per_code, None), categories=list(SCHOOL_TYPES))
    for name, noun in (("size", "a whole number >= 0"), ("budget", "a number >= 0")):
        if name in frame:
            numbers, bad = rec.numbers(frame[name])
            bad |= ~np.isnan(numbers) & (numbers < 0)
            text = rec.tidy_text(frame[name]).astype(object).to_numpy()
            found += located.problems(bad, mapping[name], noun, text[bad])
            out[name] = np.where(bad, np.nan, numbers)
    if "level" in frame:
        coded = rec.Coded.of(frame["level"])
        values, _ = coded.mapped(config.values.get("level"))
        out["level"] = pd.Categorical(coded.rows(values, None))
    return out, found, path


# ----------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------


def load(config: DistrictConfig, progress: bool = False, last_years: int | None = None) -> District:
    """Read, convert, validate and pivot a district; raise ContractError listing every problem.

    ``last_years`` (long and wide formats): only the latest that many school years of the data, e.g. 2
    for a forecast, which needs this year's and last year's records only. Rows of earlier years are
    then neither read nor validated, and files holding only earlier years are not read past their
    school-year column; the other years' tables are the same as a full load gives."""
    if config.format == "classic":
        from features.classic import load_classic

        return load_classic(config)
    subjects = resolve_subjects(config)
    summary = ValidationSummary(subjects=tuple(s.name for s in subjects))
    frame, located, paths = read_records(config, progress, last_years)
    summary.files = [(str(p), int((located.file_index == i).sum())) for i, p in enumerate(paths)]
    summary.rows_read = len(frame)
    converted = convert_records(frame, located, config, subjects)
    del frame
    problems = converted.problems
    values = converted.values
    schools, school_problems, schools_path = read_schools(config)
    problems += school_problems
    if problems:
        raise ContractError(problems)
    keep = ~values.pop("_skipped")
    if "valid_case" in values:
        valid = values.pop("valid_case")
        summary.invalid_cases_dropped = int((~valid & keep).sum())
        keep &= valid
    if not keep.all():
        located = drop_rows(values, located, keep)
    located, problems = resolve_duplicates(values, located, config.duplicates, summary)
    if problems:
        raise ContractError(problems)
    if schools is not None:
        # Checked once per distinct school id (the column is categorical), then looked up per row.
        school_ids = values["school_id"]
        listed = np.asarray(school_ids.cat.categories.isin(set(schools["school_id"])), dtype=bool)
        codes = school_ids.cat.codes.to_numpy()
        unknown = (codes < 0) | ~listed[np.maximum(codes, 0)]
        if unknown.any():
            ids = school_ids.astype(object).to_numpy()
            raise ContractError(
                located.problems(
                    unknown,
                    config.columns.school_id or "school_id",
                    f"a school listed in {Path(config.files.schools or '').name}",
                    ids[unknown],
                )
            )
    students = student_year_table(values, config, subjects, summary)
    del values
    add_school_names(students, schools)
    add_proficiency(students, subjects, summary)
    summary.student_years = len(students)
    summary.students = int(students["student_id"].nunique())
    summary.schools = int(students["school_id"].nunique())
    summary.years = tuple(sorted(int(y) for y in pd.unique(students["school_year"])))
    warnings = tuple(summary.lines()[1:-1])
    files = tuple(paths) + ((schools_path,) if schools_path else ())
    return District(config, students, schools, subjects, tuple(config.grades), summary, warnings, files)


def add_school_names(students: pd.DataFrame, schools: pd.DataFrame | None) -> None:
    """Names from the records, else from the schools file, else the school id."""
    if "school_name" in students:
        return
    ids = students["school_id"]
    if schools is not None and "school_name" in schools:
        names = schools.set_index("school_id")["school_name"]
        mapped = (
            pd.Series(ids.cat.categories, index=ids.cat.categories)
            .map(names)
            .fillna(pd.Series(ids.cat.categories, index=ids.cat.categories))
        )
        students["school_name"] = (
            pd.Categorical.from_codes(ids.cat.codes, categories=pd.Index(mapped).unique())
            if mapped.is_unique
            else ids.map(mapped).astype("category")
        )
    else:
        students["school_name"] = ids.astype(str).astype("category")


def load_district(
    config_path: Path | str | None = None,
    *,
    schools: Path | str | None = None,
    students: Path | str | None = None,
    pass_mark: float = CLASSIC_PASS_MARK,
    progress: bool = False,
    last_years: int | None = None,
) -> District:
    """The one way in: a config file, or the classic two tables (``schools`` + ``students``).
    ``last_years``: only the latest that many school years (see ``load``)."""
    from features.district_config import load_config

    if config_path is not None:
        config = load_config(config_path)
    elif schools is not None and students is not None:
        config = classic_config(schools, students, pass_mark)
    else:
        raise ValueError("give a config file or both classic tables (schools and students)")
    return load(config, progress, last_years)
