"""Optuna tuning: one persistent, resumable study per family and target, N worker processes,
every trial a nested MLflow run under the family's parent run.

Studies live in RDB storage (SQLite file by default, any SQLAlchemy URL such as PostgreSQL for
several machines). Heartbeats mark the trial of a killed worker as failed and re-queue it, so an
interrupted run loses at most the trial in flight and simply resumes when run again.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import warnings
from dataclasses import dataclass, replace

import mlflow
import numpy as np
import optuna
from mlflow.tracking import MlflowClient
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from training.data import DataConfig, Prepared, prepare, subsample
from training.families import FAMILIES, Family, fit_family
from training.metrics import scores
from training.tracking import experiment_name, log_figure, log_nested_run, tracking_uri, use_experiment

log = logging.getLogger(__name__)
# Heartbeats and the matplotlib plots are marked experimental; they are what we rely on, knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
DEFAULT_STORAGE = "sqlite:///optuna.db"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class TuneConfig:
    """A tuning request: which data, which family, and the budget."""

    data: DataConfig
    family: str
    trials: int = 20
    timeout: float | None = None
    workers: int = 1
    storage: str = DEFAULT_STORAGE
    tune_rows: int | None = 40_000
    study_prefix: str = "student-growth"
    progress: bool = True
    heartbeat_seconds: int = 10

    @property
    def study_name(self) -> str:
        return f"{self.study_prefix}-{self.data.target}-{self.family}"


def sqlalchemy_url(url: str) -> str:
    """Plain ``postgresql://`` URLs use the locked psycopg2 driver (SQLAlchemy 2.1 would pick psycopg 3)."""
    return (
        "postgresql+psycopg2://" + url.removeprefix("postgresql://")
        if url.startswith("postgresql://")
        else url
    )


def open_storage(url: str, heartbeat_seconds: int = 10) -> RDBStorage:
    """RDB storage with heartbeats so trials of killed workers are failed and retried once."""
    url = sqlalchemy_url(url)
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    return RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=heartbeat_seconds,
        grace_period=3 * heartbeat_seconds,
        heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
    )


def open_study(config: TuneConfig, seed_offset: int = 0) -> optuna.Study:
    """Create or resume the study; each worker gets its own TPE seed so workers explore differently."""
    return optuna.create_study(
        study_name=config.study_name,
        storage=open_storage(config.storage, config.heartbeat_seconds),
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=config.data.seed + seed_offset, multivariate=True),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=2),
        load_if_exists=True,
    )


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def objective(prepared: Prepared, family: Family, rows: np.ndarray, parent_run_id: str, experiment_id: str):
    """The Optuna objective: fit on the tuning rows, score the full validation set, log a child run."""
    client = MlflowClient(tracking_uri())
    X, y = prepared.X_train[rows], prepared.y_part("train")[rows]
    X_val, y_val = prepared.X_val, prepared.y_part("val")

    def run_trial(trial: optuna.Trial) -> float:
        params = family.space(trial)

        def report(step: int, val_rmse: float) -> None:
            trial.report(val_rmse, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} with val_rmse {val_rmse:.4f}")

        model = fit_family(
            family,
            params,
            prepared.config.seed,
            prepared.n_numeric,
            X,
            y,
            X_val,
            y_val,
            report if family.prunable else None,
        )
        metrics = scores(y_val, model.predict(X_val), "val")
        if hasattr(model, "best_epoch_"):
            trial.set_user_attr("best_epoch", model.best_epoch_)
        for key, value in metrics.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("worker_pid", os.getpid())
        log_nested_run(
            client,
            experiment_id,
            parent_run_id,
            f"{family.name}-trial-{trial.number}",
            params,
            metrics,
            {
                "family": family.name,
                "optuna_trial": str(trial.number),
                "data_fingerprint": prepared.fingerprint,
            },
        )
        return metrics["val_rmse"]

    return run_trial


def run_worker(config: TuneConfig, worker: int, parent_run_id: str, prepared: Prepared | None = None) -> None:
    """One worker process: prepare data, join the study, run trials until the shared budget is spent."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    prepared = prepared or prepare(config.data)
    experiment_id = use_experiment(config.data.target)
    study = open_study(config, seed_offset=worker)
    remaining = config.trials - finished_trials(study)
    if remaining <= 0:
        return
    family = FAMILIES[config.family]
    rows = subsample(len(prepared.split.train), config.tune_rows, config.data.seed)
    study.optimize(
        objective(prepared, family, rows, parent_run_id, experiment_id),
        n_trials=remaining,
        timeout=config.timeout,
        callbacks=[MaxTrialsCallback(config.trials, states=FINISHED)],
        show_progress_bar=config.progress and worker == 0,
        catch=(),
    )


def parent_run(config: TuneConfig, experiment_id: str) -> str:
    """The family's parent run, reused when a study resumes so all its trials stay together."""
    client = MlflowClient(tracking_uri())
    existing = client.search_runs(
        [experiment_id],
        filter_string=f"tags.optuna_study = '{config.study_name}' and tags.run_kind = 'study'",
        max_results=1,
    )
    if existing:
        return existing[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"tune-{config.family}",
        tags={
            "run_kind": "study",
            "family": config.family,
            "optuna_study": config.study_name,
            "target": config.data.target,
        },
    )
    return run.info.run_id


def spawn_workers(config: TuneConfig, parent_run_id: str) -> None:
    """N processes on one study; each loads the data itself, as a worker on another machine would."""
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=run_worker,
            args=(replace(config, progress=worker == 0), worker, parent_run_id),
            name=f"tune-worker-{worker}",
        )
        for worker in range(config.workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise RuntimeError(f"tuning workers failed: {', '.join(failed)} (see their output above)")


def summarise_study(config: TuneConfig, parent_run_id: str) -> optuna.Study:
    """Log the best trial and the Optuna plots to the parent run."""
    from optuna.visualization import matplotlib as optuna_plots

    study = open_study(config)
    client = MlflowClient(tracking_uri())
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise RuntimeError(
            f"study {config.study_name} has no completed trial; give it more --trials or --timeout"
        )
    best = study.best_trial
    client.log_batch(
        parent_run_id,
        metrics=[
            mlflow.entities.Metric("best_val_rmse", best.value, 0, 0),
            mlflow.entities.Metric("best_val_mae", best.user_attrs.get("val_mae", np.nan), 0, 0),
            mlflow.entities.Metric("n_trials_complete", len(completed), 0, 0),
            mlflow.entities.Metric(
                "n_trials_pruned", len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))), 0, 0
            ),
        ],
    )
    client.set_tag(parent_run_id, "best_params", repr(best.params))
    client.set_tag(parent_run_id, "best_trial", str(best.number))
    log_figure(
        optuna_plots.plot_optimization_history(study).figure, "optuna/optimization_history.png", parent_run_id
    )
    if len(completed) >= 2 and len(best.params) > 1:
        try:
            log_figure(
                optuna_plots.plot_param_importances(study).figure,
                "optuna/param_importances.png",
                parent_run_id,
            )
        except (ValueError, RuntimeError) as err:  # importances need variation across trials
            log.warning("no parameter importance plot for %s: %s", config.study_name, err)
    return study


def tune(config: TuneConfig, prepared: Prepared | None = None) -> optuna.Study:
    """Run (or resume) the study of one family and return it after logging its summary.

    ``prepared`` lets one process tune several families without reloading the data.
    """
    if config.family not in FAMILIES:
        raise ValueError(f"unknown family {config.family!r}; choose from {', '.join(FAMILIES)}")
    experiment_id = use_experiment(config.data.target)
    parent_run_id = parent_run(config, experiment_id)
    log.info(
        "study %s in %s, MLflow experiment %s, parent run %s",
        config.study_name,
        config.storage,
        experiment_name(config.data.target),
        parent_run_id,
    )
    if config.workers > 1:
        open_study(config)  # create schema and study once, so workers starting together do not race
        spawn_workers(config, parent_run_id)
    else:
        run_worker(config, 0, parent_run_id, prepared)
    study = summarise_study(config, parent_run_id)
    MlflowClient(tracking_uri()).set_terminated(parent_run_id)
    return study
