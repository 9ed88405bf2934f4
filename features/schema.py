"""The one model-input schema: what a growth or support model accepts, as a pandera schema (coerce,
strict) built from the data contract, the district's subjects, grades and scales.

Training validates every part it feeds a model, batch scoring validates its frame, and the HTTP
request model (serving.schemas) is built from the same contract; a test checks that records the API
accepts pass this schema once turned into a frame, so the two entrances cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import pandera.pandas as pa

from features.contract import (
    ATTRIBUTE_COLUMNS,
    ENGAGEMENT_COLUMNS,
    prior_engagement_column,
    prior_score_column,
)
from features.transform import model_input_columns


def _range(low: float | None, high: float | None) -> list[pa.Check]:
    if low is not None and high is not None:
        return [pa.Check.in_range(low, high)]
    if low is not None:
        return [pa.Check.ge(low)]
    return []


def model_input_schema(
    subjects: Sequence[str],
    grades: Sequence[str],
    scales: Mapping[str, tuple[float, float]],
    school_days: int = 366,
) -> pa.DataFrameSchema:
    """Columns, types, ranges and categories of the model input; every column but the keys optional."""
    columns: dict[str, pa.Column] = {
        "school_id": pa.Column(str, nullable=False, coerce=True),
        "grade": pa.Column(str, pa.Check.isin(list(grades)), nullable=False, coerce=True),
        "school_year": pa.Column("Int64", nullable=True, coerce=True, required=False),
    }
    for subject in subjects:
        low, high = scales.get(subject, (None, None))
        for back in (1, 2):
            columns[prior_score_column(subject, back)] = pa.Column(
                float, _range(low, high), nullable=True, coerce=True, required=False
            )
    for col in ATTRIBUTE_COLUMNS:
        if col.kind == "bool":
            checks = [pa.Check.isin([0.0, 1.0])]
            kind = float
        elif col.allowed:
            checks, kind = [pa.Check.isin(list(col.allowed))], str
        else:
            checks, kind = _range(col.min, col.max), float
        columns[col.name] = pa.Column(kind, checks, nullable=True, coerce=True, required=False)
    for col in ENGAGEMENT_COLUMNS:
        high = school_days if col.name == "days_absent" else col.max
        columns[prior_engagement_column(col.name)] = pa.Column(
            float, _range(col.min, high), nullable=True, coerce=True, required=False
        )
    expected = set(model_input_columns(subjects))
    assert expected == set(columns), f"schema and transform disagree: {sorted(expected ^ set(columns))}"
    return pa.DataFrameSchema(columns, strict=True, coerce=True, name="model input")


def validate_model_input(frame: pd.DataFrame, schema: pa.DataFrameSchema) -> pd.DataFrame:
    """The frame coerced to the schema's types; a SchemaErrors lists every violation at once."""
    text = {
        c: frame[c].astype(object).where(frame[c].notna(), None)
        for c in frame.columns
        if isinstance(frame[c].dtype, pd.CategoricalDtype)
    }
    return schema.validate(frame.assign(**text), lazy=True)
