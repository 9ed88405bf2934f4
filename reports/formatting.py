"""How figures are written for people: the one module every other report module imports.

It imports no other module of ``reports`` (tests/test_reports.py checks the import graph), so the
tables, the narrative, the charts and the HTML page can all share these helpers without cycles.
The CSV tables keep raw numbers; only the page and the prose are formatted. A missing value is a
dash, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

MISSING = "—"
SUPPRESSED = "suppressed"  # the text of a suppressed cell in the CSV tables


def is_missing(x: Any) -> bool:
    """None, NaN or pandas' NA: shown as a dash."""
    return x is None or (pd.api.types.is_scalar(x) and bool(pd.isna(x)))


def money(x: float) -> str:
    """Dollars with cents and thousands separators: $1,910,635.00."""
    return MISSING if is_missing(x) else f"${x:,.2f}"


def pct(x: float) -> str:
    """A 0-100 percentage with two decimals: 65.17%."""
    return MISSING if is_missing(x) else f"{x:.2f}%"


def score(x: float) -> str:
    """An average score with two decimals."""
    return MISSING if is_missing(x) else f"{x:,.2f}"


def number(x: float) -> str:
    """A count with thousands separators."""
    return MISSING if is_missing(x) else f"{x:,.0f}"


def text(x: Any) -> str:
    return MISSING if is_missing(x) else str(x)


def prose_pct(x: float) -> str:
    """Percent with one decimal: prose reads better than the tables' two."""
    return f"{x:.1f}%" if not is_missing(x) and math.isfinite(x) else "n/a"


def prose_money(x: float) -> str:
    return f"${x:,.0f}" if not is_missing(x) and math.isfinite(x) else "n/a"


def prose_number(x: float) -> str:
    return f"{x:,.0f}" if not is_missing(x) and math.isfinite(x) else "n/a"


def cut(x: float) -> str:
    """A cut score as written in the config: 70, 512.5."""
    return f"{x:g}"


def year_label(year: int, classic: bool = False) -> str:
    """A school year as people say it: 2023 -> "2022-23". The classic format's two years are the
    prior year (0) and the current year (1); a forecast is for the next year (2)."""
    if classic:
        return {0: "prior year", 1: "current year", 2: "next year"}.get(int(year), f"year {int(year)}")
    return f"{int(year) - 1}-{int(year) % 100:02d}"


def listing(names: Sequence[str], limit: int = 12) -> str:
    """'A, B and C', or the first ``limit`` names and 'and 31 more'."""
    names = [str(n) for n in names]
    if len(names) <= limit:
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1] if names else ""
    return ", ".join(names[:limit]) + f" and {len(names) - limit} more"


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 school', '3 schools'."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"
