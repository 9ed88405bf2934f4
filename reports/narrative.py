"""The generated narrative: what sets the top schools apart and what goes with lower performance.

A board member reads sentences, not tables, so this turns the tables into a few statements with
their numbers. Everything is computed from the shared school aggregates (the school summary and
the per-grade aggregates), never from student rows, and it says plainly that these are
associations between school characteristics, not causes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.school_aggregates import OUTSIDE_BINS
from reports import tables as t
from reports.html import number


@dataclass(frozen=True)
class GroupProfile:
    """The figures the narrative compares for one group of schools (top or bottom)."""

    label: str
    schools: tuple[str, ...]
    type_counts: dict[str, int]
    mean_students: float
    mean_per_student_budget: float
    pct_overall: float
    pct_math: float
    pct_reading: float
    grade_share: dict[str, float]  # percent of the group's students in each grade
    grade_overall: dict[str, float]  # student-weighted % overall passing in each grade


@dataclass(frozen=True)
class Section:
    title: str
    points: tuple[str, ...]


@dataclass(frozen=True)
class Narrative:
    sections: tuple[Section, ...]

    def to_text(self) -> str:
        """Plain-text rendering, for logs and the CLI."""
        return "\n\n".join(s.title + "\n" + "\n".join(f"- {p}" for p in s.points) for s in self.sections)


def group_size(n_ranked: int, n: int = 5) -> int:
    """Schools per compared group: the usual 5, fewer in a small district so the top and bottom
    groups never share a school."""
    return max(0, min(n, n_ranked // 2))


def _weighted(values: pd.Series, weights: pd.Series) -> float:
    ok = values.notna() & (weights > 0)
    total = float(weights[ok].sum())
    return float((values[ok] * weights[ok]).sum() / total) if total else float("nan")


def profile_group(
    label: str, names: Sequence[str], summary: pd.DataFrame, by_grade: Mapping[str, pd.DataFrame]
) -> GroupProfile:
    """School-level means (unweighted, like the standard tables) plus the group's grade profile."""
    rows = summary.set_index(t.SCHOOL_NAME).loc[list(names)]
    counts = {g: agg["total_students"].reindex(list(names)).fillna(0) for g, agg in by_grade.items()}
    total = float(sum(c.sum() for c in counts.values()))
    return GroupProfile(
        label=label,
        schools=tuple(names),
        type_counts=rows[t.SCHOOL_TYPE].value_counts().to_dict(),
        mean_students=float(rows[t.TOTAL_STUDENTS].mean()),
        mean_per_student_budget=float(rows[t.PER_STUDENT_BUDGET].mean()),
        pct_overall=float(rows[t.PCT_OVERALL].mean()),
        pct_math=float(rows[t.PCT_MATH].mean()),
        pct_reading=float(rows[t.PCT_READING].mean()),
        grade_share={g: 100.0 * float(c.sum()) / total if total else float("nan") for g, c in counts.items()},
        grade_overall={
            g: _weighted(agg["pct_overall_passing"].reindex(list(names)), counts[g])
            for g, agg in by_grade.items()
        },
    )


def compare_groups(
    summary: pd.DataFrame, by_grade: Mapping[str, pd.DataFrame], n: int = 5
) -> tuple[GroupProfile, GroupProfile] | None:
    """Profiles of the top and bottom groups of the league table, or None with under 2 ranked schools."""
    ranked = t.ranked_schools(summary)
    k = group_size(len(ranked), n)
    if k == 0:
        return None
    names = ranked[t.SCHOOL_NAME].tolist()
    return (
        profile_group("top", names[:k], summary, by_grade),
        profile_group("bottom", names[::-1][:k], summary, by_grade),
    )


def _correlation(x: pd.Series, y: pd.Series) -> float | None:
    ok = x.notna() & y.notna() & np.isfinite(x.astype(float)) & np.isfinite(y.astype(float))
    if ok.sum() < 3 or x[ok].nunique() < 2 or y[ok].nunique() < 2:
        return None
    return float(np.corrcoef(x[ok].astype(float), y[ok].astype(float))[0, 1])


def pct(x: float) -> str:
    """Percent with one decimal: prose reads better than the tables' two."""
    return f"{x:.1f}%" if np.isfinite(x) else "n/a"


def money(x: float) -> str:
    return f"${x:,.0f}" if np.isfinite(x) else "n/a"


def _of(count: int, total: int) -> str:
    return f"{count} of {total}"


def _range(values: Sequence[float]) -> str:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return "n/a"
    lo, hi = min(finite), max(finite)
    return pct(lo) if abs(hi - lo) < 0.05 else f"{pct(lo)} to {pct(hi)}"


def _points(a: float, b: float) -> str:
    return f"{abs(a - b):.1f} points"


def top_apart(top: GroupProfile, bottom: GroupProfile, summary: pd.DataFrame) -> Section:
    """What sets the top schools apart from the lowest: results, type, size, budget, grades."""
    k = len(top.schools)
    math_gap, reading_gap = top.pct_math - bottom.pct_math, top.pct_reading - bottom.pct_reading
    if abs(abs(math_gap) - abs(reading_gap)) < 2:
        driver = "both subjects contribute about equally"
    else:
        driver = f"{'math' if abs(math_gap) > abs(reading_gap) else 'reading'} carries most of the gap"
    points = [
        f"The {k} top schools average {pct(top.pct_overall)} overall passing against "
        f"{pct(bottom.pct_overall)} for the {k} lowest, {_points(top.pct_overall, bottom.pct_overall)} "
        f"apart. The math pass rate differs by {_points(top.pct_math, bottom.pct_math)} and reading by "
        f"{_points(top.pct_reading, bottom.pct_reading)}, so {driver}."
    ]
    main_type = max(top.type_counts, key=lambda ty: (top.type_counts[ty], ty)) if top.type_counts else None
    if main_type is not None:
        district_n = int((summary[t.SCHOOL_TYPE] == main_type).sum())
        points.append(
            f"School type: {_of(top.type_counts.get(main_type, 0), k)} top schools are {main_type} schools, "
            f"against {_of(bottom.type_counts.get(main_type, 0), k)} of the lowest "
            f"({_of(district_n, len(summary))} schools in the district are {main_type})."
        )
    size_word = "smaller" if top.mean_students < bottom.mean_students else "larger"
    points.append(
        f"Size: top schools are {size_word}, with {number(top.mean_students)} students on average against "
        f"{number(bottom.mean_students)} in the lowest schools."
    )
    diff = top.mean_per_student_budget - bottom.mean_per_student_budget
    budget = (
        f"Budget: top schools spend {money(top.mean_per_student_budget)} per student against "
        f"{money(bottom.mean_per_student_budget)}, {money(abs(diff))} {'less' if diff < 0 else 'more'}"
    )
    if diff < 0:
        budget += "; more money per student does not by itself go with better results here."
    else:
        budget += "."
    points.append(budget)
    grades = list(top.grade_overall)
    gaps = {g: top.grade_overall[g] - bottom.grade_overall[g] for g in grades}
    finite_gaps = {g: v for g, v in gaps.items() if np.isfinite(v)}
    grade_text = (
        f"Grades: overall passing by grade ({grades[0]} to {grades[-1]}) is "
        f"{_range(top.grade_overall.values())} in the top schools and "
        f"{_range(bottom.grade_overall.values())} in the lowest"
    )
    if finite_gaps:
        reversed_grades = [g for g, v in finite_gaps.items() if v < 0]
        widest = max(finite_gaps, key=lambda g: finite_gaps[g])
        narrowest = min(finite_gaps, key=lambda g: finite_gaps[g])
        if reversed_grades:
            grade_text += (
                f"; the gap is widest in {widest} ({finite_gaps[widest]:.1f} points) but the "
                f"lowest schools do better in {', '.join(reversed_grades)}"
            )
        elif finite_gaps[widest] - finite_gaps[narrowest] < 5:
            grade_text += ", a similar gap in every grade"
        else:
            grade_text += (
                f"; the gap is widest in {widest} ({finite_gaps[widest]:.1f} points) and "
                f"narrowest in {narrowest} ({finite_gaps[narrowest]:.1f} points)"
            )
    mix = {g: top.grade_share[g] - bottom.grade_share[g] for g in grades}
    mix = {g: v for g, v in mix.items() if np.isfinite(v)}
    if mix:
        g = max(mix, key=lambda g: abs(mix[g]))
        if abs(mix[g]) < 3:
            grade_text += ". The grade mix is alike (no grade's share differs by 3 points or more)."
        else:
            grade_text += (
                f". The grade mix differs most in {g}: {top.grade_share[g]:.1f}% of top-school "
                f"students against {bottom.grade_share[g]:.1f}% in the lowest schools."
            )
    else:
        grade_text += "."
    points.append(grade_text)
    return Section("What sets the top schools apart", tuple(points))


def _groups_text(table: pd.DataFrame, label: str) -> str | None:
    """ "Small (<1000) 56.2%, Medium (1000-2000) 56.9%, ..." over the groups that have schools."""
    rows = table.dropna(subset=[t.PCT_OVERALL])
    rows = rows[rows[label].astype(str) != OUTSIDE_BINS]
    if len(rows) < 2:
        return None
    return ", ".join(f"{r[label]} {pct(r[t.PCT_OVERALL])}" for _, r in rows.iterrows())


def lower_performance(
    bottom: GroupProfile,
    summary: pd.DataFrame,
    by_spending: pd.DataFrame,
    by_size: pd.DataFrame,
    by_type: pd.DataFrame,
) -> Section:
    """What goes with lower performance across all schools, with the caveat that these are
    associations between characteristics that move together."""
    weaker = "math" if bottom.pct_math < bottom.pct_reading else "reading"
    points = [
        f"In the lowest schools {pct(bottom.pct_math)} of students pass math and {pct(bottom.pct_reading)} "
        f"pass reading; overall passing needs both, so {weaker} is the binding constraint there."
    ]
    for table, label, noun, column in (
        (by_size, t.SCHOOL_SIZE, "size", t.TOTAL_STUDENTS),
        (by_spending, t.SPENDING_RANGE, "per-student budget", t.PER_STUDENT_BUDGET),
        (by_type, t.SCHOOL_TYPE, "type", None),
    ):
        groups = _groups_text(table, label)
        if groups is None:
            continue
        text = f"Overall passing by {noun} (school averages): {groups}"
        r = _correlation(summary[column], summary[t.PCT_OVERALL]) if column else None
        text += f"; across schools r = {r:.2f} between {noun} and overall passing." if r is not None else "."
        points.append(text)
    r_mix = _correlation(summary[t.TOTAL_STUDENTS], summary[t.PER_STUDENT_BUDGET])
    caveat = "These are associations between school characteristics, not causes"
    if r_mix is not None:
        caveat += f": size and per-student budget move together (r = {r_mix:.2f}), and so does school type"
    caveat += (
        ". Differences in the students each school takes in (prior attainment, disadvantage) are not "
        "accounted for here; the growth model is the tool for what a school adds. The spending, size "
        "and type tables average school figures without weighting by enrolment; their "
        "student-weighted variants show the same comparison for the average student."
    )
    points.append(caveat)
    return Section("What contributes to lower performance", tuple(points))


def build_narrative(
    summary: pd.DataFrame,
    groups: tuple[GroupProfile, GroupProfile] | None,
    by_spending: pd.DataFrame,
    by_size: pd.DataFrame,
    by_type: pd.DataFrame,
) -> Narrative:
    """Both narrative sections, or a single note when there are too few schools to compare."""
    if groups is None:
        return Narrative(
            (
                Section(
                    "What sets the top schools apart",
                    ("Fewer than two schools have students; there is nothing to compare.",),
                ),
            )
        )
    top, bottom = groups
    return Narrative(
        (top_apart(top, bottom, summary), lower_performance(bottom, summary, by_spending, by_size, by_type))
    )
