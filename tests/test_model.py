"""Tuning, tracking, registration and the champion gate, end to end on a small district."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from typer.testing import CliRunner

from pipelines.cli import app
from training.data import DataConfig
from training.tracking import use_experiment
from training.train import HEADLINE_METRICS, GateFailed, TrainConfig, train
from training.tuning import TuneConfig, finished_trials, open_study, parent_run, run_worker, tune

FAST_FAMILIES = ("hgb", "linear")
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def data_config(district: Path, target: str = "math") -> DataConfig:
    return DataConfig(district / "schools.csv", district / "students.csv", target, 42)


def tune_config(district: Path, family: str, storage: str, trials: int, **extra) -> TuneConfig:
    return TuneConfig(
        data=data_config(district),
        family=family,
        trials=trials,
        storage=storage,
        tune_rows=None,
        progress=False,
        **extra,
    )


@pytest.fixture(scope="module")
def trained(small_district: Path, tmp_path_factory: pytest.TempPathFactory):
    """Tune two fast families (3 trials each), train, register: shared by the MLflow content tests."""
    folder = tmp_path_factory.mktemp("stores")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
    patcher.setenv("BENTOML_HOME", str(folder / "bentoml"))
    patcher.chdir(folder)
    storage = f"sqlite:///{folder / 'optuna.db'}"
    for family in FAST_FAMILIES:
        tune(tune_config(small_district, family, storage, trials=3))
    config = TrainConfig(
        data=data_config(small_district),
        storage=storage,
        families=FAST_FAMILIES,
        out_dir=folder / "evaluation",
    )
    summary = train(config)
    yield folder, config, summary
    patcher.undo()


def test_every_trial_is_a_nested_run_under_its_study(trained) -> None:
    client = MlflowClient()
    experiment = client.get_experiment_by_name("student-growth-math")
    for family in FAST_FAMILIES:
        (parent,) = client.search_runs(
            [experiment.experiment_id], f"tags.run_kind = 'study' and tags.family = '{family}'"
        )
        children = client.search_runs(
            [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
        assert len(children) == 3
        assert all("val_rmse" in c.data.metrics and "val_mae" in c.data.metrics for c in children)
        assert parent.data.metrics["best_val_rmse"] == pytest.approx(
            min(c.data.metrics["val_rmse"] for c in children)
        )
        artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
        assert "optuna/optimization_history.png" in artifacts


def test_baselines_and_candidates_are_comparable_top_level_runs(trained) -> None:
    _, _, summary = trained
    runs = mlflow.search_runs(experiment_names=["student-growth-math"], order_by=["metrics.test_rmse ASC"])
    top_level = runs[runs["tags.run_kind"].isin(["baseline", "candidate"])]
    assert top_level["tags.mlflow.parentRunId"].isna().all()
    assert set(top_level["tags.family"]) >= {"baseline_naive", "baseline_linear", *FAST_FAMILIES}
    for column in HEADLINE_METRICS:
        assert top_level[f"metrics.{column}"].notna().all(), column
    linear = top_level.set_index("tags.family").loc["baseline_linear"]
    champion = top_level.set_index("tags.family").loc[summary["champion_family"]]
    expected = (
        (linear["metrics.test_rmse"] - champion["metrics.test_rmse"]) / linear["metrics.test_rmse"] * 100
    )
    assert champion["metrics.rmse_reduction_vs_baseline_pct"] == pytest.approx(expected)
    artifacts = {a.path for a in MlflowClient().list_artifacts(champion["run_id"], "plots")}
    assert {
        "plots/residuals.png",
        "plots/predicted_vs_actual.png",
        "plots/feature_importance.png",
    } <= artifacts


def test_champion_is_registered_aliased_and_exported(trained) -> None:
    import bentoml

    folder, _, summary = trained
    version = MlflowClient().get_model_version_by_alias("student-growth-math", "champion")
    assert str(version.version) == str(summary["version"])
    assert summary["rmse_reduction_vs_baseline_pct"] >= 8.0
    info = mlflow.models.get_model_info(f"models:/student-growth-math/{summary['version']}")
    optional = {spec.name for spec in info.signature.inputs.inputs if not spec.required}
    assert "prior_days_absent" in optional and "parental_education" in optional
    assert "prior_math_score" not in optional and "school_name" not in optional
    stored = bentoml.models.get("student-growth-math:latest")
    assert stored.info.metadata["registry_version"] == str(summary["version"])
    report = (folder / "evaluation" / "math" / "evaluation.md").read_text()
    assert "noise_floor_rmse" in report and "School value-added" in report and "econ_disadvantaged" in report
    assert summary["truth"]["noise_floor_rmse"] > 0


def test_gate_refuses_a_model_that_does_not_beat_the_baseline(trained) -> None:
    _, config, summary = trained
    strict = TrainConfig(
        data=config.data,
        storage=config.storage,
        families=("linear",),
        margin_pct=99.0,
        out_dir=config.out_dir,
        export_bento=False,
    )
    with pytest.raises(GateFailed, match="Registered without the champion alias"):
        train(strict)
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("student-growth-math", "champion").version) == str(
        summary["version"]
    )
    newest = max(client.search_model_versions("name = 'student-growth-math'"), key=lambda v: int(v.version))
    assert newest.tags["gate"] == "failed"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--schools",
            str(config.data.schools),
            "--students",
            str(config.data.students),
            "--target",
            "math",
            "--family",
            "linear",
            "--storage",
            config.storage,
            "--margin",
            "99",
            "--no-bento",
        ],
    )
    assert result.exit_code == 2
    assert str(client.get_model_version_by_alias("student-growth-math", "champion").version) == str(
        summary["version"]
    )


def test_study_resumes_where_it_stopped(small_district: Path, isolated_stores: Path) -> None:
    storage = f"sqlite:///{isolated_stores / 'optuna.db'}"
    first = tune(tune_config(small_district, "linear", storage, trials=2))
    params_before = [t.params for t in first.trials]
    resumed = tune(tune_config(small_district, "linear", storage, trials=4))
    assert finished_trials(resumed) == 4
    assert [t.params for t in resumed.trials[:2]] == params_before


def test_killed_worker_loses_at_most_the_trial_in_flight(small_district: Path, isolated_stores: Path) -> None:
    storage = f"sqlite:///{isolated_stores / 'optuna.db'}"
    config = tune_config(small_district, "keras", storage, trials=3, heartbeat_seconds=1)
    parent_id = parent_run(config, use_experiment("math"))
    worker = multiprocessing.get_context("spawn").Process(target=run_worker, args=(config, 0, parent_id))
    worker.start()
    study = open_study(config)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait for one finished trial and a second one in flight
        states = [t.state for t in study.get_trials(deepcopy=False)]
        if TrialState.COMPLETE in states and states[-1] == TrialState.RUNNING:
            break
        time.sleep(0.5)
    else:
        worker.kill()
        pytest.fail("the worker never reached its second trial")
    worker.kill()
    worker.join()
    time.sleep(4)  # beyond the heartbeat grace period, so the interrupted trial counts as stale
    resumed = tune(config)
    states = [t.state for t in resumed.get_trials(deepcopy=False)]
    assert finished_trials(resumed) == 3
    assert states.count(TrialState.FAIL) == 1  # only the trial in flight was lost


def run_two_workers(small_district: Path, storage: str) -> None:
    config = tune_config(small_district, "linear", storage, trials=6, workers=2)
    study = tune(config)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(complete) >= 6
    assert len({t.user_attrs["worker_pid"] for t in complete}) == 2, "both workers should have run trials"
    client = MlflowClient()
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("student-growth-math").experiment_id], "tags.run_kind = 'study'"
    )
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == len(complete)


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


@pytest.mark.postgres
def test_two_parallel_workers_on_postgresql(
    small_district: Path, isolated_stores: Path, postgres_database: str
) -> None:
    run_two_workers(small_district, postgres_database)


def test_train_before_tune_says_what_to_do(small_district: Path, isolated_stores: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--schools",
            str(small_district / "schools.csv"),
            "--students",
            str(small_district / "students.csv"),
            "--target",
            "math",
            "--storage",
            f"sqlite:///{isolated_stores / 'empty.db'}",
            "--no-bento",
        ],
    )
    assert result.exit_code == 1
    assert "run `growth tune` first" in result.output
    use_experiment("math")  # this test's store, not one an earlier test pointed mlflow at
    assert mlflow.search_runs(search_all_experiments=True).empty  # failed before logging anything
