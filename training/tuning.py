"""Optuna tuning: one persistent, resumable study per subject, task, family, data and search space;
N worker processes; every trial a nested MLflow run under the study's parent run.

A study's name carries the data fingerprint (files + config) and the family's search-space version,
and its attributes record them, so tuning changed data starts a new study and `growth train` never
uses parameters tuned on other data. A new study is warm-started with the best parameters of the
latest earlier study of the same subject, task and family (other data), and with a sensible default.
Boosting rounds and Keras epochs are pruned with Hyperband, so more configurations fit in the budget.

Studies live in RDB storage (SQLite by default, any SQLAlchemy URL such as PostgreSQL for several
machines). Heartbeats mark the trial of a killed worker as failed and re-queue it, so an interrupted
run loses at most the trial in flight and resumes when run again.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import mlflow
import numpy as np
import optuna
from mlflow.tracking import MlflowClient
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from features.settings import get_settings, study_name
from training.data import DataConfig, Prepared, Source, load_data, prepare, study_fingerprint, subsample
from training.families import FAMILIES, LGBM_MAX_ROUNDS, Family, FeatureInfo, fit_family
from training.metrics import scores
from training.tracking import experiment_name, log_figure, log_nested_run, tracking_uri, use_experiment

log = logging.getLogger(__name__)
# Heartbeats and the matplotlib plots are marked experimental; they are what we rely on, knowingly.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Good starting points, tried first in a study with no earlier study to warm-start from.
LGBM_START = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 100,
    "reg_lambda": 1.0,
    "reg_alpha": 1e-3,
    "colsample_bytree": 0.8,
    "subsample": 0.8,
    "max_bin": 255,
}
DEFAULTS: dict[tuple[str, str], dict] = {(task, "lgbm"): dict(LGBM_START) for task in ("growth", "support")}


class StudyError(RuntimeError):
    """A study cannot be used (never tuned, tuned on other data, or no trial completed)."""


@dataclass(frozen=True)
class Task:
    """What a study optimises: growth regression (RMSE) or the needs-support classifier (log loss)."""

    name: str
    families: dict[str, Family]
    metric: str
    labels: Callable[[Prepared], np.ndarray]
    fit: Callable[..., object]
    score: Callable[[np.ndarray, object, np.ndarray], dict[str, float]]


def growth_score(y: np.ndarray, model: object, X: np.ndarray) -> dict[str, float]:
    return scores(y, model.predict(X), "val")


GROWTH = Task("growth", FAMILIES, "val_rmse", lambda p: p.y, fit_family, growth_score)


def task_spec(task: str) -> Task:
    if task == "growth":
        return GROWTH
    from training.support import SUPPORT

    return SUPPORT


@dataclass(frozen=True)
class TuneConfig:
    """A tuning request: which data, subject, task and family, and the budget."""

    source: Source
    data: DataConfig
    family: str
    task: str = "growth"
    trials: int = 20
    timeout: float | None = None
    workers: int = 1
    storage: str = ""
    tune_rows: int | None = 60_000
    study: str | None = None  # resume this study by name even if it was tuned on other data
    progress: bool = True
    heartbeat_seconds: int = 10

    def storage_url(self) -> str:
        return self.storage or get_settings().optuna_storage

    def name_for(self, fingerprint: str) -> str:
        if self.study:
            return self.study
        spec = task_spec(self.task).families[self.family]
        return study_name(self.data.subject, self.family, fingerprint, spec.space_version, self.task)


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


def pruner_for(family: str) -> optuna.pruners.BasePruner:
    """Hyperband on the family's natural resource (boosting rounds, epochs, stages); none otherwise."""
    if family == "lgbm":
        return optuna.pruners.HyperbandPruner(
            min_resource=100, max_resource=LGBM_MAX_ROUNDS, reduction_factor=3
        )
    if family == "keras":
        return optuna.pruners.HyperbandPruner(min_resource=3, max_resource=60, reduction_factor=3)
    if family == "hgb":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=100)
    return optuna.pruners.NopPruner()


def open_study(config: TuneConfig, fingerprint: str, seed_offset: int = 0) -> optuna.Study:
    """Create or resume the study; each worker gets its own TPE seed so workers explore differently."""
    return optuna.create_study(
        study_name=config.name_for(fingerprint),
        storage=open_storage(config.storage_url(), config.heartbeat_seconds),
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=config.data.seed + seed_offset, multivariate=True),
        pruner=pruner_for(config.family),
        load_if_exists=True,
    )


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def label_study(study: optuna.Study, config: TuneConfig, fingerprint: str, data_fingerprint: str) -> None:
    """Record what the study was tuned on, once (so `growth train` can check it)."""
    if "data_fingerprint" in study.user_attrs:
        if study.user_attrs["data_fingerprint"] != fingerprint:
            log.warning(
                "resuming study %s, tuned on other data (fingerprint %s; this data is %s), as asked",
                study.study_name,
                study.user_attrs["data_fingerprint"],
                fingerprint,
            )
        return
    spec = task_spec(config.task).families[config.family]
    for key, value in {
        "data_fingerprint": fingerprint,
        "files_and_config": data_fingerprint,
        "split": f"{config.data.scheme}, seed {config.data.seed}, "
        f"holdout schools {config.data.holdout_schools}",
        "space_version": spec.space_version,
        "subject": config.data.subject,
        "family": config.family,
        "task": config.task,
        "source": config.source.describe(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }.items():
        study.set_user_attr(key, value)


def related_studies(storage: str, subject: str, family: str, task: str) -> list[optuna.study.StudySummary]:
    """Studies of the same subject, task and family in the storage (any data), newest first."""
    summaries = optuna.get_all_study_summaries(open_storage(storage), include_best_trial=True)
    mine = [
        s
        for s in summaries
        if s.user_attrs.get("subject") == subject
        and s.user_attrs.get("family") == family
        and s.user_attrs.get("task", "growth") == task
    ]
    return sorted(mine, key=lambda s: s.datetime_start or datetime.min, reverse=True)


def warm_start(study: optuna.Study, config: TuneConfig, fingerprint: str) -> None:
    """Enqueue the latest earlier study's best parameters (other data) or the family's default, once."""
    if study.trials:
        return
    spec = task_spec(config.task).families[config.family]
    for summary in related_studies(config.storage_url(), config.data.subject, config.family, config.task):
        same_space = summary.user_attrs.get("space_version") == spec.space_version
        if summary.study_name != study.study_name and same_space and summary.best_trial is not None:
            study.enqueue_trial(summary.best_trial.params, user_attrs={"warm_start_from": summary.study_name})
            log.info("%s: first trial warm-started from %s", study.study_name, summary.study_name)
            break
    default = DEFAULTS.get((config.task, config.family))
    if default:
        study.enqueue_trial(default, user_attrs={"warm_start_from": "default"})


def objective(
    prepared: Prepared, config: TuneConfig, rows: np.ndarray, parent_run_id: str, experiment_id: str
):
    """The Optuna objective: fit on the tuning rows, score the full validation set, log a child run."""
    task = task_spec(config.task)
    family = task.families[config.family]
    client = MlflowClient(tracking_uri())
    labels = task.labels(prepared)
    X, y = prepared.X["train"][rows], labels[prepared.split.train][rows]
    X_val, y_val = prepared.X["val"], labels[prepared.split.val]
    info = FeatureInfo(tuple(prepared.transform.feature_names_))

    def run_trial(trial: optuna.Trial) -> float:
        params = family.space(trial)
        tags = {
            "family": family.name,
            "optuna_trial": str(trial.number),
            "data_fingerprint": prepared.fingerprint,
            "run_kind": "trial",
        }
        trial.set_user_attr("worker_pid", os.getpid())
        reported: dict[str, float] = {}

        def log_trial(state: str, metrics: dict[str, float]) -> None:
            name = f"{family.name}-trial-{trial.number}"
            log_nested_run(
                client, experiment_id, parent_run_id, name, params, metrics, {**tags, "trial_state": state}
            )

        def report(step: int, value: float) -> None:
            trial.report(value, step)
            reported.update({f"{task.metric}_at_prune": value, "pruned_at_step": float(step)})
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} with {task.metric} {value:.4f}")

        try:
            model = task.fit(
                family,
                params,
                prepared.config.seed,
                info,
                X,
                y,
                X_val,
                y_val,
                report if family.prunable else None,
            )
        except optuna.TrialPruned:  # tracked too: a reviewer sees every configuration that was tried
            log_trial("pruned", reported)
            raise
        metrics = task.score(y_val, model, X_val)
        for key, value in metrics.items():
            trial.set_user_attr(key, value)
        trial.set_user_attr("best_iteration", getattr(model, "best_rounds_", None))
        log_trial("complete", metrics)
        return metrics[task.metric]

    return run_trial


def run_worker(config: TuneConfig, worker: int, parent_run_id: str, prepared: Prepared | None = None) -> None:
    """One worker process: prepare data, join the study, run trials until the shared budget is spent."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    prepared = prepared or prepare(load_data(config.source), config.data)
    experiment_id = use_experiment(config.data.subject, config.task)
    study = open_study(config, prepared.study_key, seed_offset=worker)
    remaining = config.trials - finished_trials(study)
    if remaining <= 0:
        return
    rows = subsample(len(prepared.split.train), config.tune_rows, config.data.seed)
    study.optimize(
        objective(prepared, config, rows, parent_run_id, experiment_id),
        n_trials=remaining,
        timeout=config.timeout,
        callbacks=[MaxTrialsCallback(config.trials, states=FINISHED)],
        show_progress_bar=config.progress and worker == 0,
        catch=(),
    )


def parent_run(config: TuneConfig, study_name_: str, experiment_id: str, fingerprint: str) -> str:
    """The study's parent run, reused when a study resumes so all its trials stay together."""
    client = MlflowClient(tracking_uri())
    existing = client.search_runs(
        [experiment_id],
        filter_string=f"tags.optuna_study = '{study_name_}' and tags.run_kind = 'study'",
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
            "optuna_study": study_name_,
            "task": config.task,
            "subject": config.data.subject,
            "data_fingerprint": fingerprint,
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


def completed_or_explain(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The completed trials, or a StudyError saying what happened to the others."""
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if completed:
        return completed
    states = {
        state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState
    }
    counts = ", ".join(f"{n} {s}" for s, n in states.items() if n)
    if not study.trials:
        raise StudyError(
            f"study {study.study_name} has no trial yet; run `growth tune` (with more --timeout)"
        )
    raise StudyError(
        f"study {study.study_name} has no completed trial ({counts}): every trial failed or was pruned; "
        "see the failed trials' errors in the tuning log, or give it more --trials / --timeout"
    )


def summarise_study(config: TuneConfig, fingerprint: str, parent_run_id: str) -> optuna.Study:
    """Log the best trial and the Optuna plots to the parent run."""
    from optuna.visualization import matplotlib as optuna_plots

    study = open_study(config, fingerprint)
    client = MlflowClient(tracking_uri())
    completed = completed_or_explain(study)
    metric = task_spec(config.task).metric
    best = study.best_trial
    pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    client.log_batch(
        parent_run_id,
        metrics=[
            mlflow.entities.Metric(f"best_{metric}", best.value, 0, 0),
            mlflow.entities.Metric("n_trials_complete", len(completed), 0, 0),
            mlflow.entities.Metric("n_trials_pruned", pruned, 0, 0),
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
            log.warning("no parameter importance plot for %s: %s", study.study_name, err)
    return study


def tune(config: TuneConfig, prepared: Prepared | None = None) -> optuna.Study:
    """Run (or resume) one study and return it after logging its summary.

    ``prepared`` lets one process tune several families without reloading the data.
    """
    spec = task_spec(config.task)
    if config.family not in spec.families:
        raise ValueError(
            f"unknown {config.task} family {config.family!r}; choose from {', '.join(spec.families)}"
        )
    prepared = (
        prepared
        if prepared is not None or config.workers > 1
        else prepare(load_data(config.source), config.data)
    )
    data_fingerprint = prepared.fingerprint if prepared is not None else load_data(config.source).fingerprint
    fingerprint = study_fingerprint(data_fingerprint, config.data)
    experiment_id = use_experiment(config.data.subject, config.task)
    study = open_study(config, fingerprint)
    label_study(study, config, fingerprint, data_fingerprint)
    warm_start(study, config, fingerprint)
    parent_run_id = parent_run(config, study.study_name, experiment_id, fingerprint)
    log.info(
        "study %s in %s, MLflow experiment %s, parent run %s",
        study.study_name,
        config.storage_url(),
        experiment_name(config.data.subject, config.task),
        parent_run_id,
    )
    if config.workers > 1:
        spawn_workers(config, parent_run_id)
    else:
        run_worker(config, 0, parent_run_id, prepared)
    study = summarise_study(config, fingerprint, parent_run_id)
    MlflowClient(tracking_uri()).set_terminated(parent_run_id)
    return study


@dataclass(frozen=True)
class Tuned:
    """What training needs from a study: the best parameters and how long tuning took."""

    study: str
    params: dict
    seconds: float
    best_iteration: int | None


def study_best(
    storage: str, subject: str, family: str, task: str, fingerprint: str, study: str | None = None
) -> Tuned:
    """Best parameters of the study tuned on THIS data, or a StudyError that says why there are none."""
    spec = task_spec(task).families[family]
    name = study or study_name(subject, family, fingerprint, spec.space_version, task)
    try:  # load, not create: looking must not leave empty studies behind in the storage
        loaded = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        others = [s for s in related_studies(storage, subject, family, task) if s.study_name != name]
        if others:
            latest = others[0]
            raise StudyError(
                f"no {task} study of {family} for {subject} was tuned on this data (fingerprint "
                f"{fingerprint[:10]}); {storage} has {len(others)} tuned on other data (latest: "
                f"{latest.study_name}, data {str(latest.user_attrs.get('data_fingerprint', '?'))[:10]}, "
                f"source {latest.user_attrs.get('source', '?')}). Run `growth tune` on this data first, "
                "or pass --study NAME to use one knowingly"
            ) from None
        raise StudyError(
            f"no {task} study of {family} for {subject} in {storage}: run `growth tune` first"
        ) from None
    completed_or_explain(loaded)
    best = loaded.best_trial
    trials = [t for t in loaded.trials if t.datetime_start and t.datetime_complete]
    seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    return Tuned(name, best.params, seconds, best.user_attrs.get("best_iteration"))
