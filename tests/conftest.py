"""Shared fixtures: a small synthetic district on disk and isolated MLflow/BentoML stores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SMALL_STUDENTS = 3000


@pytest.fixture(scope="session")
def small_district(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3,000-student synthetic district written to disk once per test session."""
    from pipelines.synthetic import generate_district, write_district

    folder = tmp_path_factory.mktemp("district") / "district"
    write_district(generate_district(n_students=SMALL_STUDENTS, seed=7), folder)
    return folder


@pytest.fixture()
def isolated_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point MLflow and BentoML at a temporary folder so tests never touch the project's stores."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "bentoml"))
    monkeypatch.chdir(tmp_path)
    return tmp_path
