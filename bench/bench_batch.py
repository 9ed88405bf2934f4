"""Benchmark: `growth predict` scores a million students with every champion.

Scores every student of a generated long district (default 1,000,000 students a year x 5 years, about
10 million long rows: the input of bench_scale.py's largest case, reused from ``--data``) with every
champion in the BentoML store (``--bentoml-home``, default /tmp/e2e/bentoml), for

* the forecast (the default of ``growth predict``: next year, from the latest year's records), and
* a historical year (``--year``: that year's growth pairs, plus actual growth and SGPs),

timing each phase of ``serving.batch.score_year`` (load + validate, loading the models, building the
model-input frame, scoring, actual growth and SGP for a historical year, writing Parquet atomically)
and the whole run, with peak memory (RSS of the process tree) and the machine load before and after.

Each case runs in a fresh process:

* ``cli``: the real command, ``growth predict --config DIR/district.toml [--year Y] --out X.parquet``;
  its phases are read from the lines score_year logs (``load and validate (12.34 s)``);
* ``needed-years``: the forecast through ``score_year(..., needed_years_only=True)`` in a fresh Python
  process, which reads only the two school years a forecast uses instead of the whole history (same
  predictions; earlier years are not validated). ``growth predict`` does the same for a forecast, so
  this case isolates the scoring function from the command's start-up.

The champions were trained on another synthetic district: every school of a generated district is a
school they never saw (the ``school_unseen`` share is reported); the predictor then uses district-level
school aggregates. That changes no timing.

    BENTOML_HOME is set from --bentoml-home for the runs.
    .venv/bin/python bench/bench_batch.py [--students 1000000] [--years 5] [--file-format csv]
        [--data /tmp/scale] [--cases cli-forecast cli-historical needed-years] [--year Y]
    .venv/bin/python bench/bench_batch.py --smoke    # 2,000 students x 3 years, a few minutes

Prints a Markdown table; raw numbers go to bench/results/batch/ (not in git). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import (  # noqa: E402
    BIN,
    Run,
    bench_env,
    ensure_district,
    finish,
    header_lines,
    machine,
    measure,
    uptime,
    warm_up,
)

GOAL_SECONDS = 60.0
GOAL_STUDENTS = 900_000
PHASES = (
    "load and validate",
    "start SGP fits",
    "load models",
    "build frame",
    "score",
    "actual growth and SGP",
    "write",
)
PHASE_LINE = re.compile(r"(" + "|".join(re.escape(p) for p in PHASES) + r") \((\d+(?:\.\d+)?) s\)")
CASES = ("cli-forecast", "cli-historical", "needed-years")


def cli_phases(output: str) -> dict[str, float]:
    """The phase lines score_year logs with --progress (the last value of each phase wins)."""
    return {name: float(seconds) for name, seconds in PHASE_LINE.findall(output)}


def output_summary(path: Path) -> dict[str, object]:
    """Rows, columns, size and the share of rows whose school the models never saw (read after timing)."""
    import pandas as pd

    if not path.exists():
        return {}
    frame = pd.read_parquet(path)
    unseen = [c for c in frame.columns if c.endswith("_school_unseen")]
    return {
        "rows": len(frame),
        "columns": len(frame.columns),
        "mib": round(path.stat().st_size / 1024**2, 1),
        "school_unseen_share": round(float(frame[unseen].any(axis=1).mean()), 4) if unseen else None,
    }


def child(config: Path, out: Path, year: int | None, needed_years_only: bool) -> None:
    """Fresh-process run of serving.batch.score_year (``needed-years`` case); prints JSON."""
    started = time.perf_counter()
    from serving.batch import score_year
    from training.data import Source

    imported = time.perf_counter() - started
    result = score_year(Source(config=config), year, out, needed_years_only=needed_years_only)
    total = time.perf_counter() - started
    print(
        json.dumps(
            {
                "year": result.year,
                "scored": result.scored,
                "unscorable": result.unscorable,
                "phases": {
                    "imports": round(imported, 2),
                    **{k: round(v, 2) for k, v in result.seconds.items()},
                },
                "in_process_total_s": round(total, 2),
            }
        )
    )


def data_years(config: Path) -> list[int]:
    """The school years in a generated district (its file names carry them), without loading it."""
    years = sorted(
        {int(y) for p in config.parent.glob("assessments_*") for y in re.findall(r"\d{4}", p.stem)}
    )
    return years


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=1_000_000, help="Students per school year.")
    parser.add_argument("--years", type=int, default=5, help="School years of the district.")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--file-format", choices=["csv", "parquet"], default="csv")
    parser.add_argument(
        "--data", type=Path, default=None, help="Folder of the generated districts (default /tmp/scale)."
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="Score this district config instead of a generated one."
    )
    parser.add_argument("--bentoml-home", type=Path, default=Path("/tmp/e2e/bentoml"))
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument(
        "--year", type=int, default=None, help="Historical year (default: the latest year of the data)."
    )
    parser.add_argument(
        "--no-bytecode-cache", action="store_true", help="Run with the caller's environment as is."
    )
    parser.add_argument("--smoke", action="store_true", help="2,000 students x 3 years, into a temp folder.")
    parser.add_argument("--child-config", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-year", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-needed-years", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child_config is not None:
        child(args.child_config, args.child_out, args.child_year, args.child_needed_years)
        return 0
    temporary = None
    if args.smoke:
        args.students, args.years = 2_000, 3
        if args.data is None:
            temporary = tempfile.TemporaryDirectory(prefix="bench-batch-")
            args.data = Path(temporary.name)
    data = (args.data or Path("/tmp/scale")).resolve()
    data.mkdir(parents=True, exist_ok=True)
    env = bench_env(data, not args.no_bytecode_cache)
    env["BENTOML_HOME"] = str(args.bentoml_home)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine_info = machine()
    uptime_start = uptime()
    generated = None
    if args.config is not None:
        config = args.config.resolve()
    else:
        folder, generated = ensure_district(data, args.students, args.years, args.seed, args.file_format, env)
        config = folder / "district.toml"
    years = data_years(config)
    year = args.year or (years[-1] if years else None)
    warm_up(env, "pipelines.cli, serving.batch, serving.predictor, training.data, bentoml")
    out_dir = data / "out" / f"predict-{config.parent.name}"
    out_dir.mkdir(parents=True, exist_ok=True)

    results: list[dict[str, object]] = []
    for case in args.cases:
        forecast = case != "cli-historical"
        out = out_dir / f"{case}.parquet"
        if case.startswith("cli"):
            command = [str(BIN / "growth"), "predict", "--config", str(config), "--out", str(out)]
            if not forecast:
                command[4:4] = ["--year", str(year)]
        else:
            command = [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child-config",
                str(config),
                "--child-out",
                str(out),
                "--child-needed-years",
            ]
        print(f"running {case} ...", file=sys.stderr, flush=True)
        run = measure(case, command, env)
        if run.returncode != 0:
            print(run.stderr_tail, file=sys.stderr)
        detail: dict[str, object] = {}
        if case.startswith("cli"):
            detail["phases"] = cli_phases(run.stdout_tail + run.stderr_tail)
            match = re.search(r"scored ([\d,]+) students of (\d{4})", run.stdout_tail + run.stderr_tail)
            if match:
                detail["scored"], detail["year"] = int(match.group(1).replace(",", "")), int(match.group(2))
            match = re.search(r"([\d,]+) students could not be scored", run.stdout_tail + run.stderr_tail)
            detail["unscorable"] = int(match.group(1).replace(",", "")) if match else 0
        elif run.returncode == 0:
            detail = json.loads(run.stdout_tail.strip().splitlines()[-1])
        detail["output"] = output_summary(out) if run.returncode == 0 else {}
        results.append({"case": case, "run": asdict(run), **detail})

    lines = header_lines("Batch scoring: `growth predict`", started, machine_info, uptime_start)
    lines += [
        f"- district: `{config}` (school years {', '.join(map(str, years))}); models: "
        f"`BENTOML_HOME={args.bentoml_home}`",
        "",
        "| case | command | students scored (+ unscorable) | "
        + " | ".join(f"{p} s" for p in PHASES)
        + " | whole run wall s | CPU s | peak RSS GiB (tree) | load 1-min before → after | goal (< 60 s) |",
        "|---|---|---:|" + "---:|" * len(PHASES) + "---:|---:|---:|---|---|",
    ]
    for item in results:
        run = Run(**item["run"])
        phases = item.get("phases", {})
        scored = item.get("scored")
        total = (scored or 0) + int(item.get("unscorable") or 0)
        within = ""
        if total >= GOAL_STUDENTS and run.returncode == 0:
            within = "within" if run.wall_s < GOAL_SECONDS else "**missed**"
        command = " ".join(Path(run.command[0]).name if i == 0 else c for i, c in enumerate(run.command))
        if item["case"] == "needed-years":
            command = "score_year(..., needed_years_only=True) (forecast, fresh process)"
        else:
            command = f"`{command.replace(str(data), '$DATA')}`"
        lines.append(
            f"| {item['case']} ({item.get('year', '?')}) | {command} | "
            f"{scored if scored is None else f'{scored:,}'} (+{int(item.get('unscorable') or 0):,}) | "
            + " | ".join(f"{phases[p]:.1f}" if p in phases else "–" for p in PHASES)
            + f" | {run.wall_s:.1f} | {run.cpu_s:.1f} | {run.peak_rss_gib:.2f} | {run.load} | {within} |"
        )
    lines += [
        "",
        "Phases are wall seconds inside the process; the whole run adds interpreter start-up and imports "
        "(several seconds: TensorFlow, scikit-learn, MLflow). Load: `uptime` 1-minute average just before "
        "and after the run, on this shared machine.",
    ]
    for item in results:
        output = item.get("output") or {}
        if output:
            lines.append(
                f"- {item['case']}: {output['rows']:,} rows x {output['columns']} columns, "
                f"{output['mib']} MiB Parquet; rows whose school the models never saw: "
                f"{output['school_unseen_share']:.0%}"
            )
    if generated is not None:
        lines.append(f"- input generated in this run: {generated.label}, {generated.wall_s:.0f} s")
    finish(
        "batch",
        lines,
        started,
        machine_info,
        uptime_start,
        args,
        config=str(config),
        results=results,
        generated=asdict(generated) if generated else None,
    )
    if temporary is not None:
        shutil.rmtree(data / "out", ignore_errors=True)
        temporary.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
