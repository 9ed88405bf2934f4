"""Build the district report of one school year for any district: tables, narrative, charts and
HTML, written atomically.

The school aggregates are computed once here (by ``features.school_aggregates``, the code the
growth model shares) and every table, sentence and chart is derived from them. A table that needs
a column the district does not have (no budgets: no spending table) is left out, and the reason
is shown where the table would have been and returned, so the CLI can print it. All files are
first written to a temporary folder next to the output folder and only moved into place when
everything succeeded, so a failing step never leaves half a report behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from features.school_aggregates import OUTSIDE_BINS
from reports import charts, html, narrative
from reports import tables as t
from reports.formatting import SUPPRESSED, cut, listing, money, plural, score, year_label

if TYPE_CHECKING:
    from features.ingest import District

TITLE = "District performance report"
MLFLOW_RUN_NAME = "district-report"
TOP_N = 5
MAX_SCHOOL_NOTES = 3  # more schools outside the bins than this: one note listing them


class OutsideBinsWarning(UserWarning):
    """A school falls outside every spending or size bin; it is reported in an "outside bins" row."""


@dataclass
class Report:
    """What ``build_report`` wrote and what a caller may print: the tables (keyed by CSV name, in
    report order), the tables left out with the reason, the notes shown at the top of the page,
    and where each table has suppressed cells (boolean frames shaped like the tables)."""

    out_dir: Path
    year: int
    year_label: str
    tables: dict[str, pd.DataFrame]
    omitted: dict[str, str]
    notes: list[str]
    suppressed: dict[str, pd.DataFrame] = field(default_factory=dict)
    charts: list[str] = field(default_factory=list)
    narrative: narrative.Narrative | None = None

    @property
    def html_path(self) -> Path:
        return self.out_dir / "report.html"

    @property
    def warnings(self) -> list[str]:
        """The notes that are also raised as ``OutsideBinsWarning``."""
        return [n for n in self.notes if OUTSIDE_BINS in n]

    def omitted_lines(self) -> list[str]:
        """One line per table left out (a weighted variant goes with its table), for the CLI."""
        groups: dict[str, list[str]] = {}
        for name, reason in self.omitted.items():
            if name.endswith("_weighted") and name.removesuffix("_weighted") in self.omitted:
                continue
            also = " (and its student-weighted variant)" if f"{name}_weighted" in self.omitted else ""
            groups.setdefault(reason, []).append(name + also)
        return [f"left out {' and '.join(names)}: {reason}" for reason, names in groups.items()]


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


@dataclass
class Computed:
    """Everything derived from one school year, before anything is drawn or written."""

    spec: t.ReportSpec
    students: pd.DataFrame
    aggregates: pd.DataFrame  # suppressed
    raw_aggregates: pd.DataFrame
    by_grade: dict[str, pd.DataFrame]  # suppressed
    tables: dict[str, pd.DataFrame]
    suppressed: dict[str, pd.DataFrame]
    omitted: dict[str, str]
    left_out_subjects: list[str]


def grade_table_name(subject: str) -> str:
    return f"{subject}_scores_by_grade"


def _schools_reason(schools: pd.DataFrame | None, column: str, what: str, key: str) -> str | None:
    """Why a grouping by a schools-table column is impossible, or None when it is possible."""
    if schools is None:
        return f"there is no schools table, so no {what} (add one under files.schools with {key})."
    if column not in schools:
        return f"the schools table has no {what} column (config key {key})."
    if not schools[column].notna().any():
        return f"no school in the schools table has a {what}."
    return None


def compute(district: District, year: int | None = None) -> Computed:
    """Every table of the report of one school year (default: the latest), the suppressed cells
    and the tables left out with their reasons."""
    year = district.years[-1] if year is None else int(year)
    students = district.year(year)
    schools = district.schools
    spec = t.spec_for(district, year, students)
    left_out_subjects = [s.label for s in district.subjects if s.name not in spec.names]
    raw = t.aggregate(students, schools, spec)
    agg, _ = t.suppress(raw, spec)
    raw_by_grade = t.grade_aggregates(students, schools, spec)
    by_grade = {g: t.suppress(a, spec)[0] for g, a in raw_by_grade.items()}

    tables: dict[str, pd.DataFrame] = {}
    masks: dict[str, pd.DataFrame] = {}
    omitted: dict[str, str] = {}
    tables["district_summary"] = t.district_summary(students, schools, spec)
    summary = t.school_summary(agg, spec)
    tables["school_summary"] = summary
    summary_mask = t.cell_mask(t.school_summary(raw, spec), summary)
    masks["school_summary"] = summary_mask
    by_name = summary_mask.set_index(summary[t.SCHOOL_NAME])
    ranked = t.ranked_schools(summary, spec)
    if len(ranked):
        for name, table in (
            ("top_schools", t.top_schools(summary, spec, TOP_N)),
            ("bottom_schools", t.bottom_schools(summary, spec, TOP_N)),
        ):
            tables[name] = table
            mask = by_name.reindex(table[t.SCHOOL_NAME]).reset_index(drop=True)
            masks[name] = mask.reindex(columns=table.columns, fill_value=False).fillna(False).astype(bool)
    else:
        why = (
            "no subject has cut scores or achievement levels, so there is no % proficient to rank by."
            if not spec.rated
            else f"no school has {spec.min_group_size} or more students tested in every subject."
        )
        omitted["top_schools"] = omitted["bottom_schools"] = why
    for s in spec.names:
        name = grade_table_name(s)
        table = t.scores_by_grade(by_grade, s)
        tables[name] = table
        masks[name] = t.cell_mask(t.scores_by_grade(raw_by_grade, s), table)

    groupings: list[tuple[str, Callable[..., pd.DataFrame], str | None]] = [
        (
            "scores_by_spending",
            t.scores_by_spending,
            _schools_reason(schools, "budget", "budget", "school_columns.budget"),
        ),
        ("scores_by_size", t.scores_by_size, None),
        (
            "scores_by_type",
            t.scores_by_type,
            _schools_reason(schools, "type", "school type", "school_columns.type"),
        ),
    ]
    if not spec.classic:  # the classic format has no school levels: nothing to leave out
        groupings.append(
            (
                "scores_by_level",
                t.scores_by_level,
                _schools_reason(schools, "level", "school level", "school_columns.level"),
            )
        )
    for name, make, reason in groupings:
        if reason is None and name == "scores_by_spending" and "spending_bin" not in agg:
            reason = "the schools table has no budgets."
        if reason is not None:
            omitted[name] = omitted[f"{name}_weighted"] = reason
            continue
        for suffix, weighted in (("", False), ("_weighted", True)):
            table = make(agg, spec, weighted=weighted)
            tables[name + suffix] = table
            masks[name + suffix] = t.cell_mask(make(raw, spec, weighted=weighted), table)

    years = [y for y in district.years if y <= year]
    if len(years) >= 2:
        tables["district_trend"] = t.district_trend(district.students, spec, years)
    elif len(district.years) == 1:
        omitted["district_trend"] = (
            f"the data has one school year ({spec.year_phrase}); a trend needs two or more."
        )
    else:
        omitted["district_trend"] = f"there is no school year before {spec.year_phrase} in the data."
    masks = {k: m for k, m in masks.items() if bool(m.to_numpy().any())}
    return Computed(spec, students, agg, raw, by_grade, tables, masks, omitted, left_out_subjects)


def csv_ready(table: pd.DataFrame, mask: pd.DataFrame | None) -> pd.DataFrame:
    """A table as written to CSV: suppressed cells say so instead of being blank."""
    if mask is None or not mask.to_numpy().any():
        return table
    out = table.astype(object)
    return out.mask(mask.reindex(index=table.index, columns=table.columns, fill_value=False), SUPPRESSED)


# ----------------------------------------------------------------------------------------------
# Notes and definitions
# ----------------------------------------------------------------------------------------------


def _edges(edges: Any, as_money: bool) -> str:
    return ", ".join(f"${e:,.0f}" if as_money else f"{e:,.0f}" for e in edges)


def report_notes(c: Computed) -> list[str]:
    """Things a reader must know about this year's data: schools outside every bin, schools
    without students, suppressed figures, left-out subjects, overlapping top and bottom lists."""
    spec, raw = c.spec, c.raw_aggregates
    notes = []
    config = spec.aggregate
    outside = t.outside_bins(raw)
    outside = outside[outside[t.TOTAL_STUDENTS] > 0]
    if len(outside) > MAX_SCHOOL_NOTES:
        parts = []
        for kind, rows in outside.groupby("Outside", sort=True):
            parts.append(
                f"{plural(len(rows), 'school')} outside every {kind} bin "
                f"({listing(sorted(rows[t.SCHOOL_NAME]))})"
            )
        notes.append(
            f"{'; '.join(parts)}. Spending bins: {_edges(config.spending_bins, True)}; size bins: "
            f'{_edges(config.size_bins, False)}. They are counted in the "{OUTSIDE_BINS}" rows of those '
            "tables."
        )
        outside = outside.iloc[0:0]
    for _, row in outside.iterrows():
        if row["Outside"] == "size":
            why = (
                f"its {row[t.TOTAL_STUDENTS]:,} students fall outside the size bins "
                f"({_edges(config.size_bins, False)})"
            )
        else:
            why = (
                f"its per-student budget of {money(row[t.PER_STUDENT_BUDGET])} falls outside the "
                f"spending bins ({_edges(config.spending_bins, True)})"
            )
            if row["Outside"] == "spending and size":
                why += " and its enrolment outside the size bins"
        notes.append(
            f"{row[t.SCHOOL_NAME]} is outside every {row['Outside']} bin: {why}. It is counted in "
            f'the "{OUTSIDE_BINS}" row of the {row["Outside"]} table(s).'
        )
    empty = raw.loc[raw["total_students"] == 0, "label"].astype(str).tolist()
    if empty:
        bins = "spending and size" if "spending_bin" in raw else "size"
        notes.append(
            f"No students are listed in {spec.year_phrase} for {listing(sorted(empty))}: shown with blank "
            f'figures, not ranked, and counted in the "{OUTSIDE_BINS}" rows of the {bins} tables.'
        )
    if c.left_out_subjects:
        notes.append(
            f"No scores in {spec.year_phrase} for {listing(c.left_out_subjects)}: left out of this report."
        )
    k = spec.min_group_size
    small = c.aggregates.index[c.aggregates[t.OVERALL].isna() & raw[t.OVERALL].notna()] if spec.rated else []
    if len(small):
        names = sorted(raw.loc[small, "label"].astype(str))
        notes.append(
            f"{plural(len(names), 'school')} with fewer than {k} students tested in every subject "
            f"({listing(names)}): their figures are suppressed and they are not ranked."
        )
    cells = {
        spec.subject(s).label: int(c.suppressed[grade_table_name(s)].to_numpy().sum())
        for s in spec.names
        if grade_table_name(s) in c.suppressed
    }
    if cells:
        counted = listing([f"{n} in {label}" for label, n in cells.items()])
        notes.append(
            f"School and grade cells with fewer than {k} tested students are suppressed (shown as "
            f"—ˢ, never as a number): {counted}."
        )
    if spec.names:  # schools missing a grade (no students, not suppressed): listed when only a few
        name = grade_table_name(spec.names[0])
        values = c.tables[name].set_index(t.SCHOOL_NAME)
        hidden = c.suppressed.get(name)
        blank = values.isna()
        if hidden is not None:
            blank &= ~hidden[list(values.columns)].set_axis(values.index).astype(bool)
        gaps = [
            f"{school} ({', '.join(values.columns[blank.loc[school].to_numpy()])})"
            for school in values.index
            if school not in empty and blank.loc[school].any()
        ]
        if 0 < len(gaps) <= 10:
            notes.append(
                f"Some schools have no students in a grade (blank in the grade tables): {'; '.join(gaps)}."
            )
    ranked = len(t.ranked_schools(c.tables["school_summary"], spec))
    if 0 < ranked < 2 * TOP_N:
        notes.append(
            f"Only {ranked} schools are ranked, so the top-{TOP_N} and bottom-{TOP_N} lists overlap."
        )
    return notes


def cut_table(spec: t.ReportSpec) -> pd.DataFrame | None:
    """The proficient cut (pass mark) of each subject in each grade of the report year."""
    rows = []
    for s in spec.subjects:
        if not s.rated or not s.cuts:
            continue
        row: dict[str, object] = {"Subject": s.label}
        tested = s.grades or spec.grades
        row.update({g: s.cuts.get(g, np.nan) if g in tested else np.nan for g in spec.grades})
        rows.append(row)
    return pd.DataFrame(rows) if rows else None


def definitions(c: Computed) -> list[str]:
    """The footer: how each figure is defined, with the cut scores, bins and suppression rule."""
    spec = c.spec
    word = spec.passing_word
    config = spec.aggregate
    out = []
    uniform = {cut_value for s in spec.subjects if s.rated for cut_value in s.cuts.values()}
    rated_labels = listing([spec.subject(s).label for s in spec.rated])
    if spec.classic and len(uniform) == 1:
        out.append(
            f"{word} means a score of {cut(next(iter(uniform)))} or more (the pass mark, the same in every "
            "grade "
            f"and subject). % Overall {word} is the share of students passing {rated_labels} "
            "(every subject), not the average of the subject pass rates."
        )
    elif spec.rated:
        out.append(
            f"% {word} <subject>: the share of students tested in the subject whose score is at or above "
            "the proficient cut of their grade (the table below; a score at the cut counts as "
            f"{word.lower()}). % Overall {word}: the share of students {word.lower()} in every subject "
            f"({rated_labels}) among the students tested in every subject, not the average of the subject "
            "rates."
        )
    unrated = [s.label for s in spec.subjects if not s.rated]
    if unrated:
        out.append(
            f"{listing(unrated)} has no cut scores or achievement levels: averages only, no % {word.lower()}."
        )
    scales = [f"{s.label} {cut(s.scale[0])} to {cut(s.scale[1])}" for s in spec.subjects if s.scale]
    if scales:
        out.append(
            "Averages are mean scale scores of the students tested, on each subject's scale "
            f"({'; '.join(scales)})."
        )
    budget = t.has_values(c.aggregates, "total_budget")
    out.append(
        f"Total Students is counted from the records of {spec.year_phrase} (not the schools' reported size)"
        + ("; Per Student Budget = Total School Budget / Total Students." if budget else ".")
    )
    bins = []
    if "scores_by_spending" in c.tables:
        bins.append(
            f"Spending bins (per-student budget, edges {_edges(config.spending_bins, True)}, each "
            "including its "
            f"upper edge): {', '.join(config.spending_labels)}."
        )
    bins.append(
        f"Size bins (students, edges {_edges(config.size_bins, False)}): {', '.join(config.size_labels)}."
    )
    out.append(
        " ".join(bins) + f' A school outside every bin is shown in an "{OUTSIDE_BINS}" row, never dropped.'
    )
    groups = [
        n
        for n, key in (
            ("spending", "scores_by_spending"),
            ("size", "scores_by_size"),
            ("type", "scores_by_type"),
            ("level", "scores_by_level"),
        )
        if key in c.tables
    ]
    out.append(
        f"The {listing(groups)} tables average the school-level figures, each school counting once, as the "
        "standard analysis does; the student-weighted tables weight each school by its number of students."
    )
    out.append(f"Ranking: {spec.overall} from highest to lowest; ties are broken by school name, A to Z.")
    out.append(
        f"Suppression: a figure based on fewer than {spec.min_group_size} tested students (a school, or a "
        "school in one grade) is not shown (—ˢ) and is left out of the group averages; a dash alone means "
        "there are no students."
    )
    out.append("This page holds school-level and district-level figures only; no student appears in it.")
    return out


# ----------------------------------------------------------------------------------------------
# Charts and the page
# ----------------------------------------------------------------------------------------------


def _groups_of_students(c: Computed) -> tuple[np.ndarray | None, str]:
    """Each student's school type (or level) for the score distributions, when the district has one."""
    for column, name in (("school_type", "School type"), ("school_level", "School level")):
        if t.has_values(c.raw_aggregates, column):
            lookup = c.raw_aggregates[column].dropna().astype(str).to_dict()
            return charts.group_labels(c.students, lookup), name
    return None, ""


def render_charts(
    c: Computed, groups: tuple[narrative.GroupProfile, narrative.GroupProfile] | None
) -> dict[str, bytes]:
    spec, tables = c.spec, c.tables
    out: dict[str, Callable[[], bytes]] = {}
    district = tables["district_summary"]
    if spec.overall in district and len(t.ranked_schools(tables["school_summary"], spec)):
        overall = float(district[spec.overall].iloc[0])
        out["overall_by_school"] = lambda: charts.overall_by_school(tables["school_summary"], spec, overall)
    if spec.pct_metrics():
        for key, label, title, ordered in (
            ("scores_by_spending", t.SPENDING_RANGE, "by per-student budget", True),
            ("scores_by_size", t.SCHOOL_SIZE, "by school size", True),
            ("scores_by_type", t.SCHOOL_TYPE, "by school type", False),
            ("scores_by_level", t.SCHOOL_LEVEL, "by school level", False),
        ):
            if key in tables:
                out[key] = lambda k=key, lb=label, ti=title, o=ordered: charts.scores_by_group(
                    tables[k], lb, f"% {spec.passing_word} {ti} (school averages)", spec, ordered=o
                )
    if spec.subjects:
        labels, name = _groups_of_students(c)
        out["score_distributions"] = lambda: charts.score_distributions(c.students, spec, labels, name)
    if groups is not None:
        level = c.raw_aggregates.get("school_level")
        order = (
            [str(x) for x in level.cat.categories]
            if level is not None and isinstance(level.dtype, pd.CategoricalDtype)
            else []
        )
        out["top_vs_bottom"] = lambda: charts.top_vs_bottom(*groups, spec.grades, spec, order)
    if "district_trend" in tables and spec.pct_metrics():
        out["district_trend"] = lambda: charts.trend(tables["district_trend"], spec)
    return {name: make() for name, make in out.items()}


def _outside_row(row: pd.Series) -> bool:
    return any(str(v) == OUTSIDE_BINS for v in row.iloc[:1])


def distribution_caption(spec: t.ReportSpec) -> str:
    uniform = [s.label for s in spec.subjects if charts.uniform_cut(s, spec.grades) is not None]
    varying = [s.label for s in spec.subjects if s.rated and s.cuts and s.label not in uniform]
    parts = ["Share of students in each score band"]
    if uniform:
        word = "pass mark" if spec.classic else "proficient cut"
        parts.append(
            f"{listing(uniform)}: by scale score, the dashed line is the {word} (the same in every grade)"
        )
    if varying:
        parts.append(
            f"{listing(varying)}: the cut differs by grade, so each student is placed by the points between "
            "their score and the proficient cut of their own grade; the dashed line at 0 is the cut for "
            "every "
            "grade, students right of it are proficient"
        )
    return ". ".join(parts) + ". Each title gives the share of students at or above the cut."


def page_sections(c: Computed, pngs: Mapping[str, bytes]) -> list[html.PageSection]:
    spec, tables, omitted, masks = c.spec, c.tables, c.omitted, c.suppressed

    def table(name: str, caption: str = "", css: str = "", **kw: Any) -> html.Block:
        formatted = html.format_table(tables[name], flag=_outside_row, suppressed=masks.get(name), **kw)
        return html.Block("table", caption=caption, table=formatted, css=css)

    def chart(name: str, alt: str, caption: str = "") -> list[html.Block]:
        return [html.Block("chart", png=pngs[name], alt=alt, caption=caption)] if name in pngs else []

    def left_out(name: str, what: str) -> html.Block:
        return html.Block("omitted", caption=f"{what} left out:", text=omitted[name])

    sections = []
    sup = f" —ˢ: suppressed, fewer than {spec.min_group_size} students tested."
    schools_blocks = chart(
        "overall_by_school",
        f"{spec.overall} by school",
        "Schools without students or with suppressed figures are not shown."
        if "overall_by_school" in pngs
        else "",
    )
    schools_blocks.append(table("school_summary", "School summary"))
    sections.append(
        html.PageSection(
            "schools",
            "Schools",
            "Schools",
            f"One row per school, {spec.year_phrase}; — means no students." + sup,
            tuple(schools_blocks),
        )
    )
    if "top_schools" in tables:
        ranking = (
            table("top_schools", f"Top {TOP_N} schools"),
            table("bottom_schools", f"Bottom {TOP_N} schools (lowest first)"),
        )
    else:
        ranking = (left_out("top_schools", "Top and bottom schools"),)
    sections.append(
        html.PageSection(
            "ranking",
            "Highest- and lowest-performing schools",
            "Top & bottom",
            f"Ranked by {spec.overall} (highest first); ties are broken by school name (A to Z), so the "
            "order "
            "never depends on the input. Schools without students or with suppressed figures are not ranked.",
            ranking,
        )
    )
    side_by_side = all(len(tables[grade_table_name(s)].columns) <= 6 for s in spec.names)
    grade_tables = tuple(
        (
            f"{spec.subject(s).label}: average score",
            html.format_table(
                tables[grade_table_name(s)],
                suppressed=masks.get(grade_table_name(s)),
                formats={g: score for g in spec.grades},
            ),
        )
        for s in spec.names
    )
    sections.append(
        html.PageSection(
            "grades",
            "Scores by grade",
            "By grade",
            f"Average scale score per school and grade ({spec.year_phrase}, grades with students only); — "
            "means "
            f"the school has no students tested in that grade; —ˢ means fewer than {spec.min_group_size} "
            "were "
            "tested, so the figure is suppressed to protect their privacy.",
            (
                (html.Block("tables", tables=grade_tables),)
                if side_by_side
                else tuple(
                    html.Block("table", caption=caption, table=table) for caption, table in grade_tables
                )
            ),
        )
    )
    for key, heading, anchor, nav in (
        ("scores_by_spending", "Scores by school spending (per student)", "spending", "By spending"),
        ("scores_by_size", "Scores by school size", "size", "By size"),
        ("scores_by_type", "Scores by school type", "type", "By type"),
        ("scores_by_level", "Scores by school level", "level", "By level"),
    ):
        if key in tables:
            blocks = chart(key, heading) + [
                table(key, "Average of the school figures (each school counts once)"),
                table(
                    f"{key}_weighted",
                    "Student-weighted: average over all students in the group (each student counts once)",
                    "weighted",
                ),
            ]
        elif key in omitted:
            blocks = [left_out(key, heading.replace("Scores by", "The table by"))]
        else:
            continue
        sections.append(html.PageSection(anchor, heading, nav, "", tuple(blocks)))
    if "district_trend" in tables:
        lead = "District figures of each school year up to the report year (all students of that year)."
        if spec.classic:
            lead += (
                " Classic files hold one year; the prior year is rebuilt from the prior-score columns of the "
                "same students, so this compares one cohort with itself a year earlier."
            )
        blocks = chart("district_trend", "District trend") + [table("district_trend")]
        sections.append(html.PageSection("trend", "Trend across school years", "Trend", lead, tuple(blocks)))
    elif "district_trend" in omitted:
        sections.append(
            html.PageSection(
                "trend",
                "Trend across school years",
                "Trend",
                "",
                (left_out("district_trend", "The trend table"),),
            )
        )
    sections.append(
        html.PageSection(
            "distributions",
            "Score distributions",
            "Distributions",
            "",
            tuple(chart("score_distributions", "Score distributions by subject", distribution_caption(spec))),
        )
    )
    return sections


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------


@contextmanager
def _step(name: str, progress: bool) -> Iterator[None]:
    start = time.perf_counter()
    yield
    if progress:
        from rich.console import Console

        Console(stderr=True, log_path=False).log(f"{name} ({time.perf_counter() - start:.2f} s)")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write(tmp: Path, name: str, data: bytes | str) -> None:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """A new folder is one atomic rename; into an existing folder (which may hold other files)
    each file is replaced atomically, only after all of them were written."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        dest = out_dir / path.relative_to(tmp)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)


def build_report(
    district: District, out_dir: Path | str, year: int | None = None, progress: bool = False
) -> Report:
    """Write the report of one school year (default: the latest) of ``district`` (a
    ``features.ingest.District``) to ``out_dir``: every table as CSV, the charts (``charts/*.png``)
    and a self-contained ``report.html``. Returns the tables, the tables left out with the reason,
    and the notes; a school outside every bin also raises ``OutsideBinsWarning``."""
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the report folder should not be
    try:
        with _step("school aggregates and tables", progress):
            c = compute(district, year)
            for name, table in c.tables.items():
                _write(tmp, f"{name}.csv", csv_ready(table, c.suppressed.get(name)).to_csv(index=False))
        notes = report_notes(c)
        for note in notes:
            if OUTSIDE_BINS in note:
                warnings.warn(note, OutsideBinsWarning, stacklevel=2)
        spec = c.spec
        with _step("narrative", progress):
            summary = c.tables["school_summary"]
            groups = narrative.compare_groups(summary, c.by_grade, spec, TOP_N)
            groupings = [
                narrative.Grouping(c.tables[key], label, noun, column)
                for key, label, noun, column in (
                    ("scores_by_size", t.SCHOOL_SIZE, "size", t.TOTAL_STUDENTS),
                    ("scores_by_spending", t.SPENDING_RANGE, "per-student budget", t.PER_STUDENT_BUDGET),
                    ("scores_by_type", t.SCHOOL_TYPE, "type", None),
                    ("scores_by_level", t.SCHOOL_LEVEL, "level", None),
                )
                if key in c.tables
            ]
            story = narrative.build_narrative(summary, groups, groupings, spec)
        with _step("charts", progress):
            pngs = render_charts(c, groups)
            for name, png in pngs.items():
                _write(tmp, f"charts/{name}.png", png)
        with _step("html", progress):
            district_row = c.tables["district_summary"].iloc[0]
            n_schools = int(district_row[t.TOTAL_SCHOOLS])
            name = district.config.name if district.config.name != "District" else None
            subtitle = [
                name,
                f"school year {spec.year_label}" if not spec.classic else None,
                plural(n_schools, "school"),
                plural(int(district_row[t.TOTAL_STUDENTS]), "student"),
            ]
            pass_marks = {v for s in spec.subjects if s.rated for v in s.cuts.values()}
            if spec.classic and len(pass_marks) == 1:
                subtitle.append(f"pass mark {cut(next(iter(pass_marks)))}")
            subtitle.append(f"generated {datetime.now(UTC):%Y-%m-%d}")
            cuts = cut_table(spec)
            cuts_block = None
            if cuts is not None:
                cuts_caption = (
                    "Pass mark by subject and grade"
                    if spec.classic
                    else ("Proficient cut scores (lowest proficient score) by subject and grade")
                )
                cuts_block = html.Block(
                    "table",
                    caption=cuts_caption,
                    table=html.format_table(cuts, formats={g: cut for g in spec.grades}),
                )
            insight = None
            if "top_vs_bottom" in pngs:
                insight = html.Block(
                    "chart",
                    png=pngs["top_vs_bottom"],
                    alt="Top versus bottom schools",
                    caption="Top and bottom groups of the ranking compared (school-level averages; grade "
                    "lines weighted by students).",
                )
            page = html.render_report(
                title=TITLE,
                subtitle=" · ".join(s for s in subtitle if s),
                district=c.tables["district_summary"],
                sections=page_sections(c, pngs),
                narrative=story,
                insight_chart=insight,
                notes=notes,
                definitions=definitions(c),
                cuts=cuts_block,
            )
            _write(tmp, "report.html", page)
        _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        from rich.console import Console

        Console(stderr=True, log_path=False).log(
            f"wrote {len(c.tables)} tables, {len(pngs)} charts and report.html to {out_dir}/"
        )
    return Report(
        out_dir=out_dir,
        year=spec.year,
        year_label=year_label(spec.year, spec.classic),
        tables=c.tables,
        omitted=c.omitted,
        notes=notes,
        suppressed=c.suppressed,
        charts=list(pngs),
        narrative=story,
    )


# ----------------------------------------------------------------------------------------------
# MLflow
# ----------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def mlflow_metrics(tables: Mapping[str, pd.DataFrame] | Report) -> dict[str, float]:
    """District figures under MLflow-safe names (``total_students``, ``avg_math``,
    ``pct_proficient_math``, ``pct_overall_proficient``...), for comparing reports across runs."""
    if isinstance(tables, Report):
        tables = tables.tables
    district = tables["district_summary"]
    keys = district.attrs.get("keys", {})
    row = district.iloc[0]
    return {keys.get(column, _slug(str(column))): float(row[column]) for column in district.columns}


def log_to_mlflow(
    out_dir: Path, params: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None
) -> str:
    """Log the report folder as artifacts under ``report/`` in a ``district-report`` run of the
    reports experiment (``features.settings.REPORTS_EXPERIMENT``) on the tracking URI of
    ``features.settings.get_settings()``; returns the run id. NaN metrics are left out."""
    import math

    import mlflow

    from features.settings import REPORTS_EXPERIMENT
    from training.tracking import use_named_experiment

    use_named_experiment(REPORTS_EXPERIMENT)  # tagged to open on the model-training view
    with mlflow.start_run(run_name=MLFLOW_RUN_NAME) as run:
        if params:
            mlflow.log_params(dict(params))
        if metrics:
            mlflow.log_metrics({k: v for k, v in metrics.items() if not math.isnan(v)})
        mlflow.log_artifacts(str(out_dir), artifact_path="report")
    return run.info.run_id
