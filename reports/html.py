"""The self-contained HTML page: display formatting of the tables and the Jinja2 rendering.

The CSVs keep raw numbers; only here are values formatted for people ($1,910,635.00, 65.17%).
A missing value is a dash with a tooltip, never 0; a suppressed one (too few students) is a dash
marked "s" with its reason. Charts are embedded as base64 so the page is one file a board member
can open offline. The page is a list of sections, each a list of blocks (chart, table, or the
note standing where a table was left out), so it adapts to what the district has.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from reports.formatting import MISSING, is_missing, money, number, pct, score
from reports.narrative import Narrative

TEMPLATES = Path(__file__).parent / "templates"
COUNT_HEADERS = frozenset({"Total Students", "Total Schools", "Number of Schools", "Rank"})
TALL_ROWS = 30  # tables longer than this scroll inside a box with a sticky header


def formatter_for(header: str) -> Callable[[Any], str] | None:
    """How a column is shown, from its header; None for text columns."""
    if "Budget" in header:
        return money
    if header.startswith("%"):
        return pct
    if header.startswith("Average"):
        return score
    if header in COUNT_HEADERS:
        return number
    return None


@dataclass(frozen=True)
class Cell:
    text: str
    numeric: bool
    missing: bool
    suppressed: bool = False


@dataclass(frozen=True)
class HtmlTable:
    headers: tuple[str, ...]
    numeric: tuple[bool, ...]
    rows: tuple[tuple[Cell, ...], ...]
    flagged: tuple[bool, ...]  # rows to highlight, e.g. "outside bins"

    @property
    def tall(self) -> bool:
        return len(self.rows) > TALL_ROWS


def format_table(
    df: pd.DataFrame,
    flag: Callable[[pd.Series], bool] | None = None,
    suppressed: pd.DataFrame | None = None,
    formats: Mapping[str, Callable[[Any], str]] | None = None,
) -> HtmlTable:
    """Format every cell for display; text columns left, numbers right-aligned. ``suppressed``
    (same shape, booleans) marks suppressed cells; ``formats`` overrides the header rules."""
    formats = formats or {}
    fmts = [formats.get(str(c), formatter_for(str(c))) for c in df.columns]
    if suppressed is None:
        hidden = np.zeros(df.shape, dtype=bool)
    else:
        hidden = suppressed.reindex(index=df.index, columns=df.columns, fill_value=False).to_numpy(dtype=bool)
    columns = []
    for j, (column, fmt) in enumerate(zip(df.columns, fmts, strict=True)):
        cells = []
        for i, value in enumerate(df[column].tolist()):
            missing = is_missing(value)
            text = MISSING if missing else (fmt(value) if fmt else str(value))
            cells.append(Cell(text, fmt is not None, missing, bool(hidden[i, j] and missing)))
        columns.append(cells)
    rows = tuple(zip(*columns, strict=True)) if columns else ()
    flagged = tuple(bool(flag(r)) for _, r in df.iterrows()) if flag else (False,) * len(df)
    numeric = tuple(f is not None for f in fmts)
    return HtmlTable(tuple(map(str, df.columns)), numeric, rows, flagged)


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
    out = []
    for c in district.columns:
        fmt = formatter_for(str(c))
        out.append(Kpi(str(c), fmt(row[c]) if fmt else str(row[c])))
    return out


@dataclass(frozen=True)
class Block:
    """One thing in a section: ``kind`` is "chart" (``src`` is a PNG's bytes), "table", "tables"
    (several tables side by side), "text" (a paragraph) or "omitted" (a table left out: ``text``
    says why, where the table would have been)."""

    kind: str
    text: str = ""
    caption: str = ""
    table: HtmlTable | None = None
    tables: tuple[tuple[str, HtmlTable], ...] = ()
    png: bytes = b""
    alt: str = ""
    css: str = ""

    @property
    def src(self) -> str:
        return data_uri(self.png)


@dataclass(frozen=True)
class PageSection:
    anchor: str
    title: str
    nav: str
    lead: str = ""
    blocks: tuple[Block, ...] = field(default_factory=tuple)


def render_report(
    *,
    title: str,
    subtitle: str,
    district: pd.DataFrame,
    sections: Sequence[PageSection],
    narrative: Narrative,
    insight_chart: Block | None,
    notes: Sequence[str],
    definitions: Sequence[str],
    cuts: Block | None,
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
        sections=list(sections),
        narrative=narrative,
        insight_chart=insight_chart,
        notes=list(notes),
        definitions=list(definitions),
        cuts=cuts,
        missing=MISSING,
    )
