"""Everything a tuning worker or the training step needs: the district's growth pairs, one subject's
usable pairs, target, split and fitted transform, built by one function so every process prepares
data identically."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from features.contract import CLASSIC_PASS_MARK, growth_column, prior_score_column
from features.ingest import District, load_district
from features.pairs import growth_pairs, status_counts, usable
from features.schema import model_input_schema, validate_model_input
from features.school_aggregates import school_feature_columns, school_year_table
from features.split import Split, split_pairs
from features.transform import GrowthTransform, model_input_columns

PROTECTED = ("gender", "econ_disadvantaged", "english_learner", "special_education")


class GrowthDataError(ValueError):
    """The district cannot feed a growth model (e.g. no prior-year scores): one sentence for the user."""


@dataclass(frozen=True)
class Source:
    """Where a district is: a config file, or the two classic tables."""

    config: Path | None = None
    schools: Path | None = None
    students: Path | None = None
    pass_mark: float = CLASSIC_PASS_MARK

    def load(self, progress: bool = False) -> District:
        if self.config is not None:
            return load_district(self.config, progress=progress)
        return load_district(
            schools=self.schools, students=self.students, pass_mark=self.pass_mark, progress=progress
        )

    def describe(self) -> str:
        return str(self.config) if self.config else f"{self.schools} + {self.students}"


@dataclass
class DistrictData:
    """A loaded district with its growth pairs and school-year table (shared by every subject)."""

    source: Source
    district: District
    pairs: pd.DataFrame
    school_table: pd.DataFrame
    fingerprint: str

    @property
    def subjects(self) -> list[str]:
        return self.district.subject_names


def load_data(source: Source, progress: bool = False) -> DistrictData:
    """Load and validate the district, build growth pairs and the school-year aggregates once."""
    district = source.load(progress)
    pairs = growth_pairs(district)
    district.summary.pair_reasons = status_counts(pairs, district.subject_names) if len(pairs) else None
    table = school_year_table(district.students, district.schools, district.subject_names, pairs)
    return DistrictData(source, district, pairs, table, district.fingerprint())


@dataclass(frozen=True)
class DataConfig:
    """One subject's modelling data: which subject, and how to cut it."""

    subject: str = "math"
    seed: int = 42
    scheme: Literal["future", "random"] = "future"
    holdout_schools: bool = False
    protected_inputs: bool = True


def study_fingerprint(data_fingerprint: str, config: DataConfig) -> str:
    """The data (files + config) plus how it is cut and which inputs are used: a study tuned under one
    of these is not reused under another."""
    import hashlib

    key = (
        f"{data_fingerprint}|{config.scheme}|{config.holdout_schools}|{config.seed}|{config.protected_inputs}"
    )
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class Prepared:
    """Usable pairs of one subject, target, split, fitted transform and the encoded parts."""

    data: DistrictData
    config: DataConfig
    frame: pd.DataFrame
    y: np.ndarray
    split: Split
    transform: GrowthTransform
    X: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def subject(self) -> str:
        return self.config.subject

    @property
    def fingerprint(self) -> str:
        return self.data.fingerprint

    @property
    def study_key(self) -> str:
        return study_fingerprint(self.data.fingerprint, self.config)

    @property
    def input_columns(self) -> list[str]:
        columns = model_input_columns(self.data.subjects)
        if not self.config.protected_inputs:
            columns = [c for c in columns if c not in PROTECTED]
        return [c for c in columns if c in self.frame.columns]

    def part(self, name: str) -> pd.DataFrame:
        return self.frame.iloc[getattr(self.split, name)]

    def y_part(self, name: str) -> np.ndarray:
        return self.y[getattr(self.split, name)]

    def inputs(self, name: str) -> pd.DataFrame:
        """A part as the model receives it: model-input columns only."""
        return self.part(name)[self.input_columns]


def require_pairs(data: DistrictData, subject: str) -> pd.DataFrame:
    """The subject's usable pairs, or a one-sentence error saying which columns the model needs."""
    if subject not in data.subjects:
        raise GrowthDataError(f"unknown subject {subject!r}; this district has {', '.join(data.subjects)}")
    rows = usable(data.pairs, subject) if len(data.pairs) else data.pairs
    if len(rows) < 20:
        config = data.district.config
        if config.format == "classic":
            needed = ", ".join(prior_score_column(s) for s in data.subjects)
            raise GrowthDataError(
                f"the growth model needs each student's score of the year before: {config.files.students} "
                f"has no (or too few) prior-year scores; add the columns {needed}"
            )
        raise GrowthDataError(
            f"the growth model for {subject} needs students tested in two consecutive school years; "
            f"{config.path.name} gives {len(rows)} such students (years in the data: "
            f"{', '.join(map(str, data.district.years))})"
        )
    return rows.reset_index(drop=True)


def subject_scales(district: District) -> dict[str, tuple[float, float]]:
    """Lowest and highest obtainable score of each subject over its grades."""
    return {
        s.name: (min(lo for lo, _ in s.scale.values()), max(hi for _, hi in s.scale.values()))
        for s in district.subjects
    }


def prepare(data: DistrictData, config: DataConfig) -> Prepared:
    """Split the subject's usable pairs and fit the transform on the training part only."""
    frame = require_pairs(data, config.subject)
    y = frame[growth_column(config.subject)].to_numpy(dtype=float)
    split = split_pairs(frame, seed=config.seed, scheme=config.scheme, holdout_schools=config.holdout_schools)
    exclude = () if config.protected_inputs else PROTECTED
    transform = GrowthTransform(
        subjects=data.subjects,
        grades=data.district.grades,
        school_table=data.school_table,
        school_columns=school_feature_columns(data.subjects, data.school_table),
        exclude=exclude,
    )
    prepared = Prepared(data, config, frame, y, split, transform)
    schema = model_input_schema(
        data.subjects, data.district.grades, subject_scales(data.district), data.district.config.school_days
    )
    for part in ("train", "val", "cal", "test"):  # every row a model sees passes the one model-input schema
        validate_model_input(prepared.inputs(part), schema)
    transform.fit(prepared.inputs("train"))
    prepared.X = {
        name: transform.transform(prepared.inputs(name)) for name in ("train", "val", "cal", "test")
    }
    return prepared


def subsample(n_rows: int, limit: int | None, seed: int) -> np.ndarray:
    """Deterministic subset of row positions for fast tuning trials (all rows when limit is None)."""
    if limit is None or limit >= n_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=limit, replace=False))
