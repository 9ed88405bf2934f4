"""Shared fixtures: small synthetic districts on disk, isolated stores, and one small trained set of
champions (growth and needs-support, two subjects) that the model, serving and batch tests share.

Tests are split as in Made-With-ML: ``code/`` (functions and commands), ``data/`` (the data and the
generators), ``model/`` (behaviour of trained models), ``serving/`` (HTTP and batch paths). Slow
tests are marked ``slow``: ``pytest -m "not slow"`` is the quick loop, ``make test`` runs everything.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# BentoML reads its home when first imported: every test process gets its own store, never ~/bentoml.
SESSION_STORE = Path(tempfile.mkdtemp(prefix="growth-tests-"))
os.environ["BENTOML_HOME"] = str(SESSION_STORE / "bentoml")
# Compiled LightGBM forests (training.compiled) likewise: the session's own cache, never ~/.cache.
os.environ["GROWTH_FOREST_CACHE"] = str(SESSION_STORE / "forests")

SMALL_STUDENTS = 3000
LONG_STUDENTS = 6000


@pytest.fixture(scope="session")
def small_district(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3,000-student classic district (two tables, one target year) written once per session."""
    from pipelines.synthetic import generate_district, write_district

    folder = tmp_path_factory.mktemp("district") / "district"
    write_district(generate_district(n_students=SMALL_STUDENTS, seed=7), folder)
    return folder


@pytest.fixture(scope="session")
def long_district(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6,000-student, 4-year district in the vendor export format, with its config and truth files."""
    from pipelines.synthetic_long import generate_long_district, write_long_district

    folder = tmp_path_factory.mktemp("long") / "district"
    write_long_district(generate_long_district(n_students=LONG_STUDENTS, years=4, seed=7), folder)
    return folder


@pytest.fixture()
def isolated_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """MLflow and Optuna in a temporary folder, so a test never touches the project's stores."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("GROWTH_OPTUNA_STORAGE", f"sqlite:///{tmp_path / 'optuna.db'}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@dataclass(frozen=True)
class Trained:
    """The session's trained champions: where the stores are and what training returned."""

    district: Path
    folder: Path
    storage: str
    results: dict


@pytest.fixture(scope="session")
def trained(long_district: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trained]:
    """Tune (3 trials) and train growth and support champions for both subjects of the long district,
    exported to the session's BentoML store; shared by model, serving and batch tests."""
    from training.data import DataConfig, Source, load_data
    from training.train import TrainConfig, train_subject
    from training.tuning import TuneConfig, tune

    folder = tmp_path_factory.mktemp("trained")
    storage = f"sqlite:///{folder / 'optuna.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'mlflow.db'}")
        patch.setenv("GROWTH_OPTUNA_STORAGE", storage)
        # MLflow writes run artifacts under ./mlruns of the directory its store was opened in: the
        # session's folder, never the project's own mlruns
        with contextlib.chdir(folder):
            source = Source(config=long_district / "district.toml")
            data = load_data(source)
            results = {}
            for subject in data.subjects:
                data_config = DataConfig(subject)
                for task, families in (("growth", ("lgbm", "linear")), ("support", ("lgbm", "logistic"))):
                    for family in families:
                        tune(
                            TuneConfig(
                                source,
                                data_config,
                                family,
                                task,
                                trials=3,
                                timeout=60,
                                tune_rows=None,
                                progress=False,
                            )
                        )
                config = TrainConfig(
                    source, data_config, families=("lgbm", "linear"), out_dir=folder / "evaluation"
                )
                results[subject] = train_subject(config, data)
        yield Trained(long_district, folder, storage, results)
