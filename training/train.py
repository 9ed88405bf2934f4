"""Final training: baselines and each tuned family refit on the training set, compared in MLflow;
the best by validation RMSE becomes the candidate champion, registered and, if it clears the
gate against the linear baseline, aliased ``champion`` and exported to BentoML."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ColSpec, Schema

from features.transform import PRIOR_SCORES
from training import evaluation
from training.data import DataConfig, Prepared, prepare
from training.families import BASELINES, FAMILIES, fit_family
from training.metrics import reduction_pct, scores
from training.tracking import log_figure, registered_model_name, tracking_uri, use_experiment
from training.tuning import DEFAULT_STORAGE, TuneConfig, open_storage

log = logging.getLogger(__name__)
HEADLINE_BASELINE = "baseline_linear"
# What every candidate run reports and reviewers compare in the MLflow UI.
HEADLINE_METRICS = (
    "test_mae",
    "test_rmse",
    "test_r2",
    "val_mae",
    "val_rmse",
    "mae_reduction_vs_baseline_pct",
    "rmse_reduction_vs_baseline_pct",
)
INTERVAL_LEVEL = 0.9


# The pickled pipeline refers to project classes; ship their code with the model.
CODE_PATHS = [str(Path(__file__).resolve().parents[1] / package) for package in ("features", "training")]
MODEL_PACKAGES = (
    "scikit-learn",
    "pandas",
    "numpy",
    "scipy",
    "cloudpickle",
    "tensorflow-cpu",
    "keras",
    "optuna",
    "matplotlib",
    "pandera",
)


def model_requirements() -> list[str]:
    """Exact versions of what loading the model imports, read from this environment (the lock file's)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in MODEL_PACKAGES]


class GateFailed(RuntimeError):
    """The best model does not beat the linear baseline by the required margin."""


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig
    storage: str = DEFAULT_STORAGE
    study_prefix: str = "student-growth"
    families: tuple[str, ...] = tuple(FAMILIES)
    margin_pct: float = 8.0
    out_dir: Path = Path("out/evaluation")
    export_bento: bool = True


@dataclass
class Candidate:
    name: str
    run_id: str
    metrics: dict[str, float]
    model: object = None
    params: dict = field(default_factory=dict)
    model_uri: str = ""


def model_input(frame: pd.DataFrame) -> pd.DataFrame:
    """What the served model receives: the student record without target-year scores or names.

    Counts are cast to float so the logged signature accepts missing optional values.
    """
    record = frame.drop(columns=[c for c in ("math_score", "reading_score", "student_name") if c in frame])
    counts = [c for c in record.columns if c != "student_id" and pd.api.types.is_integer_dtype(record[c])]
    return record.astype({c: "float64" for c in counts})


def serving_signature(example: pd.DataFrame, prediction: np.ndarray) -> ModelSignature:
    """Inferred signature with the contract's optional columns marked optional, so a registered
    model served by MLflow accepts records without them (the pipeline imputes them)."""
    from features.contract import STUDENT_COLUMNS

    optional = {c.name for c in STUDENT_COLUMNS if not c.required} - set(PRIOR_SCORES)
    with warnings.catch_warnings():  # integer ids never miss; optional counts are floats (model_input)
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(example, prediction)
    inputs = Schema(
        [
            ColSpec(spec.type, spec.name, required=spec.name not in optional)
            for spec in signature.inputs.inputs
        ]
    )
    return ModelSignature(inputs=inputs, outputs=signature.outputs)


def evaluate_split(
    model, prepared: Prepared, features: bool
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """val/test metrics and predictions, on encoded matrices (tuned families) or raw frames (baselines)."""
    metrics, predictions = {}, {}
    for part in ("val", "test"):
        X = getattr(prepared, f"X_{part}") if features else model_input(prepared.part(part))
        predictions[part] = np.asarray(model.predict(X), dtype=float)
        metrics.update(scores(prepared.y_part(part), predictions[part], part))
    return metrics, predictions


def add_reductions(metrics: dict[str, float], baselines: dict[str, dict[str, float]]) -> dict[str, float]:
    """Error reductions vs the linear baseline (headline) and the naive baseline."""
    out = dict(metrics)
    for name, suffix in ((HEADLINE_BASELINE, "baseline"), ("baseline_naive", "naive_baseline")):
        if name in baselines:
            for kind in ("mae", "rmse"):
                out[f"{kind}_reduction_vs_{suffix}_pct"] = reduction_pct(
                    metrics[f"test_{kind}"], baselines[name][f"test_{kind}"]
                )
    return out


def study_best(config: TrainConfig, family: str) -> tuple[dict, float] | None:
    """Best params of the family's study and its wall-clock tuning time, or None if never tuned."""
    tune_config = TuneConfig(
        data=config.data, family=family, storage=config.storage, study_prefix=config.study_prefix
    )
    try:  # load, not create: looking must not leave empty studies behind in the storage
        study = optuna.load_study(study_name=tune_config.study_name, storage=open_storage(config.storage))
        best = study.best_trial
    except (KeyError, ValueError):
        return None
    trials = [t for t in study.trials if t.datetime_start and t.datetime_complete]
    seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials)
    return best.params, seconds


def train(config: TrainConfig) -> dict:
    """Fit, compare, register and gate; returns a summary (raises GateFailed after registering)."""
    target = config.data.target
    tuned = {family: study_best(config, family) for family in config.families}
    for family, best in tuned.items():
        if best is None:
            log.warning(
                "family %s has no tuned study in %s; skipped (run `growth tune` first)",
                family,
                config.storage,
            )
    if not any(tuned.values()):
        raise RuntimeError("no tuned family to train: run `growth tune` first")
    prepared = prepare(config.data)
    use_experiment(target)
    dataset = mlflow.data.from_pandas(
        prepared.students.drop(columns=["student_name"]),
        source=str(config.data.students),
        name=f"district-{prepared.fingerprint}",
        targets=None,
    )
    common_tags = {
        "target": target,
        "data_fingerprint": prepared.fingerprint,
        "holdout_schools": str(config.data.holdout_schools),
        "split_seed": str(config.data.seed),
    }
    baselines: dict[str, dict[str, float]] = {}
    for name, make in BASELINES.items():
        start = time.perf_counter()
        model = make().fit(model_input(prepared.part("train")), prepared.y_part("train"))
        metrics, _ = evaluate_split(model, prepared, features=False)
        baselines[name] = metrics
        with mlflow.start_run(run_name=name, tags={**common_tags, "family": name, "run_kind": "baseline"}):
            mlflow.log_input(dataset, context="training")
            mlflow.log_metrics(
                {**add_reductions(metrics, baselines), "fit_seconds": time.perf_counter() - start}
            )
    candidates = [
        fit_candidate(prepared, family, params, tune_seconds, baselines, common_tags, dataset)
        for family, (params, tune_seconds) in ((f, b) for f, b in tuned.items() if b is not None)
    ]
    champion = min(candidates, key=lambda c: c.metrics["val_rmse"])
    return register_champion(config, prepared, champion, baselines, candidates)


def fit_candidate(
    prepared: Prepared,
    family_name: str,
    params: dict,
    tune_seconds: float,
    baselines: dict[str, dict[str, float]],
    tags: dict[str, str],
    dataset,
) -> Candidate:
    """Refit one family's best params on the full training set and log it as a top-level run."""
    from features.transform import model_pipeline

    family = FAMILIES[family_name]
    start = time.perf_counter()
    estimator = fit_family(
        family,
        params,
        prepared.config.seed,
        prepared.n_numeric,
        prepared.X_train,
        prepared.y_part("train"),
        prepared.X_val,
        prepared.y_part("val"),
    )
    fit_seconds = time.perf_counter() - start
    metrics, predictions = evaluate_split(estimator, prepared, features=True)
    pipeline = model_pipeline(prepared.transform, estimator)
    interval = float(np.quantile(np.abs(prepared.y_part("val") - predictions["val"]), INTERVAL_LEVEL))
    metrics = add_reductions(metrics, baselines)
    metrics.update(
        {"fit_seconds": fit_seconds, "tune_seconds": tune_seconds, "interval_90_halfwidth": interval}
    )
    example = model_input(prepared.part("val").head(5))
    with mlflow.start_run(
        run_name=f"candidate-{family_name}", tags={**tags, "family": family_name, "run_kind": "candidate"}
    ) as run:
        mlflow.log_input(dataset, context="training")
        mlflow.log_params(params)
        mlflow.log_metrics(metrics)
        signature = serving_signature(example, pipeline.predict(example))
        logged = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            input_example=example,
            serialization_format="cloudpickle",
            code_paths=CODE_PATHS,
            pip_requirements=model_requirements(),
        )
        for name, figure in evaluation.residual_figures(
            prepared.y_part("test"), predictions["test"], f"{family_name}"
        ).items():
            log_figure(figure, f"plots/{name}")
        val_frame = model_input(prepared.part("val"))
        importance = evaluation.feature_importance(
            pipeline, val_frame, prepared.y_part("val"), prepared.config.seed
        )
        mlflow.log_text(importance.to_csv(header=["rmse_increase"]), "feature_importance.csv")
        log_figure(
            evaluation.importance_figure(importance, f"{family_name}: permutation importance"),
            "plots/feature_importance.png",
        )
    log.info(
        "%s: val_rmse %.4f test_rmse %.4f (%.1f%% below linear baseline)",
        family_name,
        metrics["val_rmse"],
        metrics["test_rmse"],
        metrics.get("rmse_reduction_vs_baseline_pct", np.nan),
    )
    return Candidate(family_name, run.info.run_id, metrics, pipeline, params, logged.model_uri)


def register_champion(
    config: TrainConfig,
    prepared: Prepared,
    champion: Candidate,
    baselines: dict[str, dict[str, float]],
    candidates: list[Candidate],
) -> dict:
    """Evaluation report, registry version, gate, alias and BentoML export for the best candidate."""
    target = config.data.target
    test = prepared.part("test")
    predicted = np.asarray(champion.model.predict(model_input(test)), dtype=float)
    actual = prepared.y_part("test")
    subgroups = evaluation.subgroup_errors(test, actual, predicted, prepared.schools)
    at_average_school = model_input(test).assign(school_name=evaluation.AVERAGE_SCHOOL)
    value_added = evaluation.school_value_added(
        test, actual, predicted, np.asarray(champion.model.predict(at_average_school), dtype=float)
    )
    truth = evaluation.read_truth(config.data.students)
    truth_figures = (
        evaluation.truth_comparison(test, actual, predicted, target, truth, value_added) if truth else None
    )
    headline = {k: champion.metrics[k] for k in HEADLINE_METRICS}
    report = evaluation.evaluation_markdown(
        target, champion.name, headline, subgroups, value_added, truth_figures
    )
    out_dir = Path(config.out_dir) / target
    out_dir.mkdir(parents=True, exist_ok=True)
    comparison = comparison_table(baselines, candidates)
    for name, text in (
        ("evaluation.md", report),
        ("subgroups.csv", subgroups.to_csv(index=False)),
        ("school_value_added.csv", value_added.to_csv()),
        ("families.csv", comparison.to_csv(index=False)),
    ):
        write_atomic(out_dir / name, text)
    client = MlflowClient(tracking_uri())
    with mlflow.start_run(run_id=champion.run_id):
        mlflow.log_artifacts(str(out_dir), "evaluation")
        if truth_figures:
            mlflow.log_metrics(truth_figures)
        mlflow.set_tag("champion_candidate", "true")
    name = registered_model_name(target)
    version = mlflow.register_model(
        champion.model_uri, name, tags={"family": champion.name, "data_fingerprint": prepared.fingerprint}
    )
    baseline_rmse = baselines[HEADLINE_BASELINE]["test_rmse"]
    required = baseline_rmse * (1 - config.margin_pct / 100.0)
    summary = {
        "target": target,
        "champion_family": champion.name,
        "run_id": champion.run_id,
        "registered_model": name,
        "version": version.version,
        **headline,
        "baseline_linear_test_rmse": baseline_rmse,
        "required_test_rmse": required,
        "families": comparison,
        "truth": truth_figures,
        "report_dir": str(out_dir),
    }
    if champion.metrics["test_rmse"] > required:
        client.set_model_version_tag(name, version.version, "gate", "failed")
        raise GateFailed(
            f"{name} v{version.version} ({champion.name}) has test RMSE "
            f"{champion.metrics['test_rmse']:.4f}; the gate needs <= {required:.4f} "
            f"({config.margin_pct:g}% below the linear baseline's {baseline_rmse:.4f}). "
            "Registered without the champion alias; the previous champion stays."
        )
    client.set_model_version_tag(name, version.version, "gate", "passed")
    client.set_registered_model_alias(name, "champion", version.version)
    if config.export_bento:
        from training.export import export_champion

        summary["bento_tag"] = str(
            export_champion(
                champion.model,
                target,
                {
                    "registered_model": name,
                    "registry_version": str(version.version),
                    "family": champion.name,
                    "mlflow_run_id": champion.run_id,
                    "interval_90_halfwidth": champion.metrics["interval_90_halfwidth"],
                    "test_rmse": champion.metrics["test_rmse"],
                    "data_fingerprint": prepared.fingerprint,
                },
            )
        )
    return summary


def comparison_table(baselines: dict[str, dict[str, float]], candidates: list[Candidate]) -> pd.DataFrame:
    """One row per baseline and family: the table reviewers and the issue note need."""
    rows = [
        {"model": name, **{k: m[k] for k in ("val_rmse", "test_mae", "test_rmse", "test_r2")}}
        for name, m in baselines.items()
    ]
    rows += [
        {
            "model": c.name,
            **{
                k: c.metrics[k]
                for k in (
                    "val_rmse",
                    "test_mae",
                    "test_rmse",
                    "test_r2",
                    "rmse_reduction_vs_baseline_pct",
                    "tune_seconds",
                    "fit_seconds",
                )
            },
        }
        for c in candidates
    ]
    return pd.DataFrame(rows)


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
