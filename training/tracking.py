"""MLflow conventions of the project: where runs go, how they are named and tagged."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite file in the working directory (no server needed)."""
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def experiment_name(target: str) -> str:
    return f"student-growth-{target}"


def registered_model_name(target: str) -> str:
    return f"student-growth-{target}"


def use_experiment(target: str) -> str:
    """Point mlflow at the project's store and experiment; returns the experiment id."""
    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.set_experiment(experiment_name(target))
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
