"""Prediction logic shared by the BentoML service, the tests and the benchmark.

records -> contract-typed DataFrame -> each champion pipeline's predict -> response with intervals
and unseen-school warnings. Nothing here knows about HTTP, so the served answer and the in-process
answer are computed by the same code.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.contract import TARGETS
from serving.schemas import (
    MODEL_INPUT_FIELDS,
    ModelInfo,
    Prediction,
    PredictResponse,
    interval_field,
    prediction_field,
)

log = logging.getLogger(__name__)
CHAMPION_LABEL = ("alias", "champion")
TEXT_FIELDS = ("gender", "grade", "school_name", "parental_education")
FLAG_FIELDS = ("econ_disadvantaged", "english_learner", "special_education", "home_internet")
MAX_WARNED_RECORDS = 20


class NoChampionError(RuntimeError):
    """No champion model in the BentoML store: nothing to serve."""


@dataclass(frozen=True)
class ServedModel:
    """One target's champion pipeline (transform + estimator) and what the response says about it."""

    info: ModelInfo
    pipeline: Any

    @property
    def target(self) -> str:
        return self.info.target


def bento_model_name(target: str) -> str:
    """Same name as training.export uses (not imported: that module pulls in mlflow)."""
    return f"student-growth-{target}"


def champion_entry(target: str) -> Any | None:
    """Newest store version of the target's model labelled alias=champion, or None if there is none."""
    import bentoml

    key, value = CHAMPION_LABEL
    try:
        stored = bentoml.models.list(bento_model_name(target))
    except bentoml.exceptions.NotFound:
        return None
    models = [m for m in stored if m.info.labels.get(key) == value]
    return max(models, key=lambda m: m.creation_time) if models else None


def model_info(entry: Any, target: str) -> ModelInfo:
    """The response's description of a store entry, from the metadata training/export.py wrote."""
    meta = entry.info.metadata
    halfwidth = meta.get("interval_90_halfwidth")
    registry_version = meta.get("registry_version")
    return ModelInfo(
        target=target,
        name=entry.tag.name,
        version=str(entry.tag),
        registry_version=None if registry_version is None else str(registry_version),
        family=meta.get("family"),
        interval_90_halfwidth=None if halfwidth is None else float(halfwidth),
    )


def load_entry(entry: Any, target: str) -> ServedModel:
    """Unpickle one store entry's pipeline (the whole transform + estimator)."""
    import bentoml

    served = ServedModel(model_info(entry, target), bentoml.sklearn.load_model(entry))
    log.info(
        "serving %s (registry version %s, %s)", entry.tag, served.info.registry_version, served.info.family
    )
    return served


def load_champions(targets: Sequence[str] = tuple(TARGETS)) -> list[ServedModel]:
    """Load every target's champion from the store; fail with what to do if none exists."""
    served = []
    for target in targets:
        entry = champion_entry(target)
        if entry is None:
            log.info("no champion for %s in the BentoML store; not served", target)
            continue
        served.append(load_entry(entry, target))
    if not served:
        raise no_champion_error(targets)
    return served


def no_champion_error(targets: Sequence[str] = tuple(TARGETS)) -> NoChampionError:
    home = os.environ.get("BENTOML_HOME", "~/bentoml")
    return NoChampionError(
        f"no champion model ({', '.join(bento_model_name(t) for t in targets)}) in the BentoML model "
        f"store ({home}/models); run `make run` or `growth train` first"
    )


def records_to_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Validated records as the frame the pipeline was trained on: contract columns and dtypes, NaN if
    absent (an all-missing column must still be numeric for the imputer)."""
    columns: dict[str, Any] = {}
    for name in MODEL_INPUT_FIELDS:
        values = [r.get(name) for r in records]
        if name in TEXT_FIELDS:
            columns[name] = pd.array(values, dtype="string")
        elif name == "student_id":
            columns[name] = np.asarray(values, dtype="int64")
        else:
            columns[name] = np.asarray([np.nan if v is None else float(v) for v in values], dtype="float64")
    return pd.DataFrame(columns)


def predict_matrix(models: Sequence[ServedModel], records: Sequence[Mapping[str, Any]]) -> list[list[float]]:
    """Per record: [prediction, school known (1/0)] for each model in order; the batchable unit of work."""
    frame = records_to_frame(records)
    out = np.empty((len(frame), 2 * len(models)), dtype="float64")
    for i, model in enumerate(models):
        out[:, 2 * i] = np.asarray(model.pipeline.predict(frame), dtype="float64").ravel()
        unseen = set(model.pipeline.named_steps["school"].unseen_schools(frame))
        out[:, 2 * i + 1] = ~frame["school_name"].isin(unseen).to_numpy()
    return out.tolist()


def unseen_warnings(
    school_names: Sequence[str], unseen_by_target: Mapping[str, Sequence[bool]], n_targets: int
) -> list[str]:
    """One warning per unknown school, naming its record indices (first 20) and which models lacked it."""
    by_school: dict[str, tuple[set[int], set[str]]] = {}
    for target, unseen in unseen_by_target.items():
        for index in np.flatnonzero(np.asarray(unseen, dtype=bool)):
            indices, targets = by_school.setdefault(school_names[index], (set(), set()))
            indices.add(int(index))
            targets.add(target)
    warnings = []
    for school, (indices, targets) in sorted(by_school.items(), key=lambda item: min(item[1][0])):
        records = sorted(indices)
        shown = ", ".join(str(i) for i in records[:MAX_WARNED_RECORDS])
        more = f" (+{len(records) - MAX_WARNED_RECORDS} more)" if len(records) > MAX_WARNED_RECORDS else ""
        which = (
            "the model"
            if len(targets) == n_targets
            else " and ".join(f"the {t} model" for t in sorted(targets))
        )
        plural = "s" if len(records) > 1 else ""
        warnings.append(
            f"record{plural} {shown}{more}: school '{school}' unknown to {which}; district-level "
            "school aggregates used"
        )
    return warnings


def assemble(
    records: Sequence[Mapping[str, Any]], matrix: Sequence[Sequence[float]], infos: Sequence[ModelInfo]
) -> PredictResponse:
    """Turn predict_matrix output into the response: predictions in input order, intervals, warnings."""
    values = np.asarray(matrix, dtype="float64").reshape(len(records), 2 * len(infos))
    rows: list[dict[str, Any]] = [{"student_id": r["student_id"]} for r in records]
    unseen_by_target: dict[str, list[bool]] = {}
    for i, info in enumerate(infos):
        predictions, known = values[:, 2 * i], values[:, 2 * i + 1]
        half = info.interval_90_halfwidth
        for row, value in zip(rows, predictions, strict=True):
            row[prediction_field(info.target)] = float(value)
            if half is not None:
                row[interval_field(info.target)] = (float(value - half), float(value + half))
        unseen_by_target[info.target] = (known < 0.5).tolist()
    schools = [r["school_name"] for r in records]
    return PredictResponse(
        predictions=[Prediction(**row) for row in rows],
        models=list(infos),
        warnings=unseen_warnings(schools, unseen_by_target, len(infos)),
    )


class Predictor:
    """In-process predictions with exactly the service's logic (tests, benchmark, notebooks)."""

    def __init__(self, models: Sequence[ServedModel]):
        self.models = list(models)

    @classmethod
    def from_store(cls, targets: Sequence[str] = tuple(TARGETS)) -> Predictor:
        return cls(load_champions(targets))

    @property
    def infos(self) -> list[ModelInfo]:
        return [m.info for m in self.models]

    def predict(self, records: Sequence[Mapping[str, Any]]) -> PredictResponse:
        """Validated records (StudentRecord.model_input() dicts) to the API response."""
        return assemble(records, predict_matrix(self.models, records), self.infos)
