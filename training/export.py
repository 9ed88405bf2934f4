"""Export of the champion to the BentoML model store (the hand-over to serving/)."""

from __future__ import annotations

import bentoml

from training.tracking import registered_model_name


def bento_model_name(target: str) -> str:
    return registered_model_name(target)


def export_champion(pipeline, target: str, metadata: dict) -> bentoml.Tag:
    """Save the whole pipeline (transform + school table + estimator) as a new store version.

    The service loads ``<name>:latest``; each export is labelled with the registry version it came from.
    """
    model = bentoml.sklearn.save_model(
        bento_model_name(target),
        pipeline,
        signatures={"predict": {"batchable": True, "batch_dim": 0}},
        labels={"alias": "champion", "target": target},
        metadata={**metadata, "target": target},
    )
    return model.tag
