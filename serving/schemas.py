"""Request and response models of the prediction API.

Field types, ranges and allowed values come from features.contract, so the API cannot drift from
the data contract. Validation errors are rewritten to name the record index and the field
("record 3, field 'grade': ..."), and inputs are never echoed in errors, so a rejected request
cannot put a student's data in the server log.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from features.contract import GENDERS, GRADES, PARENTAL_EDUCATION, STUDENT_COLUMNS, TARGETS, Column

MAX_RECORDS_ENV = "GROWTH_MAX_RECORDS"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DEFAULT_MAX_RECORDS = 10_000
INTERVAL_NOTE = (
    "90% prediction interval [low, high]: the prediction plus/minus the 90th percentile of absolute "
    "validation residuals (split-conformal), stored with the model at training time."
)
_CONTRACT: dict[str, Column] = {c.name: c for c in STUDENT_COLUMNS}


def max_records() -> int:
    """Largest accepted request: GROWTH_MAX_RECORDS (default 10,000), read per request."""
    try:
        return max(1, int(os.environ.get(MAX_RECORDS_ENV, DEFAULT_MAX_RECORDS)))
    except ValueError:
        return DEFAULT_MAX_RECORDS


def _field(name: str, required: bool = False, **extra: Any) -> Any:
    """A pydantic Field with the contract's range and meaning for column ``name``."""
    col = _CONTRACT[name]
    bounds = {"ge": col.min, "le": col.max} if col.kind in ("int", "float") else {}
    bounds = {k: v for k, v in bounds.items() if v is not None}
    return Field(... if required else None, description=col.meaning, **bounds, **extra)


EXAMPLE_STUDENT: dict[str, Any] = {
    "student_id": 1001,
    "gender": "F",
    "grade": "10th",
    "school_name": "Huang High School",
    "prior_math_score": 71.5,
    "prior_reading_score": 80.2,
    "econ_disadvantaged": True,
    "english_learner": False,
    "special_education": False,
    "prior_days_absent": 6,
    "homework_completion_pct": 88.0,
    "extracurricular_count": 2,
    "platform_logins_per_week": 3.5,
    "home_internet": True,
    "commute_minutes": 20.0,
    "parental_education": "some_college",
}


class StudentRecord(BaseModel):
    """One student, as known before the target school year starts (columns of the data contract)."""

    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        allow_inf_nan=False,
        str_strip_whitespace=True,
        json_schema_extra={"example": EXAMPLE_STUDENT},
    )

    student_id: int = _field("student_id", required=True, ge=INT64_MIN, le=INT64_MAX)  # a pandas int64 column
    gender: Literal[GENDERS] = _field("gender", required=True)  # type: ignore[valid-type]
    grade: Literal[GRADES] = _field("grade", required=True)  # type: ignore[valid-type]
    school_name: str = _field("school_name", required=True, min_length=1)
    prior_math_score: float = _field("prior_math_score", required=True)
    prior_reading_score: float = _field("prior_reading_score", required=True)
    econ_disadvantaged: bool | None = _field("econ_disadvantaged")
    english_learner: bool | None = _field("english_learner")
    special_education: bool | None = _field("special_education")
    prior_days_absent: int | None = _field("prior_days_absent")
    homework_completion_pct: float | None = _field("homework_completion_pct")
    extracurricular_count: int | None = _field("extracurricular_count")
    platform_logins_per_week: float | None = _field("platform_logins_per_week")
    home_internet: bool | None = _field("home_internet")
    commute_minutes: float | None = _field("commute_minutes")
    parental_education: Literal[PARENTAL_EDUCATION] | None = _field("parental_education")  # type: ignore[valid-type]
    student_name: str | None = Field(
        None,
        exclude=True,
        description=(
            "Accepted so district rows can be sent as they are, then dropped: never used, logged or returned."
        ),
    )

    def model_input(self) -> dict[str, Any]:
        """The record as the model pipeline receives it (no name)."""
        return {k: v for k, v in self.__dict__.items() if k != "student_name"}


MODEL_INPUT_FIELDS: tuple[str, ...] = tuple(n for n in StudentRecord.model_fields if n != "student_name")


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def located_message(loc: tuple[int | str, ...], message: str) -> str:
    """'record 3, field 'grade': <message>' for a pydantic error location inside the request."""
    if len(loc) >= 2 and loc[0] == "students" and isinstance(loc[1], int):
        field = ".".join(str(p) for p in loc[2:])
        return f"record {loc[1]}, field '{field}': {message}" if field else f"record {loc[1]}: {message}"
    if loc:
        return f"field '{'.'.join(str(p) for p in loc)}': {message}"
    if message.startswith("Input should be a valid dictionary"):
        return 'the request body must be a JSON object like {"students": [ ... ]}'
    return message


class PredictRequest(BaseModel):
    """Students to predict, in the order the predictions should come back."""

    # "example" (OpenAPI 3.0 style): BentoML's OpenAPI page shows it and rejects "examples".
    model_config = ConfigDict(
        extra="forbid",
        hide_input_in_errors=True,
        title="PredictRequest",
        json_schema_extra={"example": {"students": [EXAMPLE_STUDENT]}},
    )

    students: list[StudentRecord] = Field(
        ...,
        min_length=1,
        description=f"One to {DEFAULT_MAX_RECORDS:,} records (limit set by {MAX_RECORDS_ENV}); "
        "records of schools unknown to the model get district-level school aggregates.",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _located_errors(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> PredictRequest:
        """Check the size first (cheap), then rewrite every error to name its record and field."""
        if isinstance(data, dict):
            students = data.get("students")
            if isinstance(students, list):
                if not students:
                    raise PydanticCustomError(
                        "empty_list", "field 'students': the list is empty; send at least one record"
                    )
                limit = max_records()
                if len(students) > limit:
                    raise PydanticCustomError(
                        "too_many_records",
                        "field 'students': {count} records; at most {limit} per request (split the list)",
                        {"count": len(students), "limit": limit},
                    )
        try:
            return handler(data)
        except ValidationError as exc:
            errors: list[InitErrorDetails] = [
                {
                    "type": PydanticCustomError(
                        err["type"], _escape(located_message(err["loc"], err["msg"]))
                    ),
                    "loc": err["loc"],
                    "input": None,
                }
                for err in exc.errors(include_url=False, include_context=False, include_input=False)
            ]
            raise ValidationError.from_exception_data(exc.title, errors, hide_input=True) from None


def _is_none(value: object) -> bool:
    return value is None


class Prediction(BaseModel):
    """Predicted growth (target-year score minus prior-year score) for one student."""

    student_id: int
    predicted_math_growth: float | None = Field(
        None, exclude_if=_is_none, description="Predicted math growth, in score points."
    )
    math_growth_interval_90: tuple[float, float] | None = Field(
        None, exclude_if=_is_none, description=INTERVAL_NOTE
    )
    predicted_reading_growth: float | None = Field(
        None, exclude_if=_is_none, description="Predicted reading growth, in score points."
    )
    reading_growth_interval_90: tuple[float, float] | None = Field(
        None, exclude_if=_is_none, description=INTERVAL_NOTE
    )


class ModelInfo(BaseModel):
    """Which model answered: the BentoML store version and the MLflow registry version it came from."""

    target: Literal[tuple(TARGETS)]  # type: ignore[valid-type]
    name: str = Field(description="Model name in the BentoML store and the MLflow registry.")
    version: str = Field(description="BentoML model tag (name:version) that served the request.")
    registry_version: str | None = Field(None, description="MLflow model registry version.")
    family: str | None = Field(None, description="Model family (hgb, linear, extratrees, keras).")
    interval_90_halfwidth: float | None = Field(None, description=INTERVAL_NOTE)


class PredictResponse(BaseModel):
    """Predictions in input order, the models used and any warnings about the input."""

    predictions: list[Prediction]
    models: list[ModelInfo]
    warnings: list[str] = Field(
        default_factory=list,
        description=(
            "Notes about the input, e.g. records whose school the model never saw (district-level school "
            "aggregates used instead)."
        ),
    )


def prediction_field(target: str) -> str:
    return f"predicted_{target}_growth"


def interval_field(target: str) -> str:
    return f"{target}_growth_interval_90"
