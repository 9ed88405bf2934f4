"""The BentoML service apps call: ``POST /predict`` (every champion, every subject), ``GET /models``.

BentoML owns the server: processes (one worker per core by default), lifecycle, ``/healthz``,
``/readyz``, ``/metrics``, the OpenAPI page and ``bentoml build``. The two routes are a FastAPI app
mounted inside the service, so the request is parsed once (orjson), validated once (pydantic models
built from the champions) and answered by ``serving.predictor`` in the worker that received it:
no second process and no batching timer. Small requests that arrive together are scored in one
call (``serving.coalesce``); larger ones run in a thread. ``serving.server_fixes`` keeps the worker's
garbage collections short (a BentoML middleware held every request for the timeout's length).
Every 4xx body is the documented ``ErrorResponse``.

Run it with ``growth serve`` (or ``bentoml serve serving.service:StudentGrowth``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import anyio.to_thread
import bentoml
import orjson
from bentoml.models import BentoModel
from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import ValidationError

from features.contract import prior_score_column
from features.settings import get_settings
from serving import server_fixes
from serving.coalesce import Coalescer
from serving.predictor import Predictor, champion_entries, no_champion_error
from serving.schemas import (
    ErrorResponse,
    ModelsResponse,
    build_models,
    inline_schema,
    max_records,
    validated_records,
)

server_fixes.install()
log = logging.getLogger(__name__)
MAX_BODY_BYTES = 64 * 2**20
THREAD_ABOVE_RECORDS = 256  # larger requests run in a thread (alone) so small ones are not held up
REQUEST_TIMEOUT_S = 120
WORKERS_ENV = "GROWTH_SERVE_WORKERS"


def served_description() -> tuple[list[str], list[str], dict[str, Any], list[str], list[Any]]:
    """Subjects, grades, scales and inputs of the champions in the store, from their metadata only."""
    entries = champion_entries()
    growth = [e for e in entries if e.info.labels["kind"] == "growth"]
    subjects = [e.info.labels["subject"] for e in growth]
    grades = list(growth[0].info.metadata.get("grades", [])) if growth else ["(none)"]
    scales = {e.info.labels["subject"]: e.info.metadata.get("scale") for e in growth}
    inputs: dict[str, None] = {}
    for entry in entries:
        inputs.update(dict.fromkeys(entry.info.metadata.get("inputs", [])))
    return subjects, grades or ["(none)"], scales, list(inputs), entries


SUBJECTS, GRADES, SCALES, INPUTS, ENTRIES = served_description()
StudentRecord, PredictRequest, PredictResponse = build_models(SUBJECTS, GRADES, SCALES, INPUTS)
ERRORS = {
    400: {"model": ErrorResponse, "description": "Malformed JSON or invalid records (each problem named)."},
    413: {"model": ErrorResponse, "description": "Body over 64 MiB."},
}
api = FastAPI(title="student-growth prediction API", docs_url=None, redoc_url=None, openapi_url=None)


def error(status: int, message: str, detail: list[str] | None = None) -> Response:
    body = ErrorResponse(error=message, detail=detail or []).model_dump()
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def validation_messages(exc: ValidationError) -> list[str]:
    return [e["msg"] for e in exc.errors(include_url=False, include_context=False, include_input=False)]


@api.post(
    "/predict",
    response_model=PredictResponse,
    responses=ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline_schema(PredictRequest)}},
        }
    },
    summary="Predicted growth, interval and need for support, per subject, for each student",
)
async def predict(request: Request) -> Response:
    """Send the records in ``students``; predictions come back in the same order, for every served
    subject: predicted growth (target-year score minus prior score), the predicted score, a prediction
    interval (level in ``models[].interval_level``) and, where a needs-support model is served, the
    probability of scoring below the proficient cut next year. Records of schools the model never saw
    use district-level school aggregates and an interval calibrated for unseen schools (usually wider),
    and are listed in ``warnings``. A subject whose prior score a record lacks is null for that record.
    Invalid input gets HTTP 400 with one message per problem, naming the record index and field; values
    are never echoed."""
    length = request.headers.get("content-length", "0")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        return error(413, f"request body over {MAX_BODY_BYTES // 2**20} MiB; send fewer records per request")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return error(413, f"request body over {MAX_BODY_BYTES // 2**20} MiB; send fewer records per request")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return error(400, 'malformed JSON: send a JSON object like {"students": [ ... ]}')
    try:
        parsed = PredictRequest.model_validate(data)
    except ValidationError as exc:
        messages = validation_messages(exc)
        return error(400, f"{len(messages)} problem(s) in the request", messages)
    records = validated_records(parsed.students)
    if len(records) > THREAD_ABOVE_RECORDS:
        predictor: Predictor = request.app.state.predictor
        result = await anyio.to_thread.run_sync(predictor.predict, records)
    else:
        coalescer: Coalescer = request.app.state.coalescer
        result = await coalescer.predict(records)
    return Response(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@api.get("/models", response_model=ModelsResponse, summary="What is served")
async def models(request: Request) -> Response:
    """The served subjects, each champion's name, store version, registry version and family, and the
    fields a record may carry (``required`` ones must be present)."""
    predictor: Predictor = request.app.state.predictor
    body = ModelsResponse(
        subjects=predictor.served.subjects,
        grades=predictor.served.grades,
        models=[i.as_dict() for i in predictor.infos],
        inputs=["student_id", *predictor.columns],
        required=[
            "student_id",
            "school_id",
            "grade",
            f"one of {', '.join(map(prior_score_column, SUBJECTS))}",
        ],
    )
    return Response(orjson.dumps(body.model_dump()), media_type="application/json")


def workers() -> int:
    """Server processes: GROWTH_SERVE_WORKERS, or one per CPU core."""
    try:
        wanted = int(os.environ.get(WORKERS_ENV, "0"))
    except ValueError:
        wanted = 0
    return wanted if wanted > 0 else max(1, os.cpu_count() or 1)


class _StudentGrowth:
    """Predicted academic growth and need for support next year, per subject, from a student's record."""

    def __init__(self) -> None:
        from serving.predictor import load_champions

        if not ENTRIES:
            raise no_champion_error()
        self.predictor = Predictor(load_champions())
        api.state.predictor = self.predictor
        api.state.coalescer = Coalescer(self.predictor)
        server_fixes.freeze_loaded_objects()
        log.info(
            "serving %d model(s) for %s; max %d records per request",
            len(self.predictor.infos),
            ", ".join(self.predictor.served.subjects),
            max_records(),
        )

    async def __is_ready__(self) -> bool:
        """/readyz: ready once the champions are loaded."""
        return getattr(self, "predictor", None) is not None


# ``bentoml build`` packs the models the service class references: one attribute per champion.
for _index, _entry in enumerate(ENTRIES):
    setattr(_StudentGrowth, f"champion_{_index}", BentoModel(_entry.tag))

StudentGrowth = bentoml.asgi_app(api, path="/")(
    bentoml.service(
        name="student_growth",
        workers=workers(),
        traffic={"timeout": REQUEST_TIMEOUT_S},
        labels={"project": "student-growth"},
        logging={"access": {"enabled": get_settings().access_log}},
    )(_StudentGrowth)
)
