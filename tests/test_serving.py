"""The prediction service over real HTTP: a small champion per target in a temporary BentoML store,
``growth serve`` on a free local port, and the answers compared with the in-process pipeline.

The store is built in a subprocess (this file run as a script) because BENTOML_HOME is read when
bentoml is first imported, which another test may already have done in this process.
"""

from __future__ import annotations

import json
import os
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
from serving.predictor import unseen_warnings
from serving.schemas import EXAMPLE_STUDENT, PredictRequest

ROOT = Path(__file__).resolve().parents[1]
MAX_RECORDS = 50
N_RECORDS = 40
SECRET_NAME = "Zebulon Quixote-Marchetti"
UNKNOWN_SCHOOL = "Nowhere Preparatory Academy"
HALFWIDTH = {"math": 5.0, "reading": 6.0}
READY_TIMEOUT_S = 90


# --------------------------------------------------------------------------- fixture building (subprocess)


def build_store(folder: Path) -> None:
    """Tiny district, one small HGB champion per target exported to BENTOML_HOME, plus the in-process
    predictions for some test-split records (records.json, expected.json)."""
    from features.transform import model_pipeline
    from pipelines.synthetic import generate_district, write_district
    from training.data import DataConfig, prepare
    from training.export import export_champion
    from training.families import FAMILIES, fit_family
    from training.train import model_input

    write_district(generate_district(2000, seed=3), folder / "district")
    params = {
        "learning_rate": 0.1,
        "max_leaf_nodes": 15,
        "min_samples_leaf": 20,
        "l2_regularization": 0.0,
        "max_features": 1.0,
        "max_iter": 40,
    }
    pipelines = {}
    for target in ("math", "reading"):
        p = prepare(DataConfig(folder / "district/schools.csv", folder / "district/students.csv", target, 42))
        est = fit_family(
            FAMILIES["hgb"], params, 42, p.n_numeric, p.X_train, p.y_part("train"), p.X_val, p.y_part("val")
        )
        pipelines[target] = model_pipeline(p.transform, est)
        export_champion(
            pipelines[target],
            target,
            {
                "registered_model": f"student-growth-{target}",
                "registry_version": "7",
                "family": "hgb",
                "mlflow_run_id": "test",
                "interval_90_halfwidth": HALFWIDTH[target],
                "test_rmse": 3.5,
                "data_fingerprint": p.fingerprint,
            },
        )
    test = p.part("test").head(N_RECORDS).copy()  # same split for both targets (same seed and rows)
    test.loc[test.index[5], "school_name"] = UNKNOWN_SCHOOL
    frame = model_input(test)
    expected = {t: pipe.predict(frame).tolist() for t, pipe in pipelines.items()}
    records = json.loads(test.drop(columns=["math_score", "reading_score"]).to_json(orient="records"))
    for record in records:
        record["student_name"] = SECRET_NAME
    (folder / "records.json").write_text(json.dumps(records))
    (folder / "expected.json").write_text(json.dumps(expected))


# --------------------------------------------------------------------------- server fixture


class Server:
    def __init__(self, url: str, log: Path, folder: Path):
        self.url, self.log, self.folder = url, log, folder
        self.client = httpx.Client(base_url=url, timeout=60)

    def predict(self, body: object) -> httpx.Response:
        return self.client.post("/predict", json=body)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("serving")
    env = {
        **os.environ,
        "BENTOML_HOME": str(folder / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    subprocess.run(
        [sys.executable, __file__, "build", str(folder)], env=env, cwd=ROOT, check=True, timeout=180
    )
    port = free_port()
    log = folder / "server.log"
    command = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "serve",
        "--port",
        str(port),
        "--max-records",
        str(MAX_RECORDS),
    ]
    process = start_process(command, env, log, ROOT)
    url = f"http://127.0.0.1:{port}"
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
        yield Server(url, log, folder)
    finally:
        stop_process_group(process, grace_s=20)


@pytest.fixture(scope="module")
def records(server: Server) -> list[dict]:
    return json.loads((server.folder / "records.json").read_text())


@pytest.fixture(scope="module")
def expected(server: Server) -> dict[str, list[float]]:
    return json.loads((server.folder / "expected.json").read_text())


def valid_record(**changes: object) -> dict:
    return {**EXAMPLE_STUDENT, **changes}


# --------------------------------------------------------------------------- HTTP tests


def test_single_record(server: Server, records: list[dict], expected: dict[str, list[float]]) -> None:
    response = server.predict({"students": [records[0]]})
    assert response.status_code == 200, response.text
    body = response.json()
    [prediction] = body["predictions"]
    assert prediction["student_id"] == records[0]["student_id"]
    for target in ("math", "reading"):
        value = prediction[f"predicted_{target}_growth"]
        assert value == pytest.approx(expected[target][0], abs=1e-9)
        assert prediction[f"{target}_growth_interval_90"] == pytest.approx(
            [value - HALFWIDTH[target], value + HALFWIDTH[target]]
        )
    assert {m["name"] for m in body["models"]} == {"student-growth-math", "student-growth-reading"}
    for model in body["models"]:
        assert model["version"].startswith(f"{model['name']}:")
        assert model["registry_version"] == "7" and model["family"] == "hgb"
    assert body["warnings"] == []


def test_batch_equals_in_process_predictions(
    server: Server, records: list[dict], expected: dict[str, list[float]]
) -> None:
    response = server.predict({"students": records})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["student_id"] for p in predictions] == [r["student_id"] for r in records]
    for target in ("math", "reading"):
        served = np.array([p[f"predicted_{target}_growth"] for p in predictions])
        np.testing.assert_allclose(served, expected[target], rtol=0, atol=1e-9)


def test_unseen_school_uses_district_aggregates_and_warns(
    server: Server, records: list[dict], expected: dict[str, list[float]]
) -> None:
    response = server.predict({"students": records[:8]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["warnings"] == [
        f"record 5: school '{UNKNOWN_SCHOOL}' unknown to the model; district-level school aggregates used"
    ]
    assert body["predictions"][5]["predicted_math_growth"] == pytest.approx(expected["math"][5], abs=1e-9)


def test_concurrent_single_records_are_batched_correctly(
    server: Server, records: list[dict], expected: dict[str, list[float]]
) -> None:
    """Adaptive batching merges these requests; each must still get its own answer."""

    def one(i: int) -> float:
        response = httpx.post(f"{server.url}/predict", json={"students": [records[i]]}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["predictions"][0]["predicted_reading_growth"]

    with ThreadPoolExecutor(16) as pool:
        served = list(pool.map(one, range(len(records))))
    np.testing.assert_allclose(served, expected["reading"], rtol=0, atol=1e-9)


NO_GRADE = {k: v for k, v in EXAMPLE_STUDENT.items() if k != "grade"}
BAD_REQUESTS = {
    "missing field": ({"students": [valid_record(), NO_GRADE]}, "record 1, field 'grade': Field required"),
    "wrong type": (
        {"students": [valid_record(prior_math_score="high")]},
        "record 0, field 'prior_math_score': Input should be a valid number",
    ),
    "score out of range": (
        {"students": [valid_record(), valid_record(prior_reading_score=104.0)]},
        "record 1, field 'prior_reading_score': Input should be less than or equal",
    ),
    "unknown grade": (
        {"students": [valid_record(grade="13th")]},
        "record 0, field 'grade': Input should be '9th', '10th', '11th' or '12th'",
    ),
    "unknown field": (
        {"students": [valid_record(shoe_size=42)]},
        "record 0, field 'shoe_size': Extra inputs are not permitted",
    ),
    "fractional count": (
        {"students": [valid_record(prior_days_absent=2.5)]},
        "record 0, field 'prior_days_absent': Input should be a valid integer",
    ),
    "student_id beyond int64": (
        {"students": [valid_record(student_id=2**70)]},
        "record 0, field 'student_id': Input should be less than or equal to",
    ),
    "empty list": ({"students": []}, "field 'students': the list is empty"),
    "too many records": (
        {"students": [valid_record()] * (MAX_RECORDS + 1)},
        f"{MAX_RECORDS + 1} records; at most {MAX_RECORDS} per request",
    ),
    "no students key": ({"records": [valid_record()]}, "field 'students': Field required"),
    "body not an object": ([valid_record()], "the request body must be a JSON object"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_400_naming_record_and_field(server: Server, case: str) -> None:
    body, message = BAD_REQUESTS[case]
    response = server.predict(body)
    assert response.status_code == 400, response.text
    messages = [d["msg"] for d in response.json()["detail"]]
    assert any(message in m for m in messages), messages


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain"],
)
def test_malformed_json_gets_400_whatever_the_content_type(server: Server, content_type: str) -> None:
    response = server.client.post(
        "/predict", content=b'{"students": [{"student_id": 1,', headers={"Content-Type": content_type}
    )
    assert response.status_code == 400, response.text
    assert "Invalid JSON" in response.json()["detail"][0]["msg"]


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


def test_health_metrics_and_openapi(server: Server) -> None:
    assert server.client.get("/healthz").status_code == 200
    assert server.client.get("/readyz").status_code == 200
    metrics = server.client.get("/metrics")
    assert metrics.status_code == 200 and "bentoml_service_request_total" in metrics.text
    spec = server.client.get("/docs.json").json()
    request_schema = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert request_schema["example"]["students"][0]["grade"] == EXAMPLE_STUDENT["grade"]
    assert "StudentRecord" in spec["components"]["schemas"]


def test_student_names_never_logged(server: Server, records: list[dict]) -> None:
    server.predict({"students": [records[0], {**records[1], "grade": "13th"}]})
    server.predict({"students": [{**records[2], "student_name": 12}]})
    time.sleep(0.5)
    log = server.log.read_text()
    assert "POST" in log or "/predict" in log  # the access log is being written
    assert SECRET_NAME not in log and "Quixote" not in log


# --------------------------------------------------------------------------- in-process logic


def test_warnings_group_records_by_school_and_model() -> None:
    schools = ["A", "X", "B", "X", "Y"]
    warnings = unseen_warnings(
        schools,
        {"math": [False, True, False, True, True], "reading": [False, True, False, True, False]},
        n_targets=2,
    )
    assert warnings == [
        "records 1, 3: school 'X' unknown to the model; district-level school aggregates used",
        "record 4: school 'Y' unknown to the math model; district-level school aggregates used",
    ]


def test_request_model_drops_the_name_from_model_input() -> None:
    request = PredictRequest.model_validate({"students": [valid_record(student_name=SECRET_NAME)]})
    assert "student_name" not in request.students[0].model_input()
    assert SECRET_NAME not in request.model_dump_json()


if __name__ == "__main__" and sys.argv[1:2] == ["build"]:
    build_store(Path(sys.argv[2]))
