"""After a champion is chosen: evaluate -> log the champion run -> register -> promote -> export.

Each step is one function; the evaluation files (``out/evaluation/<subject>/``) are what the growth
report's model card and the issue notes read.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd

from features.settings import get_settings, registered_model_name, support_model_name
from training import evaluate as ev
from training.behaviour import behaviour_checks, checks_table
from training.data import Prepared
from training.metrics import scores
from training.registry import Gate, log_model, promote, register
from training.tracking import log_figure

log = logging.getLogger(__name__)
TOP_DRIVERS = 4


def write_folder(folder: Path, files: dict[str, str | bytes]) -> None:
    """Write every file to a temporary folder beside ``folder``, then move each into place."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, content in files.items():
            path = tmp / name
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
        for name in files:
            os.replace(tmp / name, folder / name)
    finally:
        for leftover in tmp.glob("*"):
            leftover.unlink()
        tmp.rmdir()


def champion_label(name: str, refit: bool) -> str:
    """How the champion's row is named: refitted on train + validation, or as fitted on train."""
    return f"{name}, refit" if refit else f"{name}, as fitted on train"


def comparison_table(
    baselines: dict, candidates: list, champion_metrics: dict, champion_name: str, refit: bool = True
) -> pd.DataFrame:
    """One row per baseline, candidate (train-only fit) and the champion (refitted unless --no-refit)."""
    keys = ("val_rmse", "test_mae", "test_rmse", "test_r2", "rmse_reduction_vs_baseline_pct")
    rows = [{"model": name, **{k: m.get(k, np.nan) for k in keys}} for name, m in baselines.items()]
    rows += [
        {
            "model": c.name,
            **{k: c.metrics.get(k, np.nan) for k in keys},
            "tune_seconds": c.tune_seconds,
            "fit_seconds": c.metrics.get("fit_seconds", np.nan),
        }
        for c in candidates
    ]
    rows.append(
        {
            "model": f"champion ({champion_label(champion_name, refit)})",
            **{k: champion_metrics.get(k, np.nan) for k in keys},
        }
    )
    return pd.DataFrame(rows)


def drivers(model, prepared: Prepared) -> tuple[pd.Series, dict[str, pd.DataFrame]]:
    """Permutation importance of the inputs and partial dependence of the strongest numeric ones, on the
    calibration part (never fitted on by the final model)."""
    frame = prepared.inputs("cal").reset_index(drop=True)
    actual = prepared.y_part("cal")
    columns = [c for c in prepared.input_columns if c not in ("school_year",)]
    importance = ev.permutation_importance(model.predict, frame, actual, columns, prepared.config.seed)
    numeric = [
        c for c in importance.index if pd.api.types.is_numeric_dtype(frame[c]) and frame[c].nunique() > 2
    ]
    curves = {
        c: ev.partial_dependence(model.predict, frame, c, prepared.config.seed) for c in numeric[:TOP_DRIVERS]
    }
    return importance, curves


def finish_growth_champion(
    config, prepared: Prepared, model, choice, candidates, baselines, tags, refit_seconds: float
) -> dict:
    """Evaluate the final model, log it as the champion run, register, gate and export it."""
    from training.train import HEADLINE_BASELINE, coverage_table, with_reductions

    subject = prepared.subject
    test = prepared.part("test")
    actual = prepared.y_part("test")
    out = model.predict_interval(prepared.inputs("test"))
    metrics = with_reductions(
        {
            **scores(actual, out["predicted"], "test"),
            **{k: v for k, v in choice.metrics.items() if k.startswith("val_")},
        },
        baselines,
    )
    metrics["refit_seconds"] = refit_seconds
    metrics["test_interval_coverage"] = float(((actual >= out["low"]) & (actual <= out["high"])).mean())
    frame = ev.with_school_type(test.reset_index(drop=True), prepared.data.district.schools)
    subgroups = ev.group_table(frame, ev.growth_errors(actual, out["predicted"], out["low"], out["high"]))
    coverage = coverage_table(
        model, prepared.inputs("test").reset_index(drop=True), actual, prepared.config.seed
    )
    per_year = ev.per_year(test, actual, out["predicted"])
    truth = ev.read_truth(ev.truth_folder(prepared.data.source))
    floor = ev.noise_floor(test, actual, out["predicted"], truth, subject) if truth is not None else {}
    metrics.update(floor)
    importance, curves = drivers(model, prepared)
    comparison = comparison_table(baselines, candidates, metrics, choice.name, config.refit)
    baseline_rmse = baselines[HEADLINE_BASELINE]["test_rmse"]
    required = baseline_rmse * (1 - config.margin / 100.0)
    behaviour = behaviour_checks(model, prepared.inputs("test"), "growth", prepared.config.seed)
    gate = with_behaviour(
        Gate(
            metrics["test_rmse"] <= required,
            f"test RMSE {metrics['test_rmse']:.4f} vs required <= {required:.4f} "
            f"({config.margin:g}% below the linear baseline's {baseline_rmse:.4f})",
        ),
        behaviour,
    )
    metrics["behaviour_checks_passed"] = float(all(c.passed for c in behaviour))
    card = {
        "subject": subject,
        "family": choice.name,
        "members": list(choice.members),
        "split": prepared.split.describe(),
        "years": prepared.data.district.years,
        "n_train": int(len(prepared.split.train)),
        "n_val": int(len(prepared.split.val)),
        "n_cal": int(len(prepared.split.cal)),
        "n_test": int(len(prepared.split.test)),
        "metrics": metrics,
        "gate": gate.reason,
        "gate_passed": gate.passed,
        "protected_inputs": prepared.config.protected_inputs,
        "data_fingerprint": prepared.fingerprint,
    }
    folder = Path(config.out_dir) / subject
    files = {
        "evaluation.md": growth_markdown(
            subject,
            choice.name,
            prepared,
            metrics,
            comparison,
            per_year,
            subgroups,
            coverage,
            floor,
            config.refit,
        ),
        "families.csv": comparison.to_csv(index=False),
        "subgroups.csv": subgroups.to_csv(index=False),
        "coverage.csv": coverage.to_csv(index=False),
        "behaviour.csv": checks_table(behaviour).to_csv(index=False),
        "per_year.csv": per_year.to_csv(index=False),
        "importance.csv": importance.rename("rmse_increase").to_csv(),
        "partial_dependence.csv": pd.concat([c.assign(column=n) for n, c in curves.items()]).to_csv(
            index=False
        )
        if curves
        else "value,mean_prediction,column\n",
        "model_card.json": json.dumps(card, indent=2, default=float),
    }
    write_folder(folder, files)
    name = registered_model_name(subject)
    with mlflow.start_run(
        run_name=f"champion-{choice.name}", tags={**tags, "family": choice.name, "run_kind": "champion"}
    ) as run:
        mlflow.log_params({k: v for k, v in choice.params.items()})
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(folder), "evaluation")
        for fig_name, figure in ev.residual_figures(
            actual, out["predicted"], f"{choice.name} ({'refit' if config.refit else 'as fitted'})"
        ).items():
            log_figure(figure, f"plots/{fig_name}")
        log_figure(
            ev.importance_figure(importance, f"{subject}: permutation importance"),
            "plots/feature_importance.png",
        )
        example = prepared.inputs("val").head(5)
        model_uri = log_model(model, example, set(model.required))
    version = register(
        model_uri, name, {"family": choice.name, "data_fingerprint": prepared.fingerprint, "kind": "growth"}
    )
    promote(name, version, gate)
    summary = {
        "subject": subject,
        "kind": "growth",
        "champion_family": choice.name,
        "run_id": run.info.run_id,
        "registered_model": name,
        "version": version,
        "gate_passed": gate.passed,
        "gate": gate.reason,
        "behaviour_passed": all(c.passed for c in behaviour),
        **{
            k: metrics.get(k)
            for k in (
                "test_mae",
                "test_rmse",
                "test_r2",
                "val_rmse",
                "rmse_reduction_vs_baseline_pct",
                "test_interval_coverage",
                "noise_floor_rmse",
                "test_rmse_over_noise_floor",
            )
        },
        "families": comparison,
        "coverage": coverage,
        "report_dir": str(folder),
    }
    if gate.passed and config.export_bento:
        from training.export import export_champion

        summary["bento_tag"] = str(
            export_champion(
                model,
                name,
                "growth",
                subject,
                {
                    "registry_version": version,
                    "family": choice.name,
                    "mlflow_run_id": run.info.run_id,
                    "test_rmse": metrics["test_rmse"],
                    "data_fingerprint": prepared.fingerprint,
                    "interval_level": model.interval.level,
                },
            )
        )
    return summary


def growth_markdown(
    subject: str,
    family: str,
    prepared: Prepared,
    metrics: dict,
    comparison: pd.DataFrame,
    per_year: pd.DataFrame,
    subgroups: pd.DataFrame,
    coverage: pd.DataFrame,
    floor: dict,
    refit: bool = True,
) -> str:
    """The human-readable evaluation report of the champion."""
    lines = [
        f"# Evaluation: {subject} growth, champion `{family}`",
        "",
        f"Validation scheme: {prepared.split.describe()}.",
        "",
        "## Models (test part; candidates fitted on the training part, the champion "
        + ("refitted on train + validation)" if refit else "as fitted on the training part: --no-refit)"),
        "",
        ev.markdown_table(comparison),
        "",
        "## Test error per year pair",
        "",
        ev.markdown_table(per_year),
    ]
    if floor:
        lines += ["", "## Against the synthetic truth", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in floor.items()]
    lines += [
        "",
        f"## Prediction intervals ({get_settings().interval_level:.0%}) on the test part",
        "",
        ev.markdown_table(coverage),
        "",
        "## Error, bias (predicted minus actual) and interval coverage by subgroup (test part)",
        "",
        ev.markdown_table(subgroups),
    ]
    return "\n".join(lines) + "\n"


def with_behaviour(gate: Gate, checks: list) -> Gate:
    """The metric gate AND every behavioural check (training.behaviour) must pass for promotion."""
    failed = [c.detail for c in checks if not c.passed]
    if not failed:
        return Gate(gate.passed, f"{gate.reason}; behavioural checks passed ({len(checks)})")
    return Gate(False, f"{gate.reason}; behavioural checks failed: {'; '.join(failed)}")


def support_gate(metrics: dict, rule: dict, margin: float) -> Gate:
    """The classifier must beat the prior-score rule on PR AUC and Brier score by ``margin`` percent."""
    need_pr = rule["test_pr_auc"] * (1 + margin / 100)
    need_brier = rule["test_brier"] * (1 - margin / 100)
    passed = metrics["test_pr_auc"] >= need_pr and metrics["test_brier"] <= need_brier
    return Gate(
        passed,
        f"PR AUC {metrics['test_pr_auc']:.4f} (needs >= {need_pr:.4f}) and Brier "
        f"{metrics['test_brier']:.4f} (needs <= {need_brier:.4f}), {margin:g}% better than the "
        f"prior-score rule's {rule['test_pr_auc']:.4f} / {rule['test_brier']:.4f}",
    )


def support_model_name_for(subject: str) -> str:
    return support_model_name(subject)
