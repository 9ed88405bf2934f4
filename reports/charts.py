"""Report charts as PNG bytes: pure functions of the tables, no pyplot state, Agg backend, in
seaborn's look (its palette and whitegrid style).

Returning bytes (rather than writing files) lets the builder write them into its temporary folder
and embed the same bytes in the HTML page, and keeps each chart testable on its own. Every chart
reads from 8 to 400 schools: the per-school chart shows every school up to ``SHOW_ALL`` schools,
else the top and bottom ``TOP_N`` with the schools in between summarised on one row. The score
distributions are histograms (exact, one vectorised pass however many students there are).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from reports import tables as t  # noqa: E402
from reports.formatting import plural  # noqa: E402
from reports.narrative import GroupProfile  # noqa: E402

# seaborn's "deep" palette and "whitegrid" style, written out: importing seaborn pulls in scipy.stats,
# which took 9 of the 11 s of `import reports.build` on the 2-core machine, for two constants.
PALETTE = [
    "#4c72b0",
    "#dd8452",
    "#55a868",
    "#c44e52",
    "#8172b3",
    "#937860",
    "#da8bc3",
    "#8c8c8c",
    "#ccb974",
    "#64b5cd",
]
WHITEGRID = {
    "figure.facecolor": "white",
    "axes.labelcolor": ".15",
    "xtick.direction": "out",
    "ytick.direction": "out",
    "xtick.color": ".15",
    "ytick.color": ".15",
    "axes.axisbelow": True,
    "grid.linestyle": "-",
    "text.color": ".15",
    "font.family": ["sans-serif"],
    "font.sans-serif": ["Arial", "DejaVu Sans", "Liberation Sans", "Bitstream Vera Sans", "sans-serif"],
    "lines.solid_capstyle": "round",
    "patch.edgecolor": "w",
    "patch.force_edgecolor": True,
    "xtick.top": False,
    "ytick.right": False,
    "axes.grid": True,
    "axes.facecolor": "white",
    "axes.edgecolor": ".8",
    "grid.color": ".8",
    "axes.spines.left": True,
    "axes.spines.bottom": True,
    "xtick.bottom": False,
    "ytick.left": False,
}
TYPE_COLORS = {"District": PALETTE[0], "Charter": PALETTE[1]}
OTHER_COLORS = [PALETTE[i] for i in (2, 4, 5, 8, 9, 6)]
GROUP_COLORS = {"top": PALETTE[2], "bottom": PALETTE[3], "district": "#9a9a9a"}
NEUTRAL = "#4c72b0"
OVERALL_COLOR = "#2b2b2b"
STYLE = {
    **WHITEGRID,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#cccccc",
}
DPI = 100
LABEL_BOX = {"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85}
SHOW_ALL = 60  # up to this many schools, the per-school chart shows every school
TOP_N = 20  # beyond it, the top and bottom TOP_N and a summary row for the rest


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")  # constrained layout already fits
    return buf.getvalue()


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    fig.set_layout_engine("constrained")
    return fig


def category_colors(values: Sequence[str]) -> dict[str, str]:
    """District and Charter keep their colours; any other category gets the next palette colour."""
    colors = dict(TYPE_COLORS)
    others = iter(OTHER_COLORS * 4)
    for value in dict.fromkeys(values):
        if value not in colors:
            colors[value] = next(others)
    return colors


def _colour_column(summary: pd.DataFrame) -> str | None:
    for column in (t.SCHOOL_TYPE, t.SCHOOL_LEVEL):
        if column in summary and summary[column].notna().any():
            return column
    return None


def overall_by_school(summary: pd.DataFrame, spec: t.ReportSpec, district_overall: float) -> bytes:
    """Every school's % overall as a dot on a line from 0 (best at the top), coloured by type (or
    level), with the district figure as a reference line. Beyond ``SHOW_ALL`` schools: the top and
    bottom ``TOP_N`` and, between them, one row with a tick per remaining school."""
    overall = spec.overall
    data = summary.dropna(subset=[overall]).sort_values(
        [overall, t.SCHOOL_NAME], ascending=[True, False], kind="mergesort"
    )
    colour_by = _colour_column(data)
    keys = data[colour_by].astype(object).fillna("unknown").astype(str).tolist() if colour_by else []
    colors = category_colors(keys)
    many = len(data) > SHOW_ALL
    if many:
        bottom, middle, top = data.iloc[:TOP_N], data.iloc[TOP_N:-TOP_N], data.iloc[-TOP_N:]
        shown = pd.concat([bottom, top])
    else:
        bottom, middle, top = data, data.iloc[0:0], data.iloc[0:0]
        shown = data
    rows = len(shown) + (1 if many else 0)
    with matplotlib.rc_context(STYLE):
        fig = _figure(8.5, max(2.6, 0.24 * rows + 1.3))
        ax = fig.add_subplot()
        ys = np.arange(len(bottom)).tolist()
        if many:
            ys += list(range(len(bottom) + 1, len(bottom) + 1 + len(top)))
        values = shown[overall].to_numpy(dtype=float)
        point_colors = (
            [colors[str(v) if pd.notna(v) else "unknown"] for v in shown[colour_by]] if colour_by else NEUTRAL
        )
        ax.hlines(ys, 0, values, color="#d0d4d9", lw=1.2, zorder=1)
        ax.scatter(values, ys, c=point_colors, s=30, zorder=2)
        for y, v in zip(ys, values, strict=True):
            ax.text(v + 1.2, y, f"{v:.1f}%", va="center", fontsize=7.5, color="#333333")
        labels = shown[t.SCHOOL_NAME].astype(str).tolist()
        if many:
            y_mid = len(bottom)
            mid = middle[overall].to_numpy(dtype=float)
            ax.plot(mid, np.full(len(mid), y_mid), "|", color="#8a8f96", ms=9, mew=1)
            ax.text(
                float(np.max(mid)) + 1.2,
                y_mid,
                f"{len(mid)} more schools, {mid.min():.1f}% to {mid.max():.1f}%",
                va="center",
                fontsize=7.5,
                color="#555555",
                style="italic",
            )
            labels = labels[: len(bottom)] + ["… schools in between"] + labels[len(bottom) :]
            ax.axhspan(y_mid - 0.5, y_mid + 0.5, color="#f1f3f5", zorder=0)
        all_y = sorted(ys + ([len(bottom)] if many else []))
        ax.set_yticks(all_y, labels, fontsize=7.5 if rows > 30 else 8.5)
        ax.axvline(district_overall, color="#444444", ls="--", lw=1)
        ax.text(
            district_overall,
            rows - 0.4,
            f" district {district_overall:.1f}%",
            fontsize=7.5,
            color="#444444",
            va="bottom",
        )
        ax.set_xlim(0, 110)
        ax.set_ylim(-0.7, rows + 0.3)
        ax.set_xlabel(f"{overall} (proficient in every subject)" if len(spec.rated) > 1 else overall)
        title = f"{overall} by school"
        if many:
            title += f": top and bottom {TOP_N} of {len(data)} schools"
        ax.set_title(title)
        ax.grid(axis="y", visible=False)
        if colour_by:
            handles = [
                Line2D([], [], marker="o", ls="", color=colors[k], label=k) for k in dict.fromkeys(keys)
            ]
            ax.legend(
                handles=handles,
                loc="lower right",
                frameon=True,
                fontsize=8,
                title=colour_by,
                title_fontsize=8,
            )
        return _png(fig)


def metric_colors(metrics: Sequence[str], overall: str) -> dict[str, str]:
    colors = {}
    palette = iter([PALETTE[0], PALETTE[1], PALETTE[2], PALETTE[4], PALETTE[5], PALETTE[8], PALETTE[9]] * 3)
    for metric in metrics:
        colors[metric] = OVERALL_COLOR if metric == overall else next(palette)
    return colors


def scores_by_group(
    table: pd.DataFrame, label: str, title: str, spec: t.ReportSpec, ordered: bool = True
) -> bytes:
    """The percentages (each subject's % proficient and % overall) across bins or types as dots:
    differences of a few points, which bars from zero flatten, stay visible. Averages are left to
    the tables because each subject has its own scale. Ordered groups (bins) are joined by lines;
    unordered ones (types, levels) are not. An empty group keeps its place, marked "no schools"."""
    metrics = [m for m in spec.pct_metrics().values() if m in table]
    groups = table[label].astype(str).tolist()
    counts = table[t.NUMBER_OF_SCHOOLS].tolist()
    x = np.arange(len(groups))
    values = table[metrics].to_numpy(dtype=float) if metrics else np.zeros((len(groups), 0))
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 100.0)
    pad = max(2.0, 0.12 * (hi - lo))
    colors = metric_colors(metrics, spec.overall)
    with matplotlib.rc_context(STYLE):
        fig = _figure(max(5.5, 1.3 * len(groups) + 2.8), 3.4)
        ax = fig.add_subplot()
        for i, metric in enumerate(metrics):
            is_overall = metric == spec.overall
            ax.plot(
                x,
                values[:, i],
                marker="o",
                ms=(6 if is_overall else 5) if ordered else 7,
                lw=(1.8 if is_overall else 1.2) if ordered else 0,
                color=colors[metric],
                label=metric,
                zorder=3 if is_overall else 2,
            )
            if is_overall:
                for xi, v in zip(x, values[:, i], strict=True):
                    if np.isfinite(v):
                        ax.annotate(
                            f"{v:.1f}%",
                            (xi, v),
                            textcoords="offset points",
                            xytext=(0, -13),
                            ha="center",
                            fontsize=7.5,
                            color=colors[metric],
                            bbox=LABEL_BOX,
                        )
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad) if hi + pad <= 100 else hi + pad)
        for xi, n in zip(x, counts, strict=True):
            if n == 0 or not np.isfinite(values[xi]).any():
                ax.text(
                    xi,
                    sum(ax.get_ylim()) / 2,
                    "no schools" if n == 0 else "no figures",
                    ha="center",
                    fontsize=8,
                    color="#777777",
                    style="italic",
                )
        ticks = [f"{g}\n({plural(int(n), 'school')})" for g, n in zip(groups, counts, strict=True)]
        ax.set_xticks(x, ticks)
        ax.set_xlim(-0.5, len(groups) - 0.5)
        ax.set_ylabel("percent of students")
        ax.set_title(title)
        ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return _png(fig)


def uniform_cut(subject: t.ReportSubject, grades: Sequence[str]) -> float | None:
    """The proficient cut when it is the same in every grade the subject was tested in, else None."""
    cuts = {subject.cuts.get(g) for g in (subject.grades or grades)}
    return next(iter(cuts)) if len(cuts) == 1 and None not in cuts else None


def distance_to_cut(students: pd.DataFrame, subject: t.ReportSubject) -> np.ndarray:
    """Each student's score minus the proficient cut of the student's grade (NaN without a cut)."""
    grade = students["grade"]
    if not isinstance(grade.dtype, pd.CategoricalDtype):
        grade = grade.astype(str).astype("category")
    cut_of = np.array([subject.cuts.get(str(g), np.nan) for g in grade.cat.categories] + [np.nan])
    codes = grade.cat.codes.to_numpy()
    return students[f"score_{subject.name}"].to_numpy(dtype=float) - cut_of[codes]  # code -1 -> last (NaN)


def score_distributions(
    students: pd.DataFrame, spec: t.ReportSpec, groups: np.ndarray | None = None, group_name: str = ""
) -> bytes:
    """Per subject, the share of students in each score band with the proficient cut marked, one
    line per school type (or level, or the whole district). When the cut is the same in every grade
    (the classic pass mark) the x axis is the score; when cuts differ by grade it is the distance
    from the cut of the student's own grade, so 0 is the cut for everyone. ``groups`` holds each
    student's group label (None: one line)."""
    subjects = list(spec.subjects)
    ncols = min(3, len(subjects))
    nrows = int(np.ceil(len(subjects) / ncols))
    names = [None] if groups is None else [g for g in pd.unique(groups) if isinstance(g, str)]
    names = sorted(names, key=lambda g: (list(TYPE_COLORS).index(g) if g in TYPE_COLORS else 9, str(g)))
    colors = category_colors([g for g in names if g is not None])
    with matplotlib.rc_context(STYLE):
        fig = _figure(3.4 * ncols + 1.8, 3.1 * nrows)
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax in axes[len(subjects) :]:
            ax.set_visible(False)
        for ax, subject in zip(axes, subjects, strict=False):
            cut = uniform_cut(subject, spec.grades) if subject.rated else None
            scores = students[f"score_{subject.name}"].to_numpy(dtype=float)
            if cut is not None or not subject.cuts:
                x, reference, xlabel = scores, cut, f"{subject.label} score"
            else:
                x, reference = distance_to_cut(students, subject), 0.0
                xlabel = "points from the proficient cut of the student's grade"
            lo, hi = _span(x, reference)
            if x is scores and subject.scale:
                lo, hi = max(lo, subject.scale[0]), min(hi, subject.scale[1])
            edges = band_edges(lo, hi, reference)
            lo, hi = float(edges[0]), float(edges[-1])
            width = edges[1] - edges[0]
            for name in names:
                sel = x if name is None else x[groups == name]
                sel = sel[np.isfinite(sel)]
                if len(sel) == 0:
                    continue
                counts, _ = np.histogram(np.clip(sel, lo, hi), bins=edges)
                label = f"{name} ({len(sel):,})" if name is not None else f"all students ({len(sel):,})"
                ax.stairs(
                    100.0 * counts / len(sel),
                    edges,
                    color=colors.get(name, NEUTRAL),
                    lw=1.6,
                    label=label,
                    fill=False,
                )
            title = subject.label
            if reference is not None:
                finite = x[np.isfinite(x)]
                word = "pass mark" if spec.classic else "proficient cut"
                ax.axvline(reference, color="#444444", ls="--", lw=1)
                tag = f"{word} {reference:g}" if cut is not None else f"{word} (0)"
                ax.text(
                    reference,
                    ax.get_ylim()[1] * 0.98,
                    f"{tag} ",
                    fontsize=7.5,
                    color="#444444",
                    va="top",
                    ha="right",
                    bbox=LABEL_BOX,
                )
                if finite.size:
                    share = 100.0 * float(np.mean(finite >= reference))
                    title += f"\n{share:.0f}% at or above the {word}"
            ax.set_xlim(lo, hi)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_title(title, fontsize=9.5)
            ax.set_ylabel(f"% of students (per {width:g}-point band)", fontsize=8)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(
                handles,
                labels,
                loc="outside right upper",
                fontsize=7.5,
                frameon=False,
                title=group_name or None,
                title_fontsize=8,
            )
        return _png(fig)


def band_edges(lo: float, hi: float, anchor: float | None = None, bands: int = 50) -> np.ndarray:
    """About ``bands`` score bands of a round width (1, 2, 2.5, 5, 10... points) covering lo..hi,
    with an edge exactly at ``anchor`` (the cut), so no band straddles the cut."""
    raw = max((hi - lo) / bands, 1e-9)
    magnitude = 10.0 ** np.floor(np.log10(raw))
    width = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    origin = anchor if anchor is not None else 0.0
    first = origin + np.floor((lo - origin) / width) * width
    last = origin + np.ceil((hi - origin) / width) * width
    return np.arange(first, last + width / 2, width)


def _span(values: np.ndarray, include: float | None = None) -> tuple[float, float]:
    """The x range of a distribution: its middle 99.6%, widened to show ``include`` (the cut)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.2, 99.8])
    if include is not None:
        lo, hi = min(lo, include), max(hi, include)
    if hi <= lo:
        lo, hi = lo - 1, hi + 1
    pad = 0.04 * (hi - lo)
    return float(lo - pad), float(hi + pad)


def top_vs_bottom(
    top: GroupProfile,
    bottom: GroupProfile,
    grades: Sequence[str],
    spec: t.ReportSpec,
    level_order: Sequence[str] = (),
) -> bytes:
    """The narrative's comparison in one picture: type and level mix (when known, levels in
    ``level_order``), size, per-student budget (when known) and % overall by grade for the top and
    the bottom group."""
    labels = [f"Top {len(top.schools)}", f"Bottom {len(bottom.schools)}"]
    colors = [GROUP_COLORS["top"], GROUP_COLORS["bottom"]]
    panels: list[str] = []
    for name, a, b in (
        ("type", top.type_counts, bottom.type_counts),
        ("level", top.level_counts, bottom.level_counts),
    ):
        if a is not None and b is not None and (a or b):
            panels.append(name)
    panels.append("size")
    if top.mean_per_student_budget is not None and bottom.mean_per_student_budget is not None:
        panels.append("budget")
    shown_grades = [
        g
        for g in grades
        if np.isfinite(top.grade_overall.get(g, np.nan)) or np.isfinite(bottom.grade_overall.get(g, np.nan))
    ]
    if shown_grades:
        panels.append("grades")
    ncols = 2
    nrows = int(np.ceil(len(panels) / ncols))
    with matplotlib.rc_context(STYLE):
        fig = _figure(9, 2.6 * nrows + 0.4)
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
        for ax in axes[len(panels) :]:
            ax.set_visible(False)
        for ax, panel in zip(axes, panels, strict=False):
            if panel in ("type", "level"):
                a, b = (
                    (top.type_counts, bottom.type_counts)
                    if panel == "type"
                    else (top.level_counts, bottom.level_counts)
                )
                assert a is not None and b is not None
                first = list(TYPE_COLORS) if panel == "type" else list(level_order)
                cats = list(dict.fromkeys([*first, *sorted({*a, *b})]))
                cats = [c for c in cats if a.get(c, 0) or b.get(c, 0)]
                cat_colors = category_colors(cats)
                left = np.zeros(2)
                for c in cats:
                    vals = np.array([a.get(c, 0), b.get(c, 0)], dtype=float)
                    ax.barh(labels, vals, left=left, color=cat_colors[c], label=c, height=0.6)
                    left += vals
                ax.invert_yaxis()
                ax.set_title(f"School {panel} (number of schools)")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.legend(
                    fontsize=7.5,
                    loc="upper center",
                    bbox_to_anchor=(0.5, -0.14),
                    ncols=min(4, len(cats)),
                    frameon=False,
                )
                ax.grid(axis="y", visible=False)
            elif panel in ("size", "budget"):
                if panel == "size":
                    values, title, fmt = (
                        [top.mean_students, bottom.mean_students],
                        "Average enrolment",
                        "{:,.0f}",
                    )
                else:
                    values = [top.mean_per_student_budget or np.nan, bottom.mean_per_student_budget or np.nan]
                    title, fmt = "Average per-student budget", "${:,.0f}"
                bars = ax.barh(labels, values, color=colors, height=0.6)
                ax.bar_label(
                    bars, [fmt.format(v) if np.isfinite(v) else "n/a" for v in values], padding=3, fontsize=8
                )
                ax.invert_yaxis()
                finite = [v for v in values if np.isfinite(v)]
                ax.set_xlim(0, max(finite) * 1.25 if finite else 1)
                ax.set_title(title)
                ax.grid(axis="y", visible=False)
            else:
                x = np.arange(len(shown_grades))
                for profile, label, color in ((top, labels[0], colors[0]), (bottom, labels[1], colors[1])):
                    ax.plot(
                        x,
                        [profile.grade_overall.get(g, np.nan) for g in shown_grades],
                        marker="o",
                        color=color,
                        label=label,
                    )
                ax.set_xticks(x, list(shown_grades))
                ax.set_ylim(0, 100)
                ax.set_title(f"{spec.overall} by grade")
                ax.legend(
                    fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2, frameon=False
                )
        fig.suptitle("Top vs bottom schools", fontweight="bold")
        return _png(fig)


def trend(table: pd.DataFrame, spec: t.ReportSpec) -> bytes:
    """District % proficient per subject and % overall across the school years of the trend table."""
    metrics = [m for m in spec.pct_metrics().values() if m in table]
    colors = metric_colors(metrics, spec.overall)
    years = table[t.SCHOOL_YEAR].astype(str).tolist()
    x = np.arange(len(years))
    with matplotlib.rc_context(STYLE):
        fig = _figure(max(5.5, 0.9 * len(years) + 3.5), 3.2)
        ax = fig.add_subplot()
        for metric in metrics:
            values = table[metric].to_numpy(dtype=float)
            ax.plot(
                x,
                values,
                marker="o",
                color=colors[metric],
                label=metric,
                lw=1.8 if metric == spec.overall else 1.2,
            )
            last = np.flatnonzero(np.isfinite(values))
            if last.size:
                i = int(last[-1])
                ax.annotate(
                    f"{values[i]:.1f}%",
                    (x[i], values[i]),
                    textcoords="offset points",
                    xytext=(6, 0),
                    va="center",
                    fontsize=7.5,
                    color=colors[metric],
                )
        ax.set_xticks(x, years)
        ax.set_xlim(-0.3, len(years) - 0.4)
        finite = table[metrics].to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        if finite.size:
            ax.set_ylim(max(0, finite.min() - 8), min(100, finite.max() + 8))
        ax.set_ylabel("percent of students")
        ax.set_title("District trend")
        ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return _png(fig)


def group_labels(students: pd.DataFrame, by_school: Mapping[str, str]) -> np.ndarray:
    """Each student's school's group (type or level) as an object array, mapped via the category
    codes of ``school_id`` (one lookup per school, not per student)."""
    ids = students["school_id"]
    if not isinstance(ids.dtype, pd.CategoricalDtype):
        ids = ids.astype(str).astype("category")
    lookup = np.array([by_school.get(str(c)) for c in ids.cat.categories] + [None], dtype=object)
    return lookup[ids.cat.codes.to_numpy()]
