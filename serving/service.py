"""BentoML service for the champion growth models: ``POST /predict``.

Two services so BentoML's adaptive batching applies to single-record traffic: ``StudentGrowth``
(public: validation, response, warnings) calls ``GrowthModel.predict_rows``, a batchable API in
its own process whose dispatcher merges concurrent requests into one ``pipeline.predict``. Calls
between services in one process bypass the dispatcher, hence the split.

Run it with ``growth serve`` (or ``bentoml serve serving.service:StudentGrowth``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from collections.abc import Callable
from typing import Any

import aiohttp
import bentoml
from bentoml.models import BentoModel

from features.contract import TARGETS
from serving.predictor import assemble, champion_entry, load_entry, no_champion_error, predict_matrix
from serving.schemas import ModelInfo, PredictRequest, PredictResponse, StudentRecord

log = logging.getLogger(__name__)
# Single-record requests are merged up to this many rows; larger requests are cut into chunks of it.
MAX_BATCH_ROWS = 1000
MAX_BATCH_LATENCY_MS = 30_000
REQUEST_TIMEOUT_S = 120
MAX_BODY_BYTES = 64 * 2**20
TARGETS_ENV = "GROWTH_TARGETS"


def served_targets() -> set[str]:
    """Targets to serve: GROWTH_TARGETS (comma-separated, e.g. "math") or every target with a champion."""
    wanted = {t.strip() for t in os.environ.get(TARGETS_ENV, "").split(",") if t.strip()}
    return wanted or set(TARGETS)


def champion_ref(target: str) -> BentoModel | None:
    """The target's champion at import time, as a model reference ``bentoml build`` packs into the Bento."""
    entry = champion_entry(target) if target in served_targets() else None
    return None if entry is None else BentoModel(entry.tag)


# BentoML 1.4.3x's client to a dependency closes its connection pool every 100 requests / 300 s even with
# requests in flight, which fails them ("Server disconnected", bentoml/BentoML#5544 and #5698); on a local
# socket the refresh buys nothing, so it is pushed out of reach, and a dropped connection is retried once.
NO_POOL_REFRESH = {"max_requests": 2**62, "max_age": 1e12}


@bentoml.service(
    name="student_growth_model",
    workers=1,
    traffic={"timeout": REQUEST_TIMEOUT_S},
    runner_connection=NO_POOL_REFRESH,
)
class GrowthModel:
    """Holds the champion pipelines; its batchable API is where concurrent requests are merged."""

    math_champion = champion_ref("math")
    reading_champion = champion_ref("reading")

    def __init__(self) -> None:
        entries = {"math": self.math_champion, "reading": self.reading_champion}  # resolved store entries
        self.models = [load_entry(entry, target) for target, entry in entries.items() if entry is not None]
        if not self.models:
            raise no_champion_error()

    @bentoml.api(
        batchable=True, batch_dim=0, max_batch_size=MAX_BATCH_ROWS, max_latency_ms=MAX_BATCH_LATENCY_MS
    )
    def predict_rows(self, rows: list[dict[str, Any]]) -> list[list[float]]:
        """Per row: [prediction, school known] per target, in the order ``describe`` lists the models."""
        return predict_matrix(self.models, rows)

    @bentoml.api
    def describe(self) -> list[ModelInfo]:
        return [m.info for m in self.models]


def clean_doc(func: Callable) -> Callable:
    """Dedent a docstring: BentoML shows it verbatim on the OpenAPI page, where indentation means code."""
    func.__doc__ = inspect.cleandoc(func.__doc__ or "")
    return func


class JSONBody:
    """ASGI middleware for ``POST /predict``: read every body as JSON and refuse oversized ones up front.

    ``curl -d`` sends form encoding and a bare multipart header makes BentoML's form parser fail with
    HTTP 500; parsing as JSON instead turns both into the usual 400 for malformed JSON. A body larger
    than MAX_BODY_BYTES (far above 10,000 records) gets 413 before it is read into memory.
    """

    def __init__(self, app: Any, **options: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path", "").rstrip("/") == "/predict":
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
            length = dict(headers).get(b"content-length", b"0")
            if length.isdigit() and int(length) > MAX_BODY_BYTES:
                await too_large(send)
                return
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


async def too_large(send: Any) -> None:
    body = json.dumps(
        {"error": f"request body over {MAX_BODY_BYTES // 2**20} MiB; send fewer records per request"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@bentoml.service(
    name="student_growth", traffic={"timeout": REQUEST_TIMEOUT_S}, labels={"project": "student-growth"}
)
class StudentGrowth:
    """Predicted academic growth for students from their prior-year record."""

    model = bentoml.depends(GrowthModel)

    def __init__(self) -> None:
        self._infos: list[ModelInfo] | None = None
        self._lock = asyncio.Lock()

    async def __is_ready__(self) -> bool:
        """/readyz: ready once the model service has loaded the champions and answers (not just listens)."""
        try:
            await self.infos()
        except Exception:  # noqa: BLE001 - not ready yet, whatever the reason; /readyz says 503
            return False
        return True

    async def infos(self) -> list[ModelInfo]:
        """The served models, asked once from the model service so the response names what answered."""
        if self._infos is None:
            async with self._lock:
                if self._infos is None:
                    described = await self.model.to_async.describe()
                    self._infos = [ModelInfo.model_validate(i, from_attributes=True) for i in described]
        return self._infos

    @bentoml.api(route="/predict", input_spec=PredictRequest)
    @clean_doc
    async def predict(self, students: list[StudentRecord]) -> PredictResponse:
        """Predicted math and/or reading growth (target-year minus prior-year score) for each student.

        Send the records in ``students`` (1 to 10,000 by default); predictions come back in the same
        order with the served models' names and versions. Records of a school the model never saw use
        district-level school aggregates and are listed in ``warnings``. Each prediction has a 90%
        interval: plus/minus the 90th percentile of absolute validation residuals (split-conformal).
        Invalid input gets HTTP 400 with one message per problem, naming the record index and field.
        """
        rows = [student.model_input() for student in students]
        infos = await self.infos()
        try:
            matrix = await self.model.to_async.predict_rows(rows)
        except aiohttp.ClientConnectionError:  # see NO_POOL_REFRESH; predict_rows is idempotent
            log.warning("connection to the model service dropped; retrying once")
            matrix = await self.model.to_async.predict_rows(rows)
        return assemble(rows, matrix, infos)


StudentGrowth.add_asgi_middleware(JSONBody)
