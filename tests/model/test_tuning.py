"""Optuna studies: they resume, survive killed workers, run on SQLite and PostgreSQL with parallel
workers, know the data they were tuned on, and say what happened when no trial completed."""

from __future__ import annotations

import contextlib
import multiprocessing
import shutil
import sqlite3
import time
import uuid
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from typer.testing import CliRunner

from pipelines.cli import app
from training.data import DataConfig, Source, load_data, study_fingerprint
from training.tracking import use_experiment
from training.tuning import (
    StudyError,
    TuneConfig,
    completed_or_explain,
    finished_trials,
    open_study,
    parent_run,
    run_worker,
    study_best,
    tune,
)

pytestmark = pytest.mark.slow  # runs real Optuna studies and MLflow stores

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def source(district: Path) -> Source:
    return Source(schools=district / "schools.csv", students=district / "students.csv")


def config(district: Path, family: str, storage: str, trials: int, **extra) -> TuneConfig:
    return TuneConfig(
        source(district),
        DataConfig("math"),
        family,
        "growth",
        trials=trials,
        storage=storage,
        tune_rows=None,
        progress=False,
        **extra,
    )


def has_heartbeat(storage: str, trial: optuna.trial.FrozenTrial) -> bool:
    """Whether the trial's worker has recorded a heartbeat in the SQLite storage yet."""
    with contextlib.closing(sqlite3.connect(storage.removeprefix("sqlite:///"))) as db:
        row = db.execute(
            "SELECT COUNT(*) FROM trial_heartbeats WHERE trial_id = ?", (trial._trial_id,)
        ).fetchone()
    return bool(row[0])


def key(district: Path) -> str:
    return study_fingerprint(load_data(source(district)).fingerprint, DataConfig("math"))


def test_study_resumes_where_it_stopped(small_district: Path, isolated_stores: Path) -> None:
    storage = f"sqlite:///{isolated_stores / 'optuna.db'}"
    first = tune(config(small_district, "linear", storage, trials=2))
    params_before = [t.params for t in first.trials]
    resumed = tune(config(small_district, "linear", storage, trials=4))
    assert resumed.study_name == first.study_name
    assert finished_trials(resumed) == 4
    assert [t.params for t in resumed.trials[:2]] == params_before


def test_changed_data_starts_a_new_study_warm_started_and_train_refuses_the_old(
    small_district: Path, isolated_stores: Path, tmp_path: Path
) -> None:
    storage = f"sqlite:///{isolated_stores / 'optuna.db'}"
    old = tune(config(small_district, "linear", storage, trials=2))
    changed = tmp_path / "changed"
    shutil.copytree(small_district, changed)
    students = pd.read_csv(changed / "students.csv")
    students.loc[0, "reading_score"] += 1.0  # one score of one student: other data
    students.to_csv(changed / "students.csv", index=False)
    assert key(changed) != key(small_district)
    with pytest.raises(StudyError) as err:
        study_best(storage, "math", "linear", "growth", key(changed))
    message = str(err.value)
    assert (
        "was tuned on this data" in message and "tuned on other data" in message and old.study_name in message
    )
    new = tune(config(changed, "linear", storage, trials=2))
    assert new.study_name != old.study_name
    assert new.trials[0].user_attrs.get("warm_start_from") == old.study_name
    assert new.trials[0].params == old.best_params
    assert new.user_attrs["data_fingerprint"] == key(changed)


def test_a_study_with_no_completed_trial_says_so() -> None:
    study = optuna.create_study(study_name="all-failed")
    for state in (TrialState.FAIL, TrialState.PRUNED, TrialState.FAIL):
        study.add_trial(optuna.trial.create_trial(state=state, params={}, distributions={}))
    with pytest.raises(StudyError) as err:
        completed_or_explain(study)
    assert "no completed trial (1 pruned, 2 fail)" in str(err.value)
    assert "every trial failed or was pruned" in str(err.value)


def test_train_before_tune_says_what_to_do(small_district: Path, isolated_stores: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--schools",
            str(small_district / "schools.csv"),
            "--students",
            str(small_district / "students.csv"),
            "--subject",
            "math",
            "--no-bento",
        ],
    )
    assert result.exit_code == 1
    assert "run `growth tune` first" in result.output and "Traceback" not in result.output
    use_experiment("math")  # this test's store
    assert mlflow.search_runs(search_all_experiments=True).empty  # failed before logging anything


@pytest.mark.slow  # ~1-2 min: a Keras trial killed mid-flight, then resumed
def test_killed_worker_loses_at_most_the_trial_in_flight(small_district: Path, isolated_stores: Path) -> None:
    storage = f"sqlite:///{isolated_stores / 'optuna.db'}"
    cfg = config(small_district, "keras", storage, trials=3, heartbeat_seconds=1)
    fingerprint = key(small_district)
    study = open_study(cfg, fingerprint)
    experiment_id = use_experiment("math")
    parent_id = parent_run(cfg, study.study_name, experiment_id, fingerprint)
    worker = multiprocessing.get_context("spawn").Process(target=run_worker, args=(cfg, 0, parent_id))
    worker.start()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait for one finished trial and a second one in flight
        trials = study.get_trials(deepcopy=False)
        states = [t.state for t in trials]
        # ... whose heartbeat is recorded: Optuna never counts a trial without one as stale, so a kill
        # between the trial's start and its first heartbeat would leave it running (seen once in CI)
        if (
            TrialState.COMPLETE in states
            and states[-1] == TrialState.RUNNING
            and has_heartbeat(storage, trials[-1])
        ):
            break
        time.sleep(0.2)
    else:
        worker.kill()
        pytest.fail("the worker never reached its second trial")
    worker.kill()
    worker.join()
    time.sleep(4)  # beyond the heartbeat grace period, so the interrupted trial counts as stale
    resumed = tune(cfg)
    states = [t.state for t in resumed.get_trials(deepcopy=False)]
    assert finished_trials(resumed) == 3
    assert states.count(TrialState.FAIL) == 1  # only the trial in flight was lost


def run_two_workers(district: Path, storage: str) -> None:
    """Thirty quick trials: the first worker cannot finish them before the second has loaded its data."""
    study = tune(config(district, "linear", storage, trials=30, workers=2))
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) >= 30
    assert len({t.user_attrs["worker_pid"] for t in finished}) == 2, "both workers should have run trials"
    client = MlflowClient()
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("student-growth-math").experiment_id], "tags.run_kind = 'study'"
    )
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'", max_results=1000
    )
    assert len(children) == len(finished)


@pytest.mark.slow  # ~40 s: two spawned workers each load the data
def test_two_parallel_workers_on_sqlite(small_district: Path, isolated_stores: Path) -> None:
    run_two_workers(small_district, f"sqlite:///{isolated_stores / 'optuna.db'}")


@pytest.fixture()
def postgres_database():
    """A throw-away database on the local PostgreSQL server (skipped where none is reachable)."""
    psycopg2 = pytest.importorskip("psycopg2")
    name = f"growth_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg2.connect(POSTGRES_ADMIN, connect_timeout=3)
    except psycopg2.OperationalError as err:
        pytest.skip(f"no PostgreSQL server reachable at 127.0.0.1:5432 ({err})")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with admin.cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_two_parallel_workers_on_postgresql(
    small_district: Path, isolated_stores: Path, postgres_database: str
) -> None:
    run_two_workers(small_district, postgres_database)
