"""The `growth` command on user mistakes: one clear message, exit code 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.cli import app


@pytest.fixture()
def classic_without_priors(small_district: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The classic two tables with every prior-year column removed (the widely used district files)."""
    students = pd.read_csv(small_district / "students.csv")
    students = students.drop(columns=[c for c in students.columns if c.startswith("prior_")])
    path = tmp_path / "students.csv"
    students.to_csv(path, index=False)
    return small_district / "schools.csv", path


@pytest.mark.parametrize("command", ["tune", "train"])
def test_growth_model_without_prior_scores_says_which_columns_it_needs(
    command: str, classic_without_priors: tuple[Path, Path], isolated_stores: Path
) -> None:
    schools, students = classic_without_priors
    result = CliRunner().invoke(app, [command, "--schools", str(schools), "--students", str(students)])
    assert result.exit_code == 1, result.output
    assert "the growth model needs each student's score of the year before" in result.output
    assert "add the columns prior_math_score, prior_reading_score" in result.output
    assert "Traceback" not in result.output and "KeyError" not in result.output


def test_classic_files_without_priors_still_validate(classic_without_priors: tuple[Path, Path]) -> None:
    schools, students = classic_without_priors
    result = CliRunner().invoke(app, ["validate", "--schools", str(schools), "--students", str(students)])
    assert result.exit_code == 0, result.output
    assert "3,000 students" in result.output


def test_half_of_the_classic_pair_is_refused(small_district: Path) -> None:
    result = CliRunner().invoke(app, ["validate", "--schools", str(small_district / "schools.csv")])
    assert result.exit_code == 1
    assert "the classic format needs both --schools and --students" in result.output


def test_missing_default_config_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["validate"])
    assert result.exit_code == 1
    assert "no district config at data/district/district.toml" in result.output
    assert "growth generate" in result.output


def test_settings_prints_one_value_for_scripts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROWTH_OPTUNA_STORAGE", "postgresql://postgres@127.0.0.1:5432/growth")
    result = CliRunner().invoke(app, ["settings", "--get", "optuna_storage"])
    assert result.exit_code == 0 and result.output.strip() == "postgresql://postgres@127.0.0.1:5432/growth"
    result = CliRunner().invoke(app, ["settings", "--get", "colour"])
    assert result.exit_code == 1 and "unknown setting 'colour'" in result.output


@pytest.mark.slow
def test_sgp_command_writes_every_target_year(long_district: Path, tmp_path: Path) -> None:
    out = tmp_path / "sgp.csv"
    config = str(long_district / "district.toml")
    result = CliRunner().invoke(app, ["sgp", "--config", config, "--year", "2024", "--out", str(out)])
    assert result.exit_code == 0, result.output
    sgps = pd.read_csv(out, dtype={"student_id": str})
    assert set(sgps["school_year"]) == {2024} and set(sgps["subject"]) == {"math", "reading"}
    assert sgps["student_id"].str.len().eq(10).all()  # leading zeros kept
    assert sgps["sgp"].dropna().between(1, 99).all() and sgps["sgp"].notna().mean() > 0.9
    bad = CliRunner().invoke(app, ["sgp", "--config", config, "--year", "2019", "--out", str(out)])
    assert bad.exit_code == 1 and "no growth pairs for 2019" in bad.output and "Traceback" not in bad.output


def _without_proficiency(config_text: str) -> str:
    """The config with no achievement levels, proficient level or cut scores (scores only)."""
    kept, in_cuts = [], False
    for line in config_text.splitlines():
        if line.startswith("["):
            in_cuts = line.rstrip().endswith(".cuts]")
        if in_cuts or line.startswith(("achievement_level =", "levels =", "proficient =")):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def test_a_district_without_levels_or_cuts_validates_and_says_why_there_is_no_support_model(
    long_district: Path, tmp_path: Path, isolated_stores: Path
) -> None:
    import shutil
    import tomllib

    folder = tmp_path / "district"
    shutil.copytree(long_district, folder)
    config = folder / "scores_only.toml"
    config.write_text(_without_proficiency((long_district / "district.toml").read_text()))
    subjects = tomllib.loads(config.read_text())["subjects"]
    assert all("levels" not in s and "cuts" not in s for s in subjects.values())
    runner = CliRunner()
    validated = runner.invoke(app, ["validate", "--config", str(config)])
    assert validated.exit_code == 0, validated.output
    asked = runner.invoke(app, ["tune", "--config", str(config), "--subject", "math", "--task", "support"])
    assert asked.exit_code == 1 and "Traceback" not in asked.output
    assert "math: no needs-support model: the config gives no proficient level" in asked.output


def _without_schools_file(config_text: str) -> str:
    """The config with no schools table (a records-only export)."""
    kept, in_school_columns = [], False
    for line in config_text.splitlines():
        if line.startswith("["):
            in_school_columns = line.strip() in ("[school_columns]", "[values.type]")
        if in_school_columns or line.startswith("schools ="):
            continue
        kept.append(line)
    return "\n".join(kept) + "\n"


def test_grade_tables_without_a_schools_file_list_every_school(long_district: Path, tmp_path: Path) -> None:
    """Each grade's aggregate lists every school of the year, as with a schools table: the table by
    grade shows a middle school's grades too, not only the schools teaching the first grade."""
    import shutil

    folder = tmp_path / "district"
    shutil.copytree(long_district, folder)
    config = folder / "records_only.toml"
    config.write_text(_without_schools_file((long_district / "district.toml").read_text()))
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", "--config", str(config), "--no-growth", "--out", str(out)])
    assert result.exit_code == 0, result.output
    by_grade = pd.read_csv(out / "math_scores_by_grade.csv", dtype={"School Name": str})
    schools = pd.read_csv(out / "school_summary.csv")
    assert len(by_grade) == len(schools) > 3
    assert by_grade.drop(columns="School Name").notna().any(axis=1).all()  # every school has a grade


def test_predict_says_which_subject_has_no_needs_support_champion(
    long_district: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A support champion that failed its gate is not served: the file's column for it is empty, and
    the command says so instead of leaving a column of NaN unexplained."""
    import serving.batch
    from serving.predictor import Served

    out = tmp_path / "p.parquet"

    def scored(*args: object, **kwargs: object) -> serving.batch.BatchResult:
        return serving.batch.BatchResult(2025, 10, 0, out, None, {}, without_support=["math"])

    monkeypatch.setattr(serving.batch, "score_year", scored)
    result = CliRunner().invoke(
        app, ["predict", "--config", str(long_district / "district.toml"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "no needs-support champion for math (none passed its gate)" in result.output
    assert "reading" not in result.output
    served = Served(growth={"math": object(), "reading": object()}, support={"reading": object()})
    assert served.without_support == ["math"]
