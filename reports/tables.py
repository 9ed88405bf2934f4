"""The district tables, one pure function each, for any district: any subjects, scales and grades.

Every per-school figure comes from ``features.school_aggregates.school_aggregates`` (the function
the growth model's features use too), wrapped by ``aggregate`` which only adds the number of
students tested per subject (for small-group suppression) and a display label per school. These
functions select, rename, rank and average those figures; they never recompute them.

Tables are plain DataFrames with a RangeIndex and the report's display headers, built from the
subjects' labels and the config's passing word ("Average Math Score", "% Proficient Math", or
"% Passing Math" for the classic format). Missing values stay NaN (never 0): a school with no
students in a grade, or a bin without schools, has no score rather than a score of zero.
Suppressed figures (groups of fewer than ``min_group_size`` tested students) are NaN too;
``suppress`` returns where they are, so the CSVs and the page can mark them as suppressed.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from features.contract import SCHOOL_TYPES, proficient_column, score_column
from features.school_aggregates import OUTSIDE_BINS, AggregateConfig, district_totals, school_aggregates
from reports.formatting import year_label

if TYPE_CHECKING:
    from features.ingest import District

SCHOOL_NAME = "School Name"
SCHOOL_TYPE = "School Type"
SCHOOL_LEVEL = "School Level"
TOTAL_SCHOOLS = "Total Schools"
TOTAL_STUDENTS = "Total Students"
TOTAL_BUDGET = "Total Budget"
TOTAL_SCHOOL_BUDGET = "Total School Budget"
PER_STUDENT_BUDGET = "Per Student Budget"
RANK = "Rank"
NUMBER_OF_SCHOOLS = "Number of Schools"
SPENDING_RANGE = "Spending Ranges (Per Student)"
SCHOOL_SIZE = "School Size"
SCHOOL_YEAR = "School Year"
OVERALL = "pct_overall_proficient"


def avg_key(subject: str) -> str:
    return f"avg_{subject}"


def pct_key(subject: str) -> str:
    return f"pct_proficient_{subject}"


def tested_key(subject: str) -> str:
    return f"tested_{subject}"


TESTED_ALL = "tested_all"


@dataclass(frozen=True)
class ReportSubject:
    """A subject as the report shows it. ``rated``: the data has proficiency flags for it (cut
    scores or achievement levels), so it has a % proficient; ``cuts``: grade -> proficient cut."""

    name: str
    label: str
    rated: bool = True
    cuts: Mapping[str, float] = field(default_factory=dict)
    scale: tuple[float, float] | None = None
    grades: tuple[str, ...] = ()  # grades of the report year in which the subject was tested


@dataclass(frozen=True)
class ReportSpec:
    """What the tables need to know about the district beyond the student rows: the subjects, the
    passing word of the headers, the grades of the report year, suppression and the bins."""

    subjects: tuple[ReportSubject, ...]
    passing_word: str = "Proficient"
    grades: tuple[str, ...] = ()
    min_group_size: int = 10
    aggregate: AggregateConfig = field(default_factory=AggregateConfig)
    classic: bool = False
    year: int = 0

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.subjects]

    @property
    def rated(self) -> list[str]:
        return [s.name for s in self.subjects if s.rated]

    def subject(self, name: str) -> ReportSubject:
        return next(s for s in self.subjects if s.name == name)

    def avg(self, subject: str) -> str:
        return f"Average {self.subject(subject).label} Score"

    def pct(self, subject: str) -> str:
        return f"% {self.passing_word} {self.subject(subject).label}"

    @property
    def overall(self) -> str:
        return f"% Overall {self.passing_word}"

    def metrics(self) -> dict[str, str]:
        """Aggregate column -> header of every subject figure: the averages, the % proficient of the
        rated subjects and % overall (the school summary's order)."""
        out = {avg_key(s): self.avg(s) for s in self.names}
        out.update({pct_key(s): self.pct(s) for s in self.rated})
        if self.rated:
            out[OVERALL] = self.overall
        return out

    def pct_metrics(self) -> dict[str, str]:
        """The percentages only: what the charts compare (averages are on each subject's own scale)."""
        return {k: v for k, v in self.metrics().items() if not k.startswith("avg_")}

    @property
    def year_label(self) -> str:
        return year_label(self.year, self.classic)

    @property
    def year_phrase(self) -> str:
        """The report year in a sentence: "2023-24", or "the current year" in the classic format."""
        return f"the {self.year_label}" if self.classic else self.year_label


def spec_for(district: District, year: int, students: pd.DataFrame) -> ReportSpec:
    """The spec of a ``features.ingest.District`` for one school year: subjects with at least one
    score that year, grades with students that year (in the config's order)."""
    subjects = []
    for subject in district.subjects:
        column = score_column(subject.name)
        if column not in students or not students[column].notna().any():
            continue
        cuts = {g: subject.proficient_cut(g) for g in district.grades}
        scales = set(subject.scale.values())
        tested = grades_present(students[students[column].notna()], district.grades)
        subjects.append(
            ReportSubject(
                name=subject.name,
                label=subject.label,
                rated=proficient_column(subject.name) in students,
                cuts={g: float(c) for g, c in cuts.items() if c is not None},
                scale=tuple(next(iter(scales))) if len(scales) == 1 else None,  # type: ignore[arg-type]
                grades=tested,
            )
        )
    config = district.config
    report = config.report
    return ReportSpec(
        subjects=tuple(subjects),
        passing_word=report.passing_word,
        grades=grades_present(students, district.grades),
        min_group_size=report.min_group_size,
        aggregate=AggregateConfig(
            spending_bins=tuple(report.spending_bins),
            spending_labels=tuple(report.spending_labels),
            size_bins=tuple(report.size_bins),
            size_labels=tuple(report.size_labels),
        ),
        classic=config.format == "classic",
        year=int(year),
    )


def grades_present(students: pd.DataFrame, order: Sequence[str] = ()) -> tuple[str, ...]:
    """Grades with at least one student, in the config's order (others after, sorted)."""
    grade = students["grade"]
    counts = grade.value_counts()
    present = {str(g) for g, n in counts.items() if n > 0}
    if isinstance(grade.dtype, pd.CategoricalDtype):
        order = [*map(str, grade.cat.categories), *order]
    ordered = [g for g in dict.fromkeys(map(str, order)) if g in present]
    return (*ordered, *sorted(present - set(ordered)))


# ----------------------------------------------------------------------------------------------
# The shared aggregates, plus tested counts and labels
# ----------------------------------------------------------------------------------------------


def tested_counts(students: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame:
    """Students tested per school: in each subject, and in every rated subject (the students behind
    % overall). Counted with one pass over integer codes."""
    ids = students["school_id"]
    if not isinstance(ids.dtype, pd.CategoricalDtype):
        ids = ids.astype(str).astype("category")
    codes = ids.cat.codes.to_numpy()
    categories = ids.cat.categories.astype(str)
    ok = codes >= 0
    codes = codes[ok]
    counts: dict[str, np.ndarray] = {}
    for s in spec.names:
        tested = students[score_column(s)].notna().to_numpy()[ok]
        counts[tested_key(s)] = np.bincount(codes, weights=tested, minlength=len(categories))
    every = np.ones(len(codes), dtype=bool)
    for s in spec.rated:
        every &= students[proficient_column(s)].notna().to_numpy()[ok]
    if not spec.rated:
        every[:] = False
    counts[TESTED_ALL] = np.bincount(codes, weights=every, minlength=len(categories))
    frame = pd.DataFrame(counts, index=pd.Index(categories, name="school_id"))
    return frame.groupby(level=0).sum().astype(int)


def school_labels(aggregates: pd.DataFrame) -> pd.Series:
    """The school's name; a name several schools share gets the school id in brackets."""
    names = aggregates["school_name"].astype(str)
    shared = names.duplicated(keep=False)
    ids = pd.Series(aggregates.index.astype(str), index=aggregates.index)
    return names.where(~shared | (names == ids), names + " (" + ids + ")")


def aggregate(students: pd.DataFrame, schools: pd.DataFrame | None, spec: ReportSpec) -> pd.DataFrame:
    """``school_aggregates`` of one school year's students, plus ``tested_<subject>``,
    ``tested_all`` and the display ``label``. With a subject that has no proficiency flags, %
    overall counts the rated subjects only."""
    out = school_aggregates(students, schools, spec.names, spec.aggregate)
    if spec.rated and len(spec.rated) < len(spec.names):
        overall = school_aggregates(students, schools, spec.rated, spec.aggregate)[OVERALL]
        out[OVERALL] = overall.reindex(out.index)
    out = out.drop(columns=[pct_key(s) for s in spec.names if s not in spec.rated])
    if not spec.rated:
        out[OVERALL] = np.nan
    counts = tested_counts(students, spec).reindex(out.index, fill_value=0)
    out = out.join(counts)
    out["label"] = school_labels(out)
    return out


def suppress(aggregates: pd.DataFrame, spec: ReportSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Figures of fewer than ``min_group_size`` tested students set to NaN, and where (a boolean
    frame of the metric columns). A group without tested students is empty, not suppressed."""
    k = spec.min_group_size
    metrics = [m for m in spec.metrics() if m in aggregates]
    mask = pd.DataFrame(False, index=aggregates.index, columns=metrics)
    for s in spec.names:
        n = aggregates[tested_key(s)]
        small = (n > 0) & (n < k)
        for column in (avg_key(s), pct_key(s)):
            if column in mask:
                mask[column] = small.to_numpy()
    if OVERALL in mask:
        n = aggregates[TESTED_ALL]
        mask[OVERALL] = ((n > 0) & (n < k)).to_numpy()
    out = aggregates.copy()
    out[metrics] = out[metrics].mask(mask)
    return out, mask


def cell_mask(raw: pd.DataFrame, shown: pd.DataFrame) -> pd.DataFrame:
    """Where a table built from suppressed aggregates is blank but the unsuppressed one is not:
    those cells are suppressed (the others are simply empty)."""
    mask = pd.DataFrame(False, index=shown.index, columns=shown.columns)
    numeric = [c for c in shown.columns if pd.api.types.is_numeric_dtype(shown[c]) and c in raw]
    for c in numeric:
        mask[c] = (raw[c].notna() & shown[c].isna()).to_numpy()
    return mask


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def district_summary(students: pd.DataFrame, schools: pd.DataFrame | None, spec: ReportSpec) -> pd.DataFrame:
    """One row. Student-weighted district figures from ``district_totals``; % overall is the
    share of students proficient in every subject, not the mean of the subject rates. The
    MLflow-safe name of each column is in ``attrs["keys"]``."""
    totals = district_figures(students, schools, spec)
    headers = {"total_schools": TOTAL_SCHOOLS, "total_students": TOTAL_STUDENTS, "total_budget": TOTAL_BUDGET}
    headers.update(spec.metrics())
    keys = [k for k in headers if k in totals]
    table = pd.DataFrame([{headers[k]: totals[k] for k in keys}])
    table.attrs["keys"] = {headers[k]: k for k in keys}
    return table


def district_figures(students: pd.DataFrame, schools: pd.DataFrame | None, spec: ReportSpec) -> dict:
    """``district_totals`` with the report's subjects (the overall share over the rated ones)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a subject without scores that year: NaN
        totals = district_totals(students, schools, spec.names)
        if spec.rated and len(spec.rated) < len(spec.names):
            totals[OVERALL] = district_totals(students, schools, spec.rated)[OVERALL]
    for s in spec.names:
        if s not in spec.rated:
            totals.pop(pct_key(s), None)
    if not spec.rated:
        totals.pop(OVERALL, None)
    if schools is not None and "budget" in schools and not schools["budget"].notna().any():
        totals.pop("total_budget", None)
    return totals


def school_summary(aggregates: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame:
    """One row per school in name order: type and level (when known), students counted from the
    records, budget and per-student budget (when known), then every subject figure. Schools of the
    schools table without students keep their row with blank figures."""
    columns: dict[str, str] = {}
    for source, header in (("school_type", SCHOOL_TYPE), ("school_level", SCHOOL_LEVEL)):
        if has_values(aggregates, source):
            columns[source] = header
    columns["total_students"] = TOTAL_STUDENTS
    if has_values(aggregates, "total_budget"):
        columns["total_budget"] = TOTAL_SCHOOL_BUDGET
        columns["per_student_budget"] = PER_STUDENT_BUDGET
    columns.update({k: v for k, v in spec.metrics().items() if k in aggregates})
    out = aggregates[list(columns)].rename(columns=columns)
    for header in (SCHOOL_TYPE, SCHOOL_LEVEL):
        if header in out:
            out[header] = out[header].astype(object).where(out[header].notna(), None)
    out.insert(0, SCHOOL_NAME, aggregates["label"].to_numpy())
    out = out.sort_values(SCHOOL_NAME, kind="mergesort")
    return out.reset_index(drop=True)


def has_values(aggregates: pd.DataFrame, column: str) -> bool:
    return column in aggregates and bool(aggregates[column].notna().any())


def ranked_schools(summary: pd.DataFrame, spec: ReportSpec) -> pd.DataFrame:
    """The league table behind the top and bottom lists: % overall descending, ties broken by
    school name ascending so the order never depends on input order. Schools without a figure (no
    students, or suppressed) are left out."""
    overall = spec.overall
    if overall not in summary:
        return summary.iloc[0:0].assign(**{RANK: pd.Series(dtype=int)})
    ranked = summary.dropna(subset=[overall]).sort_values(
        [overall, SCHOOL_NAME], ascending=[False, True], kind="mergesort"
    )
    ranked = ranked.reset_index(drop=True)
    ranked.insert(0, RANK, np.arange(1, len(ranked) + 1))
    return ranked


def top_schools(summary: pd.DataFrame, spec: ReportSpec, n: int = 5) -> pd.DataFrame:
    """Ranks 1..n of the league table (best first)."""
    return ranked_schools(summary, spec).head(n).reset_index(drop=True)


def bottom_schools(summary: pd.DataFrame, spec: ReportSpec, n: int = 5) -> pd.DataFrame:
    """The last n ranks, worst first (so the lowest rank leads; within a tie the school later in
    the alphabet holds the lower rank)."""
    return ranked_schools(summary, spec).tail(n).iloc[::-1].reset_index(drop=True)


def grade_aggregates(
    students: pd.DataFrame, schools: pd.DataFrame | None, spec: ReportSpec
) -> dict[str, pd.DataFrame]:
    """The shared aggregates computed on each grade's students (grades of ``spec.grades``). Every
    school keeps a row in every grade; one without students there gets NaN, not 0."""
    grade = students["grade"]
    if not isinstance(grade.dtype, pd.CategoricalDtype):
        grade = grade.astype(str)
    by_grade = {g: aggregate(students[(grade == g).to_numpy()], schools, spec) for g in spec.grades}
    if schools is not None or not by_grade:
        return by_grade  # the schools table already gives every school a row in every grade
    # Without a schools table a grade's aggregate has only the schools teaching it: give every school
    # of the year its row, as the schools table would (no students, NaN figures).
    frames = list(by_grade.values())
    index = frames[0].index
    for frame in frames[1:]:
        index = index.union(frame.index)
    labels = pd.concat([f["label"] for f in frames])
    labels = labels[~labels.index.duplicated()].reindex(index)
    counts = [c for c in frames[0].columns if c == "total_students" or c.startswith("tested_")]
    out = {}
    for g, agg in by_grade.items():
        full = agg.reindex(index)
        full["label"] = labels
        full[counts] = full[counts].fillna(0).astype(agg[counts].dtypes.to_dict())
        out[g] = full
    return out


def scores_by_grade(by_grade: Mapping[str, pd.DataFrame], subject: str) -> pd.DataFrame:
    """One subject's average score per school (rows, in name order) and grade (columns: the grades
    of the report year in which the subject was tested), from ``grade_aggregates``."""
    if not by_grade:
        return pd.DataFrame({SCHOOL_NAME: []})
    first = next(iter(by_grade.values()))
    tested = {g: agg for g, agg in by_grade.items() if agg[tested_key(subject)].sum() > 0}
    wide = pd.DataFrame({g: agg[avg_key(subject)] for g, agg in tested.items()}, index=first.index)
    wide.insert(0, SCHOOL_NAME, first["label"].reindex(wide.index).to_numpy())
    wide = wide.sort_values(SCHOOL_NAME, kind="mergesort")
    return wide.reset_index(drop=True)


def _bin_table(
    aggregates: pd.DataFrame,
    by: str,
    label: str,
    categories: Sequence[str],
    weighted: bool,
    metrics: Mapping[str, str],
) -> pd.DataFrame:
    """Mean school-level figures per group, every category kept (an empty one as NaN) plus the
    "outside bins" row whenever a school falls there, so no school disappears."""
    keys = aggregates[by].astype(object).where(aggregates[by].notna(), "unknown").astype(str)
    present = [c for c in keys.unique() if c not in categories and c not in (OUTSIDE_BINS, "unknown")]
    order = [*categories, *sorted(present)]
    for tail in ("unknown", OUTSIDE_BINS):
        if (keys == tail).any():
            order.append(tail)
    values = aggregates[list(metrics)].astype(float)
    if weighted:
        # Student-weighted: each school counts by its enrolment, which equals the mean over the
        # students of the group (school rates and means are themselves student means).
        weights = aggregates["total_students"].astype(float)
        has = values.notna()
        num = values.fillna(0.0).mul(weights, axis=0).groupby(keys).sum()
        den = has.mul(weights, axis=0).groupby(keys).sum()
        grouped = num / den.replace(0.0, np.nan)
    else:
        grouped = values.groupby(keys).mean()
    out = grouped.reindex(order).rename(columns=dict(metrics))
    out.insert(0, NUMBER_OF_SCHOOLS, keys.value_counts().reindex(order, fill_value=0).astype(int))
    if weighted:
        students = aggregates["total_students"].groupby(keys).sum()
        out.insert(1, TOTAL_STUDENTS, students.reindex(order, fill_value=0).astype(int))
    out.index.name = label
    return out.reset_index()


def scores_by_spending(aggregates: pd.DataFrame, spec: ReportSpec, weighted: bool = False) -> pd.DataFrame:
    """Schools grouped by per-student budget bin; unweighted means of the school figures as in
    the standard analysis (``weighted=True``: the student-weighted variant)."""
    labels = list(spec.aggregate.spending_labels)
    return _bin_table(aggregates, "spending_bin", SPENDING_RANGE, labels, weighted, spec.metrics())


def scores_by_size(aggregates: pd.DataFrame, spec: ReportSpec, weighted: bool = False) -> pd.DataFrame:
    """Schools grouped by enrolment bin (students counted from the records)."""
    labels = list(spec.aggregate.size_labels)
    return _bin_table(aggregates, "size_bin", SCHOOL_SIZE, labels, weighted, spec.metrics())


def scores_by_type(aggregates: pd.DataFrame, spec: ReportSpec, weighted: bool = False) -> pd.DataFrame:
    """Schools grouped by type (District, Charter, then any other type present)."""
    return _bin_table(aggregates, "school_type", SCHOOL_TYPE, list(SCHOOL_TYPES), weighted, spec.metrics())


def scores_by_level(aggregates: pd.DataFrame, spec: ReportSpec, weighted: bool = False) -> pd.DataFrame:
    """Schools grouped by school level (the schools table's order of levels, else A to Z)."""
    level = aggregates["school_level"]
    order = [str(c) for c in level.cat.categories] if isinstance(level.dtype, pd.CategoricalDtype) else []
    return _bin_table(aggregates, "school_level", SCHOOL_LEVEL, order, weighted, spec.metrics())


def outside_bins(aggregates: pd.DataFrame) -> pd.DataFrame:
    """Schools outside every spending or size bin, with why, so the report lists them instead of
    silently dropping them."""
    size = aggregates["size_bin"].astype(str) == OUTSIDE_BINS
    if "spending_bin" in aggregates:
        spend = aggregates["spending_bin"].astype(str) == OUTSIDE_BINS
    else:
        spend = pd.Series(False, index=aggregates.index)
    rows = aggregates[spend | size]
    reasons = np.where(
        spend[rows.index] & size[rows.index],
        "spending and size",
        np.where(spend[rows.index], "spending", "size"),
    )
    budget = rows.get("per_student_budget", pd.Series(np.nan, index=rows.index))
    return pd.DataFrame(
        {
            SCHOOL_NAME: rows["label"].to_numpy() if "label" in rows else rows.index.astype(str),
            "Outside": reasons,
            TOTAL_STUDENTS: rows["total_students"].to_numpy(),
            PER_STUDENT_BUDGET: budget.to_numpy(),
        }
    )


def district_trend(students: pd.DataFrame, spec: ReportSpec, years: Sequence[int]) -> pd.DataFrame:
    """District figures of each school year (``district_totals`` on each year's rows): students,
    schools with students, and every subject figure. ``students`` holds every year."""
    columns = ["school_year", "school_id"]
    columns += [c for s in spec.names for c in (score_column(s), proficient_column(s)) if c in students]
    frame = students[columns]
    year = frame["school_year"].to_numpy()
    rows = []
    for y in years:
        part = frame[year == y]
        totals = district_figures(part, None, spec)
        row: dict[str, object] = {SCHOOL_YEAR: year_label(y, spec.classic)}
        row[TOTAL_STUDENTS] = totals["total_students"]
        row[TOTAL_SCHOOLS] = totals["total_schools"]
        row.update({header: totals.get(key, np.nan) for key, header in spec.metrics().items()})
        rows.append(row)
    return pd.DataFrame(rows)
