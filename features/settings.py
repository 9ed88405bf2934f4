"""The one settings module: paths, URIs, names and defaults, read from the environment.

Every other module (the CLI, training, serving, reports, the Makefile via ``growth settings``)
asks this module instead of spelling a default again. Values come from ``GROWTH_*`` environment
variables (``MLFLOW_TRACKING_URI`` and ``BENTOML_HOME`` are honoured as MLflow and BentoML define
them); ``get_settings()`` reads them at call time, so a test or a worker process can change them.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, computed_field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT = "student-growth"


class Settings(BaseSettings):
    """Defaults of every command; override with GROWTH_<NAME> (e.g. GROWTH_OPTUNA_STORAGE)."""

    model_config = SettingsConfigDict(env_prefix="GROWTH_", frozen=True, extra="ignore")

    # Where things are.
    data_dir: Path = Field(Path("data/district"), description="Folder of the default synthetic district.")
    config_name: str = Field("district.toml", description="Config file name inside a district folder.")
    out_dir: Path = Field(Path("out"), description="Reports, evaluations and predictions.")
    tracking_uri: str = Field(
        "sqlite:///mlflow.db",
        validation_alias=AliasChoices("GROWTH_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking URI (SQLite file by default: no server needed).",
    )
    optuna_storage: str = Field("sqlite:///optuna.db", description="Optuna storage URL (any SQLAlchemy URL).")

    # The synthetic district.
    students: int = Field(150_000, description="Students enrolled per year in the synthetic district.")
    years: int = Field(4, description="School years in the synthetic district.")
    seed: int = Field(42, description="Generator, split and sampler seed.")

    # Tuning and training.
    trials: int = Field(30, description="Finished trials per study.")
    timeout: float = Field(
        60.0,
        description=(
            "Seconds per study (per worker): no trial starts after it, one in progress finishes; "
            "make run tunes 10 studies."
        ),
    )
    tune_rows: int = Field(60_000, description="Training rows per tuning trial (0 = all).")
    margin_pct: float = Field(
        8.0, description="Growth gate: test RMSE at least this % below the linear baseline."
    )
    support_margin_pct: float = Field(
        2.0, description="Support gate: PR AUC and Brier at least this % better than the prior-score rule."
    )
    interval_level: float = Field(0.9, description="Coverage of the prediction intervals.")

    # Reports and serving.
    min_group_size: int = Field(10, description="Groups smaller than this are suppressed in reports.")
    max_records: int = Field(10_000, description="Largest accepted prediction request, in records.")
    host: str = Field("127.0.0.1", description="Interface the server listens on.")
    port: int = Field(3000, description="HTTP port of the server.")
    compile_forests: bool = Field(
        True,
        description=(
            "Serving and batch scoring run LightGBM regressors as native code compiled by lleaves (the same "
            "numbers as LightGBM, about 3x faster; docs/serving.md); false: LightGBM's own predictor."
        ),
    )
    forest_cache: Path = Field(
        default_factory=lambda: Path.home() / ".cache" / PROJECT / "forests",
        description="Compiled LightGBM forests, one file per model and CPU (compiled once, then loaded).",
    )
    access_log: bool = Field(
        False,
        description="One log line per HTTP request (/metrics counts every request; cost: docs/serving.md).",
    )

    @computed_field(description="The default district's config: data_dir / config_name.")
    @property
    def default_config(self) -> Path:
        return self.data_dir / self.config_name


def get_settings() -> Settings:
    """Settings as the environment says now (cheap; not cached, so tests and workers can change it)."""
    return Settings()


def bentoml_home() -> str:
    """The BentoML store BentoML itself uses (``BENTOML_HOME``, default ``~/bentoml``)."""
    return os.environ.get("BENTOML_HOME", str(Path.home() / "bentoml"))


# Names: every MLflow experiment, registered model, BentoML model and Optuna study is spelled here.
def experiment_name(subject: str) -> str:
    return f"{PROJECT}-{subject}"


def registered_model_name(subject: str) -> str:
    """The growth model of a subject in the MLflow registry and the BentoML store."""
    return f"{PROJECT}-{subject}"


def support_model_name(subject: str) -> str:
    """The needs-support classifier of a subject in the MLflow registry and the BentoML store."""
    return f"{PROJECT}-{subject}-support"


def study_name(subject: str, family: str, fingerprint: str, space_version: str, task: str = "growth") -> str:
    """An Optuna study belongs to one subject, family, data fingerprint and search-space version."""
    kind = "" if task == "growth" else f"-{task}"
    return f"{PROJECT}-{subject}{kind}-{family}-{fingerprint[:10]}-s{space_version}"


REPORTS_EXPERIMENT = f"{PROJECT}-reports"
CHAMPION_ALIAS = "champion"
