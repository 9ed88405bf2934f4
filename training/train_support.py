"""Training of one subject's needs-support classifier on the growth model's prepared data and fitted
transform: baselines, tuned candidates, calibration on the calibration part, then evaluate ->
register -> promote -> export, as for growth."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from features.settings import get_settings, support_model_name
from training import evaluate as ev
from training.behaviour import behaviour_checks, checks_table
from training.champion import champion_label, support_gate, with_behaviour, write_folder
from training.data import Prepared
from training.families import FeatureInfo
from training.model import SupportModel
from training.registry import log_model, promote, register
from training.support import (
    DEFAULT_SUPPORT_FAMILIES,
    SUPPORT_FAMILIES,
    calibrate,
    fit_support,
    labels_of,
    refit_support,
    support_baselines,
    support_scores,
)
from training.tracking import log_figure, use_experiment
from training.train import target_grades
from training.tuning import StudyError, study_best

log = logging.getLogger(__name__)


def train_support(
    config,
    prepared: Prepared,
    families: tuple[str, ...] = DEFAULT_SUPPORT_FAMILIES,
    margin_pct: float | None = None,
) -> dict:
    """Fit, calibrate, compare, register and gate the needs-support classifier of one subject."""
    subject = prepared.subject
    margin = get_settings().support_margin_pct if margin_pct is None else margin_pct
    labels = labels_of(prepared)
    y = {part: labels[getattr(prepared.split, part)] for part in ("train", "val", "cal", "test")}
    tuned = {}
    for family in families:
        try:
            tuned[family] = study_best(
                config.storage_url(),
                subject,
                family,
                "support",
                prepared.study_key,
                config.study.get(f"support:{family}"),
            )
        except StudyError as err:
            log.warning("%s", err)
    if not tuned:
        raise StudyError(
            f"no tuned needs-support family for {subject} on this data: run `growth tune --task support`"
        )
    use_experiment(subject, "support")
    tags = {"subject": subject, "data_fingerprint": prepared.fingerprint, "split": prepared.split.scheme}
    district = prepared.data.district
    cuts = {g: district.subject(subject).proficient_cut(g) for g in district.grades}
    baselines = {}
    for name, model in support_baselines(subject, prepared.data.subjects, cuts, district.grades).items():
        # Baselines read the pair rows (prior scores, grades, last year's level), not the model inputs.
        model.fit(prepared.part("train"), y["train"])
        metrics = {
            **support_scores(y["val"], model.predict_proba(prepared.part("val"))[:, 1], "val"),
            **support_scores(y["test"], model.predict_proba(prepared.part("test"))[:, 1], "test"),
        }
        baselines[name] = metrics
        with mlflow.start_run(run_name=name, tags={**tags, "family": name, "run_kind": "baseline"}):
            mlflow.log_metrics(metrics)
    info = FeatureInfo(tuple(prepared.transform.feature_names_))
    candidates = {}
    for family, best in tuned.items():
        start = time.perf_counter()
        fitted = fit_support(
            SUPPORT_FAMILIES[family],
            best.params,
            prepared.config.seed,
            info,
            prepared.X["train"],
            y["train"],
            prepared.X["val"],
            y["val"],
        )
        metrics = {
            **support_scores(y["val"], fitted.predict_proba(prepared.X["val"])[:, 1], "val"),
            **support_scores(
                y["test"],
                calibrate(fitted, prepared.X["cal"], y["cal"]).predict_proba(prepared.X["test"])[:, 1],
                "test",
            ),
            "fit_seconds": time.perf_counter() - start,
            "tune_seconds": best.seconds,
        }
        with mlflow.start_run(
            run_name=f"candidate-{family}", tags={**tags, "family": family, "run_kind": "candidate"}
        ) as run:
            mlflow.log_params(best.params)
            mlflow.log_metrics(metrics)
        candidates[family] = (fitted, metrics, run.info.run_id)
    choice = min(candidates, key=lambda f: candidates[f][1]["val_log_loss"])
    fitted = candidates[choice][0]
    if config.refit:
        X = np.vstack([prepared.X["train"], prepared.X["val"]])
        fitted = refit_support(
            SUPPORT_FAMILIES[choice],
            tuned[choice].params,
            prepared.config.seed,
            info,
            X,
            np.concatenate([y["train"], y["val"]]),
            fitted,
        )
    calibrated = calibrate(fitted, prepared.X["cal"], y["cal"])
    model = SupportModel(
        subject=subject,
        family=choice,
        transform=prepared.transform,
        estimator=calibrated,
        input_columns=tuple(prepared.input_columns),
        meta={
            "data_fingerprint": prepared.fingerprint,
            "split": prepared.split.describe(),
            "target_grades": target_grades(prepared),
        },
    )
    p_test = model.predict(prepared.inputs("test"))
    metrics = support_scores(y["test"], p_test, "test")
    metrics.update({k: v for k, v in candidates[choice][1].items() if k.startswith("val_")})
    behaviour = behaviour_checks(model, prepared.inputs("test"), "support", prepared.config.seed)
    gate = with_behaviour(support_gate(metrics, baselines["baseline_rule"], margin), behaviour)
    metrics["behaviour_checks_passed"] = float(all(c.passed for c in behaviour))
    table = support_table(baselines, candidates, metrics, choice, config.refit)
    folder = Path(config.out_dir) / subject
    write_folder(
        folder,
        {
            "support.csv": table.to_csv(index=False),
            "support.md": f"# Needs support next year: {subject}\n\n{prepared.split.describe()}.\n\n"
            f"{ev.markdown_table(table)}\n\nGate: {gate.reason} -> {'passed' if gate.passed else 'failed'}\n",
            "support_behaviour.csv": checks_table(behaviour).to_csv(index=False),
            "support_card.json": json.dumps(
                {
                    "subject": subject,
                    "family": choice,
                    "metrics": metrics,
                    "baselines": baselines,
                    "gate": gate.reason,
                    "gate_passed": gate.passed,
                },
                indent=2,
                default=float,
            ),
        },
    )
    name = support_model_name(subject)
    with mlflow.start_run(
        run_name=f"champion-{choice}", tags={**tags, "family": choice, "run_kind": "champion"}
    ) as run:
        mlflow.log_params(tuned[choice].params)
        mlflow.log_metrics(metrics)
        log_figure(
            ev.calibration_figure(y["test"], p_test, f"{subject}: needs support next year"),
            "plots/calibration.png",
        )
        mlflow.log_artifacts(str(folder), "evaluation")
        example = prepared.inputs("val").head(5)
        model_uri = log_model(model, example, {"school_id", "grade"})
    version = register(
        model_uri, name, {"family": choice, "data_fingerprint": prepared.fingerprint, "kind": "support"}
    )
    promote(name, version, gate)
    summary = {
        "subject": subject,
        "kind": "support",
        "champion_family": choice,
        "registered_model": name,
        "version": version,
        "gate_passed": gate.passed,
        "gate": gate.reason,
        "table": table,
        "model": model,
        "labels": y["test"],
        "probabilities": p_test,
        "run_id": run.info.run_id,
    }
    if gate.passed and config.export_bento:
        from training.export import export_champion

        summary["bento_tag"] = str(
            export_champion(
                model,
                name,
                "support",
                subject,
                {
                    "registry_version": version,
                    "family": choice,
                    "mlflow_run_id": run.info.run_id,
                    "data_fingerprint": prepared.fingerprint,
                },
            )
        )
    return summary


def support_table(
    baselines: dict, candidates: dict, champion: dict, choice: str, refit: bool = True
) -> pd.DataFrame:
    keys = (
        "test_roc_auc",
        "test_pr_auc",
        "test_brier",
        "test_log_loss",
        "test_precision_at_5pct",
        "test_precision_at_10pct",
        "test_recall_at_10pct",
        "test_precision_at_20pct",
    )
    rows = [{"model": n, **{k: m.get(k) for k in keys}} for n, m in baselines.items()]
    rows += [{"model": f"{n} (calibrated)", **{k: c[1].get(k) for k in keys}} for n, c in candidates.items()]
    label = f"champion ({champion_label(choice, refit)}, calibrated)"
    rows.append({"model": label, **{k: champion.get(k) for k in keys}})
    return pd.DataFrame(rows)
