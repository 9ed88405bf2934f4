"""The generated narrative: what sets the top schools apart and what goes with lower performance.

A board member reads sentences, not tables, so this turns the tables into a few statements with
their numbers. Everything is computed from the shared school aggregates (the school summary and
the per-grade aggregates), never from student rows. A statement is only made about a column the
district has (no budget: nothing about spending; no school types: nothing about type), and the
text says plainly that these are associations between school characteristics, not causes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.school_aggregates import OUTSIDE_BINS
from reports import tables as t
from reports.formatting import listing, prose_money, prose_number, prose_pct


@dataclass(frozen=True)
class GroupProfile:
    """The figures the narrative compares for one group of schools (top or bottom)."""

    label: str
    schools: tuple[str, ...]
    type_counts: dict[str, int] | None  # None: the district has no school types
    level_counts: dict[str, int] | None  # None: the district has no school levels
    mean_students: float
    mean_per_student_budget: float | None  # None: the district has no budgets
    pct_overall: float
    pct_subject: dict[str, float]  # rated subject name -> mean of the schools' % proficient
    grade_share: dict[str, float]  # percent of the group's students in each grade
    grade_overall: dict[str, float]  # student-weighted % overall in each grade (NaN: no figure)


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


@dataclass(frozen=True)
class Grouping:
    """One grouped table the narrative may describe: its table, its label column, the noun for
    the prose and, for a numeric characteristic, the school summary column to correlate."""

    table: pd.DataFrame
    label: str
    noun: str
    column: str | None = None


def group_size(n_ranked: int, n: int = 5) -> int:
    """Schools per compared group: the usual 5, fewer in a small district so the top and bottom
    groups never share a school."""
    return max(0, min(n, n_ranked // 2))


def _weighted(values: pd.Series, weights: pd.Series) -> float:
    ok = values.notna() & (weights > 0)
    total = float(weights[ok].sum())
    return float((values[ok] * weights[ok]).sum() / total) if total else float("nan")


def _counts(rows: pd.DataFrame, column: str) -> dict[str, int] | None:
    if column not in rows:
        return None
    return {str(k): int(v) for k, v in rows[column].dropna().astype(str).value_counts().items()}


def profile_group(
    label: str,
    names: Sequence[str],
    summary: pd.DataFrame,
    by_grade: Mapping[str, pd.DataFrame],
    spec: t.ReportSpec,
) -> GroupProfile:
    """School-level means (unweighted, like the standard tables) plus the group's grade profile.
    ``by_grade`` holds the (suppressed) per-grade aggregates of ``tables.grade_aggregates``."""
    rows = summary.set_index(t.SCHOOL_NAME).loc[list(names)]
    keyed = {g: agg.set_index("label") for g, agg in by_grade.items()}
    counts = {g: agg["total_students"].reindex(list(names)).fillna(0) for g, agg in keyed.items()}
    total = float(sum(c.sum() for c in counts.values()))
    return GroupProfile(
        label=label,
        schools=tuple(names),
        type_counts=_counts(rows, t.SCHOOL_TYPE),
        level_counts=_counts(rows, t.SCHOOL_LEVEL),
        mean_students=float(rows[t.TOTAL_STUDENTS].mean()),
        mean_per_student_budget=(
            float(rows[t.PER_STUDENT_BUDGET].mean()) if t.PER_STUDENT_BUDGET in rows else None
        ),
        pct_overall=float(rows[spec.overall].mean()),
        pct_subject={s: float(rows[spec.pct(s)].mean()) for s in spec.rated},
        grade_share={g: 100.0 * float(c.sum()) / total if total else float("nan") for g, c in counts.items()},
        grade_overall={
            g: _weighted(agg[t.OVERALL].reindex(list(names)), counts[g]) for g, agg in keyed.items()
        },
    )


def compare_groups(
    summary: pd.DataFrame, by_grade: Mapping[str, pd.DataFrame], spec: t.ReportSpec, n: int = 5
) -> tuple[GroupProfile, GroupProfile] | None:
    """Profiles of the top and bottom groups of the league table, or None with under 2 ranked schools."""
    ranked = t.ranked_schools(summary, spec)
    k = group_size(len(ranked), n)
    if k == 0:
        return None
    names = ranked[t.SCHOOL_NAME].tolist()
    return (
        profile_group("top", names[:k], summary, by_grade, spec),
        profile_group("bottom", names[::-1][:k], summary, by_grade, spec),
    )


def _correlation(x: pd.Series, y: pd.Series) -> float | None:
    x, y = x.astype(float), y.astype(float)
    ok = x.notna() & y.notna() & np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or x[ok].nunique() < 2 or y[ok].nunique() < 2:
        return None
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def _of(count: int, total: int) -> str:
    return f"{count} of {total}"


def _range(values: Sequence[float]) -> str:
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return "n/a"
    lo, hi = min(finite), max(finite)
    return prose_pct(lo) if abs(hi - lo) < 0.05 else f"{prose_pct(lo)} to {prose_pct(hi)}"


def _points(a: float, b: float) -> str:
    return f"{abs(a - b):.1f} points"


def _label(spec: t.ReportSpec, subject: str) -> str:
    return spec.subject(subject).label


def _subject_gaps(top: GroupProfile, bottom: GroupProfile, spec: t.ReportSpec) -> str | None:
    """Which subject carries the gap between the groups (only with two or more rated subjects)."""
    if len(spec.rated) < 2:
        return None
    gaps = {s: top.pct_subject[s] - bottom.pct_subject[s] for s in spec.rated}
    finite = {s: g for s, g in gaps.items() if np.isfinite(g)}
    if len(finite) < 2:
        return None
    parts = [f"{abs(g):.1f} points in {_label(spec, s)}" for s, g in finite.items()]
    ordered = sorted(finite, key=lambda s: abs(finite[s]), reverse=True)
    if abs(finite[ordered[0]]) - abs(finite[ordered[1]]) < 2:
        driver = (
            "the subjects contribute about equally"
            if len(finite) == 2
            else (f"{_label(spec, ordered[0])} and {_label(spec, ordered[1])} carry most of the gap")
        )
    else:
        driver = f"{_label(spec, ordered[0])} carries most of the gap"
    return f"By subject, % {spec.passing_word.lower()} differs by {listing(parts)}, so {driver}."


def _category_point(
    noun: str,
    column: str,
    top_counts: dict[str, int],
    bottom_counts: dict[str, int],
    summary: pd.DataFrame,
    k: int,
) -> str | None:
    """'School type: 5 of 5 top schools are Charter schools, against 0 of 5 of the lowest (...)'."""
    if not top_counts:
        return None
    main = max(top_counts, key=lambda c: (top_counts[c], c))
    district_n = int((summary[column].astype(str) == main).sum())
    return (
        f"{noun}: {_of(top_counts.get(main, 0), k)} top schools are {main} schools, against "
        f"{_of(bottom_counts.get(main, 0), k)} of the lowest ({_of(district_n, len(summary))} schools "
        f"in the district are {main})."
    )


def _grade_point(top: GroupProfile, bottom: GroupProfile, spec: t.ReportSpec) -> str | None:
    share = {g: max(top.grade_share.get(g, 0), bottom.grade_share.get(g, 0)) for g in top.grade_overall}
    grades = [g for g, v in share.items() if v > 0]
    if not grades:
        return None
    overall = f"overall {spec.passing_word.lower()}"
    taught = {
        name: [g for g in grades if profile.grade_share.get(g, 0) > 0]
        for name, profile in (("top", top), ("bottom", bottom))
    }
    gaps = {g: top.grade_overall[g] - bottom.grade_overall[g] for g in grades}
    finite_gaps = {g: v for g, v in gaps.items() if np.isfinite(v)}
    if not finite_gaps:
        return (
            f"Grades: the top schools' students are in grades {_span(taught['top'])} and the lowest "
            f"schools' in {_span(taught['bottom'])}; with no grade in common (with enough students), "
            "the groups are not compared grade by grade."
        )
    figured = [g for g in grades if np.isfinite(top.grade_overall[g]) or np.isfinite(bottom.grade_overall[g])]
    position = {g: i for i, g in enumerate(grades)}
    contiguous = position[figured[-1]] - position[figured[0]] == len(figured) - 1
    which = _span(figured) if contiguous else listing(figured)
    text = (
        f"Grades: {overall} by grade ({which}) is "
        f"{_range([top.grade_overall[g] for g in figured])} in the top schools and "
        f"{_range([bottom.grade_overall[g] for g in figured])} in the lowest"
    )
    reversed_grades = [g for g, v in finite_gaps.items() if v < 0]
    widest = max(finite_gaps, key=lambda g: finite_gaps[g])
    narrowest = min(finite_gaps, key=lambda g: finite_gaps[g])
    if reversed_grades:
        text += (
            f"; the gap is widest in {widest} ({finite_gaps[widest]:.1f} points) but the lowest schools "
            f"do better in {', '.join(reversed_grades)}"
        )
    elif len(finite_gaps) == 1:
        text += f"; {widest} is the only grade both groups have figures for"
    elif finite_gaps[widest] - finite_gaps[narrowest] < 5:
        text += ", a similar gap in every grade"
    else:
        text += (
            f"; the gap is widest in {widest} ({finite_gaps[widest]:.1f} points) and narrowest in "
            f"{narrowest} ({finite_gaps[narrowest]:.1f} points)"
        )
    mix = {g: top.grade_share[g] - bottom.grade_share[g] for g in grades}
    mix = {g: v for g, v in mix.items() if np.isfinite(v)}
    if mix:
        g = max(mix, key=lambda g: abs(mix[g]))
        if abs(mix[g]) < 3:
            text += ". The grade mix is alike (no grade's share differs by 3 points or more)."
        else:
            text += (
                f". The grade mix differs most in {g}: {top.grade_share[g]:.1f}% of top-school students "
                f"against {bottom.grade_share[g]:.1f}% in the lowest schools."
            )
    else:
        text += "."
    return text


def _span(grades: Sequence[str]) -> str:
    if not grades:
        return "none"
    return grades[0] if len(grades) == 1 else f"{grades[0]} to {grades[-1]}"


def top_apart(top: GroupProfile, bottom: GroupProfile, summary: pd.DataFrame, spec: t.ReportSpec) -> Section:
    """What sets the top schools apart from the lowest: subjects, type, level, size, spending, grades."""
    k = len(top.schools)
    overall = f"overall {spec.passing_word.lower()}"
    schools = "top school averages" if k == 1 else f"{k} top schools average"
    lowest = "lowest school" if k == 1 else f"{k} lowest"
    first = (
        f"The {schools} {prose_pct(top.pct_overall)} {overall} against "
        f"{prose_pct(bottom.pct_overall)} for the {lowest}, {_points(top.pct_overall, bottom.pct_overall)} "
        "apart."
    )
    subjects = _subject_gaps(top, bottom, spec)
    points = [first + (" " + subjects if subjects else "")]
    for noun, column, a, b in (
        ("School type", t.SCHOOL_TYPE, top.type_counts, bottom.type_counts),
        ("School level", t.SCHOOL_LEVEL, top.level_counts, bottom.level_counts),
    ):
        if a is not None and b is not None:
            point = _category_point(noun, column, a, b, summary, k)
            if point:
                points.append(point)
    size_word = "smaller" if top.mean_students < bottom.mean_students else "larger"
    points.append(
        f"Size: top schools are {size_word}, with {prose_number(top.mean_students)} students on average "
        f"against {prose_number(bottom.mean_students)} in the lowest schools."
    )
    if top.mean_per_student_budget is not None and bottom.mean_per_student_budget is not None:
        diff = top.mean_per_student_budget - bottom.mean_per_student_budget
        if np.isfinite(diff):
            budget = (
                f"Budget: top schools spend {prose_money(top.mean_per_student_budget)} per student against "
                f"{prose_money(bottom.mean_per_student_budget)}, {prose_money(abs(diff))} "
                f"{'less' if diff < 0 else 'more'}"
            )
            if diff < 0:
                budget += "; more money per student does not by itself go with better results here."
            else:
                budget += "."
            points.append(budget)
    grade = _grade_point(top, bottom, spec)
    if grade:
        points.append(grade)
    return Section("What sets the top schools apart", tuple(points))


def _groups_text(table: pd.DataFrame, label: str, overall: str) -> str | None:
    """ "Small (<1000) 56.2%, Medium (1000-2000) 56.9%, ..." over the groups that have figures."""
    rows = table.dropna(subset=[overall])
    rows = rows[~rows[label].astype(str).isin([OUTSIDE_BINS, "unknown"])]
    if len(rows) < 2:
        return None
    return ", ".join(f"{r[label]} {prose_pct(r[overall])}" for _, r in rows.iterrows())


def lower_performance(
    bottom: GroupProfile, summary: pd.DataFrame, groupings: Sequence[Grouping], spec: t.ReportSpec
) -> Section:
    """What goes with lower performance across all schools, with the caveat that these are
    associations between characteristics that move together."""
    word = spec.passing_word.lower()
    points = []
    if len(spec.rated) >= 2:
        rates = {s: bottom.pct_subject[s] for s in spec.rated if np.isfinite(bottom.pct_subject[s])}
        if rates:
            low = min(rates.values())
            weakest = [_label(spec, s) for s, v in rates.items() if v - low < 0.05]
            listed = listing([f"{prose_pct(v)} in {_label(spec, s)}" for s, v in rates.items()])
            verb = "is" if len(weakest) == 1 else "are"
            points.append(
                f"In the lowest schools, % {word} is {listed}; overall {word} needs every subject, so "
                f"{listing(weakest)} {verb} the binding constraint there."
            )
    for grouping in groupings:
        groups = _groups_text(grouping.table, grouping.label, spec.overall)
        if groups is None:
            continue
        text = f"Overall {word} by {grouping.noun} (school averages): {groups}"
        r = _correlation(summary[grouping.column], summary[spec.overall]) if grouping.column else None
        if r is not None:
            text += f"; across schools r = {r:.2f} between {grouping.noun} and overall {word}."
        else:
            text += "."
        points.append(text)
    caveat = "These are associations between school characteristics, not causes"
    moving = []
    if t.PER_STUDENT_BUDGET in summary:
        r_mix = _correlation(summary[t.TOTAL_STUDENTS], summary[t.PER_STUDENT_BUDGET])
        if r_mix is not None:
            moving.append(f"size and per-student budget move together (r = {r_mix:.2f})")
    if t.SCHOOL_TYPE in summary:
        moving.append("so does school type" if moving else "size and school type go together")
    if t.SCHOOL_LEVEL in summary:
        moving.append("school level goes with size and grade mix")
    if moving:
        caveat += ": " + ", and ".join(moving)
    named = [g.noun for g in groupings]
    caveat += (
        ". Differences in the students each school takes in (prior attainment, disadvantage) are not "
        "accounted for here; the growth model is the tool for what a school adds."
    )
    if named:
        caveat += (
            f" The tables by {listing(named)} average school figures without weighting by enrolment; their "
            "student-weighted variants show the same comparison for the average student."
        )
    points.append(caveat)
    return Section("What contributes to lower performance", tuple(points))


def build_narrative(
    summary: pd.DataFrame,
    groups: tuple[GroupProfile, GroupProfile] | None,
    groupings: Sequence[Grouping],
    spec: t.ReportSpec,
) -> Narrative:
    """Both narrative sections, or a single note when there are too few schools to compare."""
    if groups is None:
        reason = (
            "No subject has cut scores or achievement levels, so schools cannot be ranked by % "
            f"{spec.passing_word.lower()}."
            if not spec.rated
            else f"Fewer than two schools have {spec.min_group_size} or more students tested in every "
            "subject; there is nothing to compare."
        )
        return Narrative((Section("What sets the top schools apart", (reason,)),))
    top, bottom = groups
    return Narrative(
        (top_apart(top, bottom, summary, spec), lower_performance(bottom, summary, groupings, spec))
    )
