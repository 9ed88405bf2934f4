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
from features.school_aggregates import school_year_table, z_column
from features.split import Split, split_pairs
from features.transform import GrowthTransform, model_input_columns

PROTECTED = ("gender", "econ_disadvantaged", "english_learner", "special_education")
# Bumped when the model's features change meaning, so studies tuned on the old features are not reused.
FEATURES_VERSION = "3"
VA_YEARS = 3  # a school's value-added feature pools its growth pairs of up to this many years


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
    _model_schools: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def subjects(self) -> list[str]:
        return self.district.subject_names

    def model_school_table(self) -> pd.DataFrame:
        """The school-year table with each school's value-added (``va_<subject>``): built once, when a
        model is first prepared (reports never need it)."""
        if self._model_schools is None:
            self._model_schools = self.school_table.join(school_value_added_features(self))
        return self._model_schools


def va_column(subject: str) -> str:
    return f"va_{subject}"


def school_value_added_features(data: DistrictData) -> pd.DataFrame:
    """Each school's value-added in each school year y that has growth pairs: the empirical-Bayes
    estimate (view A, training.value_added) from its pairs of years y - VA_YEARS + 1 .. y. It is the
    school feature the growth models use: one number per subject that carries what the school adds
    (its teaching and its peers), shrunk by its reliability, instead of a dozen raw aggregates that a
    model fits to a handful of school-years. The model joins year t-1's row to a target year t, so the
    feature of a test year comes from earlier years only. Index (school_id, school_year)."""
    from training.value_added import VAConfig, school_value_added

    pairs = data.pairs
    index = pd.MultiIndex.from_arrays([[], []], names=["school_id", "school_year"])
    frame = pd.DataFrame({va_column(s): pd.Series(dtype=float) for s in data.subjects}, index=index)
    if not len(pairs):
        return frame
    years = sorted(int(y) for y in pd.unique(pairs["school_year"]))
    min_n = data.district.config.report.min_group_size
    rows = []
    for subject in data.subjects:
        for year in years:
            window = pairs[(pairs["school_year"] <= year) & (pairs["school_year"] > year - VA_YEARS)]
            try:
                table = school_value_added(window, subject, data.subjects, VAConfig(min_students=min_n)).table
            except (ValueError, np.linalg.LinAlgError):  # too few pairs or schools to estimate
                continue
            rows.append(
                pd.DataFrame(
                    {
                        "school_id": table["school_id"].astype(str).to_numpy(),
                        "school_year": year,
                        "column": va_column(subject),
                        "estimate": table["estimate"].to_numpy(dtype=float),
                    }
                )
            )
    if not rows:
        return frame
    long = pd.concat(rows, ignore_index=True)
    wide = long.pivot_table(index=["school_id", "school_year"], columns="column", values="estimate")
    return wide.reindex(columns=frame.columns).rename_axis(columns=None)


def model_school_columns(subjects: list[str], table: pd.DataFrame) -> list[str]:
    """The school-year columns a growth model uses: each subject's value-added, its peer context (the
    school's mean within-grade z of last year's scores) and the two stable attributes that predict a
    school's effect where its history is short (enrolment, per-student budget when the schools table has
    budgets). Type and level, when known, are added by the transform. Measured against the dozen raw
    aggregates used before (docs/tuning.md)."""
    columns = [va_column(s) for s in subjects] + [f"mean_{z_column(s)}" for s in subjects]
    columns += ["total_students", "per_student_budget"]
    return [c for c in columns if c in table.columns and table[c].notna().any()]


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
        f"|features {FEATURES_VERSION}"
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
    table = data.model_school_table()
    transform = GrowthTransform(
        subjects=data.subjects,
        grades=data.district.grades,
        school_table=table,
        school_columns=model_school_columns(data.subjects, table),
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
