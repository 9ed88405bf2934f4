"""Export of a champion to the BentoML model store (the hand-over to serving/)."""

from __future__ import annotations

import bentoml
import cloudpickle

from features.settings import CHAMPION_ALIAS, get_settings

MODEL_FILE = "model.pkl"


def export_champion(model, name: str, kind: str, subject: str, metadata: dict) -> bentoml.Tag:
    """Save the whole model object (transform + estimator + intervals) as a new store version labelled
    ``alias=champion``; the service loads the newest such version of each name (serving.predictor).
    The metadata also describes the inputs, grades and scale, so the API schema is built without
    unpickling a model."""
    described = {
        "inputs": list(model.input_columns),
        "grades": list(model.meta.get("target_grades", model.transform.grades)),
        "scale": model.meta.get("scale"),
        "interval_level": getattr(getattr(model, "interval", None), "level", None),
    }
    with bentoml.models.create(
        name,
        labels={"alias": CHAMPION_ALIAS, "subject": subject, "kind": kind},
        # BentoML metadata takes basic types only: absent entries are left out, not stored as None.
        metadata={
            k: v
            for k, v in {**metadata, **described, "subject": subject, "kind": kind}.items()
            if v is not None
        },
    ) as stored:
        with open(stored.path_of(MODEL_FILE), "wb") as handle:
            cloudpickle.dump(model, handle)
    if hasattr(model, "compile_forests") and get_settings().compile_forests:
        # Compile its LightGBM regressors now (the pickle above holds none of it): `growth serve` and
        # `growth predict` on this machine then load them from the forest cache instead of compiling.
        model.compile_forests()
    return stored.tag


def load_exported(stored: bentoml.Model):
    """The model object of a store entry written by ``export_champion``."""
    with open(stored.path_of(MODEL_FILE), "rb") as handle:
        return cloudpickle.load(handle)
