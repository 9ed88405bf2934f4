"""Reading records files column-wise and turning text cells into contract values, fast.

Every column is read as dictionary-encoded text (pyarrow), so a 10-million-row file costs one
small integer per cell and each distinct value is parsed once: a scale-score column with 800
distinct values is converted by parsing 800 strings, and a bad cell is located through its code.
Parquet is read column-wise, only the mapped columns.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from features.validation import MAX_ROWS_SHOWN, ContractError, Problem

TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "1.0"})
FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "0.0"})
PARQUET_SUFFIXES = (".parquet", ".pq")
TEXT = pa.dictionary(pa.int32(), pa.string())


@dataclass(frozen=True)
class Located:
    """Where a frame's rows came from: file of each row and its 1-based data row within that file."""

    files: tuple[str, ...]
    file_index: np.ndarray  # int16 per row
    row: np.ndarray  # int32 per row, 1-based data row (the file's line is row + 1 for CSV)

    def problems(
        self, mask: np.ndarray, column: str, expected: str, found: Sequence[object] | np.ndarray = ()
    ) -> list[Problem]:
        """One Problem per file for the rows in ``mask``, showing the first few values found (none when
        ``found`` is empty: an empty cell, which ``expected`` already names)."""
        positions = np.flatnonzero(mask)
        if not len(positions):
            return []
        found = np.asarray(found, dtype=object)
        out = []
        for index in np.unique(self.file_index[positions]):
            mine = positions[self.file_index[positions] == index]
            chosen = found[np.isin(positions, mine)] if len(found) else found
            shown = [str(v) for v in chosen[:MAX_ROWS_SHOWN]]
            out.append(
                Problem(
                    self.files[index], column, tuple(int(r) for r in self.row[mine]), expected, tuple(shown)
                )
            )
        return out

    def take(self, keep: np.ndarray) -> Located:
        return Located(self.files, self.file_index[keep], self.row[keep])


def header(path: Path) -> list[str]:
    """Column names of a CSV (first line, BOM and spaces stripped) or Parquet file, reading no data."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return list(pq.read_schema(path).names)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        first = next(csv.reader(handle), [])
    return [name.strip() for name in first]


def read_table(path: Path, columns: Mapping[str, str]) -> pa.Table:
    """Read the file columns named in ``columns`` (contract name -> file column) as an Arrow table under
    contract names: text as dictionary-encoded strings; numbers in Parquet files stay numbers."""
    wanted = list(dict.fromkeys(columns.values()))
    if path.suffix.lower() in PARQUET_SUFFIXES:
        schema = pq.read_schema(path)
        text = [name for name in wanted if name in schema.names and _is_text(schema.field(name).type)]
        # Text columns are read straight into dictionaries: each distinct value is decoded once, not
        # once per row (several times faster, far less memory, on a dictionary-encoded column).
        table = pq.read_table(path, columns=wanted, read_dictionary=text)
        fields = [
            pa.field(f.name, TEXT if f.name in text or _is_text(f.type) else f.type) for f in table.schema
        ]
        table = table.cast(pa.schema(fields))
    else:
        names = header(path)
        try:
            table = pacsv.read_csv(
                path,
                read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, block_size=1 << 24),
                convert_options=pacsv.ConvertOptions(
                    include_columns=wanted,
                    column_types={name: TEXT for name in wanted},
                    strings_can_be_null=True,
                    null_values=["", "NA", "N/A", "NULL", "null", "NaN", "nan", "."],
                ),
            )
        except (pa.ArrowInvalid, UnicodeDecodeError) as err:
            raise ContractError([Problem(str(path), None, (), f"a UTF-8 CSV file ({err})")]) from None
    return pa.table({name: table.column(source) for name, source in columns.items()})


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def tables_to_frame(tables: list[pa.Table]) -> pd.DataFrame:
    """One frame from several files' tables; dictionaries are unified, so text stays categorical."""
    combined = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return combined.to_pandas(self_destruct=True)


def read_text_columns(path: Path, columns: Mapping[str, str]) -> pd.DataFrame:
    """``read_table`` as a pandas frame (categorical text)."""
    return tables_to_frame([read_table(path, columns)])


def tidy_text(series: pd.Series) -> pd.Series:
    """Categorical text with surrounding whitespace stripped; empty cells become missing."""
    if not isinstance(series.dtype, pd.CategoricalDtype):
        series = series.astype("string").astype("category")
    categories = pd.Index(series.cat.categories.astype(str)).str.strip()
    unique, inverse = sorted_unique(categories)
    codes = series.cat.codes.to_numpy()
    new_codes = np.where(codes >= 0, inverse[np.maximum(codes, 0)], -1).astype(np.int32)
    empty = np.flatnonzero(unique == "")
    if len(empty):
        new_codes[new_codes == empty[0]] = -1
    return pd.Series(pd.Categorical.from_codes(new_codes, categories=unique), index=series.index)


ARROW_SORT_FROM = 1_000  # distinct texts; below this numpy's sort is as fast


def sorted_unique(texts: pd.Index) -> tuple[np.ndarray | pd.Index, np.ndarray]:
    """``np.unique(texts, return_inverse=True)`` for text: sorted distinct values and each value's position
    among them. Many values (a student id column: millions, in file order) are sorted and matched by Arrow,
    many times faster than sorting Python strings; the order is the same (by code point)."""
    if len(texts) >= ARROW_SORT_FROM:
        try:
            values = pa.array(texts.array)
            if _is_text(values.type) and not values.null_count:
                distinct = pc.unique(values)
                distinct = distinct.take(pc.array_sort_indices(distinct))
                inverse = pc.index_in(values, value_set=distinct).to_numpy(zero_copy_only=False)
                return pd.Index(distinct.to_pandas(), dtype=texts.dtype), inverse.astype(np.intp)
        except (pa.ArrowException, TypeError, ValueError):
            pass
    return np.unique(np.asarray(texts, dtype=object), return_inverse=True)


def numbers(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, mask of cells that are present but not numbers)."""
    if pd.api.types.is_numeric_dtype(series) and not isinstance(series.dtype, pd.CategoricalDtype):
        # A copy when needed: a Parquet column without nulls arrives as a read-only view of Arrow memory,
        # and callers blank out-of-range values in place.
        values = np.require(series.to_numpy(dtype=float, na_value=np.nan), requirements="W")
        return values, np.zeros(len(values), dtype=bool)
    text = tidy_text(series)
    parsed = pd.to_numeric(pd.Series(text.cat.categories), errors="coerce").to_numpy(dtype=float)
    codes = text.cat.codes.to_numpy()
    values = np.where(codes >= 0, parsed[np.maximum(codes, 0)] if len(parsed) else np.nan, np.nan)
    bad = (codes >= 0) & np.isnan(values)
    return values, bad


@dataclass(frozen=True)
class Coded:
    """A text column as codes into its distinct values, so every conversion (value maps, grade and
    subject lookups, booleans) runs once per distinct value and then indexes the rows."""

    codes: np.ndarray  # int32 per row; -1 for an empty cell
    categories: np.ndarray  # object: the distinct texts, whitespace stripped

    @classmethod
    def of(cls, series: pd.Series) -> Coded:
        text = tidy_text(series)
        return cls(text.cat.codes.to_numpy().astype(np.int32), np.asarray(text.cat.categories, dtype=object))

    @property
    def present(self) -> np.ndarray:
        return self.codes >= 0

    def rows(self, per_category: np.ndarray, empty: object) -> np.ndarray:
        """Per-row values from one value per distinct text (``empty`` for empty cells)."""
        table = np.append(np.asarray(per_category), np.asarray([empty], dtype=np.asarray(per_category).dtype))
        return table[np.where(self.codes >= 0, self.codes, len(self.categories))]

    def text(self, mask: np.ndarray) -> np.ndarray:
        """The texts of the rows in ``mask`` (for messages)."""
        return self.categories[self.codes[mask]] if mask.any() else np.array([], dtype=object)

    def mapped(
        self, mapping: Mapping[str, object] | None, default: Mapping[str, object] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mapped value per distinct text, whether each was mapped): through ``mapping`` when the config
        gives one, else through ``default`` (e.g. yes/no words), else the text itself."""
        lookup = {str(k).strip(): v for k, v in (mapping or {}).items()}
        fallback = {str(k).strip().lower(): v for k, v in (default or {}).items()}
        values = np.empty(len(self.categories), dtype=object)
        known = np.zeros(len(self.categories), dtype=bool)
        for i, code in enumerate(self.categories):
            if lookup:
                known[i] = code in lookup
                values[i] = lookup.get(code)
            elif default is not None:
                known[i] = code.lower() in fallback
                values[i] = fallback.get(code.lower())
            else:
                values[i], known[i] = code, True
        return values, known

    def unmapped_rows(self, known: np.ndarray) -> np.ndarray:
        return self.present & ~self.rows(known, True)


BOOL_WORDS: dict[str, bool] = {**{w: True for w in TRUE_WORDS}, **{w: False for w in FALSE_WORDS}}


def school_year_values(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """2023, '2023', '2022-2023', '2022_2023' (the SGP package's style), '2022-23' and '2022/23' all mean the
    school year ending in 2023."""
    text = tidy_text(series)
    categories = pd.Series(np.asarray(text.cat.categories, dtype=object), dtype="string")
    parts = categories.str.extract(r"^(\d{4})(?:\s*[-/_]\s*(\d{2}|\d{4}))?$")
    start = pd.to_numeric(parts[0], errors="coerce")
    end = parts[1]
    year = start.copy()
    has_end = end.notna()
    end_num = pd.to_numeric(end, errors="coerce")
    full = has_end & (end.str.len() == 4)
    short = has_end & (end.str.len() == 2)
    year[full] = end_num[full]
    year[short] = (start[short] // 100) * 100 + end_num[short]
    year[short & (year <= start)] += 100
    consistent = ~has_end | (year == start + 1)
    year = year.where(consistent)
    codes = text.cat.codes.to_numpy()
    lookup = year.to_numpy(dtype=float, na_value=np.nan)
    values = np.where(codes >= 0, lookup[np.maximum(codes, 0)] if len(lookup) else np.nan, np.nan)
    return values, (codes >= 0) & np.isnan(values)


def year_from_filename(path: Path) -> int | None:
    """The last 4-digit number between 1900 and 2100 in a file name, for one-file-per-year exports."""
    import re

    years = [int(y) for y in re.findall(r"(?<!\d)(\d{4})(?!\d)", path.stem) if 1900 < int(y) < 2100]
    return years[-1] if years else None
