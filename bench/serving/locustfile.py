"""Locust load of bench/serving/run.py (headless, time-bounded, one process).

Environment:
  BENCH_BODIES     file with one JSON request body per line (the same file wrk gets)
  BENCH_PATH       request path (default /predict)
  BENCH_NEEDLE     bytes every HTTP 200 body must contain (default '"student_id"')
  BENCH_EXPECT     occurrences of the needle expected per response (0: any; run.py passes the
                   records per request, so a short answer is a failure)
  BENCH_DURATION   seconds of load, timed here from the test start by the wall clock (locust's own
                   --run-time fires early by the time its start-up took: gevent's loop clock is stale)
  BENCH_LATENCIES  where to write every latency (ms), the failures and the measured wall time, as JSON

Each user sends its next request as soon as the last answer arrives (no think time), so N users are N
concurrent connections, as with wrk -c N. Users start on different bodies and take them in turn.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, constant, events, task
from locust.env import Environment

BODIES: list[bytes] = [
    line.encode() for line in Path(os.environ["BENCH_BODIES"]).read_text().splitlines() if line
]
PATH = os.environ.get("BENCH_PATH", "/predict")
NEEDLE = os.environ.get("BENCH_NEEDLE", '"student_id"').encode()
EXPECT = int(os.environ.get("BENCH_EXPECT", "0"))
DURATION = float(os.environ.get("BENCH_DURATION", "0"))
HEADERS = {"Content-Type": "application/json"}
LATENCIES: list[float] = []
FAILURES: list[str] = []
WALL: dict[str, float] = {}
_users = 0


@events.test_start.add_listener
def started(environment: Environment, **_: object) -> None:
    WALL["start"] = time.time()
    if DURATION > 0:
        gevent.spawn(stop_after, environment)


def stop_after(environment: Environment) -> None:
    while time.time() - WALL["start"] < DURATION:
        gevent.sleep(0.05)
    if environment.runner is not None:
        environment.runner.quit()


@events.request.add_listener
def record(response_time: float, exception: BaseException | None, **_: object) -> None:
    if exception is None:
        LATENCIES.append(response_time)
    else:
        FAILURES.append(str(exception)[:200])


@events.test_stop.add_listener
def stopped(**_: object) -> None:
    WALL.setdefault("stop", time.time())


@events.quitting.add_listener
def dump(**_: object) -> None:
    target = os.environ.get("BENCH_LATENCIES")
    if target:
        stop = WALL.get("stop", time.time())
        wall = stop - WALL.get("start", stop)
        Path(target).write_text(json.dumps({"latencies_ms": LATENCIES, "failures": FAILURES, "wall_s": wall}))


class PredictUser(FastHttpUser):
    wait_time = constant(0)
    connection_timeout = 30.0
    network_timeout = 60.0

    def on_start(self) -> None:
        global _users
        _users += 1
        self.turn = (_users * 37) % len(BODIES)

    @task
    def predict(self) -> None:
        self.turn = (self.turn + 1) % len(BODIES)
        with self.client.post(
            PATH, data=BODIES[self.turn], headers=HEADERS, name=PATH, catch_response=True
        ) as response:
            content = response.content or b""
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {content[:200]!r}")
            elif EXPECT and content.count(NEEDLE) != EXPECT:
                response.failure(f"expected {EXPECT} x {NEEDLE!r}, got {content.count(NEEDLE)}")
            elif not EXPECT and NEEDLE not in content:
                response.failure(f"HTTP 200 without {NEEDLE!r}: {content[:200]!r}")
