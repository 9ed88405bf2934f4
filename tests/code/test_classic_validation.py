"""The data contract: every validation error names file, row, column and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from features.io import load_classic_tables as load_district
from features.io import normalise_header
from features.validation import ContractError
from pipelines.cli import app

SCHOOLS = """School ID,school_name,type,size,budget
0,Huang High School,District,3,1910635
1,Figueroa High School,Charter,2,1884411
"""
STUDENTS = """Student ID,student_name,gender,grade,school_name,reading_score,math_score
0,Paul Bradley,M,9th,Huang High School,66,79
1,Victor Smith,M,12th,Huang High School,94,61
2,Kevin Rodriguez,M,12th,Figueroa High School,90,60
3,Dr. Richard Scott,M,12th,Huang High School,67,58
4,Bonnie Ray,F,9th,Figueroa High School,97,84
"""


def write(
    folder: Path, schools: str = SCHOOLS, students: str = STUDENTS, encoding: str = "utf-8"
) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "schools.csv").write_text(schools, encoding=encoding)
    (folder / "students.csv").write_text(students, encoding=encoding)
    return folder / "schools.csv", folder / "students.csv"


def problems_of(schools: Path, students: Path) -> list[str]:
    with pytest.raises(ContractError) as err:
        load_district(schools, students)
    return [str(p) for p in err.value.problems]


def test_classic_district_format_loads_unchanged(tmp_path: Path) -> None:
    district = load_district(*write(tmp_path))
    assert list(district.students.columns) == [
        "student_id",
        "student_name",
        "gender",
        "grade",
        "school_name",
        "reading_score",
        "math_score",
    ]
    assert district.students["math_score"].tolist() == [79, 61, 60, 58, 84]
    assert district.schools["school_id"].tolist() == [0, 1]
    assert district.warnings == ()


@pytest.mark.parametrize(
    "header,expected",
    [
        ("Student ID", "student_id"),
        (" Math Score ", "math_score"),
        ("student_id", "student_id"),
        ("School-ID", "school_id"),
    ],
)
def test_header_normalisation(header: str, expected: str) -> None:
    assert normalise_header(header) == expected


def test_missing_file_is_named(tmp_path: Path) -> None:
    schools, _ = write(tmp_path)
    (problem,) = problems_of(schools, tmp_path / "nope.csv")
    assert "nope.csv" in problem and "not found" in problem


def test_missing_column(tmp_path: Path) -> None:
    students = (
        STUDENTS.replace(",math_score", "")
        .replace(",79\n", "\n")
        .replace(",61\n", "\n")
        .replace(",60\n", "\n")
        .replace(",58\n", "\n")
        .replace(",84\n", "\n")
    )
    (problem,) = problems_of(*write(tmp_path, students=students))
    assert "students.csv" in problem and "column 'math_score'" in problem and "required column" in problem


def test_wrong_type_names_row_and_value(tmp_path: Path) -> None:
    (problem,) = problems_of(*write(tmp_path, students=STUDENTS.replace(",66,79", ",sixty,79")))
    assert problem == (
        f"{tmp_path / 'students.csv'}, row 1, column 'reading_score': expected a number 0 to 100; "
        "found 'sixty'"
    )


def test_score_out_of_range(tmp_path: Path) -> None:
    (problem,) = problems_of(*write(tmp_path, students=STUDENTS.replace(",94,61", ",94,101")))
    assert "row 2, column 'math_score': expected a number 0 to 100; found '101" in problem


def test_unknown_grade(tmp_path: Path) -> None:
    (problem,) = problems_of(
        *write(tmp_path, students=STUDENTS.replace("M,12th,Figueroa", "M,13th,Figueroa"))
    )
    assert "row 3, column 'grade': expected one of 9th, 10th, 11th, 12th; found '13th'" in problem


def test_duplicate_student_id(tmp_path: Path) -> None:
    (problem,) = problems_of(*write(tmp_path, students=STUDENTS.replace("4,Bonnie", "3,Bonnie")))
    assert "rows 4, 5, column 'student_id': expected a unique value (duplicate found)" in problem


def test_student_school_not_in_schools_table(tmp_path: Path) -> None:
    (problem,) = problems_of(*write(tmp_path, students=STUDENTS.replace("F,9th,Figueroa", "F,9th,Nowhere")))
    assert "students.csv, row 5, column 'school_name': expected a school listed in" in problem
    assert "found 'Nowhere High School'" in problem


@pytest.mark.parametrize(
    "column,old,new",
    [
        ("budget", "1884411", "-5"),
        ("budget", "1884411", "0"),
        ("size", "Charter,2", "Charter,0"),
        ("size", "Charter,2", "Charter,-2"),
    ],
)
def test_non_positive_budget_or_size(tmp_path: Path, column: str, old: str, new: str) -> None:
    (problem,) = problems_of(*write(tmp_path, schools=SCHOOLS.replace(old, new)))
    assert f"schools.csv, row 2, column '{column}': expected" in problem and "greater than 0" in problem


def test_empty_table(tmp_path: Path) -> None:
    (problem,) = problems_of(*write(tmp_path, students=STUDENTS.splitlines()[0] + "\n"))
    assert "students.csv: expected at least one data row; the table is empty" in problem


def test_several_problems_reported_together(tmp_path: Path) -> None:
    students = STUDENTS.replace(",66,79", ",66,abc").replace("M,12th,Figueroa", "M,5th,Figueroa")
    problems = problems_of(*write(tmp_path, schools=SCHOOLS.replace("1884411", "-1"), students=students))
    assert len(problems) == 3


def test_size_disagreeing_with_student_count_warns(tmp_path: Path) -> None:
    district = load_district(*write(tmp_path, schools=SCHOOLS.replace("District,3", "District,300")))
    assert len(district.students) == 5
    assert any("Huang High School' states size 300 but has 3 students" in w for w in district.warnings)


def test_messy_csv_is_tolerated_with_warnings(tmp_path: Path) -> None:
    schools = SCHOOLS.replace("School ID,", ",School ID,").replace("\n0,", "\n,0,").replace("\n1,", "\n,1,")
    schools = schools.replace("Huang High School", "  Huang High School ")
    students = STUDENTS.replace(",Paul Bradley,M,", ", Paul Bradley , M ,")
    district = load_district(*write(tmp_path, schools="\ufeff" + schools, students=students))
    assert district.schools["school_name"].tolist() == ["Huang High School", "Figueroa High School"]
    assert district.students.loc[0, "gender"] == "M"
    assert "school_id" in district.schools.columns and len(district.schools.columns) == 5
    joined = " | ".join(district.warnings)
    assert "byte-order mark" in joined and "unnamed empty column" in joined and "whitespace" in joined


def test_optional_columns_are_validated(tmp_path: Path) -> None:
    students = STUDENTS.replace("math_score\n", "math_score,prior_days_absent,english_learner\n")
    rows = students.splitlines()
    rows[1:] = [r + ",3,yes" for r in rows[1:]]
    rows[2] = rows[2].replace(",3,yes", ",200,maybe")
    problems = problems_of(*write(tmp_path, students="\n".join(rows) + "\n"))
    assert any("row 2, column 'prior_days_absent': expected a whole number 0 to 180" in p for p in problems)
    assert any("row 2, column 'english_learner': expected a yes/no value" in p for p in problems)


def test_cli_validate_exits_non_zero_with_every_problem(tmp_path: Path) -> None:
    schools, students = write(tmp_path, students=STUDENTS.replace(",94,61", ",94,101"))
    result = CliRunner().invoke(app, ["validate", "--schools", str(schools), "--students", str(students)])
    assert result.exit_code == 1
    assert "column 'math_score'" in result.output


def test_cli_validate_ok(tmp_path: Path) -> None:
    schools, students = write(tmp_path)
    result = CliRunner().invoke(app, ["validate", "--schools", str(schools), "--students", str(students)])
    assert result.exit_code == 0, result.output
    assert "5 students, 2 schools, one target year (without prior-year columns)" in result.output


def test_generated_district_satisfies_the_contract(small_district: Path) -> None:
    district = load_district(small_district / "schools.csv", small_district / "students.csv")
    assert len(district.students) == 3000
    assert district.warnings == ()
