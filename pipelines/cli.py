"""The ``growth`` command: one entry point for every step of the project.

Each command is a thin shell over a pure module function; heavy imports happen inside the
command so ``growth --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer

from features.validation import ContractError

app = typer.Typer(
    help="student-growth: district reports and a served model of student growth.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


DATA = Path("data/district")
SCHOOLS_OPT = typer.Option(DATA / "schools.csv", "--schools", help="Schools table (CSV or Parquet).")
STUDENTS_OPT = typer.Option(DATA / "students.csv", "--students", help="Students table (CSV or Parquet).")
TARGETS_OPT = typer.Option(["math", "reading"], "--target", help="Growth target(s): math, reading.")
STORAGE_OPT = typer.Option(
    "sqlite:///optuna.db",
    "--storage",
    help="Optuna storage URL (SQLite file by default; e.g. postgresql://host/db).",
)
FAMILIES_OPT = typer.Option(
    ["hgb", "linear", "extratrees", "keras"], "--family", help="Model families: hgb linear extratrees keras."
)
SEED_OPT = typer.Option(42, "--seed", help="Split and sampler seed.")
HOLDOUT_OPT = typer.Option(
    False,
    "--holdout-schools/--no-holdout-schools",
    help="Validate and test on whole schools unseen in training.",
)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    """Configure logging once for every command."""
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("alembic", "urllib3", "matplotlib", "numexpr", "h5py", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Pipelines hold project classes and Keras, which skops cannot load: cloudpickle is deliberate.
    for chatty in ("mlflow.sklearn", "mlflow.utils.environment"):
        logging.getLogger(chatty).setLevel(logging.ERROR)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error for a person (no traceback) and return the exit to raise."""
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def load_or_exit(schools: Path, students: Path):
    """Validated district, or every contract problem on stderr and exit code 1."""
    from features.io import load_district

    try:
        return load_district(schools, students)
    except ContractError as err:
        raise fail(
            f"{len(err.problems)} problem(s) in the input data:\n"
            + "\n".join(f"  - {p}" for p in err.problems)
        ) from None


@app.command()
def validate(schools: Path = SCHOOLS_OPT, students: Path = STUDENTS_OPT) -> None:
    """Check a district's files against the data contract (docs/data.md)."""
    district = load_or_exit(schools, students)
    typer.echo(
        f"ok: {len(district.schools)} schools, {len(district.students):,} students"
        + (f", {len(district.warnings)} warning(s)" if district.warnings else "")
    )


@app.command()
def generate(
    students: int = typer.Option(150_000, help="Number of students."),
    seed: int = typer.Option(42, help="Random seed; the same seed gives the same district."),
    out: Path = typer.Option(
        Path("data/district"), help="Folder for schools.csv, students.csv, truth files."
    ),
) -> None:
    """Write a realistic synthetic district (schools, students and a truth file)."""
    from pipelines.synthetic import generate_district, write_district

    district = generate_district(n_students=students, seed=seed, progress=True)
    write_district(district, out)
    typer.echo(f"wrote {len(district.students):,} students in {len(district.schools)} schools to {out}/")


@app.command()
def tune(
    schools: Path = SCHOOLS_OPT,
    students: Path = STUDENTS_OPT,
    target: list[str] = TARGETS_OPT,
    family: list[str] = FAMILIES_OPT,
    trials: int = typer.Option(
        20, "--trials", help="Total finished trials per study (resumed studies count)."
    ),
    timeout: float = typer.Option(None, "--timeout", help="Seconds per study per worker (optional)."),
    workers: int = typer.Option(1, "--workers", help="Worker processes on each study."),
    storage: str = STORAGE_OPT,
    tune_rows: int = typer.Option(40_000, "--tune-rows", help="Training rows per trial (0 = all)."),
    seed: int = SEED_OPT,
    holdout_schools: bool = HOLDOUT_OPT,
) -> None:
    """Tune each family with Optuna; every trial is a nested MLflow run. Re-run to resume."""
    from training.data import DataConfig, prepare
    from training.tuning import TuneConfig
    from training.tuning import tune as run_tune

    for tgt in target:
        data = DataConfig(schools, students, tgt, seed, holdout_schools)
        if workers > 1:
            load_or_exit(schools, students)  # fail here, once, rather than in every worker
            prepared = None
        else:
            try:
                prepared = prepare(data)
            except ContractError as err:
                raise fail("\n".join(str(p) for p in err.problems)) from None
            except ValueError as err:  # e.g. prior-year scores missing for the growth target
                raise fail(str(err)) from None
        for fam in family:
            config = TuneConfig(
                data=data,
                family=fam,
                trials=trials,
                timeout=timeout,
                workers=workers,
                storage=storage,
                tune_rows=tune_rows or None,
            )
            study = run_tune(config, prepared)
            typer.echo(
                f"{config.study_name}: best val RMSE {study.best_value:.4f} "
                f"after {len(study.trials)} trial(s)"
            )


@app.command()
def train(
    schools: Path = SCHOOLS_OPT,
    students: Path = STUDENTS_OPT,
    target: list[str] = TARGETS_OPT,
    family: list[str] = FAMILIES_OPT,
    storage: str = STORAGE_OPT,
    margin: float = typer.Option(
        8.0, "--margin", help="Required test-RMSE reduction vs the linear baseline, %."
    ),
    out: Path = typer.Option(Path("out/evaluation"), "--out", help="Folder for the evaluation reports."),
    seed: int = SEED_OPT,
    holdout_schools: bool = HOLDOUT_OPT,
    bento: bool = typer.Option(True, "--bento/--no-bento", help="Export the champion to the BentoML store."),
) -> None:
    """Refit the tuned families, compare with the baselines, register the best; gate the champion alias."""
    from training.data import DataConfig
    from training.train import GateFailed, TrainConfig
    from training.train import train as run_train

    failed = []
    for tgt in target:
        config = TrainConfig(
            data=DataConfig(schools, students, tgt, seed, holdout_schools),
            storage=storage,
            families=tuple(family),
            margin_pct=margin,
            out_dir=out,
            export_bento=bento,
        )
        try:
            summary = run_train(config)
        except GateFailed as err:
            failed.append(str(err))
            typer.secho(str(err), fg=typer.colors.YELLOW, err=True)
            continue
        except ContractError as err:
            raise fail("\n".join(str(p) for p in err.problems)) from None
        except (RuntimeError, ValueError) as err:  # nothing tuned yet, or data unfit for the target
            raise fail(str(err)) from None
        typer.echo(summary["families"].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        typer.echo(
            f"champion for {tgt}: {summary['champion_family']} -> {summary['registered_model']} "
            f"v{summary['version']} (@champion), test RMSE {summary['test_rmse']:.4f}, "
            f"{summary['rmse_reduction_vs_baseline_pct']:.1f}% below the linear baseline; "
            f"report in {summary['report_dir']}/"
        )
    if failed:
        raise fail(f"{len(failed)} target(s) did not pass the champion gate", code=2)


@app.command()
def report(
    schools: Path = SCHOOLS_OPT,
    students: Path = STUDENTS_OPT,
    out: Path = typer.Option(
        Path("out/report"), "--out", help="Folder for the CSV tables, charts and report.html."
    ),
    pass_mark: float = typer.Option(70.0, "--pass-mark", help="Lowest passing score (inclusive)."),
    log_mlflow: bool = typer.Option(
        False,
        "--mlflow/--no-mlflow",
        help="Log the report folder to MLflow (MLFLOW_TRACKING_URI, default "
        "sqlite:///mlflow.db) as a district-report run.",
    ),
) -> None:
    """Write the district report: nine tables as CSV, charts, a narrative and a self-contained report.html."""
    import warnings

    from features.school_aggregates import AggregateConfig
    from reports.build import OutsideBinsWarning, build_report, log_to_mlflow, mlflow_metrics

    district = load_or_exit(schools, students)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", OutsideBinsWarning)
        tables = build_report(
            district.students, district.schools, out, AggregateConfig(pass_mark=pass_mark), progress=True
        )
    for warning in caught:
        typer.secho(f"warning: {warning.message}", fg=typer.colors.YELLOW, err=True)
    if log_mlflow:
        run_id = log_to_mlflow(
            out,
            params={"pass_mark": pass_mark, "schools": str(schools), "students": str(students)},
            metrics=mlflow_metrics(tables),
        )
        typer.echo(f"logged {out}/ to MLflow run {run_id} (experiment student-growth-reports)")
    typer.echo(f"report: {out / 'report.html'}")


@app.command()
def serve(
    port: int = typer.Option(3000, "--port", help="HTTP port."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: all interfaces)."),
    max_records: int = typer.Option(10_000, "--max-records", help="Largest accepted request, in records."),
    target: list[str] = typer.Option(
        [], "--target", help="Serve only these targets (default: every target with a champion)."
    ),
) -> None:
    """Serve the champion model(s) over HTTP: POST /predict, /docs, /healthz, /readyz, /metrics."""
    import os

    from features.contract import TARGETS
    from serving.predictor import champion_entry

    unknown = [t for t in target if t not in TARGETS]
    if unknown:
        raise fail(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    found = {t: champion_entry(t) for t in (target or TARGETS)}
    if not any(found.values()):
        raise fail(
            "no champion model in the BentoML model store "
            f"({os.environ.get('BENTOML_HOME', '~/bentoml')}); run `make run` or `growth train` first"
        )
    for name, entry in found.items():
        typer.echo(f"{name}: {entry.tag if entry else 'no champion; not served'}")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "GROWTH_MAX_RECORDS": str(max_records), "GROWTH_TARGETS": ",".join(found)}
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "serve",
        "serving.service:StudentGrowth",
        "--host",
        host,
        "--port",
        str(port),
    ]
    typer.echo(f"serving on http://{host}:{port} (OpenAPI page at /); Ctrl+C stops")
    sys.stdout.flush()
    os.chdir(root)
    # Replace this process so Ctrl+C and SIGTERM reach the server directly (a child would be orphaned).
    os.execve(sys.executable, command, env)


if __name__ == "__main__":
    app()
