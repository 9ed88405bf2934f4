"""MLflow conventions of the project: where runs go, how experiments are named and tagged.

Names come from ``features.settings`` (the one place they are spelled). Experiments are tagged
``mlflow.experimentKind = custom_model_development`` so MLflow 3's UI opens them on the model
training view (runs table) rather than the GenAI overview.
"""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from features.settings import experiment_name as growth_experiment  # noqa: E402
from features.settings import get_settings  # noqa: E402

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
# A saved view of the runs table (what the UI's "Share" button stores as an experiment tag): the
# columns reviewers compare, best first, trials hidden. Opened by review_url().
VIEW_KEY = "reviewer"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
RUN_TABLE_METRICS = {
    "growth": (
        "test_rmse",
        "test_mae",
        "rmse_reduction_vs_baseline_pct",
        "mae_reduction_vs_baseline_pct",
        "val_rmse",
        "test_interval_coverage",
    ),
    "support": (
        "test_pr_auc",
        "test_brier",
        "test_roc_auc",
        "test_log_loss",
        "test_precision_at_10pct",
        "test_recall_at_10pct",
    ),
}


def review_view(task: str) -> str:
    """The saved view's JSON: sorted by the task's headline metric, its metric columns shown."""
    metrics = RUN_TABLE_METRICS.get(task, RUN_TABLE_METRICS["growth"])
    headline, ascending = (metrics[0], task != "support")
    return json.dumps(
        {
            "orderByKey": f"metrics.`{headline}`",
            "orderByAsc": ascending,
            "searchFilter": "tags.run_kind != 'trial'",
            "selectedColumns": [f"metrics.`{m}`" for m in metrics] + ["tags.`run_kind`", "tags.`family`"],
        }
    )


def review_url(experiment_id: str, ui: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI page of an experiment's runs table in the reviewers' saved view."""
    query = f"workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
    return f"{ui}/#/experiments/{experiment_id}/runs?{query}"


def tracking_uri() -> str:
    return get_settings().tracking_uri


def experiment_name(subject: str, task: str = "growth") -> str:
    """``student-growth-math`` for growth models, ``student-growth-math-support`` for classifiers."""
    return growth_experiment(subject) if task == "growth" else f"{growth_experiment(subject)}-{task}"


def use_experiment(subject: str, task: str = "growth") -> str:
    """Point mlflow at the project's store and experiment (created on first use); returns its id."""
    return use_named_experiment(experiment_name(subject, task), task)


def use_named_experiment(name: str, task: str | None = None) -> str:
    """Set the experiment, tagged so MLflow 3's UI opens it on the model-training view (not the GenAI
    overview) and, for model experiments, with the reviewers' saved view of the runs table."""
    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.set_experiment(name)
    wanted = {EXPERIMENT_KIND_TAG: MODEL_TRAINING}
    if task is not None:
        wanted[VIEW_TAG] = review_view(task)
    client = MlflowClient()
    for key, value in wanted.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def log_nested_run(
    client: MlflowClient,
    experiment_id: str,
    parent_run_id: str,
    run_name: str,
    params: dict,
    metrics: dict[str, float],
    tags: dict[str, str],
) -> str:
    """A child run created through the client, so worker processes can add trials to one parent."""
    run = client.create_run(
        experiment_id, run_name=run_name, tags={"mlflow.parentRunId": parent_run_id, **tags}
    )
    run_id = run.info.run_id
    client.log_batch(
        run_id,
        params=[mlflow.entities.Param(k, str(v)) for k, v in params.items()],
        metrics=[mlflow.entities.Metric(k, float(v), 0, 0) for k, v in metrics.items()],
    )
    client.set_terminated(run_id)
    return run_id


def log_figure(figure: plt.Figure, artifact_file: str, run_id: str | None = None) -> None:
    """Log a matplotlib figure as PNG and free it."""
    if run_id is None:
        mlflow.log_figure(figure, artifact_file)
    else:
        MlflowClient().log_figure(run_id, figure, artifact_file)
    plt.close(figure)
