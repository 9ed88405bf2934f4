"""Batch scoring (``growth predict``): every student of a year, written atomically, the unscorable listed
with their reason, and the same numbers as the HTTP path for the same records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from pipelines.cli import app

pytestmark = pytest.mark.slow  # batch scoring with the session's trained champions


@pytest.fixture(scope="module")
def forecast(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("predict") / "predictions.parquet"
    result = CliRunner().invoke(
        app, ["predict", "--config", str(trained.district / "district.toml"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def test_forecast_scores_every_student_or_says_why_not(trained, forecast: Path) -> None:
    from training.data import Source, load_data

    data = load_data(Source(config=trained.district / "district.toml"))
    latest = data.district.year()
    scored = pd.read_parquet(forecast)
    side = pd.read_csv(forecast.with_name("predictions_unscored.csv"), dtype=str)
    assert len(scored) + len(side) == latest["student_id"].nunique()
    assert not set(scored["student_id"]) & set(side["student_id"])
    top_grade = data.district.grades[-1]
    assert (
        side.loc[side["current_grade"] == top_grade, "reason"]
        == "no next grade (the last grade of the config)"
    ).all()
    assert (side["current_grade"] == top_grade).any()
    assert scored["school_year"].eq(data.district.years[-1] + 1).all()
    for subject in ("math", "reading"):
        has = scored[f"{subject}_predicted_growth"].notna()
        assert has.mean() > 0.95
        inside = scored.loc[has, f"{subject}_growth_low"] < scored.loc[has, f"{subject}_predicted_growth"]
        assert inside.all()
        assert scored.loc[has, f"{subject}_needs_support_probability"].between(0, 1).all()
        assert scored.loc[has, f"{subject}_not_scored"].isna().all()
        assert (~has).any()  # students with only the other subject's prior: scored, with the reason
        assert scored.loc[~has, f"{subject}_not_scored"].eq(f"no prior_{subject}_score").all()
    assert not list(forecast.parent.glob(".*"))  # no temporary file left behind


def test_historical_year_adds_actual_growth_and_sgp_and_lists_the_unscorable(trained, tmp_path: Path) -> None:
    out = tmp_path / "year.csv"
    year = "2025"
    result = CliRunner().invoke(
        app,
        ["predict", "--config", str(trained.district / "district.toml"), "--year", year, "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(out, dtype={"student_id": str})
    side = pd.read_csv(tmp_path / "year_unscored.csv", dtype=str)
    assert "no prior-year score in any served subject (math, reading)" in set(side["reason"])
    assert {"math_sgp", "reading_sgp", "math_actual_growth", "math_pair_status"} <= set(scored.columns)
    ok = scored["math_pair_status"].eq("ok")
    assert scored.loc[ok, "math_sgp"].between(1, 99).all()


def test_a_past_year_skips_the_aggregates_and_writes_what_the_whole_load_gives(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`growth predict --year` builds only the growth pairs (no school-year aggregates, no fingerprint);
    its file equals the one scored from the fully loaded data, SGPs included."""
    import serving.batch as batch
    from training.data import Source, load_data

    source = Source(config=trained.district / "district.toml")
    full = batch.score_year(source, 2025, tmp_path / "full.parquet", data=load_data(source))

    def no_full_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("a past year loaded the aggregates it does not use")

    monkeypatch.setattr(batch, "load_data", no_full_load)
    light = batch.score_year(source, 2025, tmp_path / "light.parquet", needed_years_only=True)
    assert (light.scored, light.unscorable) == (full.scored, full.unscorable)
    written = pd.read_parquet(tmp_path / "light.parquet")
    assert written["math_sgp"].notna().mean() > 0.8
    pd.testing.assert_frame_equal(written, pd.read_parquet(tmp_path / "full.parquet"))


def test_a_past_years_sgps_are_those_of_the_growth_measures(trained, tmp_path: Path) -> None:
    """The SGPs `growth predict --year` fits beside the scoring are the ones `growth sgp` and the growth
    report give (training.measures.student_sgps) for the same students."""
    import serving.batch as batch
    from training.data import Source, load_data
    from training.measures import student_sgps

    source = Source(config=trained.district / "district.toml")
    data = load_data(source)
    result = batch.score_year(source, 2025, tmp_path / "year.parquet", data=data)
    scored = pd.read_parquet(result.out).set_index("student_id")
    measured = student_sgps(data, 2025)
    for subject in data.subjects:
        own = measured[measured["subject"] == subject].set_index("student_id")["sgp"].dropna()
        assert len(own) > 100
        pd.testing.assert_series_equal(
            scored.loc[own.index, f"{subject}_sgp"].astype("Int64"), own.astype("Int64"), check_names=False
        )


def test_a_failure_while_the_sgps_are_fitted_stops_their_workers_and_writes_nothing(
    trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import serving.batch as batch
    from training.data import Source

    started = []

    def spy(data, year):
        started.append(real(data, year))
        return started[-1]

    def broken(*args, **kwargs):
        raise RuntimeError("scoring failed")

    real = batch.start_year_sgps
    monkeypatch.setattr(batch, "start_year_sgps", spy)
    monkeypatch.setattr(batch, "score_frame", broken)
    source = Source(config=trained.district / "district.toml")
    with pytest.raises(RuntimeError, match="scoring failed"):
        batch.score_year(source, 2025, tmp_path / "year.parquet", needed_years_only=True)
    assert len(started) == 1 and started[0].run._pool is None  # the workers were stopped
    assert not list(tmp_path.iterdir())


def test_batch_file_equals_the_http_logic_for_the_same_records(trained, forecast: Path) -> None:
    """The rows written by `growth predict` and Predictor.predict (what POST /predict runs) agree exactly."""
    from serving.batch import forecast_frame
    from serving.predictor import Predictor
    from training.data import Source, load_data

    data = load_data(Source(config=trained.district / "district.toml"))
    frame = forecast_frame(data, data.district.years[-1] + 1)
    scored = pd.read_parquet(forecast).set_index("student_id")
    predictor = Predictor.from_store()
    sample = frame[frame["student_id"].isin(scored.index)].sample(25, random_state=1)
    columns = ["student_id", *[c for c in predictor.columns if c in sample]]
    records = sample[columns].astype(object).where(sample[columns].notna(), None).to_dict("records")
    answer = predictor.predict(records)
    for record, prediction in zip(records, answer["predictions"], strict=True):
        row = scored.loc[record["student_id"]]
        for subject in ("math", "reading"):
            if prediction[subject] is None:
                assert np.isnan(row[f"{subject}_predicted_growth"])
                continue
            assert prediction[subject]["predicted_growth"] == row[f"{subject}_predicted_growth"]
            assert prediction[subject]["growth_interval"] == [
                row[f"{subject}_growth_low"],
                row[f"{subject}_growth_high"],
            ]
            assert (
                prediction[subject]["needs_support_probability"]
                == row[f"{subject}_needs_support_probability"]
            )


def test_chunks_scored_in_parallel_threads_give_the_numbers_of_one_call(trained, monkeypatch) -> None:
    """score_frame's threads and chunk boundaries change no number: the same frame as one call."""
    from serving import batch
    from serving.predictor import Predictor
    from training.data import Source, load_data

    data = load_data(Source(config=trained.district / "district.toml"))
    frame = batch.forecast_frame(data, data.district.years[-1] + 1)
    predictor = Predictor.from_store()
    frame = frame[batch.unscorable_reasons(frame, predictor, forecast=True) == ""].head(3000)
    whole = predictor.predict_frame(frame)
    monkeypatch.setattr(batch, "CHUNK", 37)  # 82 chunks, the last one short
    for threads in (1, 2, 4):
        scored = batch.score_frame(predictor, frame, threads=threads)
        assert scored.index.equals(frame.index)
        pd.testing.assert_frame_equal(scored, whole, check_exact=True)


def test_predict_refuses_a_bad_output_name_and_a_year_outside_the_data(trained, tmp_path: Path) -> None:
    config = str(trained.district / "district.toml")
    result = CliRunner().invoke(app, ["predict", "--config", config, "--out", str(tmp_path / "p.xlsx")])
    assert result.exit_code == 1 and "--out must end in .parquet or .csv" in result.output
    result = CliRunner().invoke(
        app, ["predict", "--config", config, "--year", "1990", "--out", str(tmp_path / "p.csv")]
    )
    assert result.exit_code == 1 and "--year 1990" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "p.csv").exists()
