"""Benchmark: a state-sized long export loads, validates and produces the district report.

For each size (students per school year x ``--years`` school years x 2 subjects: the default 15,000,
100,000 and 1,000,000 students give about 150 thousand, 1 million and 10 million long rows) and file
format (CSV, Parquet), times the real commands in a fresh process each, as a user runs them:

    growth validate --config DIR/district.toml
    growth report   --config DIR/district.toml --no-growth --out OUT     (the district report)

and records wall time, CPU time (user + system of the process tree), peak memory (RSS summed over the
process tree, sampled every 0.1 s; the kernel's peak RSS of the largest process beside it) and the
machine load (``uptime``) before and after each run. The goal of the 10-million-row report is under
3 minutes and under 10 GiB.

Inputs are written by ``growth generate --students N --years Y --seed S [--file-format parquet]`` into
``--data`` (default /tmp/scale, never the repository) and reused when they exist, so the 10-million-row
district is generated once. ``--phases`` adds an in-process breakdown (load + validate, growth pairs,
school-year aggregates, data fingerprint, report) with the time and peak RSS after each step.

    .venv/bin/python bench/bench_scale.py [--students 15000 100000 1000000] [--years 5]
        [--formats csv parquet] [--commands validate report] [--data /tmp/scale] [--phases]
    .venv/bin/python bench/bench_scale.py --smoke      # 2,000 students x 3 years, about a minute

Bytecode: the subprocesses run with ``PYTHONPYCACHEPREFIX=DATA/pycache`` (and without
``PYTHONDONTWRITEBYTECODE``), warmed once before timing, so every run uses compiled modules as an
installed package does instead of compiling some 2,400 modules (several seconds) per process.
Prints a Markdown table; raw numbers go to bench/results/scale/ (not in git). Nothing is asserted:
the goal column only says whether the figure is within it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GOAL_SECONDS = 180.0
GOAL_GIB = 10.0
GOAL_ROWS = 9_000_000  # the goal is stated for the 10-million-row district
GIB = 1024**3


# ----------------------------------------------------------------------------------------------
# Measuring a command (shared with bench_batch.py)
# ----------------------------------------------------------------------------------------------


def uptime() -> str:
    """``uptime`` as printed (the load averages are the last three numbers)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def load1(text: str) -> float:
    """The 1-minute load average of an ``uptime`` line."""
    match = re.search(r"load averages?:\s*([\d.]+)", text)
    return float(match.group(1)) if match else float("nan")


def machine() -> dict[str, object]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(memory, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


@dataclass
class Run:
    """One measured command."""

    label: str
    command: list[str]
    wall_s: float
    cpu_s: float  # user + system of the process and its children
    peak_rss_gib: float  # RSS summed over the process tree, sampled
    max_rss_gib: float  # the kernel's peak RSS of the largest single process
    returncode: int
    uptime_before: str
    uptime_after: str
    stdout_tail: str = ""
    stderr_tail: str = ""
    stdout_head: str = ""
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def load(self) -> str:
        return f"{load1(self.uptime_before):.1f} → {load1(self.uptime_after):.1f}"


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone)."""
    import psutil

    try:
        parent = psutil.Process(pid)
        processes = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(label: str, command: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> Run:
    """Run ``command`` to the end, sampling the RSS of its process tree every 0.1 s."""
    before_text = uptime()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=cwd)
        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _tree_rss(process.pid))
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        returncode = process.wait()
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return Run(
        label=label,
        command=[str(c) for c in command],
        wall_s=round(wall, 2),
        cpu_s=round(cpu, 2),
        peak_rss_gib=round(peak / GIB, 3),
        max_rss_gib=round(after.ru_maxrss * 1024 / GIB, 3),  # Linux: kilobytes
        returncode=returncode,
        uptime_before=before_text,
        uptime_after=uptime(),
        stdout_tail=stdout[-4000:],
        stderr_tail=stderr[-4000:],
        stdout_head=stdout[:2000],
    )


def bench_env(data: Path, bytecode_cache: bool = True) -> dict[str, str]:
    """The subprocesses' environment: compiled modules cached under ``data`` (see the module docstring)."""
    env = dict(os.environ)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(data / "pycache")
    return env


def warm_up(env: dict[str, str], modules: str) -> None:
    """Import once (untimed), so the timed runs find compiled modules."""
    subprocess.run([sys.executable, "-c", f"import {modules}"], env=env, cwd=ROOT, check=True)


def short(command: list[str]) -> str:
    """A command as shown in the table: the program name and arguments, no interpreter path."""
    parts = [Path(command[0]).name, *command[1:]]
    if parts[0].startswith("python"):
        parts = parts[1:]
        parts[0] = str(Path(parts[0]).relative_to(ROOT)) if Path(parts[0]).is_absolute() else parts[0]
    return " ".join(parts)


def write_results(name: str, payload: dict[str, object], table: str, suffix: str = "") -> Path:
    """Raw numbers (JSON) and the printed table (Markdown) under bench/results/<name>/."""
    folder = ROOT / "bench" / "results" / name
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{stamp}{suffix}.json"
    path.write_text(json.dumps(payload, indent=2, default=str))
    path.with_suffix(".md").write_text(table + "\n")
    return path


def finish(
    name: str,
    lines: list[str],
    started: str,
    machine_info: dict[str, object],
    uptime_start: str,
    args: argparse.Namespace,
    **results: object,
) -> Path:
    """End a bench run: print the Markdown table (with the load at the end) and write it beside the
    raw numbers (the run's context plus ``results``) under bench/results/<name>/."""
    table = "\n".join([*lines, "", f"uptime at end: `{uptime()}`"])
    print(table)
    payload = {
        "date": started,
        "machine": machine_info,
        "uptime_start": uptime_start,
        "load1_start": load1(uptime_start),
        "args": {k: str(v) for k, v in vars(args).items()},
        **results,
    }
    path = write_results(name, payload, table, "-smoke" if args.smoke else "")
    print(f"\nraw numbers: {path.relative_to(ROOT)}", file=sys.stderr)
    return path


def header_lines(title: str, started: str, machine_info: dict[str, object], uptime_start: str) -> list[str]:
    return [
        f"### {title}",
        "",
        f"- date: {started}",
        f"- machine: {machine_info['cores']} cores, {machine_info['memory_gib']} GiB RAM, "
        f"{machine_info['cpu']}; Python {machine_info['python']}",
        f"- uptime at start: `{uptime_start}`",
        "",
    ]


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def district_dir(data: Path, students: int, years: int, seed: int, file_format: str) -> Path:
    return data / f"long-{students}x{years}-seed{seed}-{file_format}"


def ensure_district(
    data: Path, students: int, years: int, seed: int, file_format: str, env: dict[str, str]
) -> tuple[Path, Run | None]:
    """The generated district (config + files), generated now unless it exists."""
    folder = district_dir(data, students, years, seed, file_format)
    if (folder / "district.toml").exists():
        return folder, None
    command = [
        str(BIN / "growth"),
        "generate",
        "--students",
        str(students),
        "--years",
        str(years),
        "--seed",
        str(seed),
        "--file-format",
        file_format,
        "--out",
        str(folder),
    ]
    print(f"generating {folder} ...", file=sys.stderr, flush=True)
    run = measure(f"generate {students:,} x {years} {file_format}", command, env)
    if run.returncode != 0:
        raise SystemExit(f"growth generate failed:\n{run.stderr_tail}")
    return folder, run


def rows_read(stdout: str) -> int | None:
    """'read 9,833,478 rows from 5 file(s)' (the first line of `growth validate`)."""
    match = re.search(r"read ([\d,]+) rows from", stdout)
    return int(match.group(1).replace(",", "")) if match else None


# ----------------------------------------------------------------------------------------------
# In-process phases (child mode)
# ----------------------------------------------------------------------------------------------


def child_phases(config: Path, out: Path) -> None:
    """Run what `growth report --no-growth` runs, step by step, printing JSON timings (child process)."""
    import warnings

    import psutil

    started = time.perf_counter()
    process = psutil.Process()
    steps: list[dict[str, object]] = []

    def step(name: str, begin: float, cpu: float) -> None:
        steps.append(
            {
                "step": name,
                "wall_s": round(time.perf_counter() - begin, 2),
                "cpu_s": round(time.process_time() - cpu, 2),
                "rss_gib": round(process.memory_info().rss / GIB, 3),
                "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB, 3),
            }
        )

    begin, cpu = time.perf_counter(), time.process_time()
    from features.ingest import load_district
    from features.pairs import growth_pairs, status_counts
    from features.school_aggregates import school_year_table
    from reports.build import build_report

    step("imports", begin, cpu)
    begin, cpu = time.perf_counter(), time.process_time()
    district = load_district(config)
    step("load + validate (features.ingest)", begin, cpu)
    begin, cpu = time.perf_counter(), time.process_time()
    pairs = growth_pairs(district)
    district.summary.pair_reasons = status_counts(pairs, district.subject_names) if len(pairs) else None
    step("growth pairs + status counts", begin, cpu)
    begin, cpu = time.perf_counter(), time.process_time()
    school_year_table(district.students, district.schools, district.subject_names, pairs)
    step("school-year aggregates (model features)", begin, cpu)
    begin, cpu = time.perf_counter(), time.process_time()
    district.fingerprint()
    step("data fingerprint (sha256 of the files)", begin, cpu)
    begin, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_report(district, out)
    step("district report (build_report)", begin, cpu)
    memory = district.students.memory_usage(deep=True)
    print(
        json.dumps(
            {
                "steps": steps,
                "total_s": round(time.perf_counter() - started, 2),
                "student_years": len(district.students),
                "pairs": len(pairs),
                "rows_read": district.summary.rows_read,
                "students_table_mib": round(float(memory.sum()) / 1024**2, 1),
                "students_dtypes": {c: str(t) for c, t in district.students.dtypes.items()},
                "pairs_mib": round(float(pairs.memory_usage(deep=True).sum()) / 1024**2, 1),
            }
        )
    )


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def verdict(run: Run, rows: int | None) -> str:
    if rows is None or rows < GOAL_ROWS or run.returncode != 0:
        return "failed" if run.returncode != 0 else ""
    ok = run.wall_s < GOAL_SECONDS and run.peak_rss_gib < GOAL_GIB
    return "within" if ok else "**missed**"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--students",
        type=int,
        nargs="+",
        default=[15_000, 100_000, 1_000_000],
        help="Students per school year, one district per value (default: ~150k, ~1M and ~10M rows).",
    )
    parser.add_argument("--years", type=int, default=5, help="School years per district.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--formats", nargs="+", choices=["csv", "parquet"], default=["csv", "parquet"])
    parser.add_argument(
        "--commands", nargs="+", choices=["validate", "report"], default=["validate", "report"]
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="Folder of the generated districts (default /tmp/scale)."
    )
    parser.add_argument(
        "--phases", action="store_true", help="Also break each district down step by step (one more run)."
    )
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="Run with the caller's environment as is (PYTHONDONTWRITEBYTECODE makes every run compile).",
    )
    parser.add_argument("--smoke", action="store_true", help="2,000 students x 3 years, into a temp folder.")
    parser.add_argument("--child-phases", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child_phases is not None:
        child_phases(args.child_phases, args.child_out)
        return 0
    temporary = None
    if args.smoke:
        args.students, args.years = [2_000], 3
        if args.data is None:
            temporary = tempfile.TemporaryDirectory(prefix="bench-scale-")
            args.data = Path(temporary.name)
    data = (args.data or Path("/tmp/scale")).resolve()
    data.mkdir(parents=True, exist_ok=True)
    env = bench_env(data, not args.no_bytecode_cache)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine_info = machine()
    uptime_start = uptime()
    warm_up(env, "pipelines.cli, training.data, reports.build, features.ingest")

    runs: list[tuple[int, str, Run, int | None]] = []
    generated: list[Run] = []
    phases: list[dict[str, object]] = []
    try:
        for students in args.students:
            for file_format in args.formats:
                folder, gen = ensure_district(data, students, args.years, args.seed, file_format, env)
                if gen is not None:
                    generated.append(gen)
                config = folder / "district.toml"
                rows = None
                for command_name in args.commands:
                    command = [str(BIN / "growth"), command_name, "--config", str(config)]
                    if command_name == "report":
                        command += ["--no-growth", "--out", str(data / "out" / f"report-{folder.name}")]
                    label = f"{command_name} {students:,} x {args.years} {file_format}"
                    print(f"running {label} ...", file=sys.stderr, flush=True)
                    run = measure(label, command, env)
                    if command_name == "validate":
                        rows = rows_read(run.stdout_head) or rows
                    run.extra["rows"] = rows
                    runs.append((students, file_format, run, rows))
                    if run.returncode != 0:
                        print(run.stderr_tail, file=sys.stderr)
                if args.phases:
                    command = [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--child-phases",
                        str(config),
                        "--child-out",
                        str(data / "out" / f"phases-{folder.name}"),
                    ]
                    print(f"phases {folder.name} ...", file=sys.stderr, flush=True)
                    run = measure(f"phases {folder.name}", command, env)
                    detail = (
                        json.loads(run.stdout_tail.strip().splitlines()[-1]) if run.returncode == 0 else {}
                    )
                    phases.append(
                        {"district": folder.name, "format": file_format, "run": asdict(run), **detail}
                    )
    finally:
        if temporary is not None:
            shutil.rmtree(data / "out", ignore_errors=True)

    lines = header_lines(
        "District scale: `growth validate` and `growth report --no-growth`",
        started,
        machine_info,
        uptime_start,
    )
    lines += [
        "| long rows | students/year x years | format | command | wall s | CPU s | peak RSS GiB (tree) "
        "| load 1-min before → after | goal (10M rows: < 180 s, < 10 GiB) |",
        "|---:|---|---|---|---:|---:|---:|---|---|",
    ]
    for students, file_format, run, rows in runs:
        name = run.label.split()[0]
        shown = f"{rows:,}" if rows else "?"
        lines.append(
            f"| {shown} | {students:,} x {args.years} | {file_format} | `growth {name}` | {run.wall_s:.1f} "
            f"| {run.cpu_s:.1f} | {run.peak_rss_gib:.2f} | {run.load} | {verdict(run, rows)} |"
        )
    lines += [
        "",
        "Commands: `growth validate --config DIR/district.toml`; `growth report --config DIR/district.toml "
        "--no-growth --out OUT` (each in a fresh process, bytecode cached; see the script's docstring). "
        "CPU s = user + system time of the process tree: on a shared machine it varies less than wall time.",
    ]
    if generated:
        lines += ["", "Inputs generated in this run (`growth generate`, not part of the goal):", ""]
        lines += [
            f"- {g.label}: {g.wall_s:.0f} s, peak {g.peak_rss_gib:.2f} GiB, load {g.load}" for g in generated
        ]
    for item in phases:
        lines += [
            "",
            f"Step by step, in one process: {item['district']} ({item.get('rows_read', 0):,} rows, "
            f"{item.get('student_years', 0):,} student-years, student table "
            f"{item.get('students_table_mib', 0)} MiB, growth pairs {item.get('pairs_mib', 0)} MiB; load "
            f"{Run(**item['run']).load})",
            "",
            "| step | wall s | CPU s | RSS after GiB | peak RSS so far GiB |",
            "|---|---:|---:|---:|---:|",
        ]
        for s in item.get("steps", []):
            lines.append(
                f"| {s['step']} | {s['wall_s']:.1f} | {s['cpu_s']:.1f} | {s['rss_gib']:.2f} "
                f"| {s['peak_rss_gib']:.2f} |"
            )
    finish(
        "scale",
        lines,
        started,
        machine_info,
        uptime_start,
        args,
        runs=[asdict(run) for _, _, run, _ in runs],
        generated=[asdict(g) for g in generated],
        phases=phases,
    )
    if temporary is not None:
        temporary.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
