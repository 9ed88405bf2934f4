"""Report charts as PNG bytes: pure functions of the tables, no pyplot state, Agg backend.

Returning bytes (rather than writing files) lets the builder write them into its temporary
folder and embed the same bytes in the HTML page, and keeps each chart testable on its own.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from reports import tables as t  # noqa: E402
from reports.narrative import GroupProfile  # noqa: E402

PALETTE = sns.color_palette("deep").as_hex()
TYPE_COLORS = {"District": PALETTE[0], "Charter": PALETTE[1]}
METRIC_COLORS = dict(
    zip(t.METRICS.values(), [PALETTE[0], PALETTE[1], "#8fb0d8", "#f0b98c", PALETTE[2]], strict=True)
)
GROUP_COLORS = {"top": PALETTE[2], "bottom": PALETTE[3], "district": "#9a9a9a"}
STYLE = {
    **sns.axes_style("whitegrid"),
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#cccccc",
}
DPI = 100
LABEL_BOX = {"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85}


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")  # constrained layout already fits
    return buf.getvalue()


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height))
    fig.set_layout_engine("constrained")
    return fig


def overall_passing_by_school(summary: pd.DataFrame, district_overall: float) -> bytes:
    """Every school's % overall passing, best at the top, coloured by type, with the district
    figure as a reference line: the one picture of the school summary."""
    data = summary.dropna(subset=[t.PCT_OVERALL]).sort_values(
        [t.PCT_OVERALL, t.SCHOOL_NAME], ascending=[True, False], kind="mergesort"
    )
    with matplotlib.rc_context(STYLE):
        fig = _figure(8, max(2.5, 0.26 * len(data) + 1.2))
        ax = fig.add_subplot()
        colors = [TYPE_COLORS.get(ty, PALETTE[7]) for ty in data[t.SCHOOL_TYPE]]
        ax.barh(data[t.SCHOOL_NAME], data[t.PCT_OVERALL], color=colors, height=0.7)
        for y, v in enumerate(data[t.PCT_OVERALL]):
            ax.text(v + 0.8, y, f"{v:.1f}%", va="center", fontsize=7.5, color="#333333")
        ax.axvline(district_overall, color="#444444", ls="--", lw=1)
        ax.text(
            district_overall,
            len(data) - 0.3,
            f" district {district_overall:.1f}%",
            fontsize=7.5,
            color="#444444",
            va="bottom",
        )
        ax.set_xlim(0, 108)
        ax.set_ylim(-0.6, len(data) + 0.2)
        ax.set_xlabel("% Overall Passing (math and reading)")
        ax.set_title("% Overall Passing by school")
        ax.grid(axis="y", visible=False)
        handles = [Patch(color=c, label=k) for k, c in TYPE_COLORS.items()]
        ax.legend(handles=handles, loc="lower right", frameon=True, fontsize=8)
        return _png(fig)


def scores_by_group(table: pd.DataFrame, label: str, title: str, ordered: bool = True) -> bytes:
    """The five school-level metrics across bins or types as dots: differences of a few points,
    which bars from zero flatten, stay visible. Ordered groups (bins) are joined by lines; unordered
    ones (types) are not. An empty bin keeps its place on the axis, marked "no schools", so it is
    not mistaken for a score of zero."""
    groups = table[label].astype(str).tolist()
    counts = table[t.NUMBER_OF_SCHOOLS].tolist()
    x = np.arange(len(groups))
    values = table[list(t.METRICS.values())].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 100.0)
    pad = max(2.0, 0.12 * (hi - lo))
    with matplotlib.rc_context(STYLE):
        fig = _figure(max(5.5, 1.3 * len(groups) + 2.5), 3.4)
        ax = fig.add_subplot()
        for i, metric in enumerate(t.METRICS.values()):
            ax.plot(
                x,
                values[:, i],
                marker="o",
                ms=5 if ordered else 7,
                lw=1.4 if ordered else 0,
                color=METRIC_COLORS[metric],
                label=metric,
            )
            if metric == t.PCT_OVERALL:
                for xi, v in zip(x, values[:, i], strict=True):
                    if np.isfinite(v):
                        ax.annotate(
                            f"{v:.1f}%",
                            (xi, v),
                            textcoords="offset points",
                            xytext=(0, -12),
                            ha="center",
                            fontsize=7.5,
                            color=METRIC_COLORS[metric],
                            bbox=LABEL_BOX,
                        )
        ax.set_ylim(max(0.0, lo - pad), min(100.0, hi + pad) if hi + pad <= 100 else hi + pad)
        for xi, n in zip(x, counts, strict=True):
            if n == 0 or not np.isfinite(values[xi]).any():
                ax.text(
                    xi,
                    sum(ax.get_ylim()) / 2,
                    "no schools" if n == 0 else "no students",
                    ha="center",
                    fontsize=8,
                    color="#777777",
                    style="italic",
                )
        ticks = [f"{g}\n({n} school{'s' if n != 1 else ''})" for g, n in zip(groups, counts, strict=True)]
        ax.set_xticks(x, ticks)
        ax.set_xlim(-0.5, len(groups) - 0.5)
        ax.set_ylabel("score / percent")
        ax.set_title(title)
        ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return _png(fig)


def score_distributions(students: pd.DataFrame, pass_mark: float, types: pd.Series) -> bytes:
    """Histograms of math and reading scores by school type, with the pass mark: shows how many
    students sit just below the line, which pass rates alone hide. ``types`` maps school name
    to type."""
    school_type = students["school_name"].map(types).astype(str).to_numpy()
    edges = np.linspace(0, 100, 51)
    lowest = float(np.nanmin(students[["math_score", "reading_score"]].to_numpy(dtype=float), initial=100.0))
    x_min = max(0.0, min(50.0, 10.0 * np.floor(lowest / 10.0)))
    with matplotlib.rc_context(STYLE):
        fig = _figure(9, 3.2)
        axes = fig.subplots(1, 2, sharey=True)
        for ax, col, name in zip(axes, ("math_score", "reading_score"), ("Math", "Reading"), strict=True):
            scores = students[col].to_numpy(dtype=float)
            for ty, color in TYPE_COLORS.items():
                sel = scores[school_type == ty]
                if len(sel) == 0:
                    continue
                counts, _ = np.histogram(sel, bins=edges)
                ax.stairs(
                    100.0 * counts / len(sel),
                    edges,
                    color=color,
                    lw=1.6,
                    label=f"{ty} ({len(sel):,})",
                    fill=False,
                )
            ax.axvline(pass_mark, color="#444444", ls="--", lw=1)
            ax.text(
                pass_mark - 1,
                ax.get_ylim()[1] * 0.97,
                f"pass mark {pass_mark:g}",
                fontsize=7.5,
                color="#444444",
                va="top",
                ha="right",
            )
            ax.set_xlim(x_min, 100)
            ax.set_xlabel(f"{name} score")
            ax.set_title(f"{name} score distribution")
        axes[0].set_ylabel("% of students (per 2-point band)")
        axes[0].legend(fontsize=7.5, loc="upper left")
        return _png(fig)


def top_vs_bottom(top: GroupProfile, bottom: GroupProfile, grades: Sequence[str]) -> bytes:
    """The narrative's comparison in one picture: type mix, size, per-student budget and
    overall passing by grade for the top and the bottom group."""
    labels = [f"Top {len(top.schools)}", f"Bottom {len(bottom.schools)}"]
    colors = [GROUP_COLORS["top"], GROUP_COLORS["bottom"]]
    with matplotlib.rc_context(STYLE):
        fig = _figure(9, 5.2)
        (ax_type, ax_size), (ax_budget, ax_grade) = fig.subplots(2, 2)
        types = sorted(
            set(top.type_counts) | set(bottom.type_counts) | set(TYPE_COLORS),
            key=lambda ty: list(TYPE_COLORS).index(ty) if ty in TYPE_COLORS else 99,
        )
        left = np.zeros(2)
        for ty in types:
            vals = np.array([top.type_counts.get(ty, 0), bottom.type_counts.get(ty, 0)], dtype=float)
            ax_type.barh(labels, vals, left=left, color=TYPE_COLORS.get(ty, PALETTE[7]), label=ty, height=0.6)
            left += vals
        ax_type.invert_yaxis()
        ax_type.set_title("School type (number of schools)")
        ax_type.legend(
            fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=len(types), frameon=False
        )
        ax_type.grid(axis="y", visible=False)
        for ax, values, title, fmt in (
            (ax_size, [top.mean_students, bottom.mean_students], "Average enrolment (students)", "{:,.0f}"),
            (
                ax_budget,
                [top.mean_per_student_budget, bottom.mean_per_student_budget],
                "Average per-student budget",
                "${:,.0f}",
            ),
        ):
            bars = ax.barh(labels, values, color=colors, height=0.6)
            ax.bar_label(bars, [fmt.format(v) for v in values], padding=3, fontsize=8)
            ax.invert_yaxis()
            ax.set_xlim(0, max(v for v in values if np.isfinite(v)) * 1.25 if any(np.isfinite(values)) else 1)
            ax.set_title(title)
            ax.grid(axis="y", visible=False)
        x = np.arange(len(grades))
        for profile, label, color in ((top, labels[0], colors[0]), (bottom, labels[1], colors[1])):
            ax_grade.plot(x, [profile.grade_overall[g] for g in grades], marker="o", color=color, label=label)
        ax_grade.set_xticks(x, list(grades))
        ax_grade.set_ylim(0, 100)
        ax_grade.set_title("% Overall Passing by grade")
        ax_grade.legend(fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncols=2, frameon=False)
        fig.suptitle("Top vs bottom schools", fontweight="bold")
        return _png(fig)
