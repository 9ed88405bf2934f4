"""Registry steps, each its own function: log the model to its run, register a version, promote it
(the gate decides the ``champion`` alias), export the champion to BentoML for serving.

Promotion is separate from registration, as in well-kept MLOps templates: every candidate champion
gets a registry version (tagged with its gate result), and only one that passes takes the alias.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ColSpec, Schema

from features.settings import CHAMPION_ALIAS
from training.tracking import tracking_uri

# The pickled model refers to project classes; ship their code with the model.
CODE_PATHS = [str(Path(__file__).resolve().parents[1] / package) for package in ("features", "training")]
MODEL_PACKAGES = (
    "scikit-learn",
    "pandas",
    "numpy",
    "scipy",
    "cloudpickle",
    "lightgbm",
    "tensorflow-cpu",
    "keras",
    "optuna",
    "matplotlib",
    "pandera",
    "pydantic",
    "pydantic-settings",
    "pyyaml",
)


def model_requirements() -> list[str]:
    """Exact versions of what loading the model imports, read from this environment (the lock file's)."""
    return [f"{name}=={version(name)}" for name in MODEL_PACKAGES]


def serving_signature(example: pd.DataFrame, prediction: np.ndarray, required: set[str]) -> ModelSignature:
    """Inferred signature with every input but ``required`` optional, so a registered model served by
    MLflow accepts records without them (the transform imputes them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(example, prediction)
    inputs = Schema([ColSpec(s.type, s.name, required=s.name in required) for s in signature.inputs.inputs])
    return ModelSignature(inputs=inputs, outputs=signature.outputs)


def log_model(model, example: pd.DataFrame, required: set[str]) -> str:
    """Log the model (cloudpickle: it holds project classes and possibly Keras) to the active run."""
    signature = serving_signature(example, model.predict(example), required)
    logged = mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        input_example=example,
        serialization_format="cloudpickle",
        code_paths=CODE_PATHS,
        pip_requirements=model_requirements(),
    )
    return logged.model_uri


def register(model_uri: str, name: str, tags: dict[str, str]) -> str:
    """A new registry version of ``name``; returns its version number."""
    return str(mlflow.register_model(model_uri, name, tags=tags).version)


@dataclass(frozen=True)
class Gate:
    passed: bool
    reason: str


def promote(name: str, version_: str, gate: Gate) -> None:
    """Tag the version with the gate result; move the champion alias only when the gate passed."""
    client = MlflowClient(tracking_uri())
    client.set_model_version_tag(name, version_, "gate", "passed" if gate.passed else "failed")
    client.set_model_version_tag(name, version_, "gate_reason", gate.reason)
    if gate.passed:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version_)
