"""Locust load for the prediction endpoints, driven by bench/serving/run.py (headless, time-bounded).

Environment:
  BENCH_RECORDS    JSON file with student records (model input columns, no names)
  BENCH_BATCH      records per request (default 1)
  BENCH_KIND       "bentoml" (POST /predict {"students": [...]}) or "mlflow" (POST /invocations
                   {"dataframe_records": [...]})
  BENCH_LATENCIES  where to write every request's latency (ms) and the failure count, as JSON

Each user sends requests back to back (no think time), so N users = N concurrent clients. A response
counts as a failure unless it is HTTP 200 with one prediction per record sent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from locust import FastHttpUser, constant, events, task

RECORDS: list[dict] = json.loads(Path(os.environ["BENCH_RECORDS"]).read_text())
BATCH = int(os.environ.get("BENCH_BATCH", "1"))
KIND = os.environ.get("BENCH_KIND", "bentoml")
PATH = "/invocations" if KIND == "mlflow" else "/predict"
N_PAYLOADS = 64


def payload(start: int) -> bytes:
    """Request body for BATCH consecutive records (wrapping around), serialised once up front."""
    rows = [RECORDS[(start + i) % len(RECORDS)] for i in range(BATCH)]
    body = {"dataframe_records": rows} if KIND == "mlflow" else {"students": rows}
    return json.dumps(body).encode()


PAYLOADS = [payload(i * BATCH) for i in range(N_PAYLOADS)]
LATENCIES: list[float] = []
FAILURES: list[str] = []


@events.request.add_listener
def record(response_time: float, exception: BaseException | None, **_: object) -> None:
    if exception is None:
        LATENCIES.append(response_time)
    else:
        FAILURES.append(str(exception)[:200])


@events.quitting.add_listener
def dump(**_: object) -> None:
    target = os.environ.get("BENCH_LATENCIES")
    if target:
        Path(target).write_text(json.dumps({"latencies_ms": LATENCIES, "failures": FAILURES}))


class PredictUser(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.turn = id(self) % N_PAYLOADS

    @task
    def predict(self) -> None:
        self.turn = (self.turn + 1) % N_PAYLOADS
        headers = {"Content-Type": "application/json"}
        with self.client.post(
            PATH, data=PAYLOADS[self.turn], headers=headers, name=f"{PATH} x{BATCH}", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
            elif len(response.json()["predictions"]) != BATCH:
                response.failure("wrong number of predictions")
