"""Load test of the prediction service, compared in one run with in-process predict and `mlflow models serve`.

    .venv/bin/python bench/serving/run.py [--duration 20] [--out docs/benchmarks.md]

1. Finds the math champion in the BentoML store (BENTOML_HOME, default ~/bentoml) and in the MLflow
   registry (MLFLOW_TRACKING_URI, default sqlite:///mlflow.db). If either is missing it builds a small
   one in a temporary folder with `growth generate/tune/train` and says so.
2. Times the in-process pipeline (`model.predict` on a DataFrame, and serving.predictor end to end).
3. Starts `growth serve`, then `mlflow models serve` on the same registered model, one at a time, and
   drives each with locust (headless, loopback, time-bounded): single records at 1, 8 and 64
   concurrent clients, batches of 100 and 1,000 records.
4. Prints the table, writes it between markers in docs/benchmarks.md and the raw numbers to
   bench/results/serving/; exits 1 if any request failed.

Everything is bounded: each locust run lasts --duration seconds, each server start has a timeout, and the
whole run takes about five minutes on two cores (plus ~90 s if a model has to be built).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from serving.local import free_port, start_process, stop_process_group

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
MARK_START = "<!-- serving-benchmark:start -->"
MARK_END = "<!-- serving-benchmark:end -->"
MODEL = "student-growth-math"
N_RECORDS = 2000
START_TIMEOUT_S = 180


@dataclass
class Result:
    """One row of the table."""

    server: str
    clients: int
    batch: int
    requests: int
    failures: int
    p50_ms: float
    p99_ms: float
    predictions_per_s: float
    note: str = ""


@dataclass
class Setup:
    bentoml_home: Path
    tracking_uri: str
    schools: Path
    students: Path
    bento_tag: str
    registry_version: str
    family: str
    built_here: bool


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=20, help="Seconds per locust run.")
    parser.add_argument(
        "--users", type=int, nargs="+", default=[1, 8, 64], help="Clients for single records."
    )
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[100, 1000], help="Records per batch request."
    )
    parser.add_argument("--batch-users", type=int, default=4, help="Concurrent clients for batch requests.")
    parser.add_argument("--mlflow-workers", type=int, default=2, help="`mlflow models serve --workers`.")
    parser.add_argument("--students", type=Path, default=ROOT / "data/district/students.csv")
    parser.add_argument("--schools", type=Path, default=ROOT / "data/district/schools.csv")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks.md")
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/serving")
    return parser.parse_args()


# --------------------------------------------------------------------------- processes


def tool_env(**extra: str) -> dict[str, str]:
    """Environment for child processes: the venv's bin first (mlflow runs `uvicorn` by name)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "BENTOML_DO_NOT_TRACK": "true", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}); log {log}:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {START_TIMEOUT_S}s; log {log}")


def run(command: list[str], env: dict[str, str], cwd: Path, timeout: int) -> None:
    print("  $", " ".join(command), flush=True)
    subprocess.run(command, cwd=cwd, env=env, check=True, timeout=timeout, stdout=subprocess.DEVNULL)


# --------------------------------------------------------------------------- model setup


def bento_champion(bentoml_home: Path) -> dict | None:
    """The math champion in a BentoML store (asked in a subprocess: BENTOML_HOME is read at import)."""
    code = (
        "import json; from serving.predictor import champion_entry; e = champion_entry('math'); "
        "print(json.dumps(None if e is None else {'tag': str(e.tag), **{k: str(v) for k, v in "
        "e.info.metadata.items()}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=tool_env(BENTOML_HOME=str(bentoml_home)),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def mlflow_champion(tracking_uri: str) -> str | None:
    """Registry version behind models:/student-growth-math@champion, or None."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        return str(MlflowClient(tracking_uri).get_model_version_by_alias(MODEL, "champion").version)
    except MlflowException:
        return None


def build_small_model(folder: Path) -> tuple[Path, str, Path, Path]:
    """A 20,000-student district, a 3-trial HGB study and a trained, registered, exported champion."""
    folder.mkdir(parents=True, exist_ok=True)
    home, tracking = folder / "bentoml", f"sqlite:///{folder / 'mlflow.db'}"
    env = tool_env(BENTOML_HOME=str(home), MLFLOW_TRACKING_URI=tracking)
    growth = [sys.executable, "-m", "pipelines.cli"]
    data = ["--schools", "district/schools.csv", "--students", "district/students.csv", "--target", "math"]
    storage = ["--storage", f"sqlite:///{folder / 'optuna.db'}"]
    run([*growth, "generate", "--students", "20000", "--seed", "42", "--out", "district"], env, folder, 300)
    run(
        [*growth, "tune", *data, "--family", "hgb", "--trials", "3", "--tune-rows", "5000", *storage],
        env,
        folder,
        600,
    )
    run(
        [*growth, "train", *data, "--family", "hgb", *storage, "--margin", "0", "--out", "evaluation"],
        env,
        folder,
        600,
    )
    return home, tracking, folder / "district/schools.csv", folder / "district/students.csv"


def resolve_setup(args: argparse.Namespace, work: Path) -> Setup:
    """Use the project's champion if both stores have the same one; otherwise build a small one."""
    home = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml"))
    tracking = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{ROOT / 'mlflow.db'}")
    schools, students = args.schools, args.students
    bento, version = bento_champion(home), mlflow_champion(tracking)
    built = False
    if bento is None or version is None or not students.exists() or bento.get("registry_version") != version:
        print(
            f"no matching math champion in BentoML ({home}: {bento and bento['tag']}) and MLflow "
            f"({tracking}: version {version}) with data at {students}; building a small one in "
            f"{work / 'model'} with growth generate/tune/train (about 90 s)",
            flush=True,
        )
        home, tracking, schools, students = build_small_model(work / "model")
        bento, version, built = bento_champion(home), mlflow_champion(tracking), True
    if bento is None or version is None:
        raise RuntimeError("could not find or build a math champion in both stores")
    return Setup(home, tracking, schools, students, bento["tag"], version, bento.get("family", "?"), built)


def load_records(setup: Setup, n: int) -> list[dict]:
    """n students of the district, as both servers take them: model input columns, no names or scores."""
    from features.io import load_district
    from training.train import model_input

    students = load_district(setup.schools, setup.students).students
    sample = students.sample(n=min(n, len(students)), random_state=0)
    return json.loads(model_input(sample).to_json(orient="records"))


# --------------------------------------------------------------------------- measurements


def timed(func, repeats: int, min_seconds: float) -> np.ndarray:
    """Latencies in ms of at least ``repeats`` calls and ``min_seconds`` of calls."""
    latencies, started = [], time.perf_counter()
    while len(latencies) < repeats or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        func()
        latencies.append((time.perf_counter() - t0) * 1000)
    return np.asarray(latencies)


def cycled(func: Callable[[Any], object], items: list, repeats: int) -> np.ndarray:
    """Time ``func`` over ``items`` in turn (different records each call, like the load test)."""
    turn = itertools.cycle(items)
    return timed(lambda: func(next(turn)), repeats, 3.0)


def in_process(setup: Setup, records: list[dict], batches: list[int]) -> list[Result]:
    """The champion pipeline in this process: bare model.predict, then serving.predictor end to end."""
    os.environ["BENTOML_HOME"] = str(setup.bentoml_home)  # before bentoml is first imported
    from serving.predictor import Predictor, records_to_frame
    from serving.schemas import PredictRequest

    predictor = Predictor.from_store(["math"])
    pipeline = predictor.models[0].pipeline
    frame = records_to_frame(records)

    def end_to_end(body: dict) -> None:
        request = PredictRequest.model_validate(body)
        predictor.predict([s.model_input() for s in request.students]).model_dump_json()

    results = []
    for size in [1, *batches]:
        chunks = [frame.iloc[i : i + size] for i in range(0, len(frame) - size + 1, size)][:50]
        lat = cycled(pipeline.predict, chunks, 200 if size == 1 else 5)
        results.append(row("in-process model.predict (DataFrame)", 1, size, lat, 0))
    for size in [1, *batches]:
        bodies = [{"students": records[i : i + size]} for i in range(0, len(records) - size + 1, size)][:50]
        lat = cycled(end_to_end, bodies, 200 if size == 1 else 5)
        results.append(
            row("in-process serving.predictor (validate → predict → response JSON)", 1, size, lat, 0)
        )
    return results


def row(
    server: str,
    clients: int,
    batch: int,
    latencies_ms: np.ndarray,
    failures: int,
    per_second: float | None = None,
    note: str = "",
) -> Result:
    p50, p99 = np.percentile(latencies_ms, [50, 99]) if len(latencies_ms) else (np.nan, np.nan)
    rate = per_second if per_second is not None else batch * 1000.0 / float(np.mean(latencies_ms))
    return Result(
        server, clients, batch, len(latencies_ms) + failures, failures, float(p50), float(p99), rate, note
    )


def locust(
    url: str, kind: str, users: int, batch: int, duration: int, records_file: Path, work: Path, server: str
) -> Result:
    """One headless locust run; exact latencies come from the locustfile's event hook."""
    prefix = work / f"{kind}-u{users}-b{batch}"
    latency_file = prefix.with_suffix(".json")
    env = tool_env(
        BENCH_RECORDS=str(records_file),
        BENCH_BATCH=str(batch),
        BENCH_KIND=kind,
        BENCH_LATENCIES=str(latency_file),
    )
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(users),
        "-t",
        f"{duration}s",
        "--host",
        url,
        "--csv",
        str(prefix),
        "--only-summary",
        "--stop-timeout",
        "30",
        "--loglevel",
        "WARNING",
    ]
    started = time.perf_counter()
    subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        timeout=duration + 120,
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=(prefix.with_suffix(".log")).open("w"),
    )
    raw = json.loads(latency_file.read_text())
    latencies, failures = np.asarray(raw["latencies_ms"]), len(raw["failures"])
    if failures:
        print(f"    {failures} failed requests, e.g. {raw['failures'][0]}", flush=True)
    rate = aggregated_rps(prefix) * batch * (len(latencies) / max(1, len(latencies) + failures))
    result = row(server, users, batch, latencies, failures, per_second=rate)
    print(
        f"    {server} clients={users} batch={batch}: {result.requests} requests, {failures} failed, "
        f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, {result.predictions_per_s:,.0f} pred/s "
        f"({time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    return result


def aggregated_rps(prefix: Path) -> float:
    import csv

    with Path(f"{prefix}_stats.csv").open() as handle:
        for line in csv.DictReader(handle):
            if line["Name"] == "Aggregated":
                return float(line["Requests/s"])
    return float("nan")


def warm_up(url: str, kind: str, records: list[dict], batches: list[int]) -> None:
    """First requests load lazily-built state (and train BentoML's batching optimizer): not measured."""
    import httpx

    path = "/invocations" if kind == "mlflow" else "/predict"
    with httpx.Client(base_url=url, timeout=120) as client:
        for size in [1] * 30 + batches * 3:
            rows = records[:size]
            body = {"dataframe_records": rows} if kind == "mlflow" else {"students": rows}
            response = client.post(path, json=body)
            response.raise_for_status()


def batch_counters(url: str) -> tuple[float, float]:
    """Sum and count of BentoML's adaptive batch size histogram for the model service."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = {}
    for kind in ("sum", "count"):
        match = re.search(
            rf'adaptive_batch_size_{kind}\{{[^}}]*method_name="predict_rows"[^}}]*\}} ([0-9.e+]+)', text
        )
        values[kind] = float(match.group(1)) if match else 0.0
    return values["sum"], values["count"]


def bench_bentoml(
    setup: Setup, args: argparse.Namespace, records: list[dict], records_file: Path, work: Path
) -> list[Result]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / "bentoml-server.log"
    server = start_process(
        [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port), "--target", "math"],
        tool_env(BENTOML_HOME=str(setup.bentoml_home)),
        log,
        ROOT,
    )
    results = []
    try:
        wait_ready(f"{url}/readyz", server, log)
        warm_up(url, "bentoml", records, args.batches)
        name = "BentoML `growth serve` POST /predict"
        for users in args.users:
            before = batch_counters(url)
            result = locust(url, "bentoml", users, 1, args.duration, records_file, work, name)
            after = batch_counters(url)
            merged = (after[0] - before[0]) / max(1.0, after[1] - before[1])
            result.note = f"adaptive batching: {merged:.1f} requests per model call on average"
            results.append(result)
        for size in args.batches:
            results.append(
                locust(url, "bentoml", args.batch_users, size, args.duration, records_file, work, name)
            )
    finally:
        stop_process_group(server)
    return results


def bench_mlflow(
    setup: Setup, args: argparse.Namespace, records: list[dict], records_file: Path, work: Path
) -> list[Result]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = work / "mlflow-server.log"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        f"models:/{MODEL}@champion",
        "--env-manager",
        "local",
        "-p",
        str(port),
        "--host",
        "127.0.0.1",
        "--workers",
        str(args.mlflow_workers),
    ]
    server = start_process(command, tool_env(MLFLOW_TRACKING_URI=setup.tracking_uri), log, ROOT)
    results = []
    try:
        wait_ready(f"{url}/ping", server, log)
        warm_up(url, "mlflow", records, args.batches)
        name = f"`mlflow models serve` POST /invocations ({args.mlflow_workers} workers)"
        for users in args.users:
            results.append(locust(url, "mlflow", users, 1, args.duration, records_file, work, name))
        for size in args.batches:
            results.append(
                locust(url, "mlflow", args.batch_users, size, args.duration, records_file, work, name)
            )
    finally:
        stop_process_group(server)
    return results


# --------------------------------------------------------------------------- report


def versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("bentoml", "mlflow", "scikit-learn", "pandas", "locust"))


def table(results: list[Result]) -> str:
    lines = [
        "| server | concurrent clients | records / request | requests | failed | p50 latency ms | "
        "p99 latency ms | predictions / s | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.server} | {r.clients} | {r.batch:,} | {r.requests:,} | {r.failures} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.predictions_per_s:,.0f} | {r.note} |"
        )
    return "\n".join(lines)


def shown_path(path: Path) -> str:
    """Project-relative path for the docs (absolute paths differ per machine)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def section(results: list[Result], setup: Setup, args: argparse.Namespace, seconds: float) -> str:
    machine = (
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}; {versions()}"
    )
    source = (
        f"a small champion built by the runner ({setup.students.parent}, 20,000 students, 3 HGB trials)"
        if setup.built_here
        else f"the project's champion, records from {shown_path(setup.students)}"
    )
    failed = sum(r.failures for r in results)
    return "\n".join(
        [
            MARK_START,
            f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `python bench/serving/run.py` in "
            f"{seconds:.0f} s on {machine}.",
            "",
            f"Model: `{MODEL}` registry version {setup.registry_version} ({setup.family}), BentoML tag "
            f"`{setup.bento_tag}`: {source}. The same {N_RECORDS:,} student records go to every path.",
            "",
            f"Load: locust headless on loopback, {args.duration} s per row, each client sends its next "
            f"request as soon as the last answer arrives; batch rows use {args.batch_users} clients. Server "
            "and load generator share the same cores, so absolute numbers are pessimistic; compare rows. "
            f"Failed requests in total: **{failed}**.",
            "",
            table(results),
            "",
            "How to read it: the in-process rows are the floor (no HTTP, no JSON). `growth serve` runs an "
            "API process (JSON parsing, pydantic validation, response) and a model process whose batchable "
            "`predict_rows` merges concurrent requests (the note gives the mean merge); `mlflow models "
            "serve` runs the same registered pipeline with no batching across requests.",
            MARK_END,
        ]
    )


def write_doc(path: Path, text: str) -> None:
    """Replace the serving section between its markers, keeping whatever else the file holds."""
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    if MARK_START in current and MARK_END in current:
        head, rest = current.split(MARK_START, 1)
        tail = rest.split(MARK_END, 1)[1]
        updated = head + text + tail
    else:
        updated = current.rstrip() + "\n\n## Serving: HTTP load test (bench/serving)\n\n" + text + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated)


def main() -> int:
    args = parse_args()
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    print(f"working folder {work}", flush=True)
    setup = resolve_setup(args, work)
    print(f"model {setup.bento_tag} = MLflow {MODEL} v{setup.registry_version} ({setup.family})", flush=True)
    records = load_records(setup, N_RECORDS)
    records_file = work / "records.json"
    records_file.write_text(json.dumps(records))
    print("in-process timings", flush=True)
    results = in_process(setup, records, args.batches)
    print("BentoML", flush=True)
    results += bench_bentoml(setup, args, records, records_file, work)
    print("MLflow", flush=True)
    results += bench_mlflow(setup, args, records, records_file, work)
    elapsed = time.perf_counter() - started
    text = section(results, setup, args, elapsed)
    print("\n" + table(results) + "\n", flush=True)
    write_doc(args.out, text)
    args.results.mkdir(parents=True, exist_ok=True)
    raw = args.results / f"{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    raw.write_text(
        json.dumps(
            {"setup": {k: str(v) for k, v in asdict(setup).items()}, "results": [asdict(r) for r in results]},
            indent=2,
        )
    )
    print(f"wrote {args.out} and {raw} in {elapsed:.0f} s", flush=True)
    failed = sum(r.failures for r in results)
    if failed:
        print(f"{failed} request(s) failed; logs kept in {work}", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
