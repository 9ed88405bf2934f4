"""Batch scoring: every student of a year, every champion, written atomically (``growth predict``).

A forecast (the default: the year after the data) scores each student of the latest year for next
year: the next grade in the config's order, the same school (the records cannot know a move), this
year's scores as prior scores and last year's as the second prior. A historical year scores that
year's records from the year before and adds each student's SGP where the year's score is known.
Students who cannot be scored (no prior score in any served subject, no next grade, a grade the
models do not predict) are listed with the reason in a side file, never silently dropped.
The numbers are computed by ``serving.predictor.Predictor``, the code behind the HTTP endpoint.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import ENGAGEMENT_COLUMNS, prior_engagement_column, prior_score_column, score_column
from features.pairs import growth_pairs, status_column
from serving.predictor import Predictor
from training.data import DistrictData, Source, load_data

log = logging.getLogger(__name__)
CHUNK = 100_000
KEYS = ("student_id", "school_year", "grade", "school_id", "school_name")


@dataclass(frozen=True)
class BatchResult:
    year: int
    scored: int
    unscorable: int
    out: Path
    side_file: Path | None


def forecast_frame(data: DistrictData, year: int) -> pd.DataFrame:
    """Model-input rows for next year from the latest year's records (see the module docstring)."""
    district = data.district
    latest = district.years[-1]
    current = district.year(latest).reset_index(drop=True)
    grades = list(district.grades)
    following = {g: grades[i + 1] for i, g in enumerate(grades[:-1])}
    frame = pd.DataFrame(
        {
            "student_id": current["student_id"].astype(str).to_numpy(),
            "school_year": np.full(len(current), year, dtype=np.int64),
            "grade": current["grade"].astype(str).map(following).to_numpy(dtype=object),
            "school_id": current["school_id"].astype(str).to_numpy(),
            "school_name": current["school_name"].astype(str).to_numpy(),
            "current_grade": current["grade"].astype(str).to_numpy(),
        }
    )
    for column in (
        "gender",
        "econ_disadvantaged",
        "english_learner",
        "special_education",
        "parental_education",
        "home_internet",
        "commute_minutes",
    ):
        if column in current:
            frame[column] = current[column].to_numpy()
    for spec in ENGAGEMENT_COLUMNS:
        if spec.name in current:
            frame[prior_engagement_column(spec.name)] = current[spec.name].to_numpy()
    previous = district.students[district.students["school_year"] == latest - 1]
    earlier = previous.set_index(previous["student_id"].astype(str))
    for subject in district.subject_names:
        frame[prior_score_column(subject)] = current[score_column(subject)].to_numpy()
        frame[prior_score_column(subject, 2)] = (
            earlier[score_column(subject)].reindex(frame["student_id"]).to_numpy() if len(earlier) else np.nan
        )
    return frame


def historical_frame(data: DistrictData, year: int) -> pd.DataFrame:
    """That year's growth pairs (every status) as model-input rows, with the actual scores kept."""
    pairs = data.pairs if len(data.pairs) else growth_pairs(data.district)
    frame = pairs[pairs["school_year"] == year].reset_index(drop=True).copy()
    for column in ("student_id", "school_id", "school_name", "grade"):
        frame[column] = frame[column].astype(str)
    return frame


def unscorable_reasons(frame: pd.DataFrame, predictor: Predictor, forecast: bool) -> pd.Series:
    """Why a row cannot be scored ('' when it can)."""
    reasons = pd.Series("", index=frame.index, dtype=object)
    priors = [prior_score_column(s) for s in predictor.served.subjects if prior_score_column(s) in frame]
    no_prior = frame[priors].isna().all(axis=1) if priors else pd.Series(True, index=frame.index)
    reasons[no_prior] = (
        "no prior-year score in any served subject (" + ", ".join(predictor.served.subjects) + ")"
    )
    if forecast:
        top = frame["grade"].isna()
        reasons[top & (reasons == "")] = "no next grade (the last grade of the config)"
    known = set(predictor.served.grades)
    unknown = ~frame["grade"].isin(known) & frame["grade"].notna() & (reasons == "")
    reasons[unknown] = (
        "grade " + frame.loc[unknown, "grade"].astype(str) + " is not a grade the models predict"
    )
    return reasons


def write_atomic_frame(frame: pd.DataFrame, out: Path) -> None:
    """Parquet or CSV through a temporary file in the same folder, then one rename."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(handle)
    try:
        if out.suffix.lower() == ".parquet":
            frame.to_parquet(name, index=False)
        else:
            frame.to_csv(name, index=False)
        os.replace(name, out)
    finally:
        if os.path.exists(name):
            os.remove(name)


def score_frame(predictor: Predictor, frame: pd.DataFrame, progress: bool = False) -> pd.DataFrame:
    """Predictions for every row, in chunks (with a progress bar when asked)."""
    parts = []
    chunks = range(0, len(frame), CHUNK)
    if progress:
        from rich.progress import track

        chunks = track(chunks, description="scoring", transient=True)
    for start in chunks:
        parts.append(predictor.predict_frame(frame.iloc[start : start + CHUNK]))
    return pd.concat(parts) if parts else pd.DataFrame(index=frame.index)


def score_year(
    source: Source,
    year: int | None,
    out: Path,
    progress: bool = False,
    predictor: Predictor | None = None,
    data: DistrictData | None = None,
) -> BatchResult:
    """Score every student of ``year`` (default: next year) and write predictions + the side file."""
    data = data or load_data(source, progress=progress)
    predictor = predictor or Predictor.from_store()
    years = data.district.years
    latest = years[-1]
    year = latest + 1 if year is None else year
    if year > latest + 1 or year <= years[0]:
        raise ValueError(
            f"--year {year}: give a year from {years[1] if len(years) > 1 else latest + 1} to "
            f"{latest + 1} (the data has {', '.join(map(str, years))}; {latest + 1} is a forecast)"
        )
    forecast = year == latest + 1
    frame = forecast_frame(data, year) if forecast else historical_frame(data, year)
    reasons = unscorable_reasons(frame, predictor, forecast)
    scorable = frame[reasons == ""]
    scored = score_frame(predictor, scorable, progress)
    keys = [k for k in KEYS if k in scorable]
    result = pd.concat([scorable[keys].reset_index(drop=True), scored.reset_index(drop=True)], axis=1)
    if not forecast:
        result = add_actuals_and_sgp(result, scorable.reset_index(drop=True), data, year)
    write_atomic_frame(result, out)
    side = None
    unscorable = frame[reasons != ""]
    if len(unscorable):
        side = out.with_name(f"{out.stem}_unscored.csv")
        columns = [c for c in ("student_id", "current_grade", "grade", "school_id") if c in unscorable]
        write_atomic_frame(unscorable[columns].assign(reason=reasons[reasons != ""].to_numpy()), side)
    return BatchResult(year, len(result), len(unscorable), out, side)


def add_actuals_and_sgp(
    result: pd.DataFrame, frame: pd.DataFrame, data: DistrictData, year: int
) -> pd.DataFrame:
    """For a historical year: the actual growth and, where the year's score is known, the SGP."""
    from training.measures import year_sgps

    for subject in data.subjects:
        result[f"{subject}_actual_growth"] = frame[f"{subject}_growth"].to_numpy()
        result[f"{subject}_pair_status"] = frame[status_column(subject)].astype(str).to_numpy()
    sgps = year_sgps(data, year)
    if sgps is not None:
        result = result.merge(sgps, on="student_id", how="left")
    return result
