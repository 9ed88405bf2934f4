"""Serving benchmark: in-process prediction, `growth serve`, a batching variant and `mlflow models serve`,
measured with wrk and locust on loopback in one time-bounded run.

    .venv/bin/python bench/serving/run.py                 # ~15 s per load level, about 10 minutes
    .venv/bin/python bench/serving/run.py --smoke         # 2 s per level: checks the harness, not speed
    BENTOML_HOME=/tmp/e2e/bentoml MLFLOW_TRACKING_URI=sqlite:////tmp/e2e/mlflow.db \\
        .venv/bin/python bench/serving/run.py --config /tmp/e2e/data/district.toml --smoke

What it does:
1. Finds wrk (installs it with `apt-get install -y wrk` when missing and allowed, or says how).
2. In a child process (bench/serving/inprocess.py): loads the district (--config), takes N students of
   its latest year as request records (validated by the service's own StudentRecord model) and times
   serving.predictor.Predictor in-process: one record, the /predict handler without HTTP, and
   1,000-record batches (dicts and DataFrame).
3. Starts each server on a free loopback port (process group of its own, start timeout, always stopped
   and its process group killed) and checks its answers against the in-process predictions, then
   drives it for --duration seconds per level:
     `growth serve` (one worker per core)  wrk: 1 and 64 connections x 1 record, batches of 1,000
                                           locust: the same three levels
     `growth serve --workers 1`            wrk: 64 connections x 1 record
     batched_service.py (BentoML adaptive  wrk: 1 and 64 connections x 1 record
       batching, the same Predictor)
     `mlflow models serve` (math model)    wrk: 1 and 64 connections x 1 record, batches of 1,000
   Every level rotates among a few hundred prepared bodies; a response that is not HTTP 200 with
   the expected content is a failure.
4. Prints the table and the issue's goals (met or not, as measured), writes the section between
   `<!-- serving-benchmark:start -->` and `<!-- serving-benchmark:end -->` of --out (docs/benchmarks.md;
   a --smoke run leaves the docs alone unless --out is given) and the raw numbers to
   bench/results/serving/<UTC time>/. Exits 1 if any request failed or a server did not start.

The stores are the ones in the environment: BENTOML_HOME (growth serve, batching variant, in-process)
and MLFLOW_TRACKING_URI (`models:/student-growth-math@champion`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from serving.local import free_port, start_process, stop_process_group

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
LUA = HERE / "post.lua"
LOCUSTFILE = HERE / "locustfile.py"
INPROCESS = HERE / "inprocess.py"
MARK_START = "<!-- serving-benchmark:start -->"
MARK_END = "<!-- serving-benchmark:end -->"
MLFLOW_MODEL = "models:/student-growth-math@champion"
N_SINGLE_BODIES = 400
N_BATCH_BODIES = 8
TOLERANCE = 1e-4  # score points: float32 models answer a few 1e-6 apart between processes
SETTLE_S = 30  # longest wait for a server to finish the requests a level left queued
PACKAGES = (
    "bentoml",
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "orjson",
    "mlflow",
    "scikit-learn",
    "lightgbm",
    "tensorflow",
    "keras",
    "numpy",
    "pandas",
    "locust",
)
GOALS = (
    # key of the row, what, measured field, comparison, threshold, unit
    ("inproc-predict-1", "in-process, one record dict → prediction, p50", "p50_ms", "<=", 1.0, "ms"),
    ("growth-wrk-c1", "HTTP loopback, 1 connection, p50", "p50_ms", "<=", 5.0, "ms"),
    ("growth-wrk-cN", "HTTP, {N} connections, single records/s", "requests_per_s", ">=", 2000.0, "req/s"),
    ("growth-wrk-cN", "HTTP, {N} connections, failed requests", "failures", "<=", 0, ""),
    ("growth-wrk-cN", "HTTP, {N} connections, p99", "p99_ms", "<=", 100.0, "ms"),
    (
        "growth-wrk-batch",
        "HTTP, batches of {B} records, predictions/s",
        "predictions_per_s",
        ">=",
        50000.0,
        "/s",
    ),
)


@dataclass
class Result:
    """One row of the table."""

    key: str
    path: str
    client: str
    connections: int
    batch: int
    requests: int = 0
    failures: int = 0
    requests_per_s: float = float("nan")
    predictions_per_s: float = float("nan")
    p50_ms: float = float("nan")
    p90_ms: float = float("nan")
    p99_ms: float = float("nan")
    note: str = ""
    first_failure: str = ""


@dataclass
class Server:
    """A server to start, and how to talk to it."""

    key: str
    label: str
    command: list[str]
    env: dict[str, str]
    ready_path: str
    predict_path: str
    kind: str  # students (growth serve, batched) | mlflow
    levels: list[tuple[str, int, int]] = field(default_factory=list)  # (client, connections, batch)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=float, default=None, help="Seconds per level (default 15; smoke 2)."
    )
    parser.add_argument(
        "--smoke", action="store_true", help="Quick harness check: 2 s per level, short warm-ups."
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="Markdown file whose serving section is replaced (default docs/benchmarks.md; --smoke: none).",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/serving", help="Raw numbers.")
    parser.add_argument("--config", type=Path, default=None, help="District config (default: the settings').")
    parser.add_argument(
        "--connections", type=int, default=64, help="Concurrent connections of the high level."
    )
    parser.add_argument("--batch", type=int, default=1000, help="Records per batch request.")
    parser.add_argument("--batch-connections", type=int, default=4, help="Connections sending batches.")
    parser.add_argument("--records", type=int, default=2000, help="Distinct student records to send.")
    parser.add_argument("--mlflow-workers", type=int, default=os.cpu_count() or 1, help="mlflow serve -w.")
    parser.add_argument(
        "--warmup", type=float, default=None, help="Seconds of load before measuring a server."
    )
    parser.add_argument("--start-timeout", type=float, default=300, help="Seconds for a server to be ready.")
    parser.add_argument("--skip-mlflow", action="store_true", help="No `mlflow models serve` rows.")
    parser.add_argument("--skip-locust", action="store_true", help="No locust rows.")
    parser.add_argument("--skip-batching", action="store_true", help="No adaptive-batching rows.")
    parser.add_argument("--skip-workers", action="store_true", help="No `growth serve --workers 1` row.")
    parser.add_argument(
        "--no-install", action="store_true", help="Never apt-get install wrk; say how instead."
    )
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 2.0 if args.smoke else 15.0
    if args.warmup is None:
        args.warmup = 1.0 if args.smoke else 3.0
    if args.out is None and not args.smoke:
        args.out = ROOT / "docs/benchmarks.md"
    if args.config is None:
        from features.settings import get_settings

        args.config = get_settings().default_config
    if not args.config.is_absolute():
        args.config = (ROOT / args.config) if (ROOT / args.config).exists() else args.config.resolve()
    if args.records < args.batch:
        parser.error("--records must be at least --batch")
    return args


# --------------------------------------------------------------------------- processes


def tool_env(**extra: str) -> dict[str, str]:
    """Child environment: the venv's bin first on PATH (mlflow runs uvicorn by name), no telemetry."""
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "BENTOML_DO_NOT_TRACK": "true", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def run_bounded(
    command: list[str], timeout_s: float, env: dict[str, str] | None = None, log: Path | None = None
) -> tuple[int, str]:
    """Run a load generator in its own process group; kill the group if it outlives ``timeout_s``."""
    with tempfile.TemporaryFile("w+") as out:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env or tool_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = -9
            print(f"    {command[0]} still running after {timeout_s:.0f} s: killed", flush=True)
        finally:
            if process.poll() is None:
                stop_process_group(process, grace_s=5)
        out.seek(0)
        text = out.read()
    if log is not None:
        log.write_text(text)
    return code, text


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout_s: float) -> float:
    """Seconds until GET ``url`` answers 200; RuntimeError if the server exits or the timeout passes."""
    import httpx

    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise RuntimeError(f"exited with code {process.returncode}; end of {log}:\n{tail}")
        with suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout_s:.0f} s (log {log})")


@contextmanager
def running(server: Server, work: Path, timeout_s: float) -> Iterator[str]:
    """The server's base URL while it runs; stopped (process group killed) on the way out, always."""
    port = free_port()
    command = [str(port) if part == "{port}" else part for part in server.command]
    log = work / f"{server.key}.log"
    print(f"  $ {shlex.join(shown_command(command))}", flush=True)
    process = start_process(command, server.env, log, ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        seconds = wait_ready(url + server.ready_path, process, log, timeout_s)
        print(f"    ready in {seconds:.0f} s", flush=True)
        yield url
    finally:
        stop_process_group(process, grace_s=20)


def shown_command(command: list[str]) -> list[str]:
    return [shown_path(Path(part)) if part.startswith("/") else part for part in command]


def shown_path(path: Path) -> str:
    """Project-relative where possible (absolute paths differ per machine)."""
    try:
        return str(Path(os.path.abspath(path)).relative_to(ROOT)) if path.is_absolute() else str(path)
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- wrk


def ensure_wrk(allow_install: bool) -> str:
    """The wrk executable; installed with apt-get when missing (and allowed, as root), else how to get it."""
    found = shutil.which("wrk")
    if found:
        return found
    hint = "install it with `sudo apt-get install -y wrk` (Debian/Ubuntu) or `brew install wrk` (macOS)"
    apt = shutil.which("apt-get")
    if not allow_install or apt is None or os.geteuid() != 0:
        why = "--no-install" if not allow_install else ("no apt-get" if apt is None else "not root")
        raise SystemExit(f"wrk is not installed ({why}): {hint}, then run this again")
    print("wrk is not installed: installing it with `apt-get install -y wrk`", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [apt, "install", "-y", "-o", "DPkg::Lock::Timeout=300", "wrk"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        print("  apt-get install failed; running `apt-get update` and trying again", flush=True)
        subprocess.run([apt, "update"], env=env, capture_output=True, timeout=900, check=False)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900, check=False)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit(f"could not install wrk ({done.stderr.strip()[-300:]}): {hint}, then run this again")
    return found


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk (unknown version)"


def wrk_level(
    wrk: str, url: str, bodies: Path, needle: str, connections: int, duration: float, raw: Path
) -> dict[str, Any]:
    """One wrk run; its numbers from the WRK_JSON line that post.lua's done() prints."""
    threads = max(1, min(connections, os.cpu_count() or 1))
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "30s"]
    command += ["--latency", "-s", str(LUA), url, "--", str(bodies), needle]
    code, text = run_bounded(command, duration + 60, log=raw)
    line = next((x for x in text.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk exited {code} without a WRK_JSON line; output in {raw}:\n{text[-800:]}")
    data = json.loads(line.removeprefix("WRK_JSON "))
    errors = data["errors"]
    # non-200 answers are counted by post.lua (errors.status would count them a second time)
    failed = data["failures"] + errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    seconds = data["duration_us"] / 1e6
    first = data["first_failure"] or ("" if failed == data["failures"] else f"socket errors {errors}")
    latency = {
        p: data["latency_us"][p] / 1000 if data["requests"] else float("nan") for p in ("p50", "p90", "p99")
    }
    return {
        "requests": data["requests"],
        "failures": failed,
        "wall_s": seconds,
        "p50_ms": latency["p50"],
        "p90_ms": latency["p90"],
        "p99_ms": latency["p99"],
        "first_failure": first,
    }


# --------------------------------------------------------------------------- locust


def locust_level(
    url: str,
    path: str,
    bodies: Path,
    needle: str,
    expect: int,
    users: int,
    duration: float,
    raw: Path,
) -> dict[str, Any]:
    """One headless locust run (one process); exact latencies come from the locustfile's hooks."""
    import numpy as np

    latency_file = raw.with_suffix(".json")
    env = tool_env(
        BENCH_BODIES=str(bodies),
        BENCH_PATH=path,
        BENCH_NEEDLE=needle,
        BENCH_EXPECT=str(expect),
        BENCH_LATENCIES=str(latency_file),
        BENCH_DURATION=str(duration),
    )
    # the locustfile ends the load after `duration` s of wall clock; -t is only a backstop
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
    command += ["-u", str(users), "-r", str(users), "-t", f"{round(duration) + 60}s"]
    command += ["--stop-timeout", "10", "--host", url, "--loglevel", "WARNING"]
    code, text = run_bounded(command, duration + 120, env=env, log=raw)
    if not latency_file.exists():
        raise RuntimeError(
            f"locust exited {code} without writing {latency_file}; output in {raw}:\n{text[-800:]}"
        )
    data = json.loads(latency_file.read_text())
    latencies = np.asarray(data["latencies_ms"], dtype=float)
    failures = len(data["failures"])
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99]) if len(latencies) else (np.nan,) * 3
    return {
        "requests": len(latencies) + failures,
        "failures": failures,
        "wall_s": data["wall_s"],
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "first_failure": data["failures"][0] if failures else "",
    }


# --------------------------------------------------------------------------- requests and answers


def write_bodies(records: list[dict], mlflow_rows: list[dict], batch: int, work: Path) -> dict[str, Path]:
    """JSON bodies, one per line, for each server kind and request size."""
    files = {}

    def bodies(rows: list[dict], size: int, count: int) -> list[list[dict]]:
        step = max(1, len(rows) // count) if size > 1 else size
        return [[rows[(k * step + i) % len(rows)] for i in range(size)] for k in range(count)]

    for kind, rows, wrap in (
        ("students", records, lambda r: {"students": r}),
        ("mlflow", mlflow_rows, lambda r: {"dataframe_records": r}),
    ):
        for size, count in ((1, min(N_SINGLE_BODIES, len(rows))), (batch, N_BATCH_BODIES)):
            path = work / f"{kind}-x{size}.jsonl"
            path.write_text(
                "".join(json.dumps(wrap(b), separators=(",", ":")) + "\n" for b in bodies(rows, size, count))
            )
            files[f"{kind}-{size}"] = path
    return files


def predicted_growth(kind: str, answer: Any, subject: str) -> list[float | None]:
    """The growth predictions of ``subject`` in a server's answer, in record order."""
    if kind == "mlflow":
        return [float(x) for x in answer["predictions"]]
    rows = answer["predictions"] if isinstance(answer, dict) else answer
    return [None if r.get(subject) is None else float(r[subject]["predicted_growth"]) for r in rows]


def check_answers(
    url: str, server: Server, records: list[dict], mlflow_rows: list[dict], expected: dict, batch: int
) -> str:
    """Compare the server's math growth with the in-process predictions; a note for the table if they
    differ. RuntimeError if a request fails or a batch does not get one prediction per record."""
    import httpx

    subject = "math"
    want = [
        None if p.get(subject) is None else p[subject]["predicted_growth"] for p in expected["predictions"]
    ]
    rows = mlflow_rows if server.kind == "mlflow" else records

    def ask(client: httpx.Client, chunk: list[dict]) -> list[float | None]:
        body = {"dataframe_records": chunk} if server.kind == "mlflow" else {"students": chunk}
        answer = client.post(server.predict_path, json=body)
        if answer.status_code != 200:
            raise RuntimeError(f"HTTP {answer.status_code} for {len(chunk)} record(s): {answer.text[:300]}")
        got = predicted_growth(server.kind, answer.json(), subject)
        if len(got) != len(chunk):
            raise RuntimeError(f"{len(got)} predictions for {len(chunk)} records")
        return got

    with httpx.Client(base_url=url, timeout=120) as client:
        pairs = list(zip(ask(client, rows[: len(want)]), want, strict=True))
        for i in range(5):  # single records too (the batching variant merges them)
            pairs.append((ask(client, rows[i : i + 1])[0], want[i]))
        ask(client, rows[:batch])
    lacking = sum(1 for got, wanted in pairs if (got is None) != (wanted is None))
    if lacking:
        return f"answers differ from in-process: {lacking} of {len(pairs)} lack a math prediction"
    worst = max((abs(g - w) for g, w in pairs if g is not None and w is not None), default=0.0)
    if worst > TOLERANCE:
        return f"math growth differs from in-process by up to {worst:.3g}"
    return ""


def single_ms(url: str, server: Server, body: bytes) -> float:
    """Latency of one single-record request on a new connection (so it may reach any worker); plain
    http.client, whose own cost is negligible (httpx.post builds an SSL context per call)."""
    from http.client import HTTPConnection
    from urllib.parse import urlsplit

    where = urlsplit(url)
    connection = HTTPConnection(where.hostname, where.port, timeout=120)
    try:
        started = time.perf_counter()
        connection.request("POST", server.predict_path, body, {"Content-Type": "application/json"})
        answer = connection.getresponse()
        answer.read()
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        connection.close()
    if answer.status != 200:
        raise RuntimeError(f"HTTP {answer.status} for a single record")
    return elapsed


def settle(url: str, server: Server, body: bytes, idle_ms: float) -> float:
    """Wait until the server has worked off what the last level left queued (a load generator stops
    with requests in flight that the server still answers): fresh single-record requests answer within
    3x the idle latency again. Seconds waited; at most SETTLE_S."""
    limit = max(3 * idle_ms, idle_ms + 10)
    started = time.monotonic()
    while time.monotonic() - started < SETTLE_S:
        if max(single_ms(url, server, body) for _ in range(2 * (os.cpu_count() or 1))) <= limit:
            break
        time.sleep(0.2)
    else:
        print(f"    server still slow {SETTLE_S} s after the level (limit {limit:.0f} ms)", flush=True)
    return time.monotonic() - started


# --------------------------------------------------------------------------- the run


def servers(args: argparse.Namespace, env: dict[str, str]) -> list[Server]:
    growth = [str(BIN / "growth")] if (BIN / "growth").exists() else [sys.executable, "-m", "pipelines.cli"]
    serve = [*growth, "serve", "--host", "127.0.0.1", "--port", "{port}"]
    c, b, bc = args.connections, args.batch, args.batch_connections
    single_levels = [("wrk", 1, 1), ("wrk", c, 1), ("wrk", bc, b)]
    if not args.skip_locust:
        single_levels += [("locust", 1, 1), ("locust", c, 1), ("locust", bc, b)]
    out = [Server("growth", "`growth serve`", serve, env, "/readyz", "/predict", "students", single_levels)]
    if not args.skip_workers:
        out.append(
            Server(
                "growth-1w",
                "`growth serve --workers 1`",
                [*serve, "--workers", "1"],
                env,
                "/readyz",
                "/predict",
                "students",
                [("wrk", c, 1)],
            )
        )
    if not args.skip_batching:
        command = [str(BIN / "bentoml"), "serve", "batched_service:BatchedGrowth", "--working-dir", str(HERE)]
        command += ["--host", "127.0.0.1", "--port", "{port}"]
        out.append(
            Server(
                "batched",
                "adaptive batching (bench/serving/batched_service.py)",
                command,
                env,
                "/readyz",
                "/predict",
                "students",
                [("wrk", 1, 1), ("wrk", c, 1)],
            )
        )
    if not args.skip_mlflow:
        command = [str(BIN / "mlflow"), "models", "serve", "-m", MLFLOW_MODEL, "--env-manager", "local"]
        command += ["-h", "127.0.0.1", "-p", "{port}", "-w", str(args.mlflow_workers)]
        label = f"`mlflow models serve` ({args.mlflow_workers} workers, math model only)"
        out.append(
            Server(
                "mlflow",
                label,
                command,
                env,
                "/ping",
                "/invocations",
                "mlflow",
                [("wrk", 1, 1), ("wrk", c, 1), ("wrk", bc, b)],
            )
        )
    return out


def level_key(server: Server, client: str, connections: int, batch: int, args: argparse.Namespace) -> str:
    if batch > 1:
        return f"{server.key}-{client}-batch"
    high = connections == args.connections and connections != 1
    return f"{server.key}-{client}-c{'N' if high else connections}"


def bench_server(
    server: Server,
    args: argparse.Namespace,
    wrk: str,
    bodies: dict[str, Path],
    data: dict[str, Any],
    work: Path,
    raw: Path,
) -> list[Result]:
    results: list[Result] = []
    kind = "mlflow" if server.kind == "mlflow" else "students"
    needle = '"predictions"' if server.kind == "mlflow" else '"student_id"'
    try:
        with running(server, work, args.start_timeout) as url:
            note = check_answers(
                url, server, data["records"], data["mlflow_records"], data["expected"], args.batch
            )
            print(f"    answers {'match in-process predictions' if not note else note}", flush=True)
            probe = bodies[f"{kind}-1"].read_text().splitlines()[0].encode()
            idle_ms = sorted(single_ms(url, server, probe) for _ in range(5))[2]
            print(f"    idle single-record latency {idle_ms:.1f} ms (new connection each)", flush=True)
            if args.warmup > 0:
                warm = wrk_level(
                    wrk,
                    url + server.predict_path,
                    bodies[f"{kind}-1"],
                    needle,
                    args.connections,
                    args.warmup,
                    raw / f"{server.key}-warmup.txt",
                )
                if warm["failures"]:
                    print(f"    warm-up: {warm['failures']} failed, e.g. {warm['first_failure']}", flush=True)
            for client, connections, batch in server.levels:
                waited = settle(url, server, probe, idle_ms)
                if waited > 1:
                    print(f"    waited {waited:.0f} s for the server to finish queued requests", flush=True)
                name = f"{server.key}-{client}-c{connections}-x{batch}"
                body_file = bodies[f"{kind}-{batch}"]
                if client == "wrk":
                    measured = wrk_level(
                        wrk,
                        url + server.predict_path,
                        body_file,
                        needle,
                        connections,
                        args.duration,
                        raw / f"{name}.txt",
                    )
                else:
                    measured = locust_level(
                        url,
                        server.predict_path,
                        body_file,
                        needle,
                        batch if kind == "students" else 0,
                        connections,
                        args.duration,
                        raw / f"{name}.txt",
                    )
                rate = measured["requests"] / measured["wall_s"] if measured["wall_s"] > 0 else float("nan")
                ok = measured["requests"] - measured["failures"]
                result = Result(
                    key=level_key(server, client, connections, batch, args),
                    path=server.label,
                    client=client,
                    connections=connections,
                    batch=batch,
                    requests=measured["requests"],
                    failures=measured["failures"],
                    requests_per_s=rate,
                    predictions_per_s=ok * batch / measured["wall_s"]
                    if measured["wall_s"] > 0
                    else float("nan"),
                    p50_ms=measured["p50_ms"],
                    p90_ms=measured["p90_ms"],
                    p99_ms=measured["p99_ms"],
                    note="; ".join(
                        n for n in (note, "" if measured["requests"] else "no request completed") if n
                    ),
                    first_failure=measured["first_failure"],
                )
                results.append(result)
                print(f"    {client} {connections} conn x{batch}: {summary_line(result)}", flush=True)
    except Exception as err:  # one server failing must not lose the others' rows
        message = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        print(f"    FAILED: {err}", flush=True)
        done = {(r.client, r.connections, r.batch) for r in results}
        for client, connections, batch in server.levels:
            if (client, connections, batch) not in done:
                results.append(
                    Result(
                        key=level_key(server, client, connections, batch, args),
                        path=server.label,
                        client=client,
                        connections=connections,
                        batch=batch,
                        failures=1,
                        note=f"not measured: {message}",
                        first_failure=message,
                    )
                )
    return results


def summary_line(r: Result) -> str:
    failed = f", {r.failures} FAILED ({r.first_failure[:120]})" if r.failures else ""
    return (
        f"{r.requests:,} requests, {r.requests_per_s:,.0f}/s, {r.predictions_per_s:,.0f} predictions/s, "
        f"p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms{failed}"
    )


def in_process(args: argparse.Namespace, work: Path, raw: Path) -> tuple[dict[str, Any], list[Result]]:
    """Run bench/serving/inprocess.py; its records, expected answers and timing rows."""
    command = [sys.executable, str(INPROCESS), "--config", str(args.config), "--work", str(work)]
    command += ["--records", str(args.records), "--batch", str(args.batch), "--duration", str(args.duration)]
    print(f"  $ {shlex.join(shown_command(command))}", flush=True)
    code, text = run_bounded(command, 600 + 6 * args.duration, log=raw / "inprocess.txt")
    report = work / "inprocess.json"
    if code != 0 or not report.exists():
        raise SystemExit(
            f"inprocess.py failed (exit {code}); output in {raw / 'inprocess.txt'}:\n{text[-2000:]}"
        )
    for line in text.splitlines():
        if line.startswith("  "):
            print(line, flush=True)
    measured = json.loads(report.read_text())
    shutil.copy(report, raw / "inprocess.json")
    keys = ["inproc-predict-1", "inproc-handler-1", "inproc-predict-batch", "inproc-frame-batch"]
    rows = [
        Result(
            key=key,
            path=row["path"],
            client=row["client"],
            connections=row["connections"],
            batch=row["batch"],
            requests=row["requests"],
            failures=row["failures"],
            requests_per_s=row["requests_per_s"],
            predictions_per_s=row["predictions_per_s"],
            p50_ms=row["p50_ms"],
            p90_ms=row["p90_ms"],
            p99_ms=row["p99_ms"],
            note=row["note"],
        )
        for key, row in zip(keys, measured["rows"], strict=True)
    ]
    data = {
        "meta": measured,
        "records": json.loads((work / "records.json").read_text()),
        "mlflow_records": json.loads((work / "mlflow_records.json").read_text()),
        "expected": json.loads((work / "expected.json").read_text()),
    }
    return data, rows


# --------------------------------------------------------------------------- report


def number(value: float, digits: int = 0) -> str:
    return "–" if value != value else f"{value:,.{digits}f}"


def table(results: list[Result]) -> str:
    lines = [
        "| path | client | connections | records / request | requests | failed | requests / s | "
        "predictions / s | p50 ms | p90 ms | p99 ms | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.path} | {r.client} | {r.connections} | {r.batch:,} | {r.requests:,} | {r.failures:,} | "
            f"{number(r.requests_per_s)} | {number(r.predictions_per_s)} | {number(r.p50_ms, 2)} | "
            f"{number(r.p90_ms, 2)} | {number(r.p99_ms, 2)} | {r.note} |"
        )
    return "\n".join(lines)


def goals(results: list[Result], args: argparse.Namespace) -> tuple[str, list[dict[str, Any]]]:
    """The issue's goals against the rows that measure them (a row that did not run: not measured)."""
    by_key = {r.key: r for r in results}
    rows, verdicts = ["| goal | target | measured | met |", "|---|---:|---:|---|"], []
    for key, what, attribute, op, threshold, unit in GOALS:
        label = what.format(N=args.connections, B=f"{args.batch:,}")
        row = by_key.get(key)
        value = float("nan") if row is None or row.requests == 0 else float(getattr(row, attribute))
        met = value == value and (value <= threshold if op == "<=" else value >= threshold)
        digits = 2 if unit == "ms" else 0
        shown = "not measured" if value != value else ("**no**" if not met else "yes")
        rows.append(
            f"| {label} | {op} {number(threshold, digits)} {unit} | "
            f"{number(value, digits)} {unit} | {shown} |"
        )
        verdicts.append({"goal": label, "target": f"{op} {threshold} {unit}", "measured": value, "met": met})
    return "\n".join(rows), verdicts


def comparison(results: list[Result], args: argparse.Namespace) -> list[str]:
    """Sentences computed from the rows: batching, workers, wrk vs locust, growth serve vs mlflow."""
    by = {r.key: r for r in results if r.requests > 0}
    out = []
    plain1, batch1 = by.get("growth-wrk-c1"), by.get("batched-wrk-c1")
    plainn, batchn = by.get("growth-wrk-cN"), by.get("batched-wrk-cN")
    if plain1 and batch1 and plainn and batchn:
        ratio = batchn.requests_per_s / plainn.requests_per_s
        tail = batchn.p99_ms / plainn.p99_ms
        added = batch1.p50_ms - plain1.p50_ms
        gains = ratio >= 1.1 or (tail <= 0.8 and ratio >= 0.95)
        verdict = "pays" if gains and added < 1.0 else "does not pay"
        out.append(
            f"Adaptive batching (bench/serving/batched_service.py: the same Predictor behind a BentoML "
            f"`batchable` API): at 1 connection p50 {batch1.p50_ms:.2f} vs {plain1.p50_ms:.2f} ms without "
            f"({added:+.2f} ms); at {args.connections} connections {batchn.requests_per_s:,.0f} vs "
            f"{plainn.requests_per_s:,.0f} requests/s ({ratio:.2f}x), p99 {batchn.p99_ms:.1f} vs "
            f"{plainn.p99_ms:.1f} ms ({tail:.2f}x). By this run's rule (pays if, at {args.connections} "
            "connections, requests/s rise 10% or p99 falls 20% without losing 5% of requests/s, while p50 at "
            f"1 connection grows by under 1 ms), batching **{verdict}** for single records."
        )
    one = by.get("growth-1w-wrk-cN")
    if one and plainn:
        out.append(
            f"`--workers 1` vs one worker per core ({os.cpu_count()}): {one.requests_per_s:,.0f} vs "
            f"{plainn.requests_per_s:,.0f} requests/s at {args.connections} connections, "
            f"p99 {one.p99_ms:.1f} vs "
            f"{plainn.p99_ms:.1f} ms."
        )
    levels = (("c1", "1 connection"), ("cN", f"{args.connections} connections"), ("batch", "batches"))
    for level, name in levels:
        w, lo = by.get(f"growth-wrk-{level}"), by.get(f"growth-locust-{level}")
        if w and lo:
            out.append(
                f"wrk vs locust on `growth serve`, {name}: {w.requests_per_s:,.0f} vs "
                f"{lo.requests_per_s:,.0f} "
                f"requests/s, p50 {w.p50_ms:.2f} vs {lo.p50_ms:.2f} ms."
            )
    for level, name in levels:
        g, m = by.get(f"growth-wrk-{level}"), by.get(f"mlflow-wrk-{level}")
        if g and m:
            out.append(
                f"`growth serve` vs `mlflow models serve`, {name}: {g.predictions_per_s:,.0f} vs "
                f"{m.predictions_per_s:,.0f} predictions/s, p50 {g.p50_ms:.2f} vs {m.p50_ms:.2f} ms."
            )
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = ""
    with suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 2**20:.0f} GiB RAM"
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory": memory,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def load_now() -> str:
    with suppress(OSError, subprocess.SubprocessError):
        text = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5, check=False).stdout
        if "load average" in text:
            return text.split("load average:", 1)[1].strip()
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def versions(wrk: str) -> str:
    parts = [f"Python {platform.python_version()}"]
    for package in PACKAGES:
        with suppress(PackageNotFoundError):
            parts.append(f"{package} {version(package)}")
    parts.append(wrk_version(wrk))
    return ", ".join(parts)


def exact_command() -> str:
    env = [
        f"{name}={os.environ[name]}" for name in ("BENTOML_HOME", "MLFLOW_TRACKING_URI") if name in os.environ
    ]
    argv = [shown_path(Path(sys.executable)), shown_path(Path(sys.argv[0]).resolve()), *sys.argv[1:]]
    return " ".join([*env, shlex.join(argv)])


def section(
    results: list[Result], args: argparse.Namespace, info: dict[str, Any], wrk: str, raw: Path
) -> str:
    meta = info["meta"]
    failed = sum(r.failures for r in results)
    goal_table, _ = goals(results, args)
    host = info["machine"]
    smoke = (
        f"**Smoke run ({args.duration:g} s per level, on a shared machine): these figures check the harness "
        "and say nothing about speed.**"
        if args.smoke
        else ""
    )
    models = "; ".join(
        f"{m['subject']} {m['kind']} `{m['version']}` (registry v{m['registry_version']}, {m['family']})"
        for m in meta["models"]
    )
    steps = ", ".join(f"{name} {ms:.2f}" for name, ms in meta["breakdown_ms"].items())
    lines = [
        MARK_START,
        "<!-- written by bench/serving/run.py; edit the script, not this section -->",
        *([smoke, ""] if smoke else []),
        f"Measured {info['started']:%Y-%m-%d %H:%M} UTC in {info['seconds']:.0f} s on {host['cores']} cores "
        f"({host['cpu']}), {host['memory']}, {host['system']}. `uptime` load average (1, 5, 15 min): "
        f"{info['load_before']} before the run, {info['load_after']} after.",
        "",
        f"Command: `{exact_command()}`",
        "",
        f"Versions: {versions(wrk)}.",
        "",
        f"Models served (BentoML store; `mlflow models serve` gets `{MLFLOW_MODEL}`): {models}. Requests: "
        f"{meta['records']:,} students of {meta['year']} from `{shown_path(Path(meta['config']))}` (growth "
        "pairs, validated by the service's own record model, empty fields left out), rotated among "
        f"{N_SINGLE_BODIES} single-record bodies and {N_BATCH_BODIES} bodies of {args.batch:,} records.",
        "",
        f"Load: loopback, {args.duration:g} s per level after a {args.warmup:g} s warm-up per server; every "
        "connection sends its next request as soon as the answer arrives (closed loop). wrk runs "
        f"min(connections, cores) threads with bench/serving/post.lua; locust runs one process "
        "(FastHttpUser, exact latencies from its request hook). A failure is any answer that is not HTTP 200 "
        "with the predictions in it, or a socket error or timeout. Load generator and server share the "
        f"cores. Predictions/s counts records answered (`growth serve` answers every served subject per "
        f"record; MLflow only math growth). In-process rows run in one process after `gc.freeze()`, as a "
        "`growth serve` worker does once its champions are loaded (serving/server_fixes.py). Failed "
        f"requests in total: **{failed}**.",
        "",
        table(results),
        "",
        "Goals of the issue, as measured in this run (`growth serve` rows measured with wrk):",
        "",
        goal_table,
        "",
        *[f"- {sentence}" for sentence in comparison(results, args)],
        f"- In-process, one record, median ms per step: {steps}.",
        "",
        f"Raw numbers: `{shown_path(raw)}/` (gitignored).",
        MARK_END,
    ]
    return "\n".join(lines)


def write_doc(path: Path, text: str) -> None:
    """Replace the section between the markers, keeping whatever else the file holds."""
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    if MARK_START in current and MARK_END in current:
        head, rest = current.split(MARK_START, 1)
        updated = head + text + rest.split(MARK_END, 1)[1]
    else:
        updated = current.rstrip() + "\n\n## Serving: HTTP load test (bench/serving)\n\n" + text + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(updated)


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through every `finally`, so servers are stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    load_before = load_now()
    wrk = ensure_wrk(not args.no_install)
    raw = args.results / f"{started_at:%Y%m%dT%H%M%SZ}{'-smoke' if args.smoke else ''}"
    raw.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    print(
        f"{'SMOKE RUN: ' if args.smoke else ''}{args.duration:g} s per level; load average {load_before}",
        flush=True,
    )
    print(f"raw output {shown_path(raw)}, scratch {work}", flush=True)
    print("in-process (bench/serving/inprocess.py)", flush=True)
    data, results = in_process(args, work, raw)
    bodies = write_bodies(data["records"], data["mlflow_records"], args.batch, work)
    env = tool_env()
    for server in servers(args, env):
        print(server.label, flush=True)
        results += bench_server(server, args, wrk, bodies, data, work, raw)
    info = {
        "meta": data["meta"],
        "started": started_at,
        "seconds": time.perf_counter() - started,
        "load_before": load_before,
        "load_after": load_now(),
        "machine": machine(),
    }
    text = section(results, args, info, wrk, raw)
    print("\n" + table(results) + "\n", flush=True)
    goal_table, verdicts = goals(results, args)
    print(goal_table + "\n", flush=True)
    for sentence in comparison(results, args):
        print(f"- {sentence}", flush=True)
    (raw / "section.md").write_text(text + "\n")
    (raw / "results.json").write_text(
        json.dumps(
            {
                "command": exact_command(),
                "args": {k: str(v) for k, v in vars(args).items()},
                "started": started_at.isoformat(),
                "seconds": info["seconds"],
                "load_before": load_before,
                "load_after": info["load_after"],
                "machine": info["machine"],
                "versions": versions(wrk),
                "models": data["meta"]["models"],
                "breakdown_ms": data["meta"]["breakdown_ms"],
                "results": [asdict(r) for r in results],
                "goals": verdicts,
            },
            indent=2,
        )
    )
    if args.out is not None:
        write_doc(args.out, text)
        print(f"\nwrote the section of {shown_path(args.out)}", flush=True)
    elapsed = time.perf_counter() - started
    print(f"load average {load_now()} after; raw numbers in {shown_path(raw)} ({elapsed:.0f} s)", flush=True)
    failed = sum(r.failures for r in results)
    if failed:
        print(f"{failed} request(s) failed or were not measured; server logs kept in {work}", file=sys.stderr)
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
