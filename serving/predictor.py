"""Prediction logic shared by the HTTP service, batch scoring, the tests and the benchmark.

records (or a frame) -> column arrays -> each subject's transform -> growth model (prediction and
interval) and needs-support classifier -> response. Nothing here knows about HTTP, so the served
numbers and the batch numbers are computed by the same code, on the same column arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.contract import prior_score_column
from features.settings import CHAMPION_ALIAS, PROJECT, bentoml_home, get_settings
from training.compiled import isna, same_state

log = logging.getLogger(__name__)
MAX_WARNED_RECORDS = 20


class NoChampionError(RuntimeError):
    """No champion model in the BentoML store: nothing to serve."""


@dataclass(frozen=True)
class ModelInfo:
    """Which model answered: BentoML store version and the MLflow registry version it came from."""

    subject: str
    kind: str  # growth | support
    name: str
    version: str
    registry_version: str | None
    family: str | None
    interval_level: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Champion:
    info: ModelInfo
    model: Any


def champion_entries() -> list[Any]:
    """The newest store version of every project model labelled alias=champion."""
    import bentoml

    newest: dict[str, Any] = {}
    for stored in bentoml.models.list():
        labels = stored.info.labels
        if not stored.tag.name.startswith(PROJECT) or labels.get("alias") != CHAMPION_ALIAS:
            continue
        if "kind" not in labels:
            continue  # exported by release 0.1.0 (a bare pipeline): not servable by this release
        current = newest.get(stored.tag.name)
        if current is None or stored.creation_time > current.creation_time:
            newest[stored.tag.name] = stored
    return sorted(newest.values(), key=lambda m: (m.info.labels["subject"], m.info.labels["kind"]))


def load_entry(stored: Any) -> Champion:
    from training.export import load_exported

    labels, meta = stored.info.labels, stored.info.metadata
    info = ModelInfo(
        subject=labels["subject"],
        kind=labels["kind"],
        name=stored.tag.name,
        version=str(stored.tag),
        registry_version=None if meta.get("registry_version") is None else str(meta["registry_version"]),
        family=meta.get("family"),
        interval_level=meta.get("interval_level"),
    )
    log.info(
        "serving %s (%s %s, registry version %s)", stored.tag, info.subject, info.kind, info.registry_version
    )
    return Champion(info, load_exported(stored))


@dataclass
class Served:
    """Every champion, by subject: a growth model and, where one passed its gate, a support model."""

    growth: dict[str, Champion]
    support: dict[str, Champion] = field(default_factory=dict)

    @property
    def subjects(self) -> list[str]:
        return list(self.growth)

    @property
    def without_support(self) -> list[str]:
        """Subjects served with a growth champion but no needs-support champion (none passed its gate)."""
        return [s for s in self.subjects if s not in self.support]

    @property
    def infos(self) -> list[ModelInfo]:
        return [c.info for s in self.subjects for c in (self.growth[s], self.support.get(s)) if c is not None]

    @property
    def input_columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for champion in [*self.growth.values(), *self.support.values()]:
            seen.update(dict.fromkeys(champion.model.input_columns))
        return list(seen)

    @property
    def grades(self) -> list[str]:
        model = next(iter(self.growth.values())).model
        return list(model.meta.get("target_grades", model.transform.grades))

    def scale(self, subject: str) -> tuple[float, float] | None:
        scale = self.growth[subject].model.meta.get("scale")
        return None if scale is None else (float(scale[0]), float(scale[1]))


def no_champion_error() -> NoChampionError:
    return NoChampionError(
        f"no champion model in the BentoML model store ({bentoml_home()}/models): run `make run`, or "
        "`growth tune` and `growth train` (a champion is exported only when it passes its gate)"
    )


def load_champions() -> Served:
    """Every champion in the store; NoChampionError with what to do when there is none."""
    growth: dict[str, Champion] = {}
    support: dict[str, Champion] = {}
    for stored in champion_entries():
        champion = load_entry(stored)
        (growth if champion.info.kind == "growth" else support)[champion.info.subject] = champion
    if not growth:
        raise no_champion_error()
    for subject in list(support):
        if subject not in growth:
            log.warning("support model of %s served without a growth champion: skipped", subject)
            del support[subject]
    return Served(growth, support)


def columns_of(records: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, np.ndarray]:
    """JSON records -> column arrays (absent fields as None): the only conversion serving does."""
    return {name: np.array([r.get(name) for r in records], dtype=object) for name in names}


def frame_columns(frame: pd.DataFrame, names: Sequence[str]) -> dict[str, np.ndarray]:
    """A frame -> the same column arrays as ``columns_of`` would give for its rows as records."""
    out = {}
    for name in names:
        if name not in frame.columns:
            continue
        values = frame[name]
        if isinstance(values.dtype, pd.CategoricalDtype) or values.dtype == object:
            array = values.astype(object).to_numpy()
            out[name] = np.where(pd.isna(array), None, array)
        else:
            out[name] = values.to_numpy()
    return out


class Predictor:
    """In-process predictions with exactly the service's logic (service, batch scoring, tests, bench)."""

    def __init__(self, served: Served, compile_forests: bool | None = None):
        """``compile_forests``: LightGBM regressors as native code (default: the setting, on), compiled
        here (seconds per model the first time on a machine, then loaded from the forest cache)."""
        self.served = served
        if get_settings().compile_forests if compile_forests is None else compile_forests:
            for champion in served.growth.values():
                champion.model.compile_forests()
        self.columns = served.input_columns
        self.infos = served.infos
        # Subjects whose support model was fitted on the growth model's transform (the same object, or
        # an equal copy after both were pickled): their features are computed once per request.
        self.shared_features = {
            subject: same_state(champion.model.transform, served.growth[subject].model.transform)
            for subject, champion in served.support.items()
            if subject in served.growth
        }

    @classmethod
    def from_store(cls) -> Predictor:
        return cls(load_champions())

    def predict_columns(self, columns: Mapping[str, np.ndarray], n: int) -> dict[str, dict[str, np.ndarray]]:
        """Per subject: predicted growth, interval bounds, school unseen, P(needs support) (NaN without
        a support champion), and which records lack the subject's own prior score (no prediction)."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for subject, champion in self.served.growth.items():
            model = champion.model
            prior = columns.get(prior_score_column(subject))
            lacking = np.ones(n, bool) if prior is None else isna(prior)
            features, unseen = model.features_and_unseen(columns)
            result = model.predict_interval(columns, features=features, unseen=unseen)
            support = self.served.support.get(subject)
            if support is not None:
                own = (
                    features
                    if self.shared_features.get(subject)
                    else support.model.transform.transform(columns)
                )
                result["needs_support"] = support.model.predict_proba_features(own)[:, 1]
            else:
                result["needs_support"] = np.full(n, np.nan)
            result["no_prior"] = lacking
            out[subject] = result
        return out

    def predict(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Validated records (dicts) to the API response (a plain dict, ready for JSON)."""
        return self.predict_many([records])[0]

    def predict_many(self, requests: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
        """Several requests' records scored in one pass, one response per request: each the same as
        scoring that request alone (every evaluator scores each row on its own), at the cost of one
        call. The service uses it to answer requests that arrive together (``serving.coalesce``)."""
        records = [record for request in requests for record in request]
        results = self.predict_columns(columns_of(records, self.columns), len(records))
        answers, start = [], 0
        for request in requests:
            stop = start + len(request)
            part = {s: {k: v[start:stop] for k, v in r.items()} for s, r in results.items()}
            answers.append(assemble(request, part, self.served, self.infos))
            start = stop
        return answers

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Batch scoring: one row per input row, a column block per subject."""
        columns = frame_columns(frame, self.columns)
        results = self.predict_columns(columns, len(frame))
        out = {}
        for subject, result in results.items():
            prior = frame[prior_score_column(subject)].to_numpy(dtype=float)
            valid = ~result["no_prior"]
            out[f"{subject}_predicted_growth"] = np.where(valid, result["predicted"], np.nan)
            out[f"{subject}_predicted_score"] = np.where(valid, prior + result["predicted"], np.nan)
            out[f"{subject}_growth_low"] = np.where(valid, result["low"], np.nan)
            out[f"{subject}_growth_high"] = np.where(valid, result["high"], np.nan)
            out[f"{subject}_needs_support_probability"] = np.where(valid, result["needs_support"], np.nan)
            out[f"{subject}_school_unseen"] = result["unseen"]
            # scored in another subject but not this one: say why here (the side file lists only
            # students with no prediction at all)
            out[f"{subject}_not_scored"] = pd.array(
                np.where(valid, None, f"no {prior_score_column(subject)}"), dtype="string"
            )
        return pd.DataFrame(out, index=frame.index)


def assemble(
    records: Sequence[Mapping[str, Any]],
    results: dict[str, dict[str, np.ndarray]],
    served: Served,
    infos: Sequence[ModelInfo],
) -> dict[str, Any]:
    """The response: per record and subject the growth, interval, predicted score and support probability."""
    predictions: list[dict[str, Any]] = [{"student_id": r.get("student_id")} for r in records]
    unseen_by_subject: dict[str, np.ndarray] = {}
    lacking: dict[str, list[int]] = {}
    for subject, result in results.items():
        prior_field = prior_score_column(subject)
        support = subject in served.support
        # Python floats once per column (``tolist``: the same values as float() of each element)
        no_prior = result["no_prior"].tolist()
        predicted, low, high = (
            np.asarray(result[k], dtype=float).tolist() for k in ("predicted", "low", "high")
        )
        needs = np.asarray(result["needs_support"], dtype=float).tolist() if support else None
        for i, row in enumerate(predictions):
            if no_prior[i]:
                row[subject] = None
                lacking.setdefault(subject, []).append(i)
                continue
            growth = predicted[i]
            entry = {
                "predicted_growth": growth,
                "predicted_score": float(records[i][prior_field]) + growth,
                "growth_interval": [low[i], high[i]],
            }
            if needs is not None:
                entry["needs_support_probability"] = needs[i]
            row[subject] = entry
        unseen_by_subject[subject] = result["unseen"] & ~result["no_prior"]
    warnings = unseen_warnings([r.get("school_id") for r in records], unseen_by_subject)
    warnings += [
        f"{_records_text(rows)}: no {prior_score_column(subject)}; no {subject} prediction"
        for subject, rows in lacking.items()
    ]
    return {"predictions": predictions, "models": [i.as_dict() for i in infos], "warnings": warnings}


def _records_text(indices: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:MAX_WARNED_RECORDS])
    more = f" (+{len(indices) - MAX_WARNED_RECORDS} more)" if len(indices) > MAX_WARNED_RECORDS else ""
    return f"record{'s' if len(indices) > 1 else ''} {shown}{more}"


def unseen_warnings(school_ids: Sequence[Any], unseen_by_subject: Mapping[str, np.ndarray]) -> list[str]:
    """One warning per school the models never saw, naming its records (first 20)."""
    by_school: dict[str, set[int]] = {}
    for unseen in unseen_by_subject.values():
        for index in np.flatnonzero(np.asarray(unseen, dtype=bool)):
            by_school.setdefault(str(school_ids[index]), set()).add(int(index))
    return [
        f"{_records_text(sorted(indices))}: school '{school}' unknown to the model; district-level school "
        "aggregates used, and an interval calibrated on students whose school was made unknown"
        for school, indices in sorted(by_school.items(), key=lambda item: min(item[1]))
    ]
