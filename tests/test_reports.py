"""The district report: every table against hand-computed values on a small district, the edge
cases (missing grade, empty bin, school outside every bin, ranking ties), the HTML page and the
atomic write.

The fixture district (pass mark 70):

| school  | type     | budget | students (grade: math/reading)                       |
|---------|----------|--------|------------------------------------------------------|
| Alpha   | Charter  | 2400   | 9th 90/85, 10th 80/65, 11th 70/75, 12th 60/95        |
| Beta    | District | 1000   | 9th 70/70, 9th 50/80                                 |
| Gamma   | District | 1400   | 10th 100/100, 11th 100/70                            |
| Delta   | Charter  | 1920   | 9th 40/70, 10th 60/60, 12th 80/90                    |
| Epsilon | District | 1000   | no students                                          |

Per-student budgets: Alpha $600, Beta $500, Gamma $700 (outside every spending bin), Delta $640;
no school falls in $645-680. % Overall Passing: Gamma 100, Alpha 50, Beta 50 (a tie), Delta 33.3.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from features.school_aggregates import OUTSIDE_BINS, AggregateConfig, school_aggregates
from reports import build, charts, html, narrative
from reports import tables as t

ROWS = [
    ("Alpha High", "9th", 90, 85),
    ("Alpha High", "10th", 80, 65),
    ("Alpha High", "11th", 70, 75),
    ("Alpha High", "12th", 60, 95),
    ("Beta High", "9th", 70, 70),
    ("Beta High", "9th", 50, 80),
    ("Gamma High", "10th", 100, 100),
    ("Gamma High", "11th", 100, 70),
    ("Delta High", "9th", 40, 70),
    ("Delta High", "10th", 60, 60),
    ("Delta High", "12th", 80, 90),
]
STUDENT_NAMES = [
    "Zelda Quarrington",
    "Yusuf Oyelaran",
    "Xiomara Bellweather",
    "Wendell Pruitt",
    "Valentina Okonkwo",
    "Ulrich Fassbinder",
    "Tamsin Ravenscroft",
    "Sebastiano Lucci",
    "Rosalind Marchetti",
    "Quentin Abernathy",
    "Priyanka Venkataraman",
]


def make_students() -> pd.DataFrame:
    students = pd.DataFrame(ROWS, columns=["school_name", "grade", "math_score", "reading_score"])
    students.insert(0, "student_id", range(1, len(ROWS) + 1))
    students.insert(1, "student_name", STUDENT_NAMES)
    students.insert(2, "gender", ["M", "F"] * 5 + ["M"])
    students["math_score"] = students["math_score"].astype(float)
    students["reading_score"] = students["reading_score"].astype(float)
    return students


def make_schools() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "school_name": ["Alpha High", "Beta High", "Gamma High", "Delta High", "Epsilon High"],
            "type": ["Charter", "District", "District", "Charter", "District"],
            "size": [4, 2, 2, 3, 0],
            "budget": [2400.0, 1000.0, 1400.0, 1920.0, 1000.0],
            "school_id": [1, 2, 3, 4, 5],
        }
    )


@pytest.fixture()
def students() -> pd.DataFrame:
    return make_students()


@pytest.fixture()
def schools() -> pd.DataFrame:
    return make_schools()


@pytest.fixture()
def aggregates(students: pd.DataFrame, schools: pd.DataFrame) -> pd.DataFrame:
    return school_aggregates(students, schools)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, pd.DataFrame], list]:
    """One full report build shared by the output tests (charts make a build take ~1 s)."""
    out = tmp_path_factory.mktemp("report") / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tables = build.build_report(make_students(), make_schools(), out)
    return out, tables, list(caught)


def row(table: pd.DataFrame, label_col: str, label: str) -> pd.Series:
    return table.set_index(label_col).loc[label]


# --- tables ------------------------------------------------------------------------------------


def test_district_summary(students: pd.DataFrame, schools: pd.DataFrame) -> None:
    got = t.district_summary(students, schools, 70).iloc[0]
    assert got["Total Schools"] == 5
    assert got["Total Students"] == 11
    assert got["Total Budget"] == 7720.0
    assert got["Average Math Score"] == pytest.approx(800 / 11)
    assert got["Average Reading Score"] == pytest.approx(860 / 11)
    assert got["% Passing Math"] == pytest.approx(700 / 11)
    assert got["% Passing Reading"] == pytest.approx(900 / 11)
    # share of students passing both (6 of 11), not the mean of the two rates (72.7)
    assert got["% Overall Passing"] == pytest.approx(600 / 11)


def test_district_summary_pass_mark_is_configurable(students: pd.DataFrame, schools: pd.DataFrame) -> None:
    got = t.district_summary(students, schools, 80).iloc[0]
    assert got["% Passing Math"] == pytest.approx(500 / 11)
    assert got["% Passing Reading"] == pytest.approx(500 / 11)
    assert got["% Overall Passing"] == pytest.approx(300 / 11)


def test_school_summary(aggregates: pd.DataFrame) -> None:
    summary = t.school_summary(aggregates)
    assert list(summary.columns) == [
        "School Name",
        "School Type",
        "Total Students",
        "Total School Budget",
        "Per Student Budget",
        "Average Math Score",
        "Average Reading Score",
        "% Passing Math",
        "% Passing Reading",
        "% Overall Passing",
    ]
    assert summary["School Name"].tolist() == [
        "Alpha High",
        "Beta High",
        "Delta High",
        "Epsilon High",
        "Gamma High",
    ]
    alpha = row(summary, "School Name", "Alpha High")
    assert alpha["School Type"] == "Charter"
    assert alpha["Total Students"] == 4
    assert alpha["Total School Budget"] == 2400.0
    assert alpha["Per Student Budget"] == 600.0
    assert (alpha["Average Math Score"], alpha["Average Reading Score"]) == (75.0, 80.0)
    assert alpha[["% Passing Math", "% Passing Reading", "% Overall Passing"]].tolist() == [75.0, 75.0, 50.0]
    delta = row(summary, "School Name", "Delta High")
    assert delta["Average Reading Score"] == pytest.approx(220 / 3)
    assert delta["% Passing Math"] == pytest.approx(100 / 3)
    assert delta["% Overall Passing"] == pytest.approx(100 / 3)
    epsilon = row(summary, "School Name", "Epsilon High")
    assert epsilon["Total Students"] == 0
    assert epsilon[["Per Student Budget", "Average Math Score", "% Overall Passing"]].isna().all()


def test_ranking_breaks_ties_by_name_and_ignores_input_order(
    students: pd.DataFrame, schools: pd.DataFrame
) -> None:
    shuffled = school_aggregates(students.sample(frac=1, random_state=3), schools.iloc[::-1])
    for agg in (school_aggregates(students, schools), shuffled):
        summary = t.school_summary(agg)
        top = t.top_schools(summary)
        # Alpha and Beta tie at 50%: name order decides; Epsilon (no students) is not ranked
        assert top["School Name"].tolist() == ["Gamma High", "Alpha High", "Beta High", "Delta High"]
        assert top["Rank"].tolist() == [1, 2, 3, 4]
        bottom = t.bottom_schools(summary)
        assert bottom["School Name"].tolist() == ["Delta High", "Beta High", "Alpha High", "Gamma High"]
        assert bottom["Rank"].tolist() == [4, 3, 2, 1]
        assert t.top_schools(summary, n=2)["School Name"].tolist() == ["Gamma High", "Alpha High"]
        assert t.bottom_schools(summary, n=2)["School Name"].tolist() == ["Delta High", "Beta High"]


def test_scores_by_grade_leaves_missing_grades_blank(students: pd.DataFrame, schools: pd.DataFrame) -> None:
    by_grade = t.grade_aggregates(students, schools)
    math_t = t.scores_by_grade(by_grade, "avg_math").set_index("School Name")
    reading_t = t.scores_by_grade(by_grade, "avg_reading").set_index("School Name")
    assert list(math_t.columns) == ["9th", "10th", "11th", "12th"]
    assert math_t.loc["Alpha High"].tolist() == [90.0, 80.0, 70.0, 60.0]
    assert math_t.loc["Beta High", "9th"] == 60.0
    assert reading_t.loc["Beta High", "9th"] == 75.0
    assert math_t.loc["Beta High", ["10th", "11th", "12th"]].isna().all()  # NaN, not 0
    assert math_t.loc["Delta High", ["9th", "10th", "12th"]].tolist() == [40.0, 60.0, 80.0]
    assert math.isnan(math_t.loc["Delta High", "11th"])
    assert reading_t.loc["Gamma High", "11th"] == 70.0 and math.isnan(reading_t.loc["Gamma High", "9th"])
    assert math_t.loc["Epsilon High"].isna().all()


def test_scores_by_spending_keeps_empty_bin_and_outside_row(aggregates: pd.DataFrame) -> None:
    table = t.scores_by_spending(aggregates)
    assert table["Spending Ranges (Per Student)"].tolist() == [
        "<$585",
        "$585-630",
        "$630-645",
        "$645-680",
        OUTSIDE_BINS,
    ]
    assert table["Number of Schools"].tolist() == [1, 1, 1, 0, 2]
    low = row(table, "Spending Ranges (Per Student)", "<$585")
    assert low[list(t.METRICS.values())].tolist() == [60.0, 75.0, 50.0, 100.0, 50.0]  # Beta
    empty = row(table, "Spending Ranges (Per Student)", "$645-680")
    assert empty[list(t.METRICS.values())].isna().all()
    # Gamma ($700) and Epsilon (no students, no per-student budget)
    outside = row(table, "Spending Ranges (Per Student)", OUTSIDE_BINS)
    assert outside[list(t.METRICS.values())].tolist() == [100.0, 85.0, 100.0, 100.0, 100.0]


def test_scores_by_size_unweighted_and_weighted(aggregates: pd.DataFrame) -> None:
    table = t.scores_by_size(aggregates)
    assert table["School Size"].tolist() == [
        "Small (<1000)",
        "Medium (1000-2000)",
        "Large (2000-5000)",
        OUTSIDE_BINS,
    ]
    small = row(table, "School Size", "Small (<1000)")
    # mean of the four school figures, each school counting once
    assert small[list(t.METRICS.values())].tolist() == pytest.approx(
        [
            73.75,
            (80 + 75 + 85 + 220 / 3) / 4,
            (75 + 50 + 100 + 100 / 3) / 4,
            (75 + 100 + 100 + 200 / 3) / 4,
            (50 + 50 + 100 + 100 / 3) / 4,
        ]
    )
    assert row(table, "School Size", "Medium (1000-2000)")[list(t.METRICS.values())].isna().all()
    assert row(table, "School Size", OUTSIDE_BINS)["Number of Schools"] == 1  # Epsilon, no students
    weighted = row(t.scores_by_size(aggregates, weighted=True), "School Size", "Small (<1000)")
    # every student counts once: equals the district figures
    assert weighted["Total Students"] == 11
    assert weighted[list(t.METRICS.values())].tolist() == pytest.approx(
        [800 / 11, 860 / 11, 700 / 11, 900 / 11, 600 / 11]
    )


def test_scores_by_type(aggregates: pd.DataFrame) -> None:
    table = t.scores_by_type(aggregates)
    assert table["School Type"].tolist() == ["District", "Charter"]
    assert table["Number of Schools"].tolist() == [3, 2]
    assert row(table, "School Type", "District")[list(t.METRICS.values())].tolist() == pytest.approx(
        [80, 80, 75, 100, 75]
    )
    assert row(table, "School Type", "Charter")[list(t.METRICS.values())].tolist() == pytest.approx(
        [67.5, (80 + 220 / 3) / 2, (75 + 100 / 3) / 2, (75 + 200 / 3) / 2, (50 + 100 / 3) / 2]
    )
    charter_w = row(t.scores_by_type(aggregates, weighted=True), "School Type", "Charter")
    assert charter_w[list(t.METRICS.values())].tolist() == pytest.approx(
        [480 / 7, 540 / 7, 400 / 7, 500 / 7, 300 / 7]
    )


def test_custom_bins_and_outside_list(students: pd.DataFrame, schools: pd.DataFrame) -> None:
    config = AggregateConfig(spending_bins=(0, 650, 1000), spending_labels=("low", "high"))
    agg = school_aggregates(students, schools, config=config)
    table = t.scores_by_spending(agg, config)
    assert table["Spending Ranges (Per Student)"].tolist() == ["low", "high", OUTSIDE_BINS]
    assert table["Number of Schools"].tolist() == [3, 1, 1]
    outside = t.outside_bins(agg)
    assert outside.set_index("School Name")["Outside"].to_dict() == {"Epsilon High": "spending and size"}


def test_categorical_inputs_give_the_same_tables(students: pd.DataFrame, schools: pd.DataFrame) -> None:
    cat_students = students.astype({"grade": "category", "school_name": "category"})
    cat_schools = schools.astype({"type": "category", "school_name": "category"})
    plain = t.scores_by_grade(t.grade_aggregates(students, schools), "avg_math")
    cats = t.scores_by_grade(t.grade_aggregates(cat_students, cat_schools), "avg_math")
    pd.testing.assert_frame_equal(plain, cats)
    pd.testing.assert_frame_equal(
        t.scores_by_type(school_aggregates(students, schools)),
        t.scores_by_type(school_aggregates(cat_students, cat_schools)),
    )


# --- narrative and formatting ------------------------------------------------------------------


def test_narrative_compares_top_and_bottom(
    aggregates: pd.DataFrame, students: pd.DataFrame, schools: pd.DataFrame
) -> None:
    summary = t.school_summary(aggregates)
    groups = narrative.compare_groups(summary, t.grade_aggregates(students, schools))
    assert groups is not None
    top, bottom = groups
    # four ranked schools: groups of two so they never overlap
    assert top.schools == ("Gamma High", "Alpha High") and bottom.schools == ("Delta High", "Beta High")
    assert top.mean_per_student_budget == 650.0 and bottom.mean_per_student_budget == 570.0
    assert top.type_counts == {"District": 1, "Charter": 1}
    assert sum(bottom.grade_share.values()) == pytest.approx(100.0)
    assert bottom.grade_share["9th"] == pytest.approx(60.0)  # 3 of the 5 students
    text = narrative.build_narrative(
        summary,
        groups,
        t.scores_by_spending(aggregates),
        t.scores_by_size(aggregates),
        t.scores_by_type(aggregates),
    ).to_text()
    assert "What sets the top schools apart" in text and "What contributes to lower performance" in text
    assert "75.0% overall passing against 41.7%" in text
    assert "$650 per student against $570" in text
    assert "not causes" in text


def test_narrative_with_too_few_schools(aggregates: pd.DataFrame) -> None:
    summary = t.school_summary(aggregates).query("`School Name` == 'Alpha High'")
    assert narrative.compare_groups(summary, {}) is None


def test_formatting() -> None:
    assert html.money(1910635) == "$1,910,635.00"
    assert html.pct(65.1666) == "65.17%"
    assert html.score(np.nan) == html.MISSING
    assert html.number(39170) == "39,170"


# --- outputs -----------------------------------------------------------------------------------


def test_build_writes_every_table_as_csv(built: tuple[Path, dict[str, pd.DataFrame], list]) -> None:
    out, tables, _ = built
    assert list(tables) == list(build.TABLE_NAMES)
    for name, table in tables.items():
        on_disk = pd.read_csv(out / f"{name}.csv")
        assert list(on_disk.columns) == list(table.columns)
        assert len(on_disk) == len(table)
    spending = pd.read_csv(out / "scores_by_spending.csv")
    # the empty bin is blank, not 0
    assert spending["Average Math Score"].isna().tolist() == [False, False, False, True, False]
    summary = pd.read_csv(out / "school_summary.csv")
    assert summary.loc[summary["School Name"] == "Alpha High", "Per Student Budget"].item() == 600.0
    assert sorted(p.name for p in (out / "charts").iterdir()) == sorted(
        f"{c}.png"
        for c in (
            "overall_passing_by_school",
            "scores_by_spending",
            "scores_by_size",
            "scores_by_type",
            "score_distributions",
            "top_vs_bottom",
        )
    )
    assert all((out / "charts" / p).read_bytes()[:4] == b"\x89PNG" for p in os.listdir(out / "charts"))
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".partial")]


def test_outside_bins_school_is_warned_and_listed(built: tuple[Path, dict[str, pd.DataFrame], list]) -> None:
    out, _, caught = built
    messages = [str(w.message) for w in caught if issubclass(w.category, build.OutsideBinsWarning)]
    assert any(m.startswith("Gamma High is outside every spending bin") for m in messages)
    assert any("Epsilon High" in m for m in messages)
    page = (out / "report.html").read_text()
    assert "Gamma High is outside every spending bin" in page
    assert f'<tr class="flag"><td>{OUTSIDE_BINS}</td>' in page


def test_report_html_is_self_contained_formatted_and_anonymous(
    built: tuple[Path, dict[str, pd.DataFrame], list],
) -> None:
    out, _, _ = built
    page = (out / "report.html").read_text()
    for value in ("$7,720.00", "$600.00", "54.55%", "63.64%", "72.73", "&lt;$585", "$645-680"):
        assert value in page, value
    assert page.count("data:image/png;base64,") == 6
    assert 'src="charts/' not in page and "http://" not in page and "https://" not in page
    for name in STUDENT_NAMES:
        assert name not in page
        for part in name.split():
            assert part not in page, part
    assert "What sets the top schools apart" in page
    assert "ties are broken by school name" in page


def test_failed_step_leaves_no_partial_report(
    tmp_path: Path, students: pd.DataFrame, schools: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CSVs are already written to the temporary folder when the first chart fails."""

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("chart failed")

    monkeypatch.setattr(charts, "overall_passing_by_school", broken)
    new = tmp_path / "new"
    with pytest.raises(RuntimeError, match="chart failed"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build.build_report(students, schools, new)
    assert not new.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "report.html").write_text("previous report")
    (existing / "notes.txt").write_text("not ours")
    with pytest.raises(RuntimeError, match="chart failed"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build.build_report(students, schools, existing)
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt", "report.html"]
    assert (existing / "report.html").read_text() == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]  # no temporary folder left


@pytest.mark.slow  # ~6 s, almost all of it MLflow creating its SQLite store
def test_cli_report_with_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import features.io
    from pipelines.cli import app

    fake = SimpleNamespace(schools=make_schools(), students=make_students(), warnings=())
    monkeypatch.setattr(features.io, "load_district", lambda schools, students: fake)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = tmp_path / "report"  # an existing folder: the report replaces its files, keeps the others
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    (out / "report.html").write_text("old")
    result = CliRunner().invoke(
        app,
        [
            "report",
            "--schools",
            "s.csv",
            "--students",
            "t.csv",
            "--out",
            str(out),
            "--pass-mark",
            "80",
            "--mlflow",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "outside every spending bin" in result.output
    assert pd.read_csv(out / "district_summary.csv")["% Overall Passing"].item() == pytest.approx(300 / 11)
    assert (out / "keep.txt").read_text() == "keep"
    assert "District performance report" in (out / "report.html").read_text()

    import mlflow

    run = mlflow.search_runs(experiment_names=[build.MLFLOW_EXPERIMENT], output_format="list")[0]
    assert run.info.run_name == build.MLFLOW_RUN_NAME
    assert run.data.params["pass_mark"] == "80.0"
    listed = mlflow.artifacts.list_artifacts(run_id=run.info.run_id, artifact_path="report")
    artifacts = {a.path for a in listed}
    assert {"report/report.html", "report/school_summary.csv", "report/charts"} <= artifacts
