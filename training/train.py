"""Final training of one subject's growth model, step by step:

1. baselines (mean growth per grade; OLS on the prior scores), each a top-level MLflow run;
2. every tuned family fitted with its best parameters on the training part (the fit that selection
   and the candidate runs report), plus an average of the two best families;
3. the best by validation RMSE is the champion; it is refitted on train + validation (the rounds or
   epochs its validation fit chose) and gets conformal intervals from the calibration part;
4. evaluate (``training.evaluate``) -> register -> promote (the gate) -> export (``training.registry``).

Studies are looked up by the data's fingerprint: parameters tuned on other data are refused.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from features.contract import prior_score_column
from features.settings import get_settings
from training import evaluate as ev
from training.data import (
    DataConfig,
    DistrictData,
    Prepared,
    Source,
    load_data,
    prepare,
    require_pairs,
    study_fingerprint,
    subject_scales,
)
from training.families import BASELINES, DEFAULT_FAMILIES, FAMILIES, FeatureInfo, fit_family, refit_family
from training.intervals import (
    GroupDesign,
    IntervalModel,
    bucket_of,
    conformal_quantiles,
    count_missing,
    fit_group_quantile,
    fit_scale_model,
    masked_copies,
)
from training.metrics import reduction_pct, rmse, scores
from training.model import AveragedRegressor, GrowthModel
from training.tracking import log_figure, tracking_uri, use_experiment
from training.tuning import StudyError, Tuned, study_best

log = logging.getLogger(__name__)
HEADLINE_BASELINE = "baseline_linear"
HEADLINE_METRICS = (
    "test_mae",
    "test_rmse",
    "test_r2",
    "val_mae",
    "val_rmse",
    "mae_reduction_vs_baseline_pct",
    "rmse_reduction_vs_baseline_pct",
)


@dataclass(frozen=True)
class TrainConfig:
    source: Source
    data: DataConfig = field(default_factory=DataConfig)
    storage: str = ""
    families: tuple[str, ...] = DEFAULT_FAMILIES
    margin_pct: float | None = None
    out_dir: Path = Path("out/evaluation")
    export_bento: bool = True
    refit: bool = True
    ensemble: bool = True
    study: dict[str, str] = field(default_factory=dict)  # family -> study name, to use a study knowingly

    @property
    def margin(self) -> float:
        return get_settings().margin_pct if self.margin_pct is None else self.margin_pct

    def storage_url(self) -> str:
        return self.storage or get_settings().optuna_storage


@dataclass
class Candidate:
    name: str
    params: dict
    fitted: object  # trained on the training part only
    predictions: dict[str, np.ndarray]
    metrics: dict[str, float]
    members: tuple[str, ...] = ()
    run_id: str = ""
    tune_seconds: float = 0.0


def tuned_families(config: TrainConfig, fingerprint: str) -> dict[str, Tuned]:
    """Best parameters of each family's study on THIS data; other data is refused with its reason."""
    found: dict[str, Tuned] = {}
    refusals: list[str] = []
    for family in config.families:
        try:
            found[family] = study_best(
                config.storage_url(),
                config.data.subject,
                family,
                "growth",
                fingerprint,
                config.study.get(family),
            )
        except StudyError as err:
            refusals.append(str(err))
            log.warning("%s", err)
    if not found:
        raise StudyError(
            "no tuned family to train for " + config.data.subject + ":\n  " + "\n  ".join(refusals)
        )
    return found


def fit_baselines(prepared: Prepared, tags: dict[str, str]) -> dict[str, dict[str, float]]:
    """Each baseline fitted on the training part and logged as a top-level run."""
    results: dict[str, dict[str, float]] = {}
    for name, make in BASELINES.items():
        start = time.perf_counter()
        model = make(prepared.data.subjects).fit(prepared.inputs("train"), prepared.y_part("train"))
        metrics = {}
        for part in ("val", "test"):
            metrics.update(scores(prepared.y_part(part), model.predict(prepared.inputs(part)), part))
        results[name] = metrics
        with mlflow.start_run(run_name=name, tags={**tags, "family": name, "run_kind": "baseline"}):
            mlflow.log_metrics(
                {**with_reductions(metrics, results), "fit_seconds": time.perf_counter() - start}
            )
    return results


def with_reductions(metrics: dict[str, float], baselines: dict[str, dict[str, float]]) -> dict[str, float]:
    """Error reductions vs the linear baseline (headline) and the naive baseline."""
    out = dict(metrics)
    for name, suffix in ((HEADLINE_BASELINE, "baseline"), ("baseline_naive", "naive_baseline")):
        if name in baselines:
            for kind in ("mae", "rmse"):
                out[f"{kind}_reduction_vs_{suffix}_pct"] = reduction_pct(
                    metrics[f"test_{kind}"], baselines[name][f"test_{kind}"]
                )
    return out


def fit_candidate(prepared: Prepared, family: str, tuned: Tuned, baselines: dict, tags: dict) -> Candidate:
    """One family's best parameters fitted on the training part, scored on validation and test, logged."""
    info = FeatureInfo(tuple(prepared.transform.feature_names_))
    start = time.perf_counter()
    fitted = fit_family(
        FAMILIES[family],
        tuned.params,
        prepared.config.seed,
        info,
        prepared.X["train"],
        prepared.y_part("train"),
        prepared.X["val"],
        prepared.y_part("val"),
    )
    fit_seconds = time.perf_counter() - start
    predictions = {
        part: np.asarray(fitted.predict(prepared.X[part]), dtype=float) for part in ("val", "cal", "test")
    }
    candidate = Candidate(family, tuned.params, fitted, predictions, {}, tune_seconds=tuned.seconds)
    candidate.metrics = candidate_metrics(prepared, predictions, baselines)
    candidate.metrics.update({"fit_seconds": fit_seconds, "tune_seconds": tuned.seconds})
    log_candidate(prepared, candidate, tags, {"optuna_study": tuned.study})
    return candidate


def candidate_metrics(
    prepared: Prepared, predictions: dict[str, np.ndarray], baselines: dict
) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for part in ("val", "test"):
        metrics.update(scores(prepared.y_part(part), predictions[part], part))
    return with_reductions(metrics, baselines)


def ensemble_candidate(
    prepared: Prepared, candidates: list[Candidate], baselines: dict, tags: dict
) -> Candidate:
    """Equal-weight average of the two best families (by validation RMSE); no weights are fitted on
    validation, so its validation RMSE is as honest a selection score as the members'."""
    best = sorted(candidates, key=lambda c: c.metrics["val_rmse"])[:2]
    predictions = {
        part: np.mean([c.predictions[part] for c in best], axis=0) for part in ("val", "cal", "test")
    }
    members = tuple(c.name for c in best)
    fitted = AveragedRegressor([c.fitted for c in best], [0.5, 0.5], members)
    candidate = Candidate(
        "ensemble",
        {"members": "+".join(members)},
        fitted,
        predictions,
        {},
        members,
        tune_seconds=sum(c.tune_seconds for c in best),
    )
    candidate.metrics = candidate_metrics(prepared, predictions, baselines)
    log_candidate(prepared, candidate, tags, {"members": "+".join(members)})
    return candidate


def log_candidate(prepared: Prepared, candidate: Candidate, tags: dict, extra_tags: dict) -> None:
    with mlflow.start_run(
        run_name=f"candidate-{candidate.name}",
        tags={**tags, **extra_tags, "family": candidate.name, "run_kind": "candidate"},
    ) as run:
        mlflow.log_params({k: v for k, v in candidate.params.items()})
        mlflow.log_metrics(candidate.metrics)
        for name, figure in ev.residual_figures(
            prepared.y_part("test"), candidate.predictions["test"], candidate.name
        ).items():
            log_figure(figure, f"plots/{name}")
    candidate.run_id = run.info.run_id


def refit_champion(prepared: Prepared, champion: Candidate, tuned: dict[str, Tuned], refit: bool) -> object:
    """The champion refitted on train + validation (each member for an ensemble), or as fitted."""
    if not refit:
        return champion.fitted
    info = FeatureInfo(tuple(prepared.transform.feature_names_))
    X = np.vstack([prepared.X["train"], prepared.X["val"]])
    y = np.concatenate([prepared.y_part("train"), prepared.y_part("val")])

    def one(name: str, fitted: object) -> object:
        return refit_family(FAMILIES[name], tuned[name].params, prepared.config.seed, info, X, y, fitted)

    if champion.members:
        members = [
            one(name, fitted)
            for name, fitted in zip(champion.members, champion.fitted.estimators, strict=True)
        ]
        return AveragedRegressor(members, list(champion.fitted.weights), champion.members)
    return one(champion.name, champion.fitted)


def optional_inputs(prepared: Prepared) -> tuple[str, ...]:
    """Inputs a request may leave out: all but the school, the grade and the subject's own prior score
    (the target year is not a student field; it defaults to the year after the data)."""
    required = {"school_id", "grade", "school_year", prior_score_column(prepared.subject)}
    return tuple(c for c in prepared.input_columns if c not in required)


def fit_intervals(prepared: Prepared, train_only: object, final: object, level: float) -> IntervalModel:
    """sigma(x) from validation residuals of the train-only fit; conformal quantiles on the calibration
    part scored by the final model (see training.intervals)."""
    optional = optional_inputs(prepared)
    transform = prepared.transform
    seed = prepared.config.seed

    def scored(part: str, model: object, offset: int) -> tuple[np.ndarray, ...]:
        frame = masked_copies(prepared.inputs(part).reset_index(drop=True), optional, seed + offset)
        rows = frame.pop("_row").to_numpy()
        features = transform.transform(frame)
        residual = np.abs(prepared.y_part(part)[rows] - np.asarray(model.predict(features), dtype=float))
        return features, count_missing(frame, optional), transform.unseen_school(frame), residual, frame

    features, missing, unseen, residual, _ = scored("val", train_only, 1)
    scale = fit_scale_model(features, missing, unseen, residual, seed)
    interval = IntervalModel(level, optional, scale, np.zeros(8), np.zeros(8, dtype=np.int64))
    features, missing, unseen, residual, frame = scored("cal", final, 2)
    scores = residual / interval.sigma(features, missing, unseen)
    interval.quantiles, interval.counts = conformal_quantiles(scores, bucket_of(missing, unseen), level)
    interval.groups, interval.group_coef = fit_group_quantile(
        GroupDesign(), frame, missing, unseen, scores, level, seed
    )
    return interval


def coverage_table(model: GrowthModel, frame: pd.DataFrame, actual: np.ndarray, seed: int) -> pd.DataFrame:
    """Coverage and mean width of the intervals on the test year: complete records, 3 and all optional
    fields removed, and every school made unknown."""
    rng = np.random.default_rng(seed)
    optional = [c for c in model.interval.optional if c in frame.columns]
    cases: dict[str, pd.DataFrame] = {"all fields sent": frame}
    three = frame.copy()
    picks = np.argsort(rng.random((len(frame), len(optional))), axis=1)[:, :3]
    for j, name in enumerate(optional):
        drop = (picks == j).any(axis=1)
        three[name] = three[name].astype(object).where(~drop, None)
    cases["3 optional fields removed"] = three
    cases["all optional fields removed"] = frame.drop(columns=optional)
    cases["school unknown to the model"] = frame.assign(school_id="\x00unseen school")
    rows = []
    for name, case in cases.items():
        out = model.predict_interval(case)
        inside = (actual >= out["low"]) & (actual <= out["high"])
        rows.append(
            {
                "case": name,
                "n": len(actual),
                "coverage_90": float(inside.mean()),
                "mean_width": float(np.mean(out["high"] - out["low"])),
                "rmse": rmse(actual, out["predicted"]),
            }
        )
    return pd.DataFrame(rows)


def target_grades(prepared: Prepared) -> list[str]:
    """Grades the model learned to predict (a target-year grade of a training pair), in grade order."""
    seen = set(prepared.part("train")["grade"].astype(str))
    return [g for g in prepared.data.district.grades if g in seen]


def subject_scale(data: DistrictData, subject: str) -> list[float]:
    """Lowest and highest obtainable score of the subject over all grades (bounds of served priors)."""
    return list(subject_scales(data.district)[subject])


def train(config: TrainConfig, data: DistrictData | None = None) -> dict:
    """Fit, compare, register and gate one subject's growth model; returns a summary with the gate result."""
    data = data or load_data(config.source)
    subject = config.data.subject
    require_pairs(data, subject)  # the data's own problem first: no growth pairs, no model
    tuned = tuned_families(config, study_fingerprint(data.fingerprint, config.data))
    prepared = prepare(data, config.data)
    use_experiment(subject)
    tags = {
        "subject": subject,
        "data_fingerprint": data.fingerprint,
        "split": prepared.split.scheme,
        "split_seed": str(config.data.seed),
        "protected_inputs": str(config.data.protected_inputs),
    }
    baselines = fit_baselines(prepared, tags)
    candidates = [fit_candidate(prepared, family, tuned[family], baselines, tags) for family in tuned]
    if config.ensemble and len(candidates) >= 2:
        candidates.append(ensemble_candidate(prepared, candidates, baselines, tags))
    choice = min(candidates, key=lambda c: c.metrics["val_rmse"])
    log.info("%s: champion by validation RMSE is %s (%.4f)", subject, choice.name, choice.metrics["val_rmse"])
    start = time.perf_counter()
    final = refit_champion(prepared, choice, tuned, config.refit)
    refit_seconds = time.perf_counter() - start
    interval = fit_intervals(prepared, choice.fitted, final, get_settings().interval_level)
    model = GrowthModel(
        subject=subject,
        family=choice.name,
        transform=prepared.transform,
        estimator=final,
        interval=interval,
        input_columns=tuple(prepared.input_columns),
        required=("school_id", "grade", prior_score_column(subject)),
        meta={
            "scale": subject_scale(data, subject),
            "target_grades": target_grades(prepared),
            "data_fingerprint": data.fingerprint,
            "split": prepared.split.describe(),
            "years": data.district.years,
            "members": list(choice.members),
            "refit_on_train_and_val": config.refit,
        },
    )
    from training.champion import finish_growth_champion

    summary = finish_growth_champion(
        config, prepared, model, choice, candidates, baselines, tags, refit_seconds
    )
    return {**summary, "prepared": prepared, "model": model}


def train_subject(config: TrainConfig, data: DistrictData | None = None, support: bool = True) -> dict:
    """Growth model, then (when the subject has cut scores) the needs-support classifier on the same
    prepared data and transform, then the fairness audit of both on the test year."""
    from training.fairness import audit, audit_markdown
    from training.support import NoCutScores
    from training.train_support import train_support

    data = data or load_data(config.source)
    growth = train(config, data)
    prepared, model = growth["prepared"], growth["model"]
    result = {"growth": growth, "support": None, "fairness": []}
    if support:
        try:
            result["support"] = train_support(config, prepared)
        except (NoCutScores, StudyError) as err:
            log.warning("%s: no needs-support model (%s)", config.data.subject, err)
            result["support_skipped"] = str(err)
    test = ev.with_school_type(prepared.part("test").reset_index(drop=True), data.district.schools)
    out = model.predict_interval(prepared.inputs("test"))
    needs = result["support"]["labels"] if result["support"] else None
    p = result["support"]["probabilities"] if result["support"] else None
    growth_table, support_table, sentences = audit(
        test, prepared.y_part("test"), out["predicted"], out["low"], out["high"], needs, p
    )
    from training.champion import write_folder

    folder = Path(config.out_dir) / config.data.subject
    files = {
        "fairness.md": audit_markdown(config.data.subject, growth_table, support_table, sentences),
        "fairness_growth.csv": growth_table.to_csv(index=False),
    }
    if support_table is not None:
        files["fairness_support.csv"] = support_table.to_csv(index=False)
    write_folder(folder, files)
    client = MlflowClient(tracking_uri())
    for summary in (growth, result["support"]):
        if summary:
            for name in files:
                client.log_artifact(summary["run_id"], str(folder / name), "evaluation")
    result["fairness"] = sentences
    result["fairness_tables"] = (growth_table, support_table)
    return result
