"""Benchmark-only alternative to serving/service.py: the same Predictor behind BentoML adaptive batching.

    bentoml serve batched_service:BatchedGrowth --working-dir bench/serving --port 3001

``POST /predict`` takes the same body as the real service (``{"students": [record, ...]}``), validated
per request by the same ``StudentRecord`` model. The method is ``batchable``: BentoML's dispatcher
(one per worker process) queues concurrent requests, merges their ``students`` lists and calls
``Predictor.predict`` once for the merged list, then splits the predictions back per request. The
response is the list of per-record predictions only (no ``models``/``warnings``: those describe a whole
request, and a merged batch is not one). It exists so bench/serving/run.py can show, with numbers,
whether batching single records pays; nothing in the project serves it.

Settings (environment): GROWTH_SERVE_WORKERS (as ``growth serve``: default one worker per core),
BENCH_MAX_BATCH_SIZE (records per merged call, default 100), BENCH_MAX_LATENCY_MS (BentoML's
latency budget before it rejects queued requests with 503, default 60000 as in BentoML).
"""

from __future__ import annotations

import os
from typing import Any

import bentoml

from serving.predictor import Predictor
from serving.schemas import validated_records
from serving.server_fixes import freeze_loaded_objects
from serving.service import REQUEST_TIMEOUT_S, StudentRecord, workers

MAX_BATCH_SIZE = int(os.environ.get("BENCH_MAX_BATCH_SIZE", "100"))
MAX_LATENCY_MS = int(os.environ.get("BENCH_MAX_LATENCY_MS", "60000"))


@bentoml.service(name="student_growth_batched", workers=workers(), traffic={"timeout": REQUEST_TIMEOUT_S})
class BatchedGrowth:
    def __init__(self) -> None:
        self.predictor = Predictor.from_store()
        freeze_loaded_objects()  # as growth serve's workers do (serving/server_fixes.py)

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, students: list[StudentRecord]) -> list[dict[str, Any]]:  # type: ignore[valid-type]
        """Per-record predictions for the merged ``students`` of every queued request, in order."""
        records = validated_records(students)
        return self.predictor.predict(records)["predictions"]
