"""The district report on any district: every table against hand-computed values on two small
districts loaded through ``features.ingest``, the edge cases (missing grade, empty bin, school
outside every bin, ranking ties, tables left out, suppression, trend), the HTML page, the atomic
write and the import graph of ``reports``.

The classic district (two tables; pass mark 70; min_group_size 1 so every figure is shown):

| school  | type     | budget | students (grade: math/reading)                       |
|---------|----------|--------|------------------------------------------------------|
| Alpha   | Charter  | 2400   | 9th 90/85, 10th 80/65, 11th 70/75, 12th 60/95        |
| Beta    | District | 1000   | 9th 70/70, 9th 50/80                                 |
| Gamma   | District | 1400   | 10th 100/100, 11th 100/70                            |
| Delta   | Charter  | 1920   | 9th 40/70, 10th 60/60, 12th 80/90                    |
| Epsilon | District | 1000   | no students                                          |

Per-student budgets: Alpha $600, Beta $500, Gamma $700 (outside every spending bin), Delta $640;
no school falls in $645-680. % Overall Passing: Gamma 100, Alpha 50, Beta 50 (a tie), Delta 33.3.

The long district (a long export and a schools file with levels but no types or budgets; grades
03-08; math, ELA and science on 200-800; four levels, "Meets" and above proficient, per-grade
cuts; proficient cut of grade index i: math 400 + 10i, ELA 405 + 10i, science 395 + 10i):

| year | student | school            | grade | math      | ela       | science   |
|------|---------|-------------------|-------|-----------|-----------|-----------|
| 2024 | 001     | N1 North Elem.    | 03    | 410 P     | 400 -     | 395 P (=) |
| 2024 | 002     | N1                | 04    | 405 -     | 420 P     | 410 P     |
| 2024 | 003     | N1                | 05    | 420 P (=) | 425 P (=) | 420 P     |
| 2024 | 004     | N1                | 05    | 500 P     | 500 P     | not tested|
| 2024 | 005     | S2 South Middle   | 06    | 430 P (=) | 434 -     | 425 P (=) |
| 2024 | 006     | S2                | 07    | 439 -     | 445 P (=) | 434 -     |
| 2024 | 007     | S2                | 08    | 777 P     | 600 P     | 600 P     |
| 2023 | 005     | N1                | 05    | 415 -     | 430 P     | 420 P     |
| 2023 | 006     | S2                | 06    | 440 P     | 440 P     | 430 P     |

(= : exactly at the cut, which counts as proficient.) 2024: % proficient math 5/7, ELA 5/7,
science 5/6; % overall (tested in all three: 001, 002, 003, 005, 006, 007) 2/6. N1: math 3/4,
ELA 3/4, science 3/3, overall 1/3; S2: 2/3 in each subject, overall 1/3 (a tie with N1).
2023: math 1/2, ELA 2/2, science 2/2, overall 1/2.
"""

from __future__ import annotations

import ast
import importlib
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.district_config import ReportSettings, classic_config, config_from_dict
from features.ingest import District, load
from features.school_aggregates import OUTSIDE_BINS
from reports import build, charts, formatting, html, narrative
from reports import tables as t

REPO = Path(__file__).resolve().parents[2]

# --- the classic district ----------------------------------------------------------------------

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
SCHOOLS = pd.DataFrame(
    {
        "school_id": [1, 2, 3, 4, 5],
        "school_name": ["Alpha High", "Beta High", "Gamma High", "Delta High", "Epsilon High"],
        "type": ["Charter", "District", "District", "Charter", "District"],
        "size": [4, 2, 2, 3, 1],  # the classic format needs a size > 0; reports count the records
        "budget": [2400.0, 1000.0, 1400.0, 1920.0, 1000.0],
    }
)
PCT_HEADERS = ["% Passing Math", "% Passing Reading", "% Overall Passing"]
METRICS = ["Average Math Score", "Average Reading Score", *PCT_HEADERS]


def classic_district(
    folder: Path,
    pass_mark: float = 70.0,
    report: dict | None = None,
    shuffle: bool = False,
) -> District:
    """Write the classic tables (optionally in another row order) and load them like the CLI does,
    with min_group_size 1 unless ``report`` says otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    students = pd.DataFrame(ROWS, columns=["school_name", "grade", "math_score", "reading_score"])
    students.insert(0, "student_id", range(1, len(ROWS) + 1))
    students.insert(1, "student_name", STUDENT_NAMES)
    students.insert(2, "gender", ["M", "F"] * 5 + ["M"])
    schools = SCHOOLS
    if shuffle:
        students = students.sample(frac=1, random_state=3)
        schools = schools.iloc[::-1]
    students.to_csv(folder / "students.csv", index=False)
    schools.to_csv(folder / "schools.csv", index=False)
    config = classic_config(folder / "schools.csv", folder / "students.csv", pass_mark)
    settings = {"passing_word": "Passing", "min_group_size": 1, **(report or {})}
    return load(config.model_copy(update={"report": ReportSettings(**settings)}))


# --- the long district -------------------------------------------------------------------------

LONG_GRADES = ["03", "04", "05", "06", "07", "08"]
LONG_ROWS = [  # year, student, school, grade, math, ela, science (None: not tested)
    (2024, "001", "N1", "03", 410, 400, 395),
    (2024, "002", "N1", "04", 405, 420, 410),
    (2024, "003", "N1", "05", 420, 425, 420),
    (2024, "004", "N1", "05", 500, 500, None),
    (2024, "005", "S2", "06", 430, 434, 425),
    (2024, "006", "S2", "07", 439, 445, 434),
    (2024, "007", "S2", "08", 777, 600, 600),
    (2023, "005", "N1", "05", 415, 430, 420),
    (2023, "006", "S2", "06", 440, 440, 430),
]
LEVELS = ["Below", "Approaching", "Meets", "Exceeds"]


def long_district(folder: Path, min_group_size: int = 1, rows: list | None = None) -> District:
    """Write a long export, a schools file and a config; load them through features.ingest."""
    folder.mkdir(parents=True, exist_ok=True)
    codes = {"math": "MATH", "ela": "ELA", "science": "SCI"}
    records = []
    for year, student, school, grade, *scores in rows or LONG_ROWS:
        for subject, value in zip(codes, scores, strict=True):
            if value is not None:
                records.append((student, f"{year - 1}-{year}", codes[subject], grade, value, school))
    pd.DataFrame(
        records,
        columns=["StudentIdentifier", "AcademicYear", "ContentArea", "Grade", "ScaleScore", "SchoolCode"],
    ).to_csv(folder / "assessments.csv", index=False)
    pd.DataFrame(
        {
            "SchoolCode": ["N1", "S2"],
            "SchoolName": ["North Elementary", "South Middle"],
            "SchoolLevel": ["Elementary", "Middle"],
        }
    ).to_csv(folder / "schools.csv", index=False)

    def cuts(base: int) -> dict[str, list[int]]:
        return {g: [base - 50 + 10 * i, base + 10 * i, base + 50 + 10 * i] for i, g in enumerate(LONG_GRADES)}

    subject = {"scale": [200, 800], "levels": LEVELS, "proficient": "Meets"}
    config = config_from_dict(
        {
            "name": "Test Unified",
            "format": "long",
            "grades": LONG_GRADES,
            "files": {"records": ["assessments.csv"], "schools": "schools.csv"},
            "columns": {
                "student_id": "StudentIdentifier",
                "school_year": "AcademicYear",
                "subject": "ContentArea",
                "grade": "Grade",
                "scale_score": "ScaleScore",
                "school_id": "SchoolCode",
            },
            "school_columns": {
                "school_id": "SchoolCode",
                "school_name": "SchoolName",
                "level": "SchoolLevel",
            },
            "subjects": {
                "math": {**subject, "codes": ["MATH"], "label": "Math", "cuts": cuts(400)},
                "ela": {**subject, "codes": ["ELA"], "label": "ELA", "cuts": cuts(405)},
                "science": {**subject, "codes": ["SCI"], "label": "Science", "cuts": cuts(395)},
            },
            "report": {"min_group_size": min_group_size},
        },
        folder / "district.toml",
    )
    return load(config)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def classic(tmp_path_factory: pytest.TempPathFactory) -> District:
    return classic_district(tmp_path_factory.mktemp("classic"))


@pytest.fixture(scope="module")
def computed(classic: District) -> build.Computed:
    return build.compute(classic)


@pytest.fixture(scope="module")
def long(tmp_path_factory: pytest.TempPathFactory) -> District:
    return long_district(tmp_path_factory.mktemp("long"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, classic: District) -> tuple[Path, build.Report, list]:
    """One full classic build shared by the output tests (charts make a build take ~2 s)."""
    out = tmp_path_factory.mktemp("report") / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = build.build_report(classic, out)
    return out, report, list(caught)


@pytest.fixture(scope="module")
def built_long(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, build.Report]:
    """The long district with min_group_size 2, so most school x grade cells are suppressed."""
    district = long_district(tmp_path_factory.mktemp("long2"), min_group_size=2)
    out = tmp_path_factory.mktemp("report-long") / "out"
    return out, build.build_report(district, out)


def row(table: pd.DataFrame, label_col: str, label: str) -> pd.Series:
    return table.set_index(label_col).loc[label]


# --- classic tables ----------------------------------------------------------------------------


def test_district_summary(computed: build.Computed) -> None:
    got = computed.tables["district_summary"].iloc[0]
    assert list(got.index) == ["Total Schools", "Total Students", "Total Budget", *METRICS]
    assert got["Total Schools"] == 5
    assert got["Total Students"] == 11
    assert got["Total Budget"] == 7720.0
    assert got["Average Math Score"] == pytest.approx(800 / 11)
    assert got["Average Reading Score"] == pytest.approx(860 / 11)
    assert got["% Passing Math"] == pytest.approx(700 / 11)
    assert got["% Passing Reading"] == pytest.approx(900 / 11)
    # share of students passing both (6 of 11), not the mean of the two rates (72.7)
    assert got["% Overall Passing"] == pytest.approx(600 / 11)


def test_district_summary_pass_mark_is_configurable(tmp_path: Path) -> None:
    got = build.compute(classic_district(tmp_path, pass_mark=80)).tables["district_summary"].iloc[0]
    assert got["% Passing Math"] == pytest.approx(500 / 11)
    assert got["% Passing Reading"] == pytest.approx(500 / 11)
    assert got["% Overall Passing"] == pytest.approx(300 / 11)


def test_school_summary(computed: build.Computed) -> None:
    summary = computed.tables["school_summary"]
    assert list(summary.columns) == [
        "School Name",
        "School Type",
        "Total Students",
        "Total School Budget",
        "Per Student Budget",
        *METRICS,
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
    assert alpha[PCT_HEADERS].tolist() == [75.0, 75.0, 50.0]
    delta = row(summary, "School Name", "Delta High")
    assert delta["Average Reading Score"] == pytest.approx(220 / 3)
    assert delta["% Passing Math"] == pytest.approx(100 / 3)
    assert delta["% Overall Passing"] == pytest.approx(100 / 3)
    epsilon = row(summary, "School Name", "Epsilon High")
    assert epsilon["Total Students"] == 0
    assert epsilon[["Per Student Budget", "Average Math Score", "% Overall Passing"]].isna().all()


def test_ranking_breaks_ties_by_name_and_ignores_input_order(classic: District, tmp_path: Path) -> None:
    shuffled = classic_district(tmp_path, shuffle=True)
    for district in (classic, shuffled):
        c = build.compute(district)
        tables = c.tables
        top, bottom = tables["top_schools"], tables["bottom_schools"]
        # Alpha and Beta tie at 50%: name order decides; Epsilon (no students) is not ranked
        assert top["School Name"].tolist() == ["Gamma High", "Alpha High", "Beta High", "Delta High"]
        assert top["Rank"].tolist() == [1, 2, 3, 4]
        assert bottom["School Name"].tolist() == ["Delta High", "Beta High", "Alpha High", "Gamma High"]
        assert bottom["Rank"].tolist() == [4, 3, 2, 1]
        summary, spec = tables["school_summary"], c.spec
        assert t.top_schools(summary, spec, n=2)["School Name"].tolist() == ["Gamma High", "Alpha High"]
        assert t.bottom_schools(summary, spec, n=2)["School Name"].tolist() == ["Delta High", "Beta High"]


def test_scores_by_grade_leaves_missing_grades_blank(computed: build.Computed) -> None:
    math_t = computed.tables["math_scores_by_grade"].set_index("School Name")
    reading_t = computed.tables["reading_scores_by_grade"].set_index("School Name")
    # only the grades of the report year: the classic prior year's 8th grade is not a column
    assert list(math_t.columns) == ["9th", "10th", "11th", "12th"]
    assert math_t.loc["Alpha High"].tolist() == [90.0, 80.0, 70.0, 60.0]
    assert math_t.loc["Beta High", "9th"] == 60.0
    assert reading_t.loc["Beta High", "9th"] == 75.0
    assert math_t.loc["Beta High", ["10th", "11th", "12th"]].isna().all()  # NaN, not 0
    assert math_t.loc["Delta High", ["9th", "10th", "12th"]].tolist() == [40.0, 60.0, 80.0]
    assert math.isnan(math_t.loc["Delta High", "11th"])
    assert reading_t.loc["Gamma High", "11th"] == 70.0 and math.isnan(reading_t.loc["Gamma High", "9th"])
    assert math_t.loc["Epsilon High"].isna().all()
    assert "math_scores_by_grade" not in computed.suppressed  # min_group_size 1: nothing suppressed


def test_scores_by_spending_keeps_empty_bin_and_outside_row(computed: build.Computed) -> None:
    table = computed.tables["scores_by_spending"]
    assert table["Spending Ranges (Per Student)"].tolist() == [
        "<$585",
        "$585-630",
        "$630-645",
        "$645-680",
        OUTSIDE_BINS,
    ]
    assert table["Number of Schools"].tolist() == [1, 1, 1, 0, 2]
    low = row(table, "Spending Ranges (Per Student)", "<$585")
    assert low[METRICS].tolist() == [60.0, 75.0, 50.0, 100.0, 50.0]  # Beta
    empty = row(table, "Spending Ranges (Per Student)", "$645-680")
    assert empty[METRICS].isna().all()
    # Gamma ($700) and Epsilon (no students, no per-student budget)
    outside = row(table, "Spending Ranges (Per Student)", OUTSIDE_BINS)
    assert outside[METRICS].tolist() == [100.0, 85.0, 100.0, 100.0, 100.0]


def test_scores_by_size_unweighted_and_weighted(computed: build.Computed) -> None:
    table = computed.tables["scores_by_size"]
    assert table["School Size"].tolist() == [
        "Small (<1000)",
        "Medium (1000-2000)",
        "Large (2000-5000)",
        OUTSIDE_BINS,
    ]
    small = row(table, "School Size", "Small (<1000)")
    # mean of the four school figures, each school counting once
    assert small[METRICS].tolist() == pytest.approx(
        [
            73.75,
            (80 + 75 + 85 + 220 / 3) / 4,
            (75 + 50 + 100 + 100 / 3) / 4,
            (75 + 100 + 100 + 200 / 3) / 4,
            (50 + 50 + 100 + 100 / 3) / 4,
        ]
    )
    assert row(table, "School Size", "Medium (1000-2000)")[METRICS].isna().all()
    assert row(table, "School Size", OUTSIDE_BINS)["Number of Schools"] == 1  # Epsilon, no students
    weighted = row(computed.tables["scores_by_size_weighted"], "School Size", "Small (<1000)")
    # every student counts once: equals the district figures
    assert weighted["Total Students"] == 11
    assert weighted[METRICS].tolist() == pytest.approx([800 / 11, 860 / 11, 700 / 11, 900 / 11, 600 / 11])


def test_scores_by_type(computed: build.Computed) -> None:
    table = computed.tables["scores_by_type"]
    assert table["School Type"].tolist() == ["District", "Charter"]
    assert table["Number of Schools"].tolist() == [3, 2]
    assert row(table, "School Type", "District")[METRICS].tolist() == pytest.approx([80, 80, 75, 100, 75])
    assert row(table, "School Type", "Charter")[METRICS].tolist() == pytest.approx(
        [67.5, (80 + 220 / 3) / 2, (75 + 100 / 3) / 2, (75 + 200 / 3) / 2, (50 + 100 / 3) / 2]
    )
    charter_w = row(computed.tables["scores_by_type_weighted"], "School Type", "Charter")
    assert charter_w[METRICS].tolist() == pytest.approx([480 / 7, 540 / 7, 400 / 7, 500 / 7, 300 / 7])


def test_custom_bins_and_outside_list(tmp_path: Path) -> None:
    district = classic_district(
        tmp_path, report={"spending_bins": [0, 650, 1000], "spending_labels": ["low", "high"]}
    )
    c = build.compute(district)
    table = c.tables["scores_by_spending"]
    assert table["Spending Ranges (Per Student)"].tolist() == ["low", "high", OUTSIDE_BINS]
    assert table["Number of Schools"].tolist() == [3, 1, 1]
    outside = t.outside_bins(c.raw_aggregates)
    assert outside.set_index("School Name")["Outside"].to_dict() == {"Epsilon High": "spending and size"}


def test_categorical_and_plain_inputs_give_the_same_tables(classic: District) -> None:
    students = classic.students.astype({"grade": str, "school_name": str, "school_id": str})
    plain = District(
        classic.config,
        students,
        classic.schools.astype({"type": str}),
        classic.subjects,
        classic.grades,
        classic.summary,
    )
    cats, texts = build.compute(classic).tables, build.compute(plain).tables
    for name in ("school_summary", "math_scores_by_grade", "scores_by_type", "scores_by_spending_weighted"):
        pd.testing.assert_frame_equal(cats[name], texts[name], check_dtype=False)


# --- narrative and formatting ------------------------------------------------------------------


def test_narrative_compares_top_and_bottom(computed: build.Computed) -> None:
    summary, spec = computed.tables["school_summary"], computed.spec
    groups = narrative.compare_groups(summary, computed.by_grade, spec)
    assert groups is not None
    top, bottom = groups
    # four ranked schools: groups of two so they never overlap
    assert top.schools == ("Gamma High", "Alpha High") and bottom.schools == ("Delta High", "Beta High")
    assert top.mean_per_student_budget == 650.0 and bottom.mean_per_student_budget == 570.0
    assert top.type_counts == {"District": 1, "Charter": 1}
    assert top.level_counts is None  # the classic format has no school levels
    assert sum(bottom.grade_share.values()) == pytest.approx(100.0)
    assert bottom.grade_share["9th"] == pytest.approx(60.0)  # 3 of the 5 students
    groupings = [
        narrative.Grouping(computed.tables["scores_by_size"], t.SCHOOL_SIZE, "size", t.TOTAL_STUDENTS),
        narrative.Grouping(computed.tables["scores_by_type"], t.SCHOOL_TYPE, "type"),
    ]
    text = narrative.build_narrative(summary, groups, groupings, spec).to_text()
    assert "What sets the top schools apart" in text and "What contributes to lower performance" in text
    assert "75.0% overall passing against 41.7%" in text
    assert "$650 per student against $570" in text
    assert "School type: 1 of 2 top schools are District schools" in text
    assert "not causes" in text


def test_narrative_speaks_only_of_columns_the_district_has(long: District) -> None:
    c = build.compute(long)
    groups = narrative.compare_groups(c.tables["school_summary"], c.by_grade, c.spec)
    assert groups is not None
    top, bottom = groups
    assert top.type_counts is None and top.mean_per_student_budget is None
    assert top.level_counts == {"Elementary": 1}
    text = narrative.build_narrative(c.tables["school_summary"], groups, [], c.spec).to_text()
    assert "School level: 1 of 1 top schools are Elementary schools" in text
    assert "Budget" not in text and "per-student budget" not in text and "School type" not in text
    assert "overall proficient" in text and "not causes" in text


def test_narrative_with_too_few_schools(computed: build.Computed) -> None:
    summary = computed.tables["school_summary"].query("`School Name` == 'Alpha High'")
    assert narrative.compare_groups(summary, {}, computed.spec) is None
    story = narrative.build_narrative(summary, None, [], computed.spec)
    assert "nothing to compare" in story.to_text()


def test_formatting() -> None:
    assert formatting.money(1910635) == "$1,910,635.00"
    assert formatting.pct(65.1666) == "65.17%"
    assert formatting.score(np.nan) == formatting.MISSING
    assert formatting.score(np.float32("nan")) == formatting.MISSING  # float32 NaN is missing too
    assert formatting.number(39170) == "39,170"
    assert formatting.year_label(2024) == "2023-24"
    assert formatting.year_label(1, classic=True) == "current year"
    assert formatting.year_label(2, classic=True) == "next year"  # growth predict's classic forecast
    assert formatting.listing(["a", "b", "c"]) == "a, b and c"
    assert formatting.listing([str(i) for i in range(20)], limit=2) == "0, 1 and 18 more"
    table = html.format_table(pd.DataFrame({"School Name": ["A"], "% Passing Math": [np.nan]}))
    assert table.rows[0][1].text == formatting.MISSING and table.rows[0][1].missing


# --- the long district -------------------------------------------------------------------------


def test_long_district_hand_computed(long: District) -> None:
    c = build.compute(long)
    assert c.spec.year == 2024 and c.spec.grades == tuple(LONG_GRADES)
    district = c.tables["district_summary"].iloc[0]
    assert list(district.index) == [
        "Total Schools",
        "Total Students",
        "Average Math Score",
        "Average ELA Score",
        "Average Science Score",
        "% Proficient Math",
        "% Proficient ELA",
        "% Proficient Science",
        "% Overall Proficient",
    ]
    assert district["Total Students"] == 7
    assert district["Average Math Score"] == pytest.approx((410 + 405 + 420 + 500 + 430 + 439 + 777) / 7)
    assert district["% Proficient Math"] == pytest.approx(500 / 7)
    assert district["% Proficient ELA"] == pytest.approx(500 / 7)
    assert district["% Proficient Science"] == pytest.approx(500 / 6)
    assert district["% Overall Proficient"] == pytest.approx(200 / 6)
    summary = c.tables["school_summary"].set_index("School Name")
    assert "School Type" not in summary and "Per Student Budget" not in summary
    assert summary.loc["North Elementary", "School Level"] == "Elementary"
    assert summary.loc["North Elementary", "Average Math Score"] == pytest.approx(433.75)
    assert summary.loc[
        "North Elementary",
        ["% Proficient Math", "% Proficient ELA", "% Proficient Science", "% Overall Proficient"],
    ].tolist() == pytest.approx([75, 75, 100, 100 / 3])
    assert summary.loc[
        "South Middle",
        ["% Proficient Math", "% Proficient ELA", "% Proficient Science", "% Overall Proficient"],
    ].tolist() == pytest.approx([200 / 3] * 3 + [100 / 3])
    # a tie at 33.3%: the name decides
    assert c.tables["top_schools"]["School Name"].tolist() == ["North Elementary", "South Middle"]
    # science grade table: only the grades in which science was tested
    science = c.tables["science_scores_by_grade"].set_index("School Name")
    assert list(science.columns) == LONG_GRADES
    assert science.loc["North Elementary", "05"] == 420.0  # student 004 was not tested in science
    level = c.tables["scores_by_level"].set_index("School Level")
    assert level.index.tolist() == ["Elementary", "Middle"]
    assert level.loc["Middle", "% Proficient Science"] == pytest.approx(200 / 3)


def test_tables_the_district_cannot_have_are_left_out_with_a_reason(
    built_long: tuple[Path, build.Report],
) -> None:
    out, report = built_long
    for name in (
        "scores_by_spending",
        "scores_by_spending_weighted",
        "scores_by_type",
        "scores_by_type_weighted",
    ):
        assert name not in report.tables and not (out / f"{name}.csv").exists()
    assert (
        "budget" in report.omitted["scores_by_spending"]
        and "school_columns.budget" in report.omitted["scores_by_spending"]
    )
    assert "school type" in report.omitted["scores_by_type"]
    assert "scores_by_level" in report.tables and "scores_by_size" in report.tables
    assert report.omitted_lines() == [
        "left out scores_by_spending (and its student-weighted variant): the schools table has no budget "
        "column (config key school_columns.budget).",
        "left out scores_by_type (and its student-weighted variant): the schools table has no school type "
        "column (config key school_columns.type).",
    ]
    page = (out / "report.html").read_text()
    assert page.count('class="omitted"') == 2
    assert "The table by school spending (per student) left out:" in page
    assert "the schools table has no budget column (config key school_columns.budget)." in page
    assert "By spending" in page  # the section is still in the navigation, with its note


def test_small_school_grade_cells_are_suppressed(built_long: tuple[Path, build.Report]) -> None:
    out, report = built_long
    math_t = report.tables["math_scores_by_grade"].set_index("School Name")
    mask = report.suppressed["math_scores_by_grade"].set_index(
        report.tables["math_scores_by_grade"]["School Name"]
    )
    # North 05 has two students (min_group_size 2): shown; every other cell has one or none
    assert math_t.loc["North Elementary", "05"] == pytest.approx(460.0)
    assert not mask.loc["North Elementary", "05"]
    assert mask.loc["South Middle", "08"] and math.isnan(math_t.loc["South Middle", "08"])
    assert not mask.loc["South Middle", "03"]  # no students there: empty, not suppressed
    csv = pd.read_csv(out / "math_scores_by_grade.csv", dtype=str).set_index("School Name")
    assert csv.loc["South Middle", "08"] == formatting.SUPPRESSED
    assert pd.isna(csv.loc["South Middle", "03"])
    page = (out / "report.html").read_text()
    assert "777.00" not in page  # the lone 8th grader's score is never shown
    text = re.sub(r"data:image/png;base64,[^\"]+", "", page)
    assert not [
        i for i in ("001", "002", "003", "004", "005", "006", "007") if i in text
    ]  # nor any student id
    assert '<td class="num sup" title="suppressed: too few students to publish">—<sup>s</sup></td>' in page
    # school figures stay (three students tested in every subject at South Middle)
    summary = report.tables["school_summary"].set_index("School Name")
    assert summary.loc["South Middle", "Average Math Score"] == pytest.approx((430 + 439 + 777) / 3)
    assert any("suppressed" in n for n in report.notes)


def test_school_figures_of_too_few_students_are_suppressed_and_not_ranked(tmp_path: Path) -> None:
    c = build.compute(long_district(tmp_path, min_group_size=4))
    summary = c.tables["school_summary"].set_index("School Name")
    # North: 4 tested in math, 3 in science and in every subject; South: 3 everywhere
    assert summary.loc["North Elementary", "Average Math Score"] == pytest.approx(433.75)
    assert summary.loc["North Elementary", ["Average Science Score", "% Overall Proficient"]].isna().all()
    assert summary.loc["South Middle"].drop(["School Level", "Total Students"]).isna().all()
    assert (
        c.suppressed["school_summary"]
        .set_index(c.tables["school_summary"]["School Name"])
        .loc["North Elementary", "% Overall Proficient"]
    )
    assert "top_schools" not in c.tables and "4 or more students" in c.omitted["top_schools"]


def test_trend_table_with_two_years(built_long: tuple[Path, build.Report]) -> None:
    out, report = built_long
    trend = report.tables["district_trend"].set_index("School Year")
    assert trend.index.tolist() == ["2022-23", "2023-24"]
    assert trend.loc["2022-23", "Total Students"] == 2
    assert trend.loc[
        "2022-23", ["% Proficient Math", "% Proficient ELA", "% Proficient Science", "% Overall Proficient"]
    ].tolist() == pytest.approx([50, 100, 100, 50])
    assert trend.loc["2022-23", "Average Math Score"] == pytest.approx(427.5)
    assert trend.loc["2023-24", "% Overall Proficient"] == pytest.approx(200 / 6)
    assert (out / "charts" / "district_trend.png").exists()


def test_an_earlier_year_and_a_single_year(long: District, tmp_path: Path) -> None:
    c = build.compute(long, year=2023)
    assert c.spec.grades == ("05", "06")
    assert c.tables["district_summary"].iloc[0]["% Proficient Math"] == pytest.approx(50.0)
    assert "district_trend" not in c.tables and "no school year before 2022-23" in c.omitted["district_trend"]
    single = build.compute(long_district(tmp_path, rows=[r for r in LONG_ROWS if r[0] == 2024]))
    assert "one school year" in single.omitted["district_trend"]
    with pytest.raises(ValueError, match="2019"):
        build.compute(long, year=2019)


def test_mlflow_metrics_use_safe_names(built_long: tuple[Path, build.Report]) -> None:
    _, report = built_long
    metrics = build.mlflow_metrics(report.tables)
    assert metrics == build.mlflow_metrics(report)
    assert metrics["pct_proficient_science"] == pytest.approx(500 / 6)
    assert metrics["pct_overall_proficient"] == pytest.approx(200 / 6)
    assert set(metrics) == {
        "total_schools",
        "total_students",
        "avg_math",
        "avg_ela",
        "avg_science",
        "pct_proficient_math",
        "pct_proficient_ela",
        "pct_proficient_science",
        "pct_overall_proficient",
    }


# --- outputs -----------------------------------------------------------------------------------


def test_build_writes_every_table_as_csv(built: tuple[Path, build.Report, list]) -> None:
    out, report, _ = built
    assert list(report.tables) == [
        "district_summary",
        "school_summary",
        "top_schools",
        "bottom_schools",
        "math_scores_by_grade",
        "reading_scores_by_grade",
        "scores_by_spending",
        "scores_by_spending_weighted",
        "scores_by_size",
        "scores_by_size_weighted",
        "scores_by_type",
        "scores_by_type_weighted",
    ]
    assert report.omitted == {
        "district_trend": "the data has one school year (the current year); a trend needs two or more."
    }
    for name, table in report.tables.items():
        on_disk = pd.read_csv(out / f"{name}.csv")
        assert list(on_disk.columns) == list(table.columns)
        assert len(on_disk) == len(table)
    spending = pd.read_csv(out / "scores_by_spending.csv")
    # the empty bin is blank, not 0
    assert spending["Average Math Score"].isna().tolist() == [False, False, False, True, False]
    summary = pd.read_csv(out / "school_summary.csv")
    assert summary.loc[summary["School Name"] == "Alpha High", "Per Student Budget"].item() == 600.0
    expected = {
        "overall_by_school",
        "scores_by_spending",
        "scores_by_size",
        "scores_by_type",
        "score_distributions",
        "top_vs_bottom",
    }
    assert {p.stem for p in (out / "charts").iterdir()} == expected == set(report.charts)
    assert all((out / "charts" / p).read_bytes()[:4] == b"\x89PNG" for p in os.listdir(out / "charts"))
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".partial")]


def test_outside_bins_school_is_warned_and_listed(built: tuple[Path, build.Report, list]) -> None:
    out, report, caught = built
    messages = [str(w.message) for w in caught if issubclass(w.category, build.OutsideBinsWarning)]
    assert any(m.startswith("Gamma High is outside every spending bin") for m in messages)
    assert any("Epsilon High" in m for m in messages)
    assert messages == report.warnings
    page = (out / "report.html").read_text()
    assert "Gamma High is outside every spending bin" in page
    assert f'<tr class="flag"><td>{OUTSIDE_BINS}</td>' in page


def test_report_html_is_self_contained_formatted_and_anonymous(
    built: tuple[Path, build.Report, list],
) -> None:
    out, report, _ = built
    page = (out / "report.html").read_text()
    for value in ("$7,720.00", "$600.00", "54.55%", "63.64%", "72.73", "&lt;$585", "$645-680"):
        assert value in page, value
    assert page.count("data:image/png;base64,") == len(report.charts) == 6
    assert 'src="charts/' not in page and "http://" not in page and "https://" not in page
    for name in STUDENT_NAMES:
        assert name not in page
        for part in name.split():
            assert part not in page, part
    assert "student_id" not in page and "Student ID" not in page
    assert "What sets the top schools apart" in page
    assert "ties are broken by school name" in page
    assert "Pass mark by subject and grade" in page  # the cut scores in the definitions footer
    assert "pass mark 70" in page


def test_failed_step_leaves_no_partial_report(
    tmp_path: Path, classic: District, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CSVs are already written to the temporary folder when the first chart fails."""

    def broken(*args: object, **kwargs: object) -> bytes:
        raise RuntimeError("chart failed")

    monkeypatch.setattr(charts, "overall_by_school", broken)
    new = tmp_path / "new"
    with pytest.raises(RuntimeError, match="chart failed"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build.build_report(classic, new)
    assert not new.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "report.html").write_text("previous report")
    (existing / "notes.txt").write_text("not ours")
    with pytest.raises(RuntimeError, match="chart failed"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build.build_report(classic, existing)
    assert sorted(p.name for p in existing.iterdir()) == ["notes.txt", "report.html"]
    assert (existing / "report.html").read_text() == "previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]  # no temporary folder left


def test_many_schools_chart_shows_top_and_bottom() -> None:
    spec = t.ReportSpec(subjects=(t.ReportSubject("math", "Math"),), passing_word="Proficient")
    rng = np.random.default_rng(0)
    summary = pd.DataFrame(
        {
            "School Name": [f"School {i:03d}" for i in range(400)],
            "% Overall Proficient": rng.uniform(10, 90, 400),
        }
    )
    png = charts.overall_by_school(summary, spec, 50.0)
    few = charts.overall_by_school(summary.head(30), spec, 50.0)
    height = int.from_bytes(png[20:24], "big")
    # 40 named rows and one summary row: not 400 rows tall, and not shorter than 30 rows
    assert int.from_bytes(few[20:24], "big") < height < 0.24 * 60 * charts.DPI


def test_score_bands_have_an_edge_at_the_cut() -> None:
    edges = charts.band_edges(-137.0, 151.0, 0.0)
    assert 0.0 in edges and np.allclose(np.diff(edges), 10.0)
    assert edges[0] <= -137 and edges[-1] >= 151
    assert 70.0 in charts.band_edges(31.0, 100.0, 70.0)


@pytest.mark.slow  # ~6 s, almost all of it MLflow creating its SQLite store
def test_log_to_mlflow(
    built: tuple[Path, build.Report, list], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from features.settings import REPORTS_EXPERIMENT

    out, report, _ = built
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = build.log_to_mlflow(out, params={"pass_mark": 70.0}, metrics=build.mlflow_metrics(report.tables))

    import mlflow

    run = mlflow.get_run(run_id)
    assert mlflow.get_experiment(run.info.experiment_id).name == REPORTS_EXPERIMENT
    assert run.info.run_name == build.MLFLOW_RUN_NAME
    assert run.data.params["pass_mark"] == "70.0"
    assert run.data.metrics["pct_overall_proficient"] == pytest.approx(600 / 11)
    assert run.data.metrics["avg_math"] == pytest.approx(800 / 11)
    listed = mlflow.artifacts.list_artifacts(run_id=run_id, artifact_path="report")
    assert {"report/report.html", "report/school_summary.csv", "report/charts"} <= {a.path for a in listed}


# --- the import graph --------------------------------------------------------------------------


def reports_imports() -> dict[str, set[str]]:
    """Module -> the reports modules it imports (anywhere in the file, TYPE_CHECKING blocks too)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((REPO / "reports").glob("*.py")):
        module = f"reports.{path.stem}"
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "reports":
                    found |= {f"reports.{a.name}" for a in node.names}
                elif node.module.startswith("reports."):
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("reports.")}
        graph[module] = found - {module}
    return graph


def test_no_import_cycle_in_reports() -> None:
    graph = reports_imports()
    assert graph["reports.formatting"] == set()  # the shared helpers import no report module
    assert (
        "reports.narrative" not in graph["reports.html"] or "reports.html" not in graph["reports.narrative"]
    )
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in graph.get(module, ()):
            assert state.get(dep) != 1, f"import cycle: {' -> '.join([*path, module, dep])}"
            if dep not in state:
                visit(dep, [*path, module])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [])
    # and every module is importable (a cycle would surface as a partially initialised module)
    for module in graph:
        assert importlib.import_module(module).__name__ == module
