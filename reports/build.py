"""Build the district report: tables, narrative, charts and HTML, written atomically.

The school aggregates are computed once here (by ``features.school_aggregates``, the code the
growth model shares) and every table, sentence and chart is derived from them. All files are
first written to a temporary folder next to the output folder and only moved into place when
everything succeeded, so a failing step never leaves half a report behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from features.contract import GRADES
from features.school_aggregates import OUTSIDE_BINS, AggregateConfig, school_aggregates
from reports import charts, html, narrative
from reports import tables as t

MLFLOW_EXPERIMENT = "student-growth-reports"
MLFLOW_RUN_NAME = "district-report"
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

#: CSV name (without .csv) of every table, in report order.
TABLE_NAMES: tuple[str, ...] = (
    "district_summary",
    "school_summary",
    "top_schools",
    "bottom_schools",
    "math_scores_by_grade",
    "reading_scores_by_grade",
    "scores_by_spending",
    "scores_by_size",
    "scores_by_type",
    "scores_by_spending_weighted",
    "scores_by_size_weighted",
    "scores_by_type_weighted",
)


class OutsideBinsWarning(UserWarning):
    """A school falls outside every spending or size bin; it is reported in an "outside bins" row."""


def compute_tables(
    students: pd.DataFrame,
    schools: pd.DataFrame,
    aggregates: pd.DataFrame,
    by_grade: Mapping[str, pd.DataFrame],
    config: AggregateConfig,
) -> dict[str, pd.DataFrame]:
    """All report tables from the shared aggregates, keyed by CSV name."""
    summary = t.school_summary(aggregates)
    return {
        "district_summary": t.district_summary(students, schools, config.pass_mark),
        "school_summary": summary,
        "top_schools": t.top_schools(summary),
        "bottom_schools": t.bottom_schools(summary),
        "math_scores_by_grade": t.scores_by_grade(by_grade, "avg_math"),
        "reading_scores_by_grade": t.scores_by_grade(by_grade, "avg_reading"),
        "scores_by_spending": t.scores_by_spending(aggregates, config),
        "scores_by_size": t.scores_by_size(aggregates, config),
        "scores_by_type": t.scores_by_type(aggregates),
        "scores_by_spending_weighted": t.scores_by_spending(aggregates, config, weighted=True),
        "scores_by_size_weighted": t.scores_by_size(aggregates, config, weighted=True),
        "scores_by_type_weighted": t.scores_by_type(aggregates, weighted=True),
    }


def _edges(edges: Any, money: bool) -> str:
    return ", ".join(f"${e:,.0f}" if money else f"{e:,.0f}" for e in edges)


def report_notes(
    aggregates: pd.DataFrame, tables: Mapping[str, pd.DataFrame], config: AggregateConfig
) -> list[str]:
    """Things a reader must know about this district's data: schools outside every bin, schools
    without students, schools missing a grade, overlapping top and bottom lists."""
    notes = []
    empty = aggregates.index[aggregates["total_students"] == 0].astype(str).tolist()
    for _, row in t.outside_bins(aggregates).iterrows():
        if row[t.TOTAL_STUDENTS] == 0:
            continue
        if row["Outside"] == "size":
            why = (
                f"its {row[t.TOTAL_STUDENTS]:,} students fall outside the size bins "
                f"({_edges(config.size_bins, False)})"
            )
        else:
            why = (
                f"its per-student budget of {html.money(row[t.PER_STUDENT_BUDGET])} falls outside the "
                f"spending bins ({_edges(config.spending_bins, True)})"
            )
            if row["Outside"] == "spending and size":
                why += " and its enrolment outside the size bins"
        notes.append(
            f"{row[t.SCHOOL_NAME]} is outside every {row['Outside']} bin: {why}. It is counted in "
            f'the "{OUTSIDE_BINS}" row of the {row["Outside"]} table(s).'
        )
    if empty:
        notes.append(
            f"No students are listed for {', '.join(empty)}: shown with blank scores, not ranked, "
            f'and counted in the "{OUTSIDE_BINS}" rows of the spending and size tables.'
        )
    grades = tables["math_scores_by_grade"].set_index(t.SCHOOL_NAME)
    gaps = [
        f"{school} ({', '.join(g for g in grades.columns if pd.isna(grades.at[school, g]))})"
        for school in grades.index
        if school not in empty and grades.loc[school].isna().any()
    ]
    if gaps:
        notes.append(
            f"Some schools have no students in a grade (blank in the grade tables): {'; '.join(gaps)}."
        )
    ranked = len(t.ranked_schools(tables["school_summary"]))
    if ranked < 10:
        notes.append(f"Only {ranked} schools have students, so the top-5 and bottom-5 lists overlap.")
    return notes


def definitions(config: AggregateConfig) -> list[str]:
    """The footer: how each figure is defined, including the configurable pass mark and bins."""
    spending = ", ".join(config.spending_labels)
    size = ", ".join(config.size_labels)
    return [
        f"Passing means a score of {config.pass_mark:g} or more. % Overall Passing is the share of students "
        "passing both math and reading, not the average of the two pass rates.",
        "Total Students is counted from the student table (not the schools' reported size); "
        "Per Student Budget = Total School Budget / Total Students.",
        f"Spending bins (per-student budget, edges {_edges(config.spending_bins, True)}, each including its "
        f"upper edge): {spending}. Size bins (students, edges {_edges(config.size_bins, False)}): {size}. "
        f'A school outside every bin is shown in an "{OUTSIDE_BINS}" row, never dropped.',
        "The spending, size and type tables average the school-level figures, each school counting once, as "
        "the standard analysis does; the student-weighted tables weight each school by its number of "
        "students.",
        "Ranking: % Overall Passing from highest to lowest; ties are broken by school name, A to Z.",
        "This page holds school-level and district-level figures only; no student appears in it.",
    ]


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


def _render_charts(
    tables: Mapping[str, pd.DataFrame],
    students: pd.DataFrame,
    groups: tuple[narrative.GroupProfile, narrative.GroupProfile] | None,
    config: AggregateConfig,
) -> dict[str, bytes]:
    summary = tables["school_summary"]
    types = summary.set_index(t.SCHOOL_NAME)[t.SCHOOL_TYPE]
    district_overall = float(tables["district_summary"][t.PCT_OVERALL].iloc[0])
    out: dict[str, Callable[[], bytes]] = {
        "overall_passing_by_school": lambda: charts.overall_passing_by_school(summary, district_overall),
        "scores_by_spending": lambda: charts.scores_by_group(
            tables["scores_by_spending"], t.SPENDING_RANGE, "Scores by per-student budget (school averages)"
        ),
        "scores_by_size": lambda: charts.scores_by_group(
            tables["scores_by_size"], t.SCHOOL_SIZE, "Scores by school size (school averages)"
        ),
        "scores_by_type": lambda: charts.scores_by_group(
            tables["scores_by_type"], t.SCHOOL_TYPE, "Scores by school type (school averages)", ordered=False
        ),
        "score_distributions": lambda: charts.score_distributions(students, config.pass_mark, types),
    }
    if groups is not None:
        out["top_vs_bottom"] = lambda: charts.top_vs_bottom(*groups, GRADES)
    return {name: make() for name, make in out.items()}


def build_report(
    students: pd.DataFrame,
    schools: pd.DataFrame,
    out_dir: Path,
    config: AggregateConfig = AggregateConfig(),
    progress: bool = False,
) -> dict[str, pd.DataFrame]:
    """Write the CSV tables, charts (``charts/*.png``) and ``report.html`` to ``out_dir`` and
    return the tables keyed by CSV name. Inputs are validated frames with contract columns."""
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the report folder should not be
    try:
        with _step("school aggregates", progress):
            aggregates = school_aggregates(students, schools, config=config)
            by_grade = t.grade_aggregates(students, schools, config)
        with _step("tables", progress):
            tables = compute_tables(students, schools, aggregates, by_grade, config)
            for name, table in tables.items():
                _write(tmp, f"{name}.csv", table.to_csv(index=False))
        notes = report_notes(aggregates, tables, config)
        for note in notes:
            if OUTSIDE_BINS in note:
                warnings.warn(note, OutsideBinsWarning, stacklevel=2)
        with _step("narrative", progress):
            groups = narrative.compare_groups(tables["school_summary"], by_grade)
            story = narrative.build_narrative(
                tables["school_summary"],
                groups,
                tables["scores_by_spending"],
                tables["scores_by_size"],
                tables["scores_by_type"],
            )
        with _step("charts", progress):
            pngs = _render_charts(tables, students, groups, config)
            for name, png in pngs.items():
                _write(tmp, f"charts/{name}.png", png)
        with _step("html", progress):
            district = tables["district_summary"].iloc[0]
            page = html.render_report(
                title="District performance report",
                subtitle=(
                    f"{int(district['Total Schools'])} schools · "
                    f"{int(district[t.TOTAL_STUDENTS]):,} students · pass mark {config.pass_mark:g} · "
                    f"generated {datetime.now(UTC):%Y-%m-%d}"
                ),
                district=tables["district_summary"],
                tables={name: html.format_table(table, flag=_outside_row) for name, table in tables.items()},
                charts=pngs,
                narrative=story,
                notes=notes,
                definitions=definitions(config),
            )
            _write(tmp, "report.html", page)
        _move_into_place(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        from rich.console import Console

        Console(stderr=True, log_path=False).log(
            f"wrote {len(tables)} tables, {len(pngs)} charts and report.html to {out_dir}/"
        )
    return tables


def _outside_row(row: pd.Series) -> bool:
    return any(str(v) == OUTSIDE_BINS for v in row.iloc[:1])


def mlflow_metrics(tables: Mapping[str, pd.DataFrame]) -> dict[str, float]:
    """District figures under MLflow-safe names, for comparing reports across runs."""
    row = tables["district_summary"].iloc[0]
    names = {
        "Total Schools": "total_schools",
        t.TOTAL_STUDENTS: "total_students",
        "Total Budget": "total_budget",
        t.AVG_MATH: "avg_math",
        t.AVG_READING: "avg_reading",
        t.PCT_MATH: "pct_passing_math",
        t.PCT_READING: "pct_passing_reading",
        t.PCT_OVERALL: "pct_overall_passing",
    }
    return {key: float(row[col]) for col, key in names.items()}


def log_to_mlflow(
    out_dir: Path, params: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None
) -> str:
    """Log the report folder as artifacts under ``report/`` in a ``district-report`` run of the
    ``student-growth-reports`` experiment; returns the run id. The tracking URI comes from
    ``MLFLOW_TRACKING_URI`` (default ``sqlite:///mlflow.db``)."""
    import mlflow

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))
    mlflow.set_experiment(MLFLOW_EXPERIMENT)
    with mlflow.start_run(run_name=MLFLOW_RUN_NAME) as run:
        if params:
            mlflow.log_params(dict(params))
        if metrics:
            mlflow.log_metrics(dict(metrics))
        mlflow.log_artifacts(str(out_dir), artifact_path="report")
    return run.info.run_id
