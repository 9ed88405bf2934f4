"""The self-contained HTML page: display formatting of the tables and the Jinja2 rendering.

The CSVs keep raw numbers; only here are values formatted for people ($1,910,635.00, 65.17%).
Missing values are shown as a dash with a tooltip, never as 0, and charts are embedded as
base64 so the page is one file a board member can open offline.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import pandas as pd

if TYPE_CHECKING:
    from reports.narrative import Narrative

TEMPLATES = Path(__file__).parent / "templates"
MISSING = "—"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA


def money(x: float) -> str:
    """Dollars with cents and thousands separators: $1,910,635.00."""
    return MISSING if _missing(x) else f"${x:,.2f}"


def pct(x: float) -> str:
    """A 0-100 percentage with two decimals: 65.17%."""
    return MISSING if _missing(x) else f"{x:.2f}%"


def score(x: float) -> str:
    """An average score with two decimals."""
    return MISSING if _missing(x) else f"{x:.2f}"


def number(x: float) -> str:
    """A count with thousands separators."""
    return MISSING if _missing(x) else f"{x:,.0f}"


def formatter_for(header: str) -> Callable[[Any], str] | None:
    """How a column is shown, from its header; None for text columns."""
    if "Budget" in header:
        return money
    if header.startswith("%"):
        return pct
    if header.startswith("Average") or header in ("9th", "10th", "11th", "12th"):
        return score
    if header in ("Total Students", "Total Schools", "Number of Schools", "Rank"):
        return number
    return None


@dataclass(frozen=True)
class Cell:
    text: str
    numeric: bool
    missing: bool


@dataclass(frozen=True)
class HtmlTable:
    headers: tuple[str, ...]
    numeric: tuple[bool, ...]
    rows: tuple[tuple[Cell, ...], ...]
    flagged: tuple[bool, ...]  # rows to highlight, e.g. "outside bins"


def format_table(df: pd.DataFrame, flag: Callable[[pd.Series], bool] | None = None) -> HtmlTable:
    """Format every cell of a table for display; text columns left, numbers right-aligned."""
    fmts = [formatter_for(str(c)) for c in df.columns]
    rows, flagged = [], []
    for _, row in df.iterrows():
        cells = []
        for value, fmt in zip(row.tolist(), fmts, strict=True):
            missing = _missing(value)
            text = MISSING if missing else (fmt(value) if fmt else str(value))
            cells.append(Cell(text, fmt is not None, missing))
        rows.append(tuple(cells))
        flagged.append(bool(flag(row)) if flag else False)
    numeric = tuple(f is not None for f in fmts)
    return HtmlTable(tuple(map(str, df.columns)), numeric, tuple(rows), tuple(flagged))


def data_uri(png: bytes) -> str:
    """A PNG as a data URI, so the page needs no files beside it."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


@dataclass(frozen=True)
class Kpi:
    label: str
    value: str


def district_kpis(district: pd.DataFrame) -> list[Kpi]:
    """The district summary row as headline figures."""
    row = district.iloc[0]
    return [
        Kpi(str(c), formatter_for(str(c))(row[c]) if formatter_for(str(c)) else str(row[c]))
        for c in district.columns
    ]


def render_report(
    *,
    title: str,
    subtitle: str,
    district: pd.DataFrame,
    tables: Mapping[str, HtmlTable],
    charts: Mapping[str, bytes],
    narrative: Narrative,
    notes: Sequence[str],
    definitions: Sequence[str],
) -> str:
    """The report page as one HTML string."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    template = env.get_template("report.html.j2")
    return template.render(
        title=title,
        subtitle=subtitle,
        kpis=district_kpis(district),
        tables=tables,
        charts={name: data_uri(png) for name, png in charts.items()},
        narrative=narrative,
        notes=list(notes),
        definitions=list(definitions),
        missing=MISSING,
    )
