"""Validation of district tables against the contract, with messages a district analyst can act on.

Every problem names the file, the row(s) (1-based data rows; the file line is row + 1), the
column and what was expected. Problems are collected, not raised one at a time, so a user
fixes a file in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

from features.contract import Column

MAX_ROWS_SHOWN = 5
TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "1.0"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "0.0"})


@dataclass(frozen=True)
class Problem:
    """One contract violation, located precisely."""

    file: str
    column: str | None
    rows: tuple[int, ...]
    expected: str
    found: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"{self.file}"
        if self.rows:
            shown = ", ".join(str(r) for r in self.rows[:MAX_ROWS_SHOWN])
            more = f" (+{len(self.rows) - MAX_ROWS_SHOWN} more)" if len(self.rows) > MAX_ROWS_SHOWN else ""
            where += f", row{'s' if len(self.rows) > 1 else ''} {shown}{more}"
        if self.column:
            where += f", column '{self.column}'"
        found = f"; found {', '.join(repr(f) for f in self.found[:MAX_ROWS_SHOWN])}" if self.found else ""
        return f"{where}: expected {self.expected}{found}"


class ContractError(ValueError):
    """Raised when input data breaks the contract; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def data_rows(index: pd.Index | np.ndarray | list[int]) -> tuple[int, ...]:
    """Positional frame index (0-based) to the 1-based data row numbers shown to users."""
    return tuple(int(i) + 1 for i in index)


def expected_text(col: Column) -> str:
    if col.kind in ("int", "float"):
        noun = "a whole number" if col.kind == "int" else "a number"
        return f"{noun} {col.allowed_text}" if col.min is not None else noun
    if col.kind == "bool":
        return "a yes/no value (0/1, true/false, yes/no)"
    if col.allowed:
        return f"one of {', '.join(col.allowed)}"
    return "a non-empty text"


def coerce_column(series: pd.Series, col: Column, file: str) -> tuple[pd.Series, list[Problem]]:
    """Convert one column to its contract type; values that cannot be converted are problems."""
    present = series.notna() & (series.astype("string").str.strip() != "")
    if col.kind in ("int", "float"):
        converted = pd.to_numeric(series, errors="coerce")
        bad = present & converted.isna()
        if col.kind == "int":
            fractional = converted.notna() & (converted != np.floor(converted))
            bad |= fractional
    elif col.kind == "bool":
        words = series.astype("string").str.strip().str.lower()
        converted = pd.Series(
            np.where(words.isin(TRUE_WORDS), 1.0, np.where(words.isin(FALSE_WORDS), 0.0, np.nan)),
            index=series.index,
        )
        bad = present & converted.isna()
    else:
        converted = series.astype("string").str.strip().where(present)
        bad = pd.Series(False, index=series.index)
    problems = []
    if bad.any():
        rows = np.flatnonzero(bad.to_numpy())
        problems.append(
            Problem(
                file,
                col.name,
                data_rows(rows),
                expected_text(col),
                tuple(str(v) for v in series.to_numpy()[rows]),
            )
        )
    if col.required:
        missing = ~present
        if missing.any():
            problems.append(
                Problem(
                    file,
                    col.name,
                    data_rows(np.flatnonzero(missing.to_numpy())),
                    f"{expected_text(col)}, found an empty cell",
                )
            )
    converted = converted.where(~bad)
    if col.kind == "int" and converted.notna().all():
        converted = converted.astype("int64")
    return converted, problems


def pandera_schema(columns: tuple[Column, ...], unique: tuple[str, ...]) -> pa.DataFrameSchema:
    """Range, category and uniqueness rules from the contract (types are coerced beforehand)."""
    spec = {}
    for col in columns:
        checks = []
        if col.min is not None and col.max is not None:
            checks.append(pa.Check.in_range(col.min, col.max))
        elif col.min is not None:
            checks.append(pa.Check.gt(col.min))
        if col.allowed:
            checks.append(pa.Check.isin(list(col.allowed)))
        spec[col.name] = pa.Column(
            checks=checks, nullable=True, unique=col.name in unique, required=False, report_duplicates="all"
        )
    return pa.DataFrameSchema(spec)


def schema_problems(
    frame: pd.DataFrame, columns: tuple[Column, ...], unique: tuple[str, ...], file: str
) -> list[Problem]:
    """Run the pandera schema lazily and turn its failure cases into located problems."""
    by_name = {c.name: c for c in columns}
    try:
        pandera_schema(columns, unique).validate(frame.reset_index(drop=True), lazy=True)
    except pa.errors.SchemaErrors as err:
        cases = err.failure_cases.dropna(subset=["index"])
        problems = []
        for (column, check), group in cases.groupby(["column", "check"], sort=False):
            col = by_name[column]
            if check == "field_uniqueness":
                expected = "a unique value (duplicate found)"
            else:
                expected = expected_text(col)
            rows = data_rows(sorted(group["index"].astype(int).unique()))
            problems.append(
                Problem(
                    file,
                    column,
                    rows,
                    expected,
                    tuple(str(v) for v in group["failure_case"].head(MAX_ROWS_SHOWN)),
                )
            )
        return problems
    return []


def validate_table(
    raw: pd.DataFrame, columns: tuple[Column, ...], file: str, unique: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Check a whole table: required columns, emptiness, types, ranges, categories, uniqueness.

    Returns the table with contract types; raises ContractError listing every problem.
    """
    missing = [c.name for c in columns if c.required and c.name not in raw.columns]
    if missing:
        raise ContractError(
            [
                Problem(
                    file,
                    name,
                    (),
                    "this required column; the file's columns are "
                    f"{', '.join(map(str, raw.columns)) or 'none'}",
                )
                for name in missing
            ]
        )
    if raw.empty:
        raise ContractError([Problem(file, None, (), "at least one data row; the table is empty")])
    frame = raw.reset_index(drop=True).copy()
    problems: list[Problem] = []
    present = [c for c in columns if c.name in frame.columns]
    for col in present:
        frame[col.name], found = coerce_column(frame[col.name], col, file)
        problems.extend(found)
    problems.extend(schema_problems(frame[[c.name for c in present]], tuple(present), unique, file))
    if problems:
        raise ContractError(problems)
    return frame
