"""The prediction endpoint over real HTTP: ``growth serve`` on a free local port serving the session's
trained champions (conftest ``trained``), compared with the in-process predictor, bad input, the
documented schemas and a bounded schemathesis run."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from serving.local import free_port, start_process, stop_process_group

pytestmark = pytest.mark.slow  # a real server over the session's trained champions

ROOT = Path(__file__).resolve().parents[2]
MAX_RECORDS = 50
SECRET_NAME = "Zebulon Quixote-Marchetti"
READY_TIMEOUT_S = 120


class Server:
    def __init__(self, url: str, log: Path):
        self.url, self.log = url, log
        self.client = httpx.Client(base_url=url, timeout=60)

    def predict(self, body: object) -> httpx.Response:
        return self.client.post("/predict", json=body)


def serve(env: dict[str, str], log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port), *extra]
    return start_process(command, env, log, ROOT), f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}
    # with the access log on (off by default), so the log test below sees every request's line
    process, url = serve(env, log, "--max-records", str(MAX_RECORDS), "--workers", "1", "--access-log")
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {READY_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield Server(url, log)
    finally:
        stop_process_group(process, grace_s=20)


@pytest.fixture(scope="module")
def predictor(trained):
    from serving.predictor import Predictor

    return Predictor.from_store()


@pytest.fixture(scope="module")
def records(trained) -> list[dict]:
    """Test-year records of the long district as an app would send them (JSON types, None for missing)."""
    from serving.batch import historical_frame
    from training.data import Source, load_data

    data = load_data(Source(config=trained.district / "district.toml"))
    frame = historical_frame(data, data.district.years[-1])
    from serving.predictor import Predictor

    columns = ["student_id", *Predictor.from_store().columns]
    frame = frame[[c for c in columns if c in frame]].head(60)
    frame = frame[frame["prior_math_score"].notna() & frame["prior_reading_score"].notna()].head(40)
    out = frame.astype(object).where(frame.notna(), None).to_dict("records")
    for record in out:
        for key, value in record.items():
            if isinstance(value, np.generic):
                record[key] = value.item()
    return out


def test_single_record_equals_the_in_process_predictor(server: Server, predictor, records) -> None:
    response = server.predict({"students": [records[0]]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == predictor.predict([records[0]])
    [prediction] = body["predictions"]
    assert prediction["student_id"] == records[0]["student_id"]
    for subject in ("math", "reading"):
        entry = prediction[subject]
        low, high = entry["growth_interval"]
        assert low < entry["predicted_growth"] < high
        assert entry["predicted_score"] == pytest.approx(
            records[0][f"prior_{subject}_score"] + entry["predicted_growth"]
        )
        assert 0 <= entry["needs_support_probability"] <= 1
    kinds = {(m["subject"], m["kind"]) for m in body["models"]}
    assert kinds == {(s, k) for s in ("math", "reading") for k in ("growth", "support")}
    assert all(m["registry_version"] for m in body["models"])


def test_batch_equals_single_records_and_the_batch_scorer(server: Server, predictor, records) -> None:
    import pandas as pd

    batch = server.predict({"students": records}).json()
    singles = [server.predict({"students": [r]}).json()["predictions"][0] for r in records]
    for i, (together, alone) in enumerate(zip(batch["predictions"], singles, strict=True)):
        assert together == alone, f"record {i}: {together} != {alone}"
    frame = predictor.predict_frame(pd.DataFrame(records))
    for subject in ("math", "reading"):
        served = np.array([p[subject]["predicted_growth"] for p in batch["predictions"]])
        assert np.array_equal(served, frame[f"{subject}_predicted_growth"].to_numpy())
        low = np.array([p[subject]["growth_interval"][0] for p in batch["predictions"]])
        assert np.array_equal(low, frame[f"{subject}_growth_low"].to_numpy())
        support = np.array([p[subject]["needs_support_probability"] for p in batch["predictions"]])
        assert np.array_equal(support, frame[f"{subject}_needs_support_probability"].to_numpy())


def test_requests_scored_together_get_the_numbers_each_would_get_alone(predictor, records) -> None:
    """What the service's coalescing does under load (serving.coalesce): several requests in one
    scoring call, each answer identical (every number, warning and model entry) to scoring it alone."""
    requests = [[records[0]], records[1:4], [records[4]], records[5:12]]
    together = predictor.predict_many(requests)
    assert together == [predictor.predict(request) for request in requests]


def test_concurrent_single_records_each_get_their_own_answer(server: Server, records) -> None:
    expected = [server.predict({"students": [r]}).json()["predictions"][0] for r in records]

    def one(i: int) -> dict:
        response = httpx.post(f"{server.url}/predict", json={"students": [records[i]]}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(one, range(len(records)))) == expected


def test_unseen_school_and_missing_prior_are_answered_with_warnings(server: Server, records) -> None:
    unseen = {**records[1], "school_id": "no-such-school"}
    no_reading = {**records[2], "prior_reading_score": None, "prior2_reading_score": None}
    response = server.predict({"students": [records[0], unseen, no_reading]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["predictions"][2]["reading"] is None and body["predictions"][2]["math"] is not None
    assert any(
        "school 'no-such-school' unknown to the model" in w and w.startswith("record 1")
        for w in body["warnings"]
    )
    assert any(w.startswith("record 2: no prior_reading_score") for w in body["warnings"])
    known = server.predict({"students": [records[1]]}).json()["predictions"][0]["math"]
    widths = [
        p["math"]["growth_interval"][1] - p["math"]["growth_interval"][0]
        for p in (body["predictions"][1], {"math": known})
    ]
    assert widths[0] > widths[1]  # an unseen school gets a wider interval


def test_models_lists_what_is_served(server: Server, trained) -> None:
    body = server.client.get("/models").json()
    assert body["subjects"] == ["math", "reading"]
    names = {m["name"] for m in body["models"]}
    assert names == {
        "student-growth-math",
        "student-growth-math-support",
        "student-growth-reading",
        "student-growth-reading-support",
    }
    growth = {m["subject"]: m for m in body["models"] if m["kind"] == "growth"}
    for subject in ("math", "reading"):
        assert growth[subject]["registry_version"] == trained.results[subject]["growth"]["version"]
    assert "prior_math_score" in body["inputs"] and "school_id" in body["required"]


def valid(records: list[dict], **changes: object) -> dict:
    return {**records[0], **changes}


BAD_REQUESTS = {
    "missing field": (
        lambda r: {"students": [valid(r), {k: v for k, v in valid(r).items() if k != "grade"}]},
        "record 1, field 'grade': Field required",
    ),
    "wrong type": (
        lambda r: {"students": [valid(r, prior_math_score="high")]},
        "record 0, field 'prior_math_score': Input should be a valid number",
    ),
    "score off the scale": (
        lambda r: {"students": [valid(r), valid(r, prior_reading_score=4000.0)]},
        "record 1, field 'prior_reading_score': Input should be less than or equal to 950",
    ),
    "unknown grade": (
        lambda r: {"students": [valid(r, grade="13")]},
        "record 0, field 'grade': Input should be",
    ),
    "unknown field": (
        lambda r: {"students": [valid(r, shoe_size=42)]},
        "record 0, field 'shoe_size': Extra inputs are not permitted",
    ),
    "no prior at all": (
        lambda r: {"students": [valid(r, prior_math_score=None, prior_reading_score=None)]},
        "record 0: needs at least one of prior_math_score, prior_reading_score",
    ),
    "empty list": (lambda r: {"students": []}, "field 'students': the list is empty"),
    "too many records": (
        lambda r: {"students": [valid(r)] * (MAX_RECORDS + 1)},
        f"{MAX_RECORDS + 1} records; at most {MAX_RECORDS} per request",
    ),
    "no students key": (lambda r: {"records": [valid(r)]}, "field 'students': Field required"),
    "body not an object": (lambda r: [valid(r)], "the request body must be a JSON object"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_400_naming_record_and_field(server: Server, records, case: str) -> None:
    make, message = BAD_REQUESTS[case]
    response = server.predict(make(records))
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and isinstance(body["error"], str)
    assert all(isinstance(d, str) for d in body["detail"])
    assert any(message in d for d in body["detail"]), body


@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded"]
)
def test_malformed_json_gets_400_whatever_the_content_type(server: Server, content_type: str) -> None:
    response = server.client.post(
        "/predict", content=b'{"students": [{"student_id": 1,', headers={"Content-Type": content_type}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("malformed JSON")


def test_oversized_body_gets_413_before_it_is_read(server: Server) -> None:
    """Declare a 65 MiB body but send none of it: the answer must come from the headers alone."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {65 * 2**20}\r\n\r\n".encode()
        )
        status_line = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 413"), status_line


def test_documented_schemas_match_what_is_returned(server: Server, records) -> None:
    """The OpenAPI page documents 200 and 400 with the bodies the service returns."""
    spec = server.client.get("/docs.json").json()
    post = spec["paths"]["/predict"]["post"]
    schemas = spec["components"]["schemas"]
    error = schemas["ErrorResponse"]
    assert error["properties"]["detail"]["type"] == "array"
    assert error["properties"]["detail"]["items"]["type"] == "string"
    assert post["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )
    ok = post["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    assert set(schemas[ok]["properties"]) == set(server.predict({"students": [records[0]]}).json())
    example = post["requestBody"]["content"]["application/json"]["schema"]
    assert "students" in example.get("properties", {}) or "$ref" in example


def test_health_metrics_and_openapi(server: Server) -> None:
    assert server.client.get("/healthz").status_code == 200
    assert server.client.get("/readyz").status_code == 200
    assert server.client.get("/metrics").status_code == 200


def test_student_names_never_logged(server: Server, records) -> None:
    server.predict({"students": [{**records[0], "student_name": SECRET_NAME}, {**records[1], "grade": "13"}]})
    server.predict({"students": [{**records[2], "student_name": 12}]})
    time.sleep(0.5)
    log = server.log.read_text()
    assert "/predict" in log  # the access log is being written
    assert SECRET_NAME not in log and "Quixote" not in log


def test_names_are_never_returned_and_numeric_ids_come_back_as_text(server: Server, records) -> None:
    """The predictor reads each validated record's own fields (serving.schemas.validated_records): a
    student's name goes no further and a numeric id is echoed as the text the validator made of it,
    for one record and for the most this server takes."""
    for size in (1, 50):
        students = [{**r, "student_id": 1000 + i, "student_name": SECRET_NAME} for i, r in enumerate(records)]
        body = {"students": (students * (size // len(students) + 1))[:size]}
        response = server.predict(body)
        assert response.status_code == 200, response.text
        assert SECRET_NAME not in response.text and "student_name" not in response.text
        ids = [p["student_id"] for p in response.json()["predictions"]]
        assert ids == [str(s["student_id"]) for s in body["students"]]


@pytest.mark.slow  # ~1 min: a few hundred generated requests against the live server
def test_schemathesis_finds_no_failure(server: Server) -> None:
    """A bounded schemathesis run with every check on the documented API."""
    st = shutil.which("st", path=str(Path(sys.executable).parent)) or shutil.which("schemathesis")
    if st is None:
        st = str(Path(sys.executable).parent / "schemathesis")
    result = subprocess.run(
        [
            st,
            "run",
            f"{server.url}/docs.json",
            "--url",
            server.url,
            "--checks",
            "all",
            "--max-examples",
            "150",
            "--request-timeout",
            "30",
            "--seed",
            "1",
            "--no-color",
            "--include-path-regex",
            "^/(predict|models)$",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_serve_refuses_to_start_without_a_champion(tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "empty-store")}
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(free_port())],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 1
    assert "no champion model in the BentoML model store" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
