"""The growth report a school board reads: ``growth.html`` and its CSVs, for one target year.

Per subject it shows (docs/growth_report.md explains how to read each part):

1. growth against achievement per school: median SGP, and value-added, against % proficient;
2. the value-added table (both views, 90% intervals, reliability, growth index, band), sortable in
   the browser, with what each view includes and, on the synthetic district, how it did against
   the truth;
3. subgroup growth gaps: median SGP with 90% intervals by disadvantage, English learner, special
   education, gender and grade;
4. what drives growth in the champion model (permutation importance, partial dependence);
5. the champion's model card (validation, error against the baselines, interval coverage,
   fairness of the growth model and of the needs-support classifier) and the limits.

The measures come from ``training.measures`` (SGPs, group medians, value-added, the truth check);
every per-school % proficient from ``reports.tables.aggregate`` (``school_aggregates``, the one
source of school figures). Sections 4 and 5 read the files ``growth train`` writes into
``<out>/evaluation/<subject>/`` and say plainly when there is no champion yet. Every group of
fewer than ``report.min_group_size`` students is suppressed in every table, CSV and chart. The
page holds school- and group-level figures only: no student id or name.

Files are written to a temporary folder beside ``out_dir`` and moved into place only when all of
them were written (the district report's files in the same folder are left alone). Figures for
MLflow (``median_sgp_<subject>``, ``va_corr_true_effect_<subject>``, ``va_coverage_<subject>``...)
go to ``growth_metrics.json``; ``growth_mlflow_metrics(out_dir)`` reads them back.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.lines import Line2D

from features.contract import prior_score_column
from reports import charts, html
from reports import tables as t
from reports.build import _move_into_place, _step, _umask, _write
from reports.formatting import MISSING, SUPPRESSED, is_missing, listing, number, plural, year_label
from training.data import DistrictData
from training.measures import (
    GROUPS,
    TruthCheck,
    group_medians,
    report_year,
    status_summary,
    student_sgps,
    truth_school_effects,
    va_truth,
    value_added,
)
from training.value_added import BANDS, VAConfig, ValueAdded, school_value_added

TITLE = "Student growth report"
HTML_NAME = "growth.html"
METRICS_NAME = "growth_metrics.json"
MAX_LABELS = 10  # school names drawn on a growth-vs-achievement chart (the most extreme schools)
LABEL_ALL = 12  # up to this many schools, every school is named
WHISKERS_UP_TO = 60  # intervals drawn on the per-school charts up to this many schools
TOP_IMPORTANCE = 15
NO_CHAMPION = "No champion trained for {label} yet: run growth tune and growth train."
BAND_CSS = {b: "band-" + b.replace(" ", "-") for b in BANDS}
GROUP_TITLES = {
    "all": "All students",
    "econ_disadvantaged": "Economically disadvantaged",
    "english_learner": "English learner",
    "special_education": "Special education",
    "gender": "Gender",
    "grade": "Grade",
    "school_type": "School type",
}
VALUE_WORDS = {"F": "female", "M": "male", "X": "non-binary", "missing": "not recorded"}
FAMILY_WORDS = {
    "lgbm": "gradient-boosted trees (LightGBM)",
    "linear": "regularised linear regression",
    "keras": "neural network (Keras)",
    "ensemble": "average of the two best families",
    "logistic": "regularised logistic regression",
    "baseline_linear": "baseline: linear regression on prior scores",
    "baseline_naive": "baseline: everyone grows the grade's average",
    "baseline_rule": "baseline: last year's score below the cut",
    "baseline_logistic": "baseline: logistic regression on prior scores",
}
COLUMN_WORDS = {
    "school_id": "school",
    "school_year": "school year",
    "grade": "grade",
    "gender": "gender",
    "econ_disadvantaged": "economically disadvantaged",
    "english_learner": "English learner",
    "special_education": "special education",
    "parental_education": "parental education",
    "home_internet": "home internet access",
    "commute_minutes": "commute (minutes)",
    "prior_days_absent": "days absent last year",
    "prior_homework_completion_pct": "homework completed last year (%)",
    "prior_extracurricular_count": "extracurricular activities last year",
    "prior_platform_logins_per_week": "learning-platform logins per week last year",
}


# ----------------------------------------------------------------------------------------------
# What the page is made of (the template renders these next to html.Block)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SortCell:
    text: str
    key: str  # the value the browser sorts by ("" sorts last)
    css: str = ""
    title: str = ""


@dataclass(frozen=True)
class SortableTable:
    """A table sortable by any column in the browser: each cell carries ``data-sort``."""

    id: str
    caption: str
    groups: tuple[tuple[str, int], ...]  # header groups above the headers: (label, columns spanned)
    headers: tuple[str, ...]
    numeric: tuple[bool, ...]
    rows: tuple[tuple[SortCell, ...], ...]
    kind: str = "sortable"


@dataclass(frozen=True)
class Box:
    """A framed note with a title, paragraphs, bullet points and an optional table."""

    title: str
    paragraphs: tuple[str, ...] = ()
    bullets: tuple[str, ...] = ()
    table: html.HtmlTable | None = None
    css: str = ""
    kind: str = "box"


@dataclass(frozen=True)
class Heading:
    """A subject's heading inside a section."""

    text: str
    kind: str = "heading"


@dataclass(frozen=True)
class Charts:
    """Charts side by side (stacked on a narrow screen)."""

    blocks: tuple[html.Block, ...]
    kind: str = "charts"


@dataclass(frozen=True)
class Section:
    anchor: str
    title: str
    nav: str
    lead: str = ""
    parts: tuple[Any, ...] = ()
    level: int = 2


# ----------------------------------------------------------------------------------------------
# The figures
# ----------------------------------------------------------------------------------------------


@dataclass
class SubjectGrowth:
    """One subject's measures for the report year."""

    name: str
    label: str
    schools: pd.DataFrame  # one row per school: label, n, median_sgp, lower, upper, pct, va columns
    groups: pd.DataFrame  # median SGP per group (by, value, n, median_sgp, lower, upper, suppressed)
    district_median: float
    district_pct: float | None  # None: the subject has no % proficient
    va: ValueAdded | None
    va_note: str  # why there is no value-added (when va is None)
    truth: list[TruthCheck]
    measured: int  # students with an SGP
    statuses: dict[str, int]  # pair status -> students of the year


@dataclass
class GrowthComputed:
    """Everything the page and the CSVs show, before anything is drawn or written."""

    year: int
    year_label: str
    classic: bool
    district_name: str | None
    min_n: int
    passing_word: str
    subjects: dict[str, SubjectGrowth]
    colour_by: str | None  # "School level" or "School type": the colour of the school charts
    n_schools: int
    n_students: int
    truth_folder: Path | None
    grades: tuple[str, ...]
    prior_values: dict[str, np.ndarray] = field(default_factory=dict)  # model inputs of the year's pairs

    @property
    def year_phrase(self) -> str:
        """The year in a sentence: "2024-25", or "the current year" in the classic format."""
        return f"the {self.year_label}" if self.classic else self.year_label


def _data_folder(data: DistrictData) -> Path:
    source = data.source
    return Path(source.config).parent if source.config else Path(source.students).parent


def compute_growth(data: DistrictData, year: int | None = None, progress: bool = False) -> GrowthComputed:
    """SGPs, group medians, value-added and the truth check of one target year (default: the latest
    year with growth pairs), joined with each school's % proficient of that year."""
    year = report_year(data, year)
    district = data.district
    min_n = int(district.config.report.min_group_size)
    students = district.year(year)
    spec = t.spec_for(district, year, students)
    raw = t.aggregate(students, district.schools, spec)
    shown, _ = t.suppress(raw, spec)
    totals = t.district_figures(students, district.schools, spec)

    sgps = student_sgps(data, year, progress=progress)
    sgps = sgps.loc[:, ~sgps.columns.duplicated()]  # student_sgps keeps "grade" twice (key and group)
    medians = group_medians(sgps, min_n)
    va_all, notes = _value_added(data, year, min_n)
    folder = _data_folder(data)
    truth = truth_school_effects(folder)
    checks = va_truth(va_all, truth, data.pairs, year) if truth is not None else []
    statuses = status_summary(data, year)

    colour_by = None
    for column in ("school_level", "school_type"):
        if t.has_values(raw, column):
            colour_by = column
            break
    out: dict[str, SubjectGrowth] = {}
    for subject in data.subjects:
        mine = medians[medians["subject"] == subject]
        if mine.empty:
            continue
        schools = mine[mine["by"] == "school"].set_index("school_id")
        frame = pd.DataFrame(index=pd.Index(raw.index.astype(str), name="school_id"))
        frame["label"] = raw["label"].astype(str).to_numpy()
        frame["group"] = (
            raw[colour_by].astype(object).where(raw[colour_by].notna(), "unknown").astype(str).to_numpy()
            if colour_by
            else ""
        )
        for column in ("n", "median_sgp", "lower", "upper", "suppressed"):
            frame[column] = schools[column].reindex(frame.index)
        frame = frame[frame["suppressed"].notna()].copy()  # schools without an SGP this year
        frame["suppressed"] = frame["suppressed"].astype(bool)
        rated = t.pct_key(subject) in shown
        frame["pct"] = shown[t.pct_key(subject)].reindex(frame.index).to_numpy() if rated else np.nan
        frame["pct_tested"] = raw[t.tested_key(subject)].reindex(frame.index).to_numpy()
        va = va_all.get(subject)
        if va is not None:
            cols = ["n", "estimate", "low", "high", "estimate_b", "low_b", "high_b", "band", "suppressed"]
            joined = va.table.set_index(va.table["school_id"].astype(str))[cols]
            frame = frame.join(joined.add_prefix("va_"), how="left")
        everyone = mine[mine["by"] == "all"]
        district_median = float(everyone["median_sgp"].iloc[0]) if len(everyone) else math.nan
        label = next(s.label for s in district.subjects if s.name == subject)
        column = statuses[subject] if subject in statuses else pd.Series(dtype=int)
        out[subject] = SubjectGrowth(
            name=subject,
            label=label,
            schools=frame.reset_index(),
            groups=mine[mine["by"] != "school"].drop(columns=["school_id", "school_name"], errors="ignore"),
            district_median=district_median,
            district_pct=float(totals[t.pct_key(subject)])
            if rated and t.pct_key(subject) in totals
            else None,
            va=va,
            va_note=notes.get(subject, "no usable growth pairs for this subject."),
            truth=[c for c in checks if c.subject == subject],
            measured=int(sgps.loc[sgps["subject"] == subject, "sgp"].notna().sum()),
            statuses={str(k): int(v) for k, v in column.items() if v},
        )
    pairs = data.pairs[data.pairs["school_year"] == year]
    prior_values = {
        c: pd.to_numeric(pairs[c], errors="coerce").dropna().to_numpy(dtype=float)
        for c in pairs.columns
        if c.startswith("prior") and pd.api.types.is_numeric_dtype(pairs[c])
    }
    prior_values["commute_minutes"] = (
        pd.to_numeric(pairs["commute_minutes"], errors="coerce").dropna().to_numpy(dtype=float)
        if "commute_minutes" in pairs
        else np.array([])
    )
    name = district.config.name
    return GrowthComputed(
        year=year,
        year_label=year_label(year, district.config.format == "classic"),
        classic=district.config.format == "classic",
        district_name=name if name != "District" else None,
        min_n=min_n,
        passing_word=district.config.report.passing_word,
        subjects=out,
        colour_by={"school_level": t.SCHOOL_LEVEL, "school_type": t.SCHOOL_TYPE}.get(colour_by or ""),
        n_schools=int((raw["total_students"] > 0).sum()),
        n_students=int(len(students)),
        truth_folder=folder / "truth" if truth is not None else None,
        grades=tuple(spec.grades),
        prior_values=prior_values,
    )


def _value_added(data: DistrictData, year: int, min_n: int) -> tuple[dict[str, ValueAdded], dict[str, str]]:
    """``measures.value_added``; when a subject cannot be estimated (fewer than two schools with
    enough students), the subjects one at a time, so the others are still reported."""
    try:
        return value_added(data, year, min_n), {}
    except ValueError:
        pass
    pairs = data.pairs[data.pairs["school_year"] == year]
    found: dict[str, ValueAdded] = {}
    notes: dict[str, str] = {}
    for subject in data.subjects:
        try:
            found[subject] = school_value_added(pairs, subject, data.subjects, VAConfig(min_students=min_n))
        except ValueError as err:
            notes[subject] = f"no value-added for this subject: {err}."
    return found, notes


# ----------------------------------------------------------------------------------------------
# CSVs and MLflow figures
# ----------------------------------------------------------------------------------------------


def _suppressed_csv(frame: pd.DataFrame, hidden: pd.Series, columns: Sequence[str]) -> pd.DataFrame:
    """The frame with ``columns`` reading "suppressed" on hidden rows."""
    out = frame.copy()
    for column in columns:
        out[column] = out[column].astype(object).where(~hidden.to_numpy(), SUPPRESSED)
    return out


def sgp_by_school(c: GrowthComputed) -> pd.DataFrame:
    parts = []
    for s in c.subjects.values():
        frame = s.schools
        parts.append(
            pd.DataFrame(
                {
                    "subject": s.name,
                    "school_id": frame["school_id"],
                    "school_name": frame["label"],
                    "students_with_sgp": frame["n"].astype("Int64").to_numpy(dtype=object),
                    "median_sgp": frame["median_sgp"],
                    "lower_90": frame["lower"],
                    "upper_90": frame["upper"],
                    f"pct_{c.passing_word.lower()}": frame["pct"],
                }
            )
        )
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if table.empty:
        return table
    hidden = pd.concat([s.schools["suppressed"] for s in c.subjects.values()], ignore_index=True)
    table = _suppressed_csv(table, hidden, ["students_with_sgp", "median_sgp", "lower_90", "upper_90"])
    pct_hidden = pd.concat(
        [(s.schools["pct"].isna() & (s.schools["pct_tested"] > 0)) for s in c.subjects.values()],
        ignore_index=True,
    )
    return _suppressed_csv(table, pct_hidden, [f"pct_{c.passing_word.lower()}"])


def sgp_by_group(c: GrowthComputed) -> pd.DataFrame:
    parts = []
    for s in c.subjects.values():
        g = s.groups
        parts.append(
            pd.DataFrame(
                {
                    "subject": s.name,
                    "group": g["by"].to_numpy(),
                    "value": g["value"].astype(str).to_numpy(),
                    "students_with_sgp": g["n"].astype("Int64").to_numpy(dtype=object),
                    "median_sgp": g["median_sgp"].to_numpy(),
                    "lower_90": g["lower"].to_numpy(),
                    "upper_90": g["upper"].to_numpy(),
                    "suppressed": g["suppressed"].astype(bool).to_numpy(),
                }
            )
        )
    table = pd.concat(parts, ignore_index=True)
    hidden = table.pop("suppressed")
    return _suppressed_csv(table, hidden, ["students_with_sgp", "median_sgp", "lower_90", "upper_90"])


VA_CSV = ("n", "estimate", "se", "low", "high", "reliability", "growth_index", "band")


def va_csv(va: ValueAdded) -> pd.DataFrame:
    """One row per school: both views; a suppressed school keeps its row, every figure (and its
    count) reading "suppressed"."""
    table = va.table
    columns = [*VA_CSV, *(f"{c}_b" for c in VA_CSV if c != "n")]
    keys = [c for c in ("school_id", "school_name") if c in table]
    out = table[[*keys, *columns, "views_differ"]].copy()
    return _suppressed_csv(out, table["suppressed"].astype(bool), [*columns, "views_differ"])


def growth_metrics(c: GrowthComputed) -> dict[str, float]:
    """The report's headline figures under MLflow-safe names."""
    out: dict[str, float] = {}
    for s in c.subjects.values():
        out[f"median_sgp_{s.name}"] = s.district_median
        out[f"students_with_sgp_{s.name}"] = float(s.measured)
        if s.va is not None:
            shown = s.va.table[~s.va.table["suppressed"]]
            out[f"va_schools_{s.name}"] = float(len(shown))
            out[f"va_views_differ_{s.name}"] = float(shown["views_differ"].sum())
            out[f"va_tau_{s.name}"] = s.va.tau
        for check in s.truth:
            suffix = "" if check.view == "A" else "_b"
            out[f"va_corr_true_effect_{s.name}{suffix}"] = check.correlation
            out[f"va_coverage_{s.name}{suffix}"] = check.coverage
    return out


def growth_mlflow_metrics(out_dir: Path | str) -> dict[str, float]:
    """The figures ``build_growth_report`` saved in ``growth_metrics.json`` (empty when absent)."""
    path = Path(out_dir) / METRICS_NAME
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())["metrics"]
    return {k: float("nan") if v is None else float(v) for k, v in saved.items()}


# ----------------------------------------------------------------------------------------------
# Charts
# ----------------------------------------------------------------------------------------------


def _overlaps(box: Any, placed: list[Any]) -> bool:
    return any(box.overlaps(other) for other in placed)


def label_points(
    ax: Any,
    xs: np.ndarray,
    ys: np.ndarray,
    texts: Sequence[str],
    centre: tuple[float, float],
    order: Sequence[int],
    limit: int,
) -> int:
    """Name up to ``limit`` points, taken in ``order`` (most telling first), each beside its point
    with a leader line, trying positions away from ``centre`` first; a name that would overlap one
    already placed or leave the axes is skipped for the next point. Returns how many were named."""
    fig = ax.figure
    fig.draw_without_rendering()  # the final layout, so label boxes are measured where they end up
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    placed: list[Any] = []
    named = 0
    for i in order:
        if named >= limit:
            break
        sx = 1 if xs[i] >= centre[0] else -1
        sy = 1 if ys[i] >= centre[1] else -1
        offsets = [(k * a, k * b) for k in (1, 2.2) for a, b in ((sx, sy), (sx, -sy), (-sx, sy), (-sx, -sy))]
        for dx, dy in offsets:
            note = ax.annotate(
                texts[i].replace("$", r"\$"),  # a dollar sign would start matplotlib's mathtext
                (xs[i], ys[i]),
                xytext=(11 * dx, 9 * dy),
                textcoords="offset points",
                arrowprops={"arrowstyle": "-", "color": "#7b8794", "lw": 0.6, "shrinkA": 0, "shrinkB": 2},
                ha="left" if dx > 0 else "right",
                va="bottom" if dy > 0 else "top",
                fontsize=7.5,
                color="#1f2933",
                bbox=charts.LABEL_BOX,
                zorder=5,
            )
            note.set_in_layout(False)
            box = note.get_window_extent(renderer)
            inside = box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1
            if inside and not _overlaps(box, placed):
                placed.append(box)
                named += 1
                break
            note.remove()
    return named


def extremes(x: np.ndarray, y: np.ndarray, centre: tuple[float, float]) -> list[int]:
    """Every point, the most telling first: the highest and the lowest on y, then, in turn, the
    farthest point (in standardised units) of each quadrant around ``centre``, starting with the
    off-diagonal ones a board asks about (low achievement with high growth, high achievement with
    low growth), then the rest by distance."""
    sx = float(np.nanstd(x)) or 1.0
    sy = float(np.nanstd(y)) or 1.0
    distance = ((x - centre[0]) / sx) ** 2 + ((y - centre[1]) / sy) ** 2
    by_distance = [int(i) for i in np.argsort(-distance, kind="stable")]
    right, up = x >= centre[0], y >= centre[1]
    quadrants = [
        [i for i in by_distance if right[i] == r and up[i] == u]
        for r, u in ((False, True), (True, False), (True, True), (False, False))
    ]
    turns = [q[k] for k in range(max(map(len, quadrants), default=0)) for q in quadrants if k < len(q)]
    return list(dict.fromkeys([int(np.nanargmax(y)), int(np.nanargmin(y)), *turns]))


@dataclass(frozen=True)
class QuadrantSpec:
    """One growth-against-achievement chart: which school-table columns hold the measure, its
    interval bounds and count, where typical growth lies, and how the quadrants are worded."""

    columns: tuple[str, str, str, str]
    y_ref: float
    measure: str
    caption: str
    ylabel: str
    more: str
    less: str
    sgp_scale: bool = False


SGP_QUADRANT = QuadrantSpec(
    ("median_sgp", "lower", "upper", "n"),
    50.0,
    "growth",
    "median SGP",
    "median student growth percentile (SGP)",
    "higher growth",
    "lower growth",
    sgp_scale=True,
)
VA_QUADRANT = QuadrantSpec(
    ("va_estimate", "va_low", "va_high", "va_n"),
    0.0,
    "value-added",
    "value-added",
    "value-added, view A (points against the average school)",
    "adds more",
    "adds less",
)


def _school_quadrant(schools: pd.DataFrame, spec: QuadrantSpec, **chart: object) -> bytes:
    """The chart of ``spec`` for a school table (one bubble per school)."""
    y, low, high, n = spec.columns
    points = pd.DataFrame(
        {
            "label": schools["label"],
            "x": schools["pct"],
            "y": schools[y],
            "low": schools[low],
            "high": schools[high],
            "n": schools[n].astype(float),
            "group": schools["group"],
        }
    )
    corners = tuple(f"{a} achievement, {b}" for b in (spec.more, spec.less) for a in ("lower", "higher"))
    return quadrant_chart(
        points,
        y_ref=spec.y_ref,
        ylabel=spec.ylabel,
        corners=corners,
        size_word="students",
        y_limits=_sgp_limits(points) if spec.sgp_scale else None,
        **chart,
    )


def quadrant_chart(
    points: pd.DataFrame,
    *,
    x_ref: float,
    y_ref: float,
    title: str,
    xlabel: str,
    ylabel: str,
    corners: tuple[str, str, str, str],
    colour_title: str | None,
    size_word: str,
    y_limits: tuple[float, float] | None = None,
) -> bytes:
    """One bubble per school: ``x`` (% proficient) against ``y`` (median SGP or value-added) with
    its interval (``low``/``high``, up to ``WHISKERS_UP_TO`` schools), bubble area proportional
    to ``n``, colour by ``group``, quadrant lines at ``x_ref`` and ``y_ref``. ``corners`` name the
    quadrants (top left, top right, bottom left, bottom right). The most extreme schools are named."""
    x = points["x"].to_numpy(dtype=float)
    y = points["y"].to_numpy(dtype=float)
    n = points["n"].to_numpy(dtype=float)
    keys = points["group"].astype(str).tolist()
    colours = charts.category_colors(sorted(set(keys)))
    biggest = float(np.nanmax(n)) if len(n) else 1.0
    area = 12 + 340 * n / biggest
    with matplotlib.rc_context(charts.STYLE):
        fig = charts._figure(6.2, 5.6)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if len(points) <= WHISKERS_UP_TO and {"low", "high"} <= set(points):
            ax.vlines(x, points["low"], points["high"], color="#9aa5b1", lw=0.9, zorder=1)
        ax.scatter(
            x,
            y,
            s=area,
            c=[colours[k] for k in keys],
            alpha=0.7,
            edgecolors="white",
            linewidths=0.6,
            zorder=2,
        )
        ax.axhline(y_ref, color="#444444", ls="--", lw=1, zorder=0)
        ax.axvline(x_ref, color="#444444", ls="--", lw=1, zorder=0)
        xlo, xhi = np.nanmin(np.append(x, x_ref)), np.nanmax(np.append(x, x_ref))
        pad = max(3.0, 0.08 * (xhi - xlo))
        ax.set_xlim(max(0.0, xlo - pad), min(100.0, xhi + pad))
        if y_limits is None:
            spread = np.nanmax(np.abs(np.append(points.get("high", y), points.get("low", y)) - y_ref))
            half = 1.15 * float(spread) if np.isfinite(spread) and spread > 0 else 1.0
            ax.set_ylim(y_ref - half, y_ref + half)
        else:
            ax.set_ylim(*y_limits)
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        corner_style = {"fontsize": 7.5, "color": "#7b8794", "style": "italic", "zorder": 0}
        for text, (cx, cy, ha, va) in zip(
            corners,
            (
                (x0, y1, "left", "top"),
                (x1, y1, "right", "top"),
                (x0, y0, "left", "bottom"),
                (x1, y0, "right", "bottom"),
            ),
            strict=True,
        ):
            ax.text(cx, cy, f" {text} ", ha=ha, va=va, **corner_style)
        ax.text(
            x_ref,
            y1,
            f"district {x_ref:.0f}% ",
            ha="right",
            va="top",
            fontsize=7,
            color="#444444",
            rotation=90,
            zorder=0,
        )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        colour_handles = (
            [Line2D([], [], marker="o", ls="", color=colours[k], label=k, ms=7) for k in sorted(set(keys))]
            if colour_title
            else []
        )
        size_handles = [
            Line2D(
                [],
                [],
                marker="o",
                ls="",
                color="#bcc4cc",
                mec="white",
                ms=math.sqrt(12 + 340 * v / biggest),
                label=f"{v:,.0f} {size_word}",
            )
            for v in _size_legend(biggest)
        ]
        columns = max(len(colour_handles), len(size_handles), 1)
        blank = Line2D([], [], ls="", label=" ")
        rows = [r + [blank] * (columns - len(r)) for r in (colour_handles, size_handles) if r]
        handles = [row[i] for i in range(columns) for row in rows]  # the legend fills column by column
        if handles:
            fig.legend(
                handles=handles, loc="outside lower center", ncols=columns, fontsize=7.5, frameon=False
            )
        limit = len(points) if len(points) <= LABEL_ALL else MAX_LABELS
        label_points(
            ax,
            x,
            y,
            points["label"].astype(str).tolist(),
            (x_ref, y_ref),
            extremes(x, y, (x_ref, y_ref)),
            limit,
        )
        return charts._png(fig)


def _size_legend(biggest: float) -> list[float]:
    """Two or three round bubble sizes for the legend."""
    if not np.isfinite(biggest) or biggest <= 0:
        return []
    magnitude = 10 ** math.floor(math.log10(biggest))
    top = math.floor(biggest / magnitude) * magnitude
    return sorted({v for v in (top / 4, top / 2, top) if v >= 1})


def forest_chart(rows: pd.DataFrame, subjects: Sequence[SubjectGrowth], min_n: int) -> bytes:
    """Median SGP with its 90% interval for every group (rows) and subject (panels); suppressed
    groups say so where their dot would be."""
    labels = rows["row_label"].tolist()
    dims = rows["by"].tolist()
    ys = np.arange(len(rows))[::-1]
    with matplotlib.rc_context(charts.STYLE):
        fig = charts._figure(3.2 + 3.3 * len(subjects), 0.26 * len(rows) + 1.3)
        axes = np.atleast_1d(fig.subplots(1, len(subjects), sharey=True, squeeze=False)).ravel()
        for j, (ax, s) in enumerate(zip(axes, subjects, strict=True)):
            g = rows[f"{s.name}_median"].to_numpy(dtype=float)
            lo = rows[f"{s.name}_lower"].to_numpy(dtype=float)
            hi = rows[f"{s.name}_upper"].to_numpy(dtype=float)
            hidden = rows[f"{s.name}_suppressed"].to_numpy(dtype=bool)
            for k in range(1, len(dims)):  # shade every other dimension
                if dims[k] != dims[k - 1]:
                    ax.axhline(ys[k] + 0.5, color="#d5dae0", lw=0.8)
            colour = charts.PALETTE[j % len(charts.PALETTE)]
            ax.hlines(ys, lo, hi, color=colour, lw=2, alpha=0.55)
            ax.scatter(g, ys, color=colour, s=22, zorder=3)
            ax.axvline(50, color="#444444", ls="--", lw=1)
            finite = np.concatenate([lo[np.isfinite(lo)], hi[np.isfinite(hi)], g[np.isfinite(g)], [50.0]])
            left, right = float(finite.min()) - 4, float(finite.max()) + 4
            ax.set_xlim(max(0, min(left, 50 - (right - 50))), min(100, max(right, 50 + (50 - left))))
            for y, h in zip(ys, hidden, strict=True):
                if h:
                    ax.text(
                        50,
                        y,
                        f" suppressed (fewer than {min_n}) ",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="#8a6d3b",
                        style="italic",
                        bbox=charts.LABEL_BOX,
                    )
            ax.set_title(s.label)
            ax.set_xlabel("median SGP (90% interval)")
            ax.grid(axis="y", visible=False)
        axes[0].set_yticks(ys, labels, fontsize=8)
        axes[0].set_ylim(-0.7, len(rows) - 0.3)
        fig.suptitle("Median growth percentile by student group", fontweight="bold", fontsize=10)
        return charts._png(fig)


def importance_chart(importance: pd.Series, words: Mapping[str, str]) -> bytes:
    top = importance.head(TOP_IMPORTANCE)[::-1]
    with matplotlib.rc_context(charts.STYLE):
        fig = charts._figure(7.2, 0.27 * len(top) + 1.2)
        ax = fig.add_subplot()
        ax.barh(
            [words.get(c, c) for c in top.index], top.to_numpy(dtype=float), color=charts.NEUTRAL, height=0.65
        )
        ax.set_xlabel("RMSE increase (points) when shuffled")
        ax.set_title("Which inputs the model leans on")
        ax.grid(axis="y", visible=False)
        return charts._png(fig)


@dataclass(frozen=True)
class Curve:
    column: str
    words: str
    values: np.ndarray
    predictions: np.ndarray
    low: float  # the typical low value (10th percentile of the year's students)
    high: float  # the typical high value (90th percentile)
    difference: float  # prediction at high minus at low
    sentence: str


def curves_chart(curves: Sequence[Curve]) -> bytes:
    ncols = min(2, len(curves))
    nrows = math.ceil(len(curves) / ncols)
    with matplotlib.rc_context(charts.STYLE):
        fig = charts._figure(4.1 * ncols + 0.6, 2.8 * nrows + 0.3)
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax in axes[len(curves) :]:
            ax.set_visible(False)
        for ax, curve in zip(axes, curves, strict=False):
            ax.plot(curve.values, curve.predictions, color=charts.NEUTRAL, lw=1.8)
            for value, tag in ((curve.low, "10th pct"), (curve.high, "90th pct")):
                p = float(np.interp(value, curve.values, curve.predictions))
                ax.scatter([value], [p], color=charts.PALETTE[1], s=26, zorder=3)
                ax.annotate(
                    tag,
                    (value, p),
                    textcoords="offset points",
                    xytext=(0, 7),
                    ha="center",
                    fontsize=7,
                    color="#555555",
                )
            ax.set_xlabel(curve.words, fontsize=8)
            ax.set_ylabel("predicted growth (points)", fontsize=8)
            ax.set_title(curve.words[:1].upper() + curve.words[1:], fontsize=9)
        fig.suptitle(
            "Predicted growth as one input changes, everything else as it was", fontweight="bold", fontsize=10
        )
        return charts._png(fig)


# ----------------------------------------------------------------------------------------------
# The champion's evaluation files
# ----------------------------------------------------------------------------------------------


@dataclass
class Evaluation:
    """What ``growth train`` wrote for one subject (each part None when its file is absent)."""

    folder: Path
    card: dict[str, Any]
    families: pd.DataFrame | None = None
    coverage: pd.DataFrame | None = None
    subgroups: pd.DataFrame | None = None
    fairness_support: pd.DataFrame | None = None
    fairness_sentences: list[str] = field(default_factory=list)
    importance: pd.Series | None = None
    partial: pd.DataFrame | None = None
    support: pd.DataFrame | None = None
    support_card: dict[str, Any] | None = None


def _csv(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / name
    if not path.exists():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None


def fairness_sentences(markdown: str) -> list[str]:
    """The sentences of fairness.md's needs-support part: its bullet points, or its one verdict line."""
    part = markdown.split("## Needs-support classifier", 1)
    if len(part) < 2:
        return []
    lines = [line.strip() for line in part[1].splitlines()]
    bullets = [line[2:] for line in lines if line.startswith("- ")]
    if bullets:
        return bullets
    return [line for line in lines if line and not line.startswith(("|", "#")) and line.endswith(".")]


def read_evaluation(folder: Path) -> Evaluation | None:
    """One subject's evaluation files, or None when there is no model card (no champion)."""
    card_path = folder / "model_card.json"
    if not card_path.exists():
        return None
    card = json.loads(card_path.read_text())
    ev = Evaluation(folder=folder, card=card)
    ev.families = _csv(folder, "families.csv")
    ev.coverage = _csv(folder, "coverage.csv")
    ev.subgroups = _csv(folder, "fairness_growth.csv")
    if ev.subgroups is None:
        ev.subgroups = _csv(folder, "subgroups.csv")
    ev.fairness_support = _csv(folder, "fairness_support.csv")
    if (folder / "fairness.md").exists():
        ev.fairness_sentences = fairness_sentences((folder / "fairness.md").read_text())
    importance = _csv(folder, "importance.csv")
    if importance is not None and importance.shape[1] >= 2:
        importance = importance.set_index(importance.columns[0]).iloc[:, 0].astype(float)
        ev.importance = importance.sort_values(ascending=False)
    ev.partial = _csv(folder, "partial_dependence.csv")
    ev.support = _csv(folder, "support.csv")
    if (folder / "support_card.json").exists():
        ev.support_card = json.loads((folder / "support_card.json").read_text())
    return ev


# ----------------------------------------------------------------------------------------------
# Words
# ----------------------------------------------------------------------------------------------


def column_words(column: str, labels: Mapping[str, str]) -> str:
    """An input column as a reader says it: "Math score last year", "days absent last year"."""
    for subject, label in labels.items():
        if column == prior_score_column(subject):
            return f"{label} score last year"
        if column == prior_score_column(subject, 2):
            return f"{label} score two years ago"
    return COLUMN_WORDS.get(column, column.replace("_", " "))


def _fmt_value(column: str, value: float) -> str:
    if "pct" in column:
        return f"{value:.0f}%"
    if "logins" in column:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _who(column: str, value: str, labels: Mapping[str, str]) -> str:
    """'students absent 20 days last year', 'students who scored 620 in Math last year'."""
    for subject, label in labels.items():
        if column == prior_score_column(subject):
            return f"students who scored {value} in {label} last year"
        if column == prior_score_column(subject, 2):
            return f"students who scored {value} in {label} two years ago"
    phrases = {
        "prior_days_absent": "students absent {} days last year",
        "prior_homework_completion_pct": "students who completed {} of their homework last year",
        "prior_extracurricular_count": "students in {} extracurricular activities last year",
        "prior_platform_logins_per_week": "students who logged in to the learning platform {} times a week "
        "last year",
        "commute_minutes": "students with a {}-minute commute",
    }
    template = phrases.get(column)
    if template:
        return template.format(value)
    return f"students with {column_words(column, labels)} {value}"


def curve_sentence(column: str, low: float, high: float, difference: float, labels: Mapping[str, str]) -> str:
    """One plain sentence from a partial-dependence curve: high against low, in points of growth."""
    hi, lo = _fmt_value(column, high), _fmt_value(column, low)
    who_high, who_low = _who(column, hi, labels), _who(column, lo, labels)
    who_high = who_high[:1].upper() + who_high[1:]
    if abs(difference) < 0.05:
        how = "are predicted to grow about as much as"
    else:
        how = (
            f"are predicted to grow {abs(difference):.1f} points {'more' if difference > 0 else 'less'} than"
        )
    return f"{who_high} {how} {who_low}, other things equal in the model; an association, not a cause."


def build_curves(
    partial: pd.DataFrame | None,
    prior_values: Mapping[str, np.ndarray],
    labels: Mapping[str, str],
    limit: int = 4,
) -> list[Curve]:
    """Partial-dependence curves of the strongest numeric inputs with their sentences; high and low
    are the 90th and 10th percentiles of the report year's students (the curve's ends otherwise)."""
    if partial is None or partial.empty or not {"value", "mean_prediction", "column"} <= set(partial):
        return []
    out = []
    for column, rows in partial.groupby("column", sort=False):
        rows = rows.sort_values("value")
        values = rows["value"].to_numpy(dtype=float)
        predictions = rows["mean_prediction"].to_numpy(dtype=float)
        if len(values) < 2:
            continue
        data = prior_values.get(str(column))
        if data is not None and len(data) >= 20:
            low, high = (float(v) for v in np.percentile(data, [10, 90]))
            if "days" in str(column) or "count" in str(column) or "score" in str(column):
                low, high = float(np.round(low)), float(np.round(high))
        else:
            low, high = float(values[min(1, len(values) - 1)]), float(values[max(len(values) - 2, 0)])
        low, high = float(np.clip(low, values[0], values[-1])), float(np.clip(high, values[0], values[-1]))
        if high <= low:
            continue
        difference = float(np.interp(high, values, predictions) - np.interp(low, values, predictions))
        out.append(
            Curve(
                str(column),
                column_words(str(column), labels),
                values,
                predictions,
                low,
                high,
                difference,
                curve_sentence(str(column), low, high, difference, labels),
            )
        )
    return out[:limit]


def group_value(by: str, value: str) -> str:
    return value if by == "grade" else VALUE_WORDS.get(value, value)


def gap_sentences(s: SubjectGrowth) -> list[str]:
    """One sentence per yes/no group (and gender): the two medians and whether their intervals overlap."""
    out = []
    g = s.groups
    for by, yes, no, noun in (
        ("econ_disadvantaged", "yes", "no", "economically disadvantaged students"),
        ("english_learner", "yes", "no", "English learners"),
        ("special_education", "yes", "no", "students in special education"),
        ("gender", "F", "M", "girls"),
    ):
        rows = g[g["by"] == by].set_index("value")
        if yes not in rows.index or no not in rows.index:
            continue
        a, b = rows.loc[yes], rows.loc[no]
        if bool(a["suppressed"]) or bool(b["suppressed"]):
            continue
        other = "boys" if by == "gender" else "the other students"
        gap = float(a["median_sgp"]) - float(b["median_sgp"])
        overlap = a["lower"] <= b["upper"] and b["lower"] <= a["upper"]
        verdict = (
            "the intervals overlap, so there is no clear gap"
            if overlap
            else f"a gap of {abs(gap):.1f} points {'in their favour' if gap > 0 else 'against them'}, "
            "beyond the uncertainty"
        )
        out.append(
            f"{s.label}: {noun} have a median SGP of {float(a['median_sgp']):.1f} "
            f"({number(a['n'])} students), {other} {float(b['median_sgp']):.1f} "
            f"({number(b['n'])}): {verdict}."
        )
    return out


# ----------------------------------------------------------------------------------------------
# The page, part by part
# ----------------------------------------------------------------------------------------------


def _signed(x: float, digits: int = 1) -> str:
    return MISSING if is_missing(x) else f"{x:+.{digits}f}"


def _key(x: Any) -> str:
    return "" if is_missing(x) else repr(float(x))


def va_sortable(s: SubjectGrowth, min_n: int) -> SortableTable:
    """Both views per school, sortable; a suppressed school keeps its row with —ˢ everywhere."""
    assert s.va is not None
    table = s.va.table.copy()
    labels = s.schools.set_index("school_id")["label"]
    table["label"] = (
        table["school_id"].astype(str).map(labels).fillna(table.get("school_name", table["school_id"]))
    )
    table = table.sort_values("estimate", ascending=False, na_position="last", kind="mergesort")
    rank = {b: i for i, b in enumerate(BANDS)}
    sup = SortCell(MISSING, "", "num sup", f"suppressed: fewer than {min_n} students")
    rows = []
    for r in table.itertuples(index=False):
        name = SortCell(str(r.label), str(r.label).lower())
        if r.suppressed:
            rows.append((name, *([sup] * 11)))
            continue
        cells = [name, SortCell(number(r.n), _key(r.n), "num")]
        for suffix in ("", "_b"):
            est, low, high = (
                getattr(r, f"estimate{suffix}"),
                getattr(r, f"low{suffix}"),
                getattr(r, f"high{suffix}"),
            )
            band = str(getattr(r, f"band{suffix}"))
            cells += [
                SortCell(_signed(est), _key(est), "num"),
                SortCell(f"{_signed(low)} to {_signed(high)}", _key(low), "num"),
            ]
            if suffix == "":
                cells.append(SortCell(f"{r.reliability:.2f}", _key(r.reliability), "num"))
            cells += [
                SortCell(
                    _signed(getattr(r, f"growth_index{suffix}")),
                    _key(getattr(r, f"growth_index{suffix}")),
                    "num",
                ),
                SortCell(band, str(rank.get(band, "")), BAND_CSS.get(band, "")),
            ]
        cells.append(
            SortCell(
                "differ" if r.views_differ else "",
                "1" if r.views_differ else "0",
                "differ" if r.views_differ else "",
            )
        )
        rows.append(tuple(cells))
    headers = (
        "School",
        "Students",
        "Estimate (points)",
        "90% interval",
        "Reliability",
        "Growth index",
        "Band",
        "Estimate (points)",
        "90% interval",
        "Growth index",
        "Band",
        "Views",
    )
    numeric = (False, True, True, True, True, True, False, True, True, True, False, False)
    return SortableTable(
        id=f"va-{s.name}",
        caption=f"{s.label}: value-added per school (click a column to sort)",
        groups=(("", 2), ("View A: the headline", 5), ("View B: against similar intakes", 4), ("", 1)),
        headers=headers,
        numeric=numeric,
        rows=tuple(rows),
    )


def _paragraphs(text: str) -> list[str]:
    return [p.strip() for p in text.split("\n\n") if p.strip()]


def differ_sentence(s: SubjectGrowth) -> str:
    """Which schools the two views rank differently (intervals that do not overlap), by name."""
    assert s.va is not None
    table = s.va.table
    shown = table[~table["suppressed"]]
    differ = shown[shown["views_differ"]].copy()
    if differ.empty:
        return "The two views agree within their uncertainty (overlapping intervals) for every school."
    labels = s.schools.set_index("school_id")["label"]
    differ["label"] = differ["school_id"].astype(str).map(labels).fillna(differ["school_id"].astype(str))
    differ["gap"] = (differ["estimate"] - differ["estimate_b"]).abs()
    differ = differ.sort_values("gap", ascending=False)
    listed = [f"{r.label} (A {r.estimate:+.1f}, B {r.estimate_b:+.1f})" for r in differ.itertuples()]
    return (
        f"The views differ beyond their uncertainty (intervals do not overlap) for "
        f"{plural(len(differ), 'school')} of {len(shown)}, largest gap first: {listing(listed, 10)}. "
        "A above B: the school's intake (its peers and what comes with them) accounts for part of its "
        "headline result; A below B: the reverse."
    )


def truth_box(checks: Sequence[TruthCheck], c: GrowthComputed) -> Box | None:
    if not checks:
        return None
    rows = []
    for check in checks:
        label = c.subjects[check.subject].label
        rows.append(
            {
                "Subject": label,
                "View": "A (headline)" if check.view == "A" else "B (similar intakes)",
                "Compared with": "true effect including peers"
                if check.truth == "effect_with_peers"
                else "the same, net of what intake predicts",
                "Schools": check.schools,
                "Correlation": check.correlation,
                "90% interval coverage": 100.0 * check.coverage,
            }
        )
    frame = pd.DataFrame(rows)
    table = html.format_table(
        frame, formats={"Correlation": lambda v: f"{v:.3f}", "90% interval coverage": lambda v: f"{v:.0f}%"}
    )
    return Box(
        "Checked against the truth (synthetic district)",
        paragraphs=(
            f"This district is synthetic: its true school effects are known ({c.truth_folder}). The "
            "estimates "
            "are compared with them, centred like the estimates (against the average school of the same "
            "grades and years). Coverage is the share of schools whose 90% interval contains the true "
            "effect; about 90% is what honest intervals give.",
            "View B estimates what a school adds beyond what schools with the same intake add, so it is "
            "compared with the true effect net of what intake predicts across the district's schools.",
        ),
        table=table,
        css="truth",
    )


def _display(
    frame: pd.DataFrame, min_n: int, columns: Mapping[str, str], formats: Mapping[str, Any]
) -> html.HtmlTable:
    """An evaluation table for the page: readable groups, chosen columns renamed, rows of fewer than
    ``min_n`` students suppressed."""
    out = frame.copy()
    if "group" in out:
        out["group"] = out["group"].map(lambda g: GROUP_TITLES.get(str(g), str(g)))
    if "value" in out and "group" in frame:
        out["value"] = [
            group_value(str(b), str(v)) if str(v) != "all" else "all students"
            for b, v in zip(frame["group"], out["value"], strict=True)
        ]
    if "model" in out:
        out["model"] = out["model"].map(_model_words)
    keep = [c for c in columns if c in out]
    out = out[keep].rename(columns=dict(columns))
    mask = None
    if "n" in frame:
        small = (pd.to_numeric(frame["n"], errors="coerce") < min_n).to_numpy()
        numeric = [columns[c] for c in keep if c not in ("group", "value", "model", "case")]
        mask = pd.DataFrame(False, index=out.index, columns=out.columns)
        for column in numeric:
            mask[column] = small
        out[numeric] = out[numeric].astype(object).mask(mask[numeric])
    return html.format_table(out, suppressed=mask, formats=dict(formats))


def _model_words(name: Any) -> str:
    text = str(name)
    match = re.match(r"champion \((\w+)(.*)\)$", text)
    if match:
        return f"champion: {FAMILY_WORDS.get(match.group(1), match.group(1))}{match.group(2)}"
    base = re.match(r"(\w+)( \(calibrated\))?$", text)
    if base and base.group(1) in FAMILY_WORDS:
        return FAMILY_WORDS[base.group(1)] + (base.group(2) or "")
    return text


def _two(v: Any) -> str:
    return MISSING if is_missing(v) else f"{float(v):.2f}"


def _three(v: Any) -> str:
    return MISSING if is_missing(v) else f"{float(v):.3f}"


def _share(v: Any) -> str:
    return MISSING if is_missing(v) else f"{100 * float(v):.1f}%"


def _years_text(years: Iterable[Any]) -> str:
    years = [int(y) for y in years]
    return ", ".join(year_label(y) for y in years) if years else "unknown"


def model_card_parts(s: SubjectGrowth, ev: Evaluation, c: GrowthComputed, fingerprint: str) -> list[Any]:
    """Data, validation, error against the baselines, interval coverage, subgroup error, the
    needs-support classifier and its fairness, for one subject's champion."""
    card = ev.card
    metrics = card.get("metrics", {})
    family = str(card.get("family", "unknown"))
    members = card.get("members") or []
    model = FAMILY_WORDS.get(family, family)
    if members:
        model += f" ({' + '.join(FAMILY_WORDS.get(m, m) for m in members)})"
    facts = [
        f"Model: {model}; it predicts each student's growth in points from last year to this year.",
        f"Data: school years {_years_text(card.get('years', []))}; growth pairs used for training "
        f"{number(card.get('n_train'))}, validation {number(card.get('n_val'))}, interval calibration "
        f"{number(card.get('n_cal'))} and test {number(card.get('n_test'))}.",
        f"Validation scheme: {card.get('split', 'not recorded')}. The champion family was chosen on the "
        "validation part; the test part was used once, for the figures below.",
    ]
    if "test_rmse" in metrics:
        line = (
            f"Test error: RMSE {metrics['test_rmse']:.2f} points, mean absolute error "
            f"{metrics.get('test_mae', math.nan):.2f}"
        )
        if "rmse_reduction_vs_baseline_pct" in metrics:
            line += (
                f"; {metrics['rmse_reduction_vs_baseline_pct']:.1f}% lower RMSE than the linear baseline "
                "on prior scores"
            )
        facts.append(line + ".")
    if "noise_floor_rmse" in metrics:
        facts.append(
            f"On this synthetic district no model can do better than an RMSE of about "
            f"{metrics['noise_floor_rmse']:.2f} points (the noise in the scores); the champion is at "
            f"{metrics.get('test_rmse_over_noise_floor', math.nan):.2f} times that floor."
        )
    if "test_interval_coverage" in metrics:
        facts.append(
            f"Prediction intervals: {100 * metrics['test_interval_coverage']:.1f}% of test students' actual "
            "growth fell inside their 90% interval."
        )
    if card.get("gate"):
        facts.append(f"Quality gate {'passed' if card.get('gate_passed') else 'not passed'}: {card['gate']}.")
    parts: list[Any] = []
    notes = []
    if card.get("data_fingerprint") and card["data_fingerprint"] != fingerprint:
        notes.append(
            "These evaluation files were made from different data than this report (the data fingerprints "
            "differ): retrain with growth train on this district before relying on them."
        )
    parts.append(
        Box(f"{s.label}: the champion model", bullets=tuple(facts), paragraphs=tuple(notes), css="card")
    )
    parts += _table_block(
        ev.families,
        c.min_n,
        "Test error of the champion, the candidates and the baselines",
        {
            "model": "Model",
            "val_rmse": "Validation RMSE",
            "test_rmse": "Test RMSE",
            "test_mae": "Test MAE",
            "test_r2": "Test R²",
            "rmse_reduction_vs_baseline_pct": "RMSE vs linear baseline (%)",
        },
        {
            "Validation RMSE": _two,
            "Test RMSE": _two,
            "Test MAE": _two,
            "Test R²": _three,
            "RMSE vs linear baseline (%)": lambda v: _signed(-float(v), 1) if not is_missing(v) else MISSING,
        },
    )
    parts += _table_block(
        ev.coverage,
        c.min_n,
        "90% prediction intervals on the test part: how often they "
        "contain the actual growth, complete and incomplete records",
        {
            "case": "Record",
            "n": "Students",
            "coverage_90": "Coverage",
            "mean_width": "Mean width (points)",
            "rmse": "RMSE",
        },
        {"Students": number, "Coverage": _share, "Mean width (points)": _two, "RMSE": _two},
    )
    parts += _table_block(
        ev.subgroups,
        c.min_n,
        "Growth model by student group (test part): bias is predicted "
        "minus actual growth; coverage of the 90% intervals",
        {
            "group": "Group",
            "value": "Value",
            "n": "Students",
            "bias": "Bias (points)",
            "rmse": "RMSE",
            "coverage_90": "Coverage",
        },
        {
            "Students": number,
            "Bias (points)": lambda v: _signed(v, 2),
            "RMSE": _two,
            "Coverage": _share,
        },
        css="tall-ok",
    )
    parts.extend(support_parts(s, ev, c))
    return parts


def _table_block(
    frame: pd.DataFrame | None,
    min_n: int,
    caption: str,
    columns: Mapping[str, str],
    formats: Mapping[str, Any],
    css: str = "",
) -> list[Any]:
    """An evaluation table of the model card, or nothing when that evaluation file is absent."""
    if frame is None:
        return []
    return [html.Block("table", caption=caption, table=_display(frame, min_n, columns, formats), css=css)]


def support_parts(s: SubjectGrowth, ev: Evaluation, c: GrowthComputed) -> list[Any]:
    if ev.support is None and ev.fairness_support is None:
        return [
            html.Block(
                "omitted",
                caption="Needs-support classifier:",
                text=f"none trained for {s.label} (it needs cut scores; run growth train with --support).",
            )
        ]
    parts: list[Any] = []
    lead = [
        "The needs-support classifier estimates each student's chance of scoring below the proficient cut "
        "next year, so a school can plan help early. The district flags a fixed share of students (the "
        "10% with the highest chance); the fairness table shows, per group, how many are flagged, how many "
        "who will need support are missed (false-negative rate) and how many flagged do not need it "
        "(false-positive rate)."
    ]
    if ev.support_card:
        gate = ev.support_card.get("gate")
        family = str(ev.support_card.get("family", ""))
        if gate:
            lead.append(
                f"Champion: {FAMILY_WORDS.get(family, family)}, calibrated. Quality gate "
                f"{'passed' if ev.support_card.get('gate_passed') else 'not passed'}: {gate}."
            )
    parts.append(
        Box(
            f"{s.label}: who needs support next year",
            paragraphs=tuple(lead),
            bullets=tuple(ev.fairness_sentences),
            css="card",
        )
    )
    parts += _table_block(
        ev.support,
        c.min_n,
        "Needs-support classifier against the baselines (test part)",
        {
            "model": "Model",
            "test_roc_auc": "ROC AUC",
            "test_pr_auc": "PR AUC",
            "test_brier": "Brier score",
            "test_precision_at_10pct": "Precision, top 10%",
            "test_recall_at_10pct": "Recall, top 10%",
        },
        {
            "ROC AUC": _three,
            "PR AUC": _three,
            "Brier score": _three,
            "Precision, top 10%": _share,
            "Recall, top 10%": _share,
        },
    )
    parts += _table_block(
        ev.fairness_support,
        c.min_n,
        "Needs-support classifier by student group, top 10% flagged (test part)",
        {
            "group": "Group",
            "value": "Value",
            "n": "Students",
            "needs_support_rate": "Need support",
            "flag_rate": "Flagged",
            "false_negative_rate": "Missed (FNR)",
            "false_positive_rate": "Flagged, not needed (FPR)",
            "precision_flagged": "Precision",
            "mean_predicted": "Mean predicted",
            "observed": "Observed",
        },
        {
            "Students": number,
            "Need support": _share,
            "Flagged": _share,
            "Missed (FNR)": _share,
            "Flagged, not needed (FPR)": _share,
            "Precision": _share,
            "Mean predicted": _share,
            "Observed": _share,
        },
    )
    return parts


def limits_box(c: GrowthComputed) -> Box:
    return Box(
        "Limits: read these before acting on the figures",
        bullets=(
            "Associations, not causes. The model's drivers say how predicted growth changes with an input "
            "when everything else in the model is held as it was; they do not say that changing the input "
            "would change growth.",
            "Uncertainty. Every median and value-added figure is an estimate with a 90% interval; two "
            "schools whose intervals overlap cannot be told apart, whatever their order in a table.",
            f"Small groups. Any school or group of fewer than {c.min_n} students is suppressed (—ˢ) in every "
            "table, chart and CSV, to protect the students and because such figures are too noisy.",
            "What value-added includes. View A credits a school with everything that comes with attending "
            "it, its teaching and its peers; view B compares it with schools of similar intake, and so also "
            "removes real effectiveness that goes with intake. Both assume the recorded prior scores and "
            "characteristics capture why students attend one school rather than another; unrecorded "
            "differences (motivation, tutoring) would bias them.",
            "SGPs compare each student with district students of the same grade and year who had similar "
            "prior scores; the district's median is 50 by construction, so SGPs show relative, not absolute, "
            "growth.",
            "Students new to the district, without last year's score, or who repeated or skipped a grade "
            "have "
            "no growth measure and are not in these figures.",
        ),
        css="limits",
    )


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


def forest_rows(subjects: Sequence[SubjectGrowth]) -> pd.DataFrame:
    """One row per group value with each subject's median, interval and suppression."""
    order = ["all", *GROUPS]
    keys: list[tuple[str, str]] = []
    for s in subjects:
        for by, value in zip(s.groups["by"], s.groups["value"].astype(str), strict=True):
            if (by, value) not in keys:
                keys.append((by, value))
    value_order = {"yes": 0, "no": 1, "F": 0, "M": 1, "missing": 9}

    def sort_key(key: tuple[str, str]) -> tuple[int, Any, str]:
        by, value = key
        return order.index(by) if by in order else 99, value_order.get(value, 5), value

    keys.sort(key=sort_key)
    rows = []
    for by, value in keys:
        row: dict[str, Any] = {
            "by": by,
            "value": value,
            "row_label": GROUP_TITLES["all"]
            if by == "all"
            else f"Grade {value}"
            if by == "grade"
            else f"{GROUP_TITLES.get(by, by)}: {group_value(by, value)}",
        }
        for s in subjects:
            g = s.groups[(s.groups["by"] == by) & (s.groups["value"].astype(str) == value)]
            found = len(g) > 0
            row[f"{s.name}_n"] = g["n"].iloc[0] if found else pd.NA
            row[f"{s.name}_median"] = float(g["median_sgp"].iloc[0]) if found else math.nan
            row[f"{s.name}_lower"] = float(g["lower"].iloc[0]) if found else math.nan
            row[f"{s.name}_upper"] = float(g["upper"].iloc[0]) if found else math.nan
            row[f"{s.name}_suppressed"] = bool(g["suppressed"].iloc[0]) if found else False
        rows.append(row)
    return pd.DataFrame(rows)


def forest_table(rows: pd.DataFrame, subjects: Sequence[SubjectGrowth]) -> html.HtmlTable:
    out = pd.DataFrame(
        {
            "Group": [GROUP_TITLES.get(b, b) for b in rows["by"]],
            "Value": [
                ("all students" if b == "all" else group_value(b, v))
                for b, v in zip(rows["by"], rows["value"], strict=True)
            ],
        }
    )
    mask = pd.DataFrame(False, index=out.index, columns=out.columns)
    for s in subjects:
        hidden = rows[f"{s.name}_suppressed"].to_numpy(dtype=bool)
        interval = [
            MISSING if h or is_missing(lo) or is_missing(hi) else f"{lo:.0f} to {hi:.0f}"
            for h, lo, hi in zip(hidden, rows[f"{s.name}_lower"], rows[f"{s.name}_upper"], strict=True)
        ]
        columns = {
            f"{s.label}: students": [
                pd.NA if h else n for h, n in zip(hidden, rows[f"{s.name}_n"], strict=True)
            ],
            f"{s.label}: median SGP": np.where(
                hidden, np.nan, rows[f"{s.name}_median"].to_numpy(dtype=float)
            ),
            f"{s.label}: 90% interval": [pd.NA if h else i for h, i in zip(hidden, interval, strict=True)],
        }
        for header, values in columns.items():
            out[header] = values
            mask[header] = hidden
    formats = {h: number for h in out.columns if h.endswith(": students")}
    formats.update({h: lambda v: f"{float(v):.1f}" for h in out.columns if h.endswith("median SGP")})
    formats.update({h: str for h in out.columns if h.endswith("interval")})
    return html.format_table(out, suppressed=mask, formats=formats)


def _chart(png: bytes, alt: str, caption: str = "") -> html.Block:
    return html.Block("chart", png=png, alt=alt, caption=caption)


def achievement_section(c: GrowthComputed) -> Section:
    parts: list[Any] = []
    word = c.passing_word
    for s in c.subjects.values():
        parts.append(Heading(s.label))
        if s.district_pct is None:
            parts.append(
                html.Block(
                    "omitted",
                    caption=f"{s.label}:",
                    text=f"no % {word.lower()} (the subject has no cut scores or levels), so "
                    "there is nothing to set growth against.",
                )
            )
            continue
        shown = s.schools[~s.schools["suppressed"] & s.schools["pct"].notna()]
        hidden = len(s.schools) - len(shown)
        tables = [(shown, SGP_QUADRANT)] if len(shown) else []
        if s.va is not None:
            vt = s.schools[s.schools["va_suppressed"].eq(False) & s.schools["pct"].notna()]
            tables += [(vt, VA_QUADRANT)] if len(vt) else []
        blocks = []
        for table, spec in tables:
            png = _school_quadrant(
                table,
                spec,
                x_ref=s.district_pct,
                title=f"{s.label}: {spec.measure} and achievement by school",
                xlabel=f"% {word} in {s.label}, {c.year_label}",
                colour_title=c.colour_by,
            )
            blocks.append(_chart(png, f"{s.label}: {spec.caption} against % {word} per school"))
        if blocks:
            parts.append(Charts(tuple(blocks)))
        caption = (
            f"Each bubble is a school; its area is the number of students with a growth measure. The dashed "
            f"lines are the district's % {word.lower()} ({s.district_pct:.1f}%) and typical growth (median "
            "SGP 50; value-added 0). Schools above the line grow their students more than the district's "
            "typical student with the same prior scores, whatever their achievement level; the upper-left "
            "quadrant is "
            f"where low achievement meets high growth."
        )
        if len(shown) > LABEL_ALL:
            caption += " Only the most extreme schools are named; every school is in the tables and CSVs."
        if len(shown) <= WHISKERS_UP_TO:
            caption += " Vertical lines are 90% intervals."
        if hidden:
            caption += (
                f" {plural(hidden, 'school')} with fewer than {c.min_n} students measured (or a suppressed % "
                f"{word.lower()}) {'is' if hidden == 1 else 'are'} not drawn."
            )
        parts.append(html.Block("text", text=caption))
    return Section(
        "achievement",
        "1. Growth and achievement by school",
        "Growth vs achievement",
        "Achievement (% proficient) says where students are; growth says how far they moved this year "
        "compared with students who started where they did. A school can have low achievement and high "
        "growth: it is moving its students.",
        tuple(parts),
    )


def _sgp_limits(points: pd.DataFrame) -> tuple[float, float]:
    values = np.concatenate([points[c].to_numpy(dtype=float) for c in ("y", "low", "high")])
    values = values[np.isfinite(values)]
    spread = max(10.0, float(np.abs(values - 50).max()) + 4) if values.size else 25.0
    return max(0.0, 50 - spread), min(100.0, 50 + spread)


def va_section(c: GrowthComputed) -> Section:
    parts: list[Any] = []
    for s in c.subjects.values():
        parts.append(Heading(s.label))
        if s.va is None:
            parts.append(html.Block("omitted", caption=f"{s.label}:", text=s.va_note))
            continue
        paragraphs = _paragraphs(s.va.explanation)
        kept = [p for p in paragraphs if not p.startswith("The two views")]
        kept.append(differ_sentence(s))
        parts.append(va_sortable(s, c.min_n))
        parts.append(
            Box(f"{s.label}: what each view includes and excludes", paragraphs=tuple(kept), css="explain")
        )
    checks = [ch for s in c.subjects.values() for ch in s.truth]
    box = truth_box(checks, c)
    if box:
        parts.append(box)
    return Section(
        "value-added",
        "2. Value-added per school",
        "Value-added",
        "Value-added is how many points a school's students scored above (+) or below (−) students with "
        "the same prior scores and characteristics at the average school of the same grades and year. The "
        "growth index is the estimate divided by its uncertainty; the band reads it: well above (index 2 or "
        f"more), above (1 to 2), meets (−1 to 1), below, well below. Schools of fewer than {c.min_n} "
        "students "
        "are suppressed (—ˢ). Click a column header to sort.",
        tuple(parts),
    )


def groups_section(c: GrowthComputed) -> Section:
    subjects = list(c.subjects.values())
    rows = forest_rows(subjects)
    parts: list[Any] = []
    if len(rows):
        parts.append(
            _chart(
                forest_chart(rows, subjects, c.min_n),
                "Median SGP by student group",
                "Dots are median SGPs, bars their 90% intervals; the dashed line is 50, the district's "
                "typical growth. A group whose bar lies wholly left of 50 grows less than similar "
                "students elsewhere in the district.",
            )
        )
        sentences = [sentence for s in subjects for sentence in gap_sentences(s)]
        if sentences:
            parts.append(Box("Gaps in growth", bullets=tuple(sentences), css="explain"))
        parts.append(
            html.Block("table", caption="Median SGP by student group", table=forest_table(rows, subjects))
        )
    return Section(
        "groups",
        "3. Growth gaps between student groups",
        "Group gaps",
        "Median growth percentile of each group of students, with its 90% interval and the number of "
        f"students measured. Groups of fewer than {c.min_n} students are suppressed (—ˢ).",
        tuple(parts),
    )


def drivers_section(c: GrowthComputed, evaluations: Mapping[str, Evaluation | None]) -> Section:
    labels = {s.name: s.label for s in c.subjects.values()}
    parts: list[Any] = []
    for s in c.subjects.values():
        parts.append(Heading(s.label))
        ev = evaluations.get(s.name)
        if ev is None:
            parts.append(html.Block("omitted", caption=f"{s.label}:", text=NO_CHAMPION.format(label=s.label)))
            continue
        blocks = []
        if ev.importance is not None and len(ev.importance):
            words = {col: column_words(str(col), labels) for col in ev.importance.index}
            blocks.append(
                _chart(
                    importance_chart(ev.importance, words),
                    f"{s.label}: permutation importance",
                    "How much worse the model predicts when one input is shuffled among students: "
                    "the longer the bar, the more the model relies on that input.",
                )
            )
        curves = build_curves(ev.partial, c.prior_values, labels)
        if curves:
            blocks.append(
                _chart(
                    curves_chart(curves),
                    f"{s.label}: partial dependence",
                    "Average predicted growth when every student's value of the input is set to the "
                    "value on the x axis; the dots are the 10th and 90th percentiles of this year's "
                    "students.",
                )
            )
        if blocks:
            parts.append(Charts(tuple(blocks)))
        else:
            parts.append(
                html.Block(
                    "omitted",
                    caption=f"{s.label}:",
                    text="the champion's evaluation has no importance or partial-dependence files.",
                )
            )
        if curves:
            parts.append(
                Box(
                    f"{s.label}: what the curves say",
                    bullets=tuple(cv.sentence for cv in curves),
                    css="explain",
                )
            )
    return Section(
        "drivers",
        "4. What drives growth in the champion model",
        "Drivers",
        "The growth model predicts each student's growth from their prior scores, characteristics and last "
        "year's engagement. These charts show which inputs it relies on and how its predictions move with "
        "the strongest numeric ones. They describe the model, not the students: associations, not causes.",
        tuple(parts),
    )


def card_section(
    c: GrowthComputed, evaluations: Mapping[str, Evaluation | None], fingerprint: str
) -> Section:
    parts: list[Any] = []
    for s in c.subjects.values():
        parts.append(Heading(s.label))
        ev = evaluations.get(s.name)
        if ev is None:
            parts.append(html.Block("omitted", caption=f"{s.label}:", text=NO_CHAMPION.format(label=s.label)))
            continue
        parts.extend(model_card_parts(s, ev, c, fingerprint))
    parts.append(limits_box(c))
    return Section(
        "model-card",
        "5. Model card",
        "Model card",
        "How the champion growth model was built and tested, how well it does against simple baselines, how "
        "honest its intervals are, how it does for each group of students, and its limits.",
        tuple(parts),
    )


def page_notes(c: GrowthComputed) -> list[str]:
    notes = []
    for s in c.subjects.values():
        measured = s.statuses.get("ok", 0) + s.statuses.get("school_changed", 0)
        total = sum(s.statuses.values())
        missing = {k: v for k, v in s.statuses.items() if k not in ("ok", "school_changed")}
        reasons = {
            "no_prior_record": "new to the district",
            "no_prior_score": "no score last year",
            "no_score": "no score this year",
            "repeated_grade": "repeated a grade",
            "skipped_grade": "skipped a grade",
            "grade_went_down": "recorded in a lower grade",
        }
        listed = [
            f"{number(v) if v >= c.min_n else f'fewer than {c.min_n}'} {reasons.get(k, k.replace('_', ' '))}"
            for k, v in sorted(missing.items(), key=lambda kv: -kv[1])
        ]
        text = (
            f"{s.label}: growth is measured for {number(measured)} of the {number(total)} students of "
            f"{c.year_phrase} ({number(s.measured)} with an SGP)"
        )
        notes.append(text + (f"; not measured: {listing(listed)}." if listed else "."))
        hidden = int(s.schools["suppressed"].sum())
        if hidden:
            notes.append(
                f"{s.label}: {plural(hidden, 'school')} with fewer than {c.min_n} students measured: "
                "suppressed."
            )
    return notes


def kpis(c: GrowthComputed) -> list[html.Kpi]:
    out = [html.Kpi("School year", c.year_label), html.Kpi("Schools", number(c.n_schools))]
    for s in c.subjects.values():
        out.append(
            html.Kpi(
                f"Median SGP {s.label}", "—" if math.isnan(s.district_median) else f"{s.district_median:.0f}"
            )
        )
    for s in c.subjects.values():
        out.append(html.Kpi(f"Students measured {s.label}", number(s.measured)))
    return out


def definitions(c: GrowthComputed) -> list[str]:
    word = c.passing_word.lower()
    return [
        "SGP (student growth percentile): where a student's score this year falls among district students "
        "of the same grade and year who had similar scores in the previous one or two years (1 to 99; 50 "
        "is typical growth). Computed as the R SGP package does: quantile regression on B-splines of the "
        "prior scores, per grade and year (docs/sgp.md).",
        "Median SGP of a school or group: the middle SGP of its students. Its 90% interval is "
        "distribution-free (binomial order statistics): the true median lies inside it in at least 90% of "
        "samples.",
        f"% {word}: the share of the school's tested students at or above the proficient cut of their "
        f"grade in {c.year_phrase} (the district report's school figures).",
        "Value-added (points): the school's estimated effect on its students' scores against the average "
        "school of the same grades and year, after adjusting for each student's prior scores, "
        "characteristics and last year's engagement, learned within schools; shrunk towards the district "
        "average by its reliability (the share of the estimate's variance that is real differences between "
        "schools, not noise). Growth index: the estimate divided by its uncertainty (posterior SD). View B "
        "also adjusts for the school's intake (docs/value_added.md).",
        f"Suppression: a school or group of fewer than {c.min_n} students is not shown (—ˢ) in any table, "
        "chart or CSV; a dash alone means there is no figure.",
        "Files beside this page: sgp_by_school.csv, sgp_by_group.csv, value_added_<subject>.csv (both "
        "views, every school) and growth_metrics.json (the headline figures).",
        "This page holds school-level and group-level figures only; no student appears in it.",
    ]


SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.querySelectorAll("thead tr.sort th");
  heads.forEach(function (th, col) {
    function sort() {
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var numeric = th.dataset.type === "num";
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.sort, y = b.cells[col].dataset.sort;
        if (x === "" || y === "") { return (x === "") - (y === ""); }
        var d = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
        return ascending ? d : -d;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    }
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); }
    });
  });
});
"""


def render_page(c: GrowthComputed, sections: Sequence[Section], notes: Sequence[str], subtitle: str) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(html.TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("growth.html.j2").render(
        title=TITLE,
        subtitle=subtitle,
        kpis=kpis(c),
        sections=list(sections),
        notes=list(notes),
        missing=MISSING,
        definitions=definitions(c),
        script=SORT_SCRIPT,
    )


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


def evaluations_for(c: GrowthComputed, evaluation_dir: Path | None) -> dict[str, Evaluation | None]:
    if evaluation_dir is None:
        from features.settings import get_settings

        evaluation_dir = get_settings().out_dir / "evaluation"
    return {name: read_evaluation(Path(evaluation_dir) / name) for name in c.subjects}


def write_growth_report(
    c: GrowthComputed,
    data: DistrictData,
    out_dir: Path | str,
    evaluation_dir: Path | None = None,
    progress: bool = False,
) -> Path:
    """Draw and write the page, the CSVs and growth_metrics.json of computed measures, atomically."""
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.growth.", suffix=".partial", dir=out_dir.parent))
    tmp.chmod(0o777 & ~_umask())
    try:
        with _step("growth CSVs", progress):
            _write(tmp, "sgp_by_school.csv", sgp_by_school(c).to_csv(index=False))
            _write(tmp, "sgp_by_group.csv", sgp_by_group(c).to_csv(index=False))
            for s in c.subjects.values():
                if s.va is not None:
                    _write(tmp, f"value_added_{s.name}.csv", va_csv(s.va).to_csv(index=False))
            metrics = growth_metrics(c)
            _write(
                tmp,
                METRICS_NAME,
                json.dumps(
                    {
                        "year": c.year,
                        "metrics": {k: (None if math.isnan(v) else v) for k, v in metrics.items()},
                    },
                    indent=2,
                )
                + "\n",
            )
        evaluations = evaluations_for(c, evaluation_dir)
        with _step("growth charts and page", progress):
            sections = [
                achievement_section(c),
                va_section(c),
                groups_section(c),
                drivers_section(c, evaluations),
                card_section(c, evaluations, data.fingerprint),
            ]
            subtitle = " · ".join(
                x
                for x in (
                    c.district_name,
                    "the current year, growth from the prior year"
                    if c.classic
                    else f"target school year {c.year_label}",
                    plural(c.n_schools, "school"),
                    plural(c.n_students, "student"),
                    f"generated {datetime.now(UTC):%Y-%m-%d}",
                )
                if x
            )
            page = render_page(c, sections, page_notes(c), subtitle)
            _write(tmp, HTML_NAME, page)
        _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / HTML_NAME


def build_growth_report(
    data: DistrictData,
    out_dir: Path,
    year: int | None = None,
    progress: bool = False,
    evaluation_dir: Path | None = None,
) -> Path:
    """Write ``growth.html`` (self-contained), ``sgp_by_school.csv``, ``sgp_by_group.csv``,
    ``value_added_<subject>.csv`` and ``growth_metrics.json`` for one target year (default: the
    latest with growth pairs) into ``out_dir``, next to the district report's files. The model
    sections read ``evaluation_dir/<subject>/`` (default ``<settings.out_dir>/evaluation``).
    Returns the page's path; ``growth_mlflow_metrics(out_dir)`` gives the figures for MLflow."""
    with _step("SGPs, group medians and value-added", progress):
        computed = compute_growth(data, year, progress=progress)
    return write_growth_report(computed, data, out_dir, evaluation_dir, progress)
