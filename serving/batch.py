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
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from features.contract import ENGAGEMENT_COLUMNS, prior_engagement_column, prior_score_column, score_column
from features.ingest import load_district
from features.pairs import growth_pairs, status_column
from serving.predictor import Predictor
from training.data import DistrictData, Source, load_data
from training.measures import PendingSGPs, start_year_sgps

log = logging.getLogger(__name__)
# Rows per scoring call. Chunks are scored in parallel threads, one per core: numpy's array operations,
# LightGBM and the compiled forests release the GIL, and every evaluator scores each row on its own,
# so a row's numbers do not depend on its chunk (tests/code/test_compiled.py, tests/serving/test_batch.py).
CHUNK = 25_000
KEYS = ("student_id", "school_year", "grade", "school_id", "school_name")


@dataclass(frozen=True)
class BatchResult:
    year: int
    scored: int
    unscorable: int
    out: Path
    side_file: Path | None
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each phase, in order
    without_support: list[str] = field(default_factory=list)  # subjects with no needs-support champion
    classic: bool = False  # the classic format: years are 0 (prior), 1 (current) and 2 (next)


class PhaseClock:
    """Wall time of each phase of a batch run (logged with ``progress``), for the CLI and the benchmark."""

    def __init__(self, progress: bool = False):
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        if self.progress:
            log.info("%s (%.2f s)", name, self.seconds[name])


def forecast_frame(data: DistrictData, year: int) -> pd.DataFrame:
    """Model-input rows for next year from the latest year's records (see the module docstring)."""
    district = data.district
    latest = district.years[-1]
    current = district.year(latest).reset_index(drop=True)
    grades = list(district.grades)
    following = {g: grades[i + 1] for i, g in enumerate(grades[:-1])}
    frame = pd.DataFrame(
        {
            "student_id": texts(current["student_id"]),
            "school_year": np.full(len(current), year, dtype=np.int64),
            "grade": texts(current["grade"], following),
            "school_id": texts(current["school_id"]),
            "school_name": texts(current["school_name"]),
            "current_grade": texts(current["grade"]),
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
    earlier = previous_rows(current["student_id"], previous["student_id"])
    if earlier is None:
        by_id = previous.set_index(previous["student_id"].astype(str))
    for subject in district.subject_names:
        frame[prior_score_column(subject)] = current[score_column(subject)].to_numpy()
        if not len(previous):
            frame[prior_score_column(subject, 2)] = np.nan
        elif earlier is not None:
            scores = previous[score_column(subject)].to_numpy()
            frame[prior_score_column(subject, 2)] = np.where(
                earlier >= 0, scores[np.maximum(earlier, 0)], np.nan
            ).astype(scores.dtype)
        else:
            frame[prior_score_column(subject, 2)] = (
                by_id[score_column(subject)].reindex(frame["student_id"]).to_numpy()
            )
    return frame


def texts(column: pd.Series, mapping: dict[str, str] | None = None) -> object:
    """``column.astype(str)`` (through ``mapping``, NaN where it has no entry) as an array for a frame:
    for a categorical, each distinct value is converted once and the rows take from it."""
    if not isinstance(column.dtype, pd.CategoricalDtype):
        text = column.astype(str)
        return (text.map(mapping) if mapping is not None else text).to_numpy(dtype=object)
    categories = column.cat.categories.astype(str)
    codes = column.cat.codes.to_numpy()
    if mapping is not None:
        mapped = np.array([mapping.get(c, np.nan) for c in categories], dtype=object)
        return np.where(codes >= 0, mapped[np.maximum(codes, 0)] if len(mapped) else np.nan, np.nan)
    return categories.array.take(codes, allow_fill=True)


def previous_rows(current: pd.Series, previous: pd.Series) -> np.ndarray | None:
    """For each current row, the position of the same student's row in ``previous`` (-1: none), matched
    through the shared categorical codes; None when the ids are not such a categorical."""
    if not (
        isinstance(current.dtype, pd.CategoricalDtype)
        and isinstance(previous.dtype, pd.CategoricalDtype)
        and current.cat.categories.equals(previous.cat.categories)
        and current.cat.categories.astype(str).is_unique
    ):
        return None
    codes = previous.cat.codes.to_numpy()
    if (codes < 0).any() or len(np.unique(codes)) != len(codes):
        return None  # a missing or repeated id: let the text lookup decide (and complain) as before
    position = np.full(len(previous.cat.categories) + 1, -1, dtype=np.int64)
    position[codes] = np.arange(len(codes))
    return position[current.cat.codes.to_numpy()]  # code -1 (no id) reads the extra slot: -1


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


def score_frame(
    predictor: Predictor, frame: pd.DataFrame, progress: bool = False, threads: int | None = None
) -> pd.DataFrame:
    """Predictions for every row, in chunks scored by ``threads`` threads (default: one per core), in
    the frame's order (with a progress bar when asked). On 447,552 rows: 10.4 s against 13.9-16.8 s
    one chunk after another (docs/benchmarks.md)."""
    starts = range(0, len(frame), CHUNK)
    if not starts:
        return pd.DataFrame(index=frame.index)
    workers = max(1, min(threads or os.cpu_count() or 1, len(starts)))
    with ThreadPoolExecutor(workers) as pool:
        parts: Iterator[pd.DataFrame] = pool.map(
            lambda start: predictor.predict_frame(frame.iloc[start : start + CHUNK]), starts
        )
        if progress:
            from rich.progress import track

            parts = track(parts, total=len(starts), description="scoring", transient=True)
        return pd.concat(list(parts))


def forecast_data(source: Source, progress: bool = False) -> DistrictData:
    """What a forecast reads: the latest two school years only (this year's records and last year's
    scores), neither growth pairs nor school aggregates (a forecast uses neither) nor the data
    fingerprint. The forecast is the same as from the whole history; rows of earlier years are not
    validated (``growth validate`` does that)."""
    district = load_district(source.config, progress=progress, last_years=2)
    return DistrictData(source, district, pd.DataFrame(), pd.DataFrame(), fingerprint="")


def historical_data(source: Source, progress: bool = False) -> DistrictData:
    """What a past year's scoring reads: the whole validated history (its growth pairs, and every year's
    scores for the SGP knots), but not the school-year aggregates or the data fingerprint, which only
    training and reports use."""
    district = source.load(progress)
    return DistrictData(source, district, growth_pairs(district), pd.DataFrame(), fingerprint="")


def score_year(
    source: Source,
    year: int | None,
    out: Path,
    progress: bool = False,
    predictor: Predictor | None = None,
    data: DistrictData | None = None,
    needed_years_only: bool = False,
) -> BatchResult:
    """Score every student of ``year`` (default: next year) and write predictions + the side file.

    ``needed_years_only``: read only what this case uses. A forecast (the default year) of a config-file
    district reads its last two school years (``forecast_data``); a past year reads the whole history but
    builds only the growth pairs (``historical_data``).
    """
    clock = PhaseClock(progress)
    with clock("load and validate"):
        if data is None and needed_years_only:
            if year is None and source.config is not None:
                data = forecast_data(source, progress)
            elif year is not None:
                data = historical_data(source, progress)
        data = data or load_data(source, progress=progress)
    years = data.district.years
    latest = years[-1]
    year = latest + 1 if year is None else year
    if year > latest + 1 or year <= years[0]:
        raise ValueError(
            f"--year {year}: give a year from {years[1] if len(years) > 1 else latest + 1} to "
            f"{latest + 1} (the data has {', '.join(map(str, years))}; {latest + 1} is a forecast)"
        )
    forecast = year == latest + 1
    sgps: PendingSGPs | None = None
    if not forecast:
        with clock("start SGP fits"):  # in worker processes, while this one loads the models and scores
            sgps = start_year_sgps(data, year)
    try:
        with clock("load models"):
            predictor = predictor or Predictor.from_store()
        with clock("build frame"):
            frame = forecast_frame(data, year) if forecast else historical_frame(data, year)
            reasons = unscorable_reasons(frame, predictor, forecast)
            scorable = frame[reasons == ""]
        with clock("score"):
            scored = score_frame(predictor, scorable, progress)
            keys = [k for k in KEYS if k in scorable]
            result = pd.concat([scorable[keys].reset_index(drop=True), scored.reset_index(drop=True)], axis=1)
        if not forecast:
            with clock("actual growth and SGP"):
                result = add_actuals_and_sgp(result, scorable.reset_index(drop=True), data, sgps)
    finally:
        if sgps is not None:
            sgps.close()
    with clock("write"):
        write_atomic_frame(result, out)
        side = None
        unscorable = frame[reasons != ""]
        if len(unscorable):
            side = out.with_name(f"{out.stem}_unscored.csv")
            columns = [c for c in ("student_id", "current_grade", "grade", "school_id") if c in unscorable]
            write_atomic_frame(unscorable[columns].assign(reason=reasons[reasons != ""].to_numpy()), side)
    return BatchResult(
        year,
        len(result),
        len(unscorable),
        out,
        side,
        clock.seconds,
        predictor.served.without_support,
        classic=data.district.config.format == "classic",
    )


def add_actuals_and_sgp(
    result: pd.DataFrame, frame: pd.DataFrame, data: DistrictData, sgps: PendingSGPs | None
) -> pd.DataFrame:
    """For a historical year: the actual growth and, where the year's score is known, the SGP (waits
    for the fits ``start_year_sgps`` started)."""
    for subject in data.subjects:
        result[f"{subject}_actual_growth"] = frame[f"{subject}_growth"].to_numpy()
        result[f"{subject}_pair_status"] = frame[status_column(subject)].astype(str).to_numpy()
    if sgps is not None:
        result = result.merge(sgps.wide(), on="student_id", how="left")
    return result
