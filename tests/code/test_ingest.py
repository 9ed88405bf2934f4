"""Real district exports: a long-format fixture on a 200-800 scale with grades 3-8, the vendor's own
headers and codes, string ids with leading zeros, and every unusual history; then each bad input
with its message."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.district_config import ConfigError, load_config
from features.ingest import load_district
from features.pairs import growth_pairs
from features.validation import ContractError
from pipelines.cli import app

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "long_district"


@pytest.fixture()
def district_dir(tmp_path: Path) -> Path:
    """A private copy of the fixture district, for tests that break it."""
    target = tmp_path / "district"
    shutil.copytree(FIXTURE, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def messages(err: ContractError | ConfigError) -> str:
    return str(err)


# --------------------------------------------------------------------------- the happy path


def test_long_export_loads_with_its_own_headers_codes_and_scale() -> None:
    district = load_district(FIXTURE / "district.toml")
    students = district.students
    assert district.years == [2021, 2022, 2023]
    assert district.subject_names == ["math", "reading"]
    assert sorted(students["student_id"].astype(str).unique()) == [
        "00012",
        "00034",
        "00056",
        "00078",
        "00090",
    ]
    row = students[(students["student_id"] == "00078") & (students["school_year"] == 2022)].iloc[0]
    assert row["grade"] == "05" and row["score_math"] == 545 and row["gender"] == "F"
    assert row["econ_disadvantaged"] == 0.0 and row["days_absent"] == 2.0
    assert row["school_name"] == "Alder Elementary"  # from the schools file: the records have no names
    # Grade 5 math cuts are 440 (Proficient) and 540 (Advanced): 545 is Advanced, so proficient.
    assert row["level_math"] == "Advanced" and row["proficient_math"] == 1.0
    below = students[(students["student_id"] == "00012") & (students["school_year"] == 2021)].iloc[0]
    assert (
        below["score_reading"] == 395
        and below["level_reading"] == "Below"
        and below["proficient_reading"] == 0.0
    )
    untested = students[(students["student_id"] == "00090") & (students["school_year"] == 2021)].iloc[0]
    assert np.isnan(untested["score_reading"]) and np.isnan(untested["proficient_reading"])


def test_every_unusual_history_gets_its_documented_status() -> None:
    pairs = growth_pairs(load_district(FIXTURE / "district.toml"))
    status = {
        (r.student_id, r.school_year): (r.pair_status_math, r.pair_status_reading) for r in pairs.itertuples()
    }
    assert status[("00012", 2022)] == ("ok", "ok")
    assert status[("00034", 2022)] == ("repeated_grade", "repeated_grade")  # grade 4 twice
    assert status[("00034", 2023)] == ("ok", "ok")
    assert status[("00056", 2022)] == ("no_prior_record", "no_prior_record")  # new to the district
    assert status[("00078", 2023)] == ("school_changed", "school_changed")  # credited to the new school
    assert status[("00090", 2022)] == ("ok", "no_prior_score")  # not tested in reading in 2021
    changed = pairs[(pairs["student_id"] == "00078") & (pairs["school_year"] == 2023)].iloc[0]
    assert changed["school_id"] == "0202" and changed["prior_school_id"] == "0101"
    assert changed["prior_math_score"] == 545 and changed["prior2_math_score"] == 500
    assert changed["math_growth"] == 575 - 545 and changed["prior_days_absent"] == 2.0  # last year's absences


def test_wide_and_parquet_exports_give_the_same_table(district_dir: Path) -> None:
    long = load_district(FIXTURE / "district.toml").students
    for path in sorted(district_dir.glob("scores_*.csv")):
        frame = pd.read_csv(path, dtype=str)
        wide = frame.pivot_table(
            index=[c for c in frame.columns if c not in ("Content", "Scale Score")],
            columns="Content",
            values="Scale Score",
            aggfunc="first",
        ).reset_index()
        wide.columns.name = None
        wide.rename(columns={"MA": "Math SS", "ELA": "ELA SS"}).to_parquet(path.with_suffix(".parquet"))
        path.unlink()
    config = (district_dir / "district.toml").read_text()
    config = config.replace('format = "long"', 'format = "wide"').replace(
        'records = ["scores_*.csv"]', 'records = ["scores_*.parquet"]'
    )
    config = config.replace('subject = "Content"\n', "").replace('scale_score = "Scale Score"\n', "")
    config = config.replace('codes = ["MA"]', 'score_column = "Math SS"').replace(
        'codes = ["ELA"]', 'score_column = "ELA SS"'
    )
    (district_dir / "district.toml").write_text(config)
    wide = load_district(district_dir / "district.toml").students
    columns = ["student_id", "school_year", "grade", "score_math", "score_reading", "proficient_math"]
    pd.testing.assert_frame_equal(wide[columns].astype(str), long[columns].astype(str))


def test_school_year_from_the_file_name(district_dir: Path) -> None:
    for path in district_dir.glob("scores_*.csv"):
        frame = pd.read_csv(path, dtype=str).drop(columns=["Test Year"])
        frame.to_csv(path, index=False)
    edit(district_dir / "district.toml", 'school_year = "Test Year"\n', "")
    assert load_district(district_dir / "district.toml").years == [2021, 2022, 2023]


def test_duplicates_are_an_error_naming_the_rows_unless_a_rule_is_given(district_dir: Path) -> None:
    path = district_dir / "scores_2023.csv"
    path.write_text(path.read_text() + "00012,2022-23,MA,05,490,0101,Girl,Y,3\n")
    with pytest.raises(ContractError) as err:
        load_district(district_dir / "district.toml")
    text = messages(err.value)
    assert "scores_2023.csv, rows 1, 9, column 'student_id'" in text
    assert "one row per student, subject and school year" in text and 'duplicates = "highest_score"' in text
    edit(district_dir / "district.toml", "grades = [", 'duplicates = "highest_score"\ngrades = [')
    district = load_district(district_dir / "district.toml")
    kept = district.students[
        (district.students["student_id"] == "00012") & (district.students["school_year"] == 2023)
    ]
    assert kept["score_math"].item() == 490
    assert district.summary.duplicate_groups == 1 and district.summary.duplicate_rows_dropped == 1
    assert any("rule 'highest_score' dropped 1 row" in line for line in district.summary.lines())


# --------------------------------------------------------------------------- bad data: file, row, column


def test_unmapped_code_names_file_row_column_and_config_key(district_dir: Path) -> None:
    edit(
        district_dir / "scores_2022.csv",
        "00056,2021-22,MA,06,600,0202,Girl",
        "00056,2021-22,MA,06,600,0202,Nonbinary",
    )
    with pytest.raises(ContractError) as err:
        load_district(district_dir / "district.toml")
    assert (
        "scores_2022.csv, row 5, column 'Gender': expected a code listed in the config (key "
        "'values.gender') that maps to one of F, M, X; found 'Nonbinary'"
    ) in messages(err.value)


def test_score_outside_the_declared_scale(district_dir: Path) -> None:
    edit(district_dir / "scores_2021.csv", "00034,2020-21,MA,04,430", "00034,2020-21,MA,04,930")
    with pytest.raises(ContractError) as err:
        load_district(district_dir / "district.toml")
    assert (
        "scores_2021.csv, row 3, column 'Scale Score': expected a Math score in grade 04 within the declared "
        "scale 200 to 800 (config key 'subjects.math.scale'); found '930'"
    ) in messages(err.value)


def test_unknown_grade_and_subject_codes(district_dir: Path) -> None:
    edit(district_dir / "scores_2022.csv", "00090,2021-22,MA,08", "00090,2021-22,MA,09")
    edit(district_dir / "scores_2022.csv", "00090,2021-22,ELA,08", "00090,2021-22,SCI,08")
    with pytest.raises(ContractError) as err:
        load_district(district_dir / "district.toml")
    text = messages(err.value)
    assert "scores_2022.csv, row 9, column 'Grade': expected one of the grades 03, 04, 05, 06, 07, 08" in text
    assert (
        "scores_2022.csv, row 10, column 'Content': expected a subject code listed in a [subjects.*] codes"
        in text
    )
    assert "found 'SCI'" in text


def test_school_missing_from_the_schools_file(district_dir: Path) -> None:
    edit(district_dir / "scores_2023.csv", "00078,2022-23,MA,06,575,0202", "00078,2022-23,MA,06,575,0303")
    with pytest.raises(ContractError) as err:
        load_district(district_dir / "district.toml")
    assert (
        "scores_2023.csv, row 7, column 'School Code': expected a school listed in schools.csv; found '0303'"
        in (messages(err.value))
    )


# ---------------------------------------------------------------- bad configs: file, key, expectation


def test_unknown_key_names_the_key_and_what_is_allowed(district_dir: Path) -> None:
    edit(district_dir / "district.toml", "[school_columns]", '[school_columns]\ncolour = "x"')
    with pytest.raises(ConfigError) as err:
        load_config(district_dir / "district.toml")
    assert (
        "key 'school_columns.colour': an unknown key; allowed here: "
        "budget, level, school_id, school_name, size, type" in (messages(err.value))
    )
    assert str(district_dir / "district.toml") in messages(err.value)


def test_mapped_column_missing_from_a_file(district_dir: Path) -> None:
    edit(district_dir / "district.toml", 'gender = "Gender"', 'gender = "Sex"')
    with pytest.raises(ConfigError) as err:
        load_district(district_dir / "district.toml")
    assert (
        "key 'columns.gender': column 'Sex' is not in scores_2021.csv; its columns are Student Identifier, "
        "Test Year, Content"
    ) in messages(err.value)


def test_cut_scores_must_match_the_levels(district_dir: Path) -> None:
    edit(district_dir / "district.toml", '"04" = [420, 520]', '"04" = [420]')
    with pytest.raises(ConfigError) as err:
        load_config(district_dir / "district.toml")
    assert ("key 'subjects.math.cuts.04': 2 cut scores (one per level above 'Below'); found 1") in messages(
        err.value
    )


def test_top_level_key_written_inside_a_table_gets_a_hint(district_dir: Path) -> None:
    text = (district_dir / "district.toml").read_text()
    text = text.replace('grades = ["03", "04", "05", "06", "07", "08"]\n', "")
    (district_dir / "district.toml").write_text(text.replace('"Boy" = "M"', '"Boy" = "M"\ngrades = ["03"]'))
    with pytest.raises(ConfigError) as err:
        load_config(district_dir / "district.toml")
    text = messages(err.value)
    assert (
        "key 'values.gender.grades': 'grades' is a top-level key: write it before the first [table] header"
        in text
    )


def test_cli_exits_1_with_the_config_problem_and_no_traceback(district_dir: Path) -> None:
    edit(district_dir / "district.toml", "grades = [", 'duplicates = "first"\ngrades = [')
    result = CliRunner().invoke(app, ["validate", "--config", str(district_dir / "district.toml")])
    assert result.exit_code == 1
    assert "key 'duplicates': 'error', 'highest_score' or 'last'; found 'first'" in result.output
    assert "Traceback" not in result.output


def test_cli_validate_prints_what_was_read_and_the_pair_reasons() -> None:
    result = CliRunner().invoke(app, ["validate", "--config", str(FIXTURE / "district.toml")])
    assert result.exit_code == 0, result.output
    assert "read 25 rows from 3 file(s)" in result.output
    assert "5 students, 13 student-years, 2 schools, school years 2021, 2022, 2023" in result.output
    assert "repeated_grade" in result.output and "no_prior_record" in result.output


def test_cli_row_numbers_are_data_rows_and_the_message_says_which_line_that_is(district_dir: Path) -> None:
    path = district_dir / "scores_2021.csv"
    lines = path.read_text().splitlines()
    fields = lines[2].split(",")
    fields[4] = "abc"  # Scale Score of the second data row, line 3
    lines[2] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["validate", "--config", str(district_dir / "district.toml")])
    assert result.exit_code == 1
    assert "scores_2021.csv, row 2, column 'Scale Score'" in result.output
    assert "row N is line N + 1 of a CSV file" in result.output
    assert "Traceback" not in result.output


def test_a_problem_names_what_was_found_once(district_dir: Path) -> None:
    from features.validation import Problem

    path = district_dir / "scores_2021.csv"
    lines = path.read_text().splitlines()
    fields = lines[2].split(",")
    fields[4] = ""  # an empty Scale Score in the second data row
    lines[2] = ",".join(fields)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ContractError) as err:
        load_district(district_dir / "district.toml")
    empty = [str(p) for p in err.value.problems if "empty cell" in str(p)]
    assert empty == [f"{path}, row 2, column 'Scale Score': expected a scale score, found an empty cell"], (
        empty
    )
    text = Problem("a.csv", "ScaleScore", (3, 5), "a number (a scale score)", ("abc", "x"))
    assert str(text) == (
        "a.csv, rows 3, 5, column 'ScaleScore': expected a number (a scale score); found 'abc', 'x'"
    )
