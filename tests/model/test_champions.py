"""The trained champions of the session's small multi-year district (``trained`` in conftest): what MLflow
and the registry hold, the gate, behavioural checks on the candidate, intervals and the fairness audit."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from features.settings import CHAMPION_ALIAS, registered_model_name, support_model_name
from pipelines.cli import app
from training.behaviour import behaviour_checks

pytestmark = pytest.mark.slow  # these tests share the session's tuned and trained champions (~80 s to build)

SUBJECTS = ("math", "reading")


@pytest.fixture()
def stores(trained, monkeypatch: pytest.MonkeyPatch):
    """Point MLflow and Optuna at the trained session's stores."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{trained.folder / 'mlflow.db'}")
    monkeypatch.setenv("GROWTH_OPTUNA_STORAGE", trained.storage)
    mlflow.set_tracking_uri(f"sqlite:///{trained.folder / 'mlflow.db'}")
    return trained


def runs_of(client: MlflowClient, experiment: str) -> pd.DataFrame:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment}"
    return mlflow.search_runs([found.experiment_id])


@pytest.mark.parametrize("subject", SUBJECTS)
def test_every_growth_model_is_a_run_against_the_baselines(stores, subject: str) -> None:
    runs = runs_of(MlflowClient(), f"student-growth-{subject}")
    kinds = runs.groupby("tags.run_kind")["tags.family"].apply(set).to_dict()
    assert kinds["baseline"] == {"baseline_linear", "baseline_naive"}
    assert {"lgbm", "linear", "ensemble"} <= kinds["candidate"]
    assert kinds["study"] == {"lgbm", "linear"}
    assert len(kinds["trial"]) >= 1 and (runs["tags.run_kind"] == "trial").sum() == 6
    champion = runs[runs["tags.run_kind"] == "champion"].iloc[0]
    for metric in ("test_rmse", "test_mae", "rmse_reduction_vs_baseline_pct", "test_interval_coverage"):
        assert np.isfinite(champion[f"metrics.{metric}"]), metric
    candidates = runs[runs["tags.run_kind"] == "candidate"]
    assert candidates["metrics.rmse_reduction_vs_baseline_pct"].notna().all()
    artifacts = {a.path for a in MlflowClient().list_artifacts(champion["run_id"], "evaluation")}
    for name in ("evaluation.md", "coverage.csv", "fairness.md", "model_card.json", "importance.csv"):
        assert f"evaluation/{name}" in artifacts


@pytest.mark.parametrize("subject", SUBJECTS)
def test_support_classifier_runs_report_ranking_calibration_and_flag_shares(stores, subject: str) -> None:
    runs = runs_of(MlflowClient(), f"student-growth-{subject}-support")
    by_family = runs.set_index("tags.family")
    assert {"baseline_rule", "baseline_logistic", "lgbm", "logistic"} <= set(by_family.index)
    for family in ("baseline_rule", "lgbm", "logistic"):
        row = by_family.loc[family]
        row = row.iloc[0] if isinstance(row, pd.DataFrame) else row
        for metric in ("roc_auc", "pr_auc", "brier", "log_loss", "precision_at_10pct", "recall_at_20pct"):
            assert np.isfinite(row[f"metrics.test_{metric}"]), (family, metric)
    champion = runs[runs["tags.run_kind"] == "champion"].iloc[0]
    plots = {a.path for a in MlflowClient().list_artifacts(champion["run_id"], "plots")}
    assert "plots/calibration.png" in plots


@pytest.mark.parametrize("subject", SUBJECTS)
def test_registry_aliases_follow_the_gates(stores, subject: str) -> None:
    client = MlflowClient()
    for name, summary in (
        (registered_model_name(subject), stores.results[subject]["growth"]),
        (support_model_name(subject), stores.results[subject]["support"]),
    ):
        version = client.get_model_version(name, summary["version"])
        assert version.tags["gate"] == ("passed" if summary["gate_passed"] else "failed")
        if summary["gate_passed"]:
            aliased = client.get_model_version_by_alias(name, CHAMPION_ALIAS).version
            assert str(aliased) == str(summary["version"])


def test_a_failing_gate_registers_without_moving_the_alias(stores) -> None:
    from training.registry import Gate, promote, register

    client = MlflowClient()
    name = registered_model_name("math")
    before = client.get_model_version_by_alias(name, CHAMPION_ALIAS).version
    run_id = stores.results["math"]["growth"]["run_id"]
    version = register(f"runs:/{run_id}/model", name, {"kind": "growth"})
    promote(name, version, Gate(False, "test RMSE not 99% below the baseline"))
    assert client.get_model_version_by_alias(name, CHAMPION_ALIAS).version == before
    assert client.get_model_version(name, version).tags["gate"] == "failed"
    assert str(before) != str(version)


@pytest.mark.slow  # ~30 s: refits one subject of the small district through the CLI
def test_cli_exits_2_when_the_gate_fails_and_keeps_the_champion(stores) -> None:
    client = MlflowClient()
    name = registered_model_name("reading")
    before = client.get_model_version_by_alias(name, CHAMPION_ALIAS).version
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--config",
            str(stores.district / "district.toml"),
            "--subject",
            "reading",
            "--margin",
            "99",
            "--no-support",
            "--no-bento",
            "--out",
            str(stores.folder / "gate-check"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "champion gate failed" in result.output and "Traceback" not in result.output
    assert "--margin / GROWTH_MARGIN_PCT (99% for growth)" in result.output  # how to change it
    assert client.get_model_version_by_alias(name, CHAMPION_ALIAS).version == before


# ------------------------------------------------------------------------------ behaviour of the candidate
@pytest.mark.parametrize("subject", SUBJECTS)
def test_behavioural_checks_pass_on_the_candidate(stores, subject: str) -> None:
    """Directional (more absences, less homework never raise predicted growth on average) and invariance
    (student ids and names change nothing), run on the champion before promotion and recorded."""
    growth = stores.results[subject]["growth"]
    checks = behaviour_checks(growth["model"], growth["prepared"].inputs("test"))
    assert {c.name for c in checks} >= {"more absences", "less homework", "student id and name"}
    failed = [c for c in checks if not c.passed]
    assert not failed, failed
    assert growth["behaviour_passed"] is True


def test_behavioural_checks_catch_a_model_that_rewards_absence(stores) -> None:
    growth = stores.results["math"]["growth"]
    model = growth["model"]

    class RewardsAbsence:
        """The champion plus one point of growth per day absent: the directional check must fail."""

        def predict(self, frame: pd.DataFrame) -> np.ndarray:
            days = pd.to_numeric(frame.get("prior_days_absent"), errors="coerce").fillna(0).to_numpy(float)
            return model.predict(frame) + days

    checks = {c.name: c for c in behaviour_checks(RewardsAbsence(), growth["prepared"].inputs("test"))}
    assert not checks["more absences"].passed
    assert "more absences" in checks["more absences"].detail


# ------------------------------------------------------------------------------ intervals and fairness
@pytest.mark.parametrize("subject", SUBJECTS)
def test_intervals_cover_and_widen_with_what_the_request_lacks(stores, subject: str) -> None:
    """The session's district has six schools, so its calibration part holds one or two school-years:
    coverage (and the width for unseen schools, which depends on those few schools' effects) is only
    checked loosely here (the 0.87-0.93 measurement on the default district is in
    docs/serving.md; the method's per-group guarantee is tested in tests/code/test_intervals.py)."""
    table = stores.results[subject]["growth"]["coverage"].set_index("case")
    assert set(table.index) == {
        "all fields sent",
        "3 optional fields removed",
        "all optional fields removed",
        "school unknown to the model",
    }
    assert table["coverage_90"].between(0.7, 0.99).all(), table["coverage_90"].to_dict()
    widths = table["mean_width"]
    assert widths["all optional fields removed"] > widths["all fields sent"]


@pytest.mark.parametrize("subject", SUBJECTS)
def test_fairness_tables_cover_every_group_and_are_written(stores, subject: str) -> None:
    growth_table, support_table = stores.results[subject]["fairness_tables"]
    for table in (growth_table, support_table):
        assert {
            "econ_disadvantaged",
            "english_learner",
            "special_education",
            "gender",
            "grade",
            "school_type",
        } <= set(table["group"])
    assert {"bias", "rmse", "coverage_90"} <= set(growth_table.columns)
    assert {
        "flag_rate",
        "false_positive_rate",
        "false_negative_rate",
        "precision_flagged",
        "mean_predicted",
        "observed",
    } <= set(support_table.columns)
    text = (stores.folder / "evaluation" / subject / "fairness.md").read_text()
    assert "needs support" in text.lower() or "Needs-support" in text
    assert "at risk" not in text.lower() and "failing" not in text.lower()


def test_audit_runs_without_protected_attributes_as_inputs(trained) -> None:
    """Leaving the protected attributes out of the inputs leaves them in the audit's groups."""
    from sklearn.linear_model import Ridge

    from training.data import DataConfig, Source, load_data, prepare
    from training.evaluate import with_school_type
    from training.fairness import audit

    data = load_data(Source(config=Path(trained.district) / "district.toml"))
    prepared = prepare(data, DataConfig("math", protected_inputs=False))
    assert not {"gender", "econ_disadvantaged", "english_learner", "special_education"} & set(
        prepared.input_columns
    )
    model = Ridge().fit(prepared.X["train"], prepared.y_part("train"))
    predicted = model.predict(prepared.X["test"])
    frame = with_school_type(prepared.part("test").reset_index(drop=True), data.district.schools)
    growth_table, support_table, _ = audit(
        frame, prepared.y_part("test"), predicted, predicted - 30, predicted + 30
    )
    assert support_table is None
    protected = {"gender", "econ_disadvantaged", "english_learner", "special_education"}
    assert protected <= set(growth_table["group"])


def test_experiments_open_on_the_model_training_view_with_the_reviewers_columns(stores) -> None:
    import json

    from training.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING, VIEW_TAG, review_url

    client = MlflowClient()
    pairs = (("student-growth-math", "test_rmse"), ("student-growth-math-support", "test_pr_auc"))
    for name, headline in pairs:
        experiment = client.get_experiment_by_name(name)
        assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
        view = json.loads(experiment.tags[VIEW_TAG])
        assert view["orderByKey"] == f"metrics.`{headline}`"
        assert f"metrics.`{headline}`" in view["selectedColumns"]
    url = review_url("7")
    assert url.endswith("/#/experiments/7/runs?workflowType=machine_learning&viewStateShareKey=reviewer")
