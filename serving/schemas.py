"""Request and response models of the prediction API, built from the champions being served.

Subjects, grades, score ranges and input fields come from the champion models (which took them from
the district config and the data contract), so the API cannot drift from what the models accept.
Validation errors name the record index and the field ("record 3, field 'grade': ...") and never
echo input values, so a rejected request cannot put a student's data in the server log.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    create_model,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from features.contract import (
    ATTRIBUTE_COLUMNS,
    ENGAGEMENT_COLUMNS,
    PARENTAL_EDUCATION,
    RECORD_GENDERS,
    Column,
    prior_score_column,
)
from features.contract import prior_engagement_column as prior_of
from features.settings import get_settings

INTERVAL_NOTE = (
    "Prediction interval [low, high] for the growth at the level in `models[].interval_level` (90% by "
    "default): normalised split-conformal, calibrated on students who took no part in tuning or model "
    "selection, per number of missing optional fields and for unseen schools (docs/serving.md)."
)
ENGAGEMENT_LIMITS = {"prior_days_absent": (0, 366)}
# JSON numbers only: a boolean or a text is refused, as the documented schema says.
NUMBER = Annotated[float, Strict()]


def max_records() -> int:
    return get_settings().max_records


def _bounds(col: Column, name: str) -> dict[str, float]:
    low, high = ENGAGEMENT_LIMITS.get(name, (col.min, col.max))
    return {k: v for k, v in (("ge", low), ("le", high)) if v is not None}


def record_fields(
    subjects: list[str], grades: list[str], scales: dict[str, tuple[float, float] | None], inputs: list[str]
) -> dict[str, Any]:
    """Field definitions of one student record for these subjects, grades and score scales."""
    fields: dict[str, Any] = {
        "student_id": (
            Annotated[str, Strict(), StringConstraints(min_length=1, max_length=64)]
            | Annotated[int, Strict(), Field(ge=0, le=10**15 - 1)],  # exact in any JSON parser
            Field(..., description="Text or a whole number; echoed back as text, never used by the model."),
        ),
        "school_id": (
            str,
            Field(
                ...,
                min_length=1,
                max_length=128,
                description="School of the target year "
                "(the one credited); unknown schools get district-level school aggregates.",
            ),
        ),
        "grade": (Literal[tuple(grades)], Field(..., description="Grade in the target year.")),  # type: ignore[valid-type]
    }
    if "school_year" in inputs:
        fields["school_year"] = (
            Annotated[int, Strict()] | None,
            Field(
                None,
                ge=0,
                le=3000,
                description=(
                    "Target school year (the year it ends); default: the year after the latest in the "
                    "training data."
                ),
            ),
        )
    for subject in input_subjects(inputs, subjects):
        scale = scales.get(subject)
        bounds = {"ge": scale[0], "le": scale[1]} if scale else {}
        for back, when in ((1, "the year before"), (2, "two years before")):
            name = prior_score_column(subject, back)
            if name in inputs:
                fields[name] = (
                    NUMBER | None,
                    Field(None, **bounds, description=f"{subject} scale score of {when} the target year."),
                )
    for col in ATTRIBUTE_COLUMNS:
        if col.name not in inputs:
            continue
        if col.kind == "bool":
            kind: Any = Annotated[bool, Strict()] | Literal[0, 1] | None
        elif col.name == "gender":
            kind = Literal[RECORD_GENDERS] | None  # type: ignore[valid-type]
        elif col.name == "parental_education":
            kind = Literal[PARENTAL_EDUCATION] | None  # type: ignore[valid-type]
        else:
            kind = NUMBER | None
        fields[col.name] = (kind, Field(None, **_bounds(col, col.name), description=col.meaning))
    for col in ENGAGEMENT_COLUMNS:
        name = prior_of(col.name)
        if name in inputs:
            fields[name] = (
                NUMBER | None,
                Field(
                    None, **_bounds(col, name), description=f"{col.meaning} (the year before the target year)"
                ),
            )
    fields["student_name"] = (
        str | None,
        Field(
            None,
            exclude=True,
            description=(
                "Accepted so district rows can be sent as they are, then dropped: never used, logged "
                "or returned."
            ),
        ),
    )
    return fields


def input_subjects(inputs: list[str], served: list[str]) -> list[str]:
    """Every subject whose prior score is a model input (served or not), served ones first."""
    found = [
        c.removeprefix("prior_").removesuffix("_score")
        for c in inputs
        if c.startswith("prior_") and c.endswith("_score")
    ]
    return list(dict.fromkeys([*served, *found]))


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def located_message(loc: tuple[int | str, ...], message: str) -> str:
    """'record 3, field 'grade': <message>' for a pydantic error location inside the request (records
    are flat: anything after the field name is a union member's tag and is left out)."""
    if len(loc) >= 2 and loc[0] == "students" and isinstance(loc[1], int):
        field = str(loc[2]) if len(loc) > 2 else ""
        return f"record {loc[1]}, field '{field}': {message}" if field else f"record {loc[1]}: {message}"
    if loc:
        return f"field '{'.'.join(str(p) for p in loc)}': {message}"
    if message.startswith("Input should be a valid dictionary"):
        return 'the request body must be a JSON object like {"students": [ ... ]}'
    return message


def build_models(
    subjects: list[str], grades: list[str], scales: dict[str, tuple[float, float] | None], inputs: list[str]
) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel]]:
    """(StudentRecord, PredictRequest, PredictResponse) for the served champions."""
    priors = [prior_score_column(s) for s in subjects]

    def needs_a_prior(record: Any) -> Any:
        """At least one prior score; a numeric student id becomes its text (ids are text everywhere)."""
        if isinstance(record.student_id, int):
            record.student_id = str(record.student_id)
        if all(getattr(record, p, None) is None for p in priors):
            raise PydanticCustomError(
                "no_prior", "needs at least one of {fields}", {"fields": ", ".join(priors)}
            )
        return record

    example = {
        "student_id": "0001234567",
        "school_id": "0101",
        "grade": grades[min(1, len(grades) - 1)],
        **{p: None for p in priors},
    }
    student = create_model(
        "StudentRecord",
        __config__=ConfigDict(
            extra="forbid",
            hide_input_in_errors=True,
            allow_inf_nan=False,
            # What the validator below enforces, said in the schema too: at least one prior score.
            json_schema_extra={
                "example": example,
                "anyOf": [{"required": [p], "properties": {p: {"type": "number"}}} for p in priors],
            },
        ),
        __doc__="One student as known before the target school year starts.",
        __validators__={"_needs_a_prior": model_validator(mode="after")(needs_a_prior)},
        **record_fields(subjects, grades, scales, inputs),
    )
    limit = max_records()

    def located(cls: Any, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Check the size first (cheap), then rewrite every error to name its record and field."""
        if isinstance(data, dict) and isinstance(data.get("students"), list):
            if not data["students"]:
                raise PydanticCustomError(
                    "empty_list", "field 'students': the list is empty; send at least one record"
                )
            if len(data["students"]) > limit:
                raise PydanticCustomError(
                    "too_many_records",
                    "field 'students': {count} records; at most {limit} per request (split the list)",
                    {"count": len(data["students"]), "limit": limit},
                )
        try:
            return handler(data)
        except ValidationError as exc:
            # One message per record field: the members of a union (text or number) are said together.
            grouped: dict[tuple, list[dict]] = {}
            for e in exc.errors(include_url=False, include_context=False, include_input=False):
                grouped.setdefault(tuple(e["loc"][:3]), []).append(e)
            errors: list[InitErrorDetails] = []
            for loc, found in grouped.items():
                message = " or ".join(dict.fromkeys(e["msg"] for e in found))
                errors.append(
                    {
                        "type": PydanticCustomError(found[0]["type"], _escape(located_message(loc, message))),
                        "loc": loc,
                        "input": None,
                    }
                )
            raise ValidationError.from_exception_data(exc.title, errors, hide_input=True) from None

    request = create_model(
        "PredictRequest",
        __config__=ConfigDict(
            extra="forbid", hide_input_in_errors=True, json_schema_extra={"example": {"students": [example]}}
        ),
        __doc__="Students to predict, in the order the predictions should come back.",
        __validators__={"_located": model_validator(mode="wrap")(located)},
        students=(
            list[student],
            Field(
                ...,
                min_length=1,
                description=(  # type: ignore[valid-type]
                    f"One to {limit:,} records (limit: `growth serve --max-records`)."
                ),
            ),
        ),
    )
    subject_prediction = create_model(
        "SubjectPrediction",
        __doc__="One subject's prediction for one student.",
        predicted_growth=(
            float,
            Field(..., description="Predicted growth: target-year score minus prior score."),
        ),
        predicted_score=(float, Field(..., description="Prior score plus predicted growth.")),
        growth_interval=(list[float], Field(..., min_length=2, max_length=2, description=INTERVAL_NOTE)),
        needs_support_probability=(
            float | None,
            Field(
                None,
                description=(
                    "Probability that the target-year score falls below the proficient cut of the target "
                    "grade "
                    "(present when the subject has a needs-support champion)."
                ),
            ),
        ),
    )
    prediction = create_model(
        "Prediction",
        __doc__="Predictions for one student; a subject is null when the record lacks its prior score.",
        student_id=(str, ...),
        **{s: (subject_prediction | None, Field(None)) for s in subjects},  # type: ignore[valid-type]
    )
    model_info = create_model(
        "ModelInfo",
        subject=(str, ...),
        kind=(Literal["growth", "support"], ...),
        name=(str, ...),
        version=(str, Field(..., description="BentoML store tag that answered.")),
        registry_version=(str | None, Field(None, description="MLflow registry version.")),
        family=(str | None, None),
        interval_level=(float | None, None),
    )
    response = create_model(
        "PredictResponse",
        __doc__="Predictions in input order, the models used and any warnings about the input.",
        predictions=(list[prediction], ...),  # type: ignore[valid-type]
        models=(list[model_info], ...),  # type: ignore[valid-type]
        warnings=(list[str], Field(default_factory=list)),
    )
    return student, request, response


def validated_records(students: Sequence[BaseModel]) -> list[dict[str, Any]]:
    """The validated records as the predictor reads them: each record's own field dict, not a copy
    (``model_dump`` took 1.6 ms of every 1,000 records). The predictor reads fields by name and never
    returns or logs the others (``student_name`` is accepted and dropped)."""
    return [vars(student) for student in students]


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema with every ``$ref`` replaced by its definition (no ``$defs``): the
    request body is documented in the operation itself, where OpenAPI tools resolve it without the
    components section (BentoML builds that section from response models only)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(definitions[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


class ErrorResponse(BaseModel):
    """Body of every 4xx answer: one message per problem, each naming the record index and field."""

    error: str = Field(..., description="What was wrong, in one sentence.")
    detail: list[str] = Field(default_factory=list, description="One message per problem.")


class ModelsResponse(BaseModel):
    """What is served: subjects, their models and the inputs a record may carry."""

    subjects: list[str]
    grades: list[str]
    models: list[dict[str, Any]]
    inputs: list[str]
    required: list[str]
