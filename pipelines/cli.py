"""The ``growth`` command: one entry point for every step of the project.

Each command is a thin shell over module functions; heavy imports happen inside the command so
``growth --help`` stays fast. Every data command takes ``--config FILE`` (a district config) or the
classic ``--schools/--students`` tables. A user mistake ends in a message and exit code 1, never a
traceback; a champion that fails its gate ends in exit code 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from features.contract import CLASSIC_PASS_MARK
from features.settings import get_settings

app = typer.Typer(
    help="student-growth: district reports, growth measures and served models of student growth.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
S = get_settings()

CONFIG_OPT = typer.Option(
    None, "--config", "-c", help="District config file (TOML/YAML); see docs/architecture.md."
)
SCHOOLS_OPT = typer.Option(None, "--schools", help="Classic format: the schools table (CSV or Parquet).")
STUDENTS_OPT = typer.Option(None, "--students", help="Classic format: the students table (CSV or Parquet).")
SUBJECTS_OPT = typer.Option(
    [], "--subject", "-s", help="Subject(s) to model (default: every subject of the data)."
)
STORAGE_OPT = typer.Option("", "--storage", help=f"Optuna storage URL (default {S.optuna_storage}).")
SEED_OPT = typer.Option(S.seed, "--seed", help="Split and sampler seed.")
SPLIT_OPT = typer.Option(
    "future",
    "--split",
    help="future: test on the latest year pair (leave-future-out); random: shuffle all pairs.",
)
HOLDOUT_OPT = typer.Option(
    False,
    "--holdout-schools/--no-holdout-schools",
    help="Validate and test on whole schools unseen in training.",
)
PROTECTED_OPT = typer.Option(
    True,
    "--protected-inputs/--no-protected-inputs",
    help="Use gender, disadvantaged, English learner and special education as model inputs.",
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
    for noisy in ("alembic", "urllib3", "matplotlib", "numexpr", "h5py", "absl", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Models hold project classes and Keras, which skops cannot load: cloudpickle is deliberate.
    for chatty in ("mlflow.sklearn", "mlflow.utils.environment", "mlflow.models.model"):
        logging.getLogger(chatty).setLevel(logging.ERROR)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error for a person (no traceback) and return the exit to raise."""
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


ROW_NOTE = "\n(rows are counted from the first data row: row N is line N + 1 of a CSV file, below its header)"


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the project's user-facing errors into a message and exit code 1."""
    from features.district_config import ConfigError
    from features.validation import ContractError
    from training.data import GrowthDataError
    from training.support import NoCutScores
    from training.tuning import StudyError

    try:
        yield
    except ContractError as err:
        raise fail(
            f"{len(err.problems)} problem(s) in the input data:\n"
            + "\n".join(f"  - {p}" for p in err.problems)
            + (ROW_NOTE if any(p.rows for p in err.problems) else "")
        ) from None
    except ConfigError as err:
        raise fail(
            "the district config cannot be used:\n"
            + "\n".join(f"  - {err.file}, key '{k}': {m}" for k, m in err.problems)
        ) from None
    except (GrowthDataError, StudyError, NoCutScores) as err:
        raise fail(str(err)) from None


def source_of(config: Path | None, schools: Path | None, students: Path | None):
    """The district named on the command line, or the default synthetic district's config."""
    from training.data import Source

    if (schools is None) != (students is None):
        raise fail("the classic format needs both --schools and --students")
    if config is not None and schools is not None:
        raise fail("give either --config or --schools/--students, not both")
    if schools is not None:
        return Source(schools=schools, students=students)
    config = config or get_settings().default_config
    if not config.exists():
        raise fail(
            f"no district config at {config}: pass --config FILE (or --schools/--students), or run "
            "`growth generate` to write the default synthetic district"
        )
    return Source(config=config)


def subjects_of(data, wanted: list[str]) -> list[str]:
    unknown = [s for s in wanted if s not in data.subjects]
    if unknown:
        raise fail(f"unknown subject(s) {', '.join(unknown)}; this district has {', '.join(data.subjects)}")
    return wanted or data.subjects


# ---------------------------------------------------------------------------------------------- commands
@app.command()
def settings(key: str = typer.Option(None, "--get", help="Print one setting's value (for scripts).")) -> None:
    """Show the defaults every command uses (override with GROWTH_<NAME> environment variables)."""
    values = get_settings().model_dump()
    if key:
        if key not in values:
            raise fail(f"unknown setting {key!r}; settings are {', '.join(values)}")
        typer.echo(values[key])
        return
    for name, value in values.items():
        typer.echo(f"{name} = {value}")


@app.command()
def validate(config: Path = CONFIG_OPT, schools: Path = SCHOOLS_OPT, students: Path = STUDENTS_OPT) -> None:
    """Check a district's config and files against the data contract; print what was read and resolved."""
    from training.data import load_data

    source = source_of(config, schools, students)
    with user_errors():
        data = load_data(source, progress=True)
    for line in data.district.summary.lines():
        typer.echo(line)
    for warning in data.district.warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    reasons = data.district.summary.pair_reasons
    if reasons is not None:
        typer.echo("\ngrowth pairs by target year, subject and status:")
        typer.echo(reasons.to_string(index=False))
    typer.echo(f"ok: {source.describe()}")


@app.command()
def generate(
    students: int = typer.Option(S.students, help="Students enrolled in each year."),
    years: int = typer.Option(S.years, help="School years (multi-year format)."),
    seed: int = typer.Option(S.seed, help="Random seed; the same seed gives the same district."),
    out: Path = typer.Option(S.data_dir, help="Output folder."),
    format: str = typer.Option(
        "long",
        "--format",
        help="long: multi-year export + district.toml; classic: the two-table single-year format.",
    ),
    grades: str = typer.Option("3-10", help="Grade range of the multi-year district, e.g. 3-8."),
    scale: str = typer.Option("150-950", help="Lowest-highest scale score of the multi-year district."),
    file_format: str = typer.Option("csv", "--file-format", help="csv or parquet (multi-year)."),
    layout: str = typer.Option("long", "--layout", help="long (a row per subject) or wide (multi-year)."),
) -> None:
    """Write a realistic synthetic district with its truth files (for development and benchmarks)."""
    if format == "classic":
        from pipelines.synthetic import generate_district, write_district

        district = generate_district(n_students=students, seed=seed, progress=True)
        write_district(district, out)
        typer.echo(f"wrote {len(district.students):,} students in {len(district.schools)} schools to {out}/")
        return
    if format != "long":
        raise fail(f"--format must be long or classic; found {format!r}")
    from pipelines.synthetic_long import generate_long_district, write_long_district

    try:
        low, high = (int(g) for g in grades.split("-"))
        lo_scale, hi_scale = (float(v) for v in scale.split("-"))
    except ValueError:
        raise fail("--grades takes a range like 3-10 and --scale one like 150-950") from None
    district = generate_long_district(
        n_students=students,
        years=years,
        seed=seed,
        grades=tuple(f"{g:02d}" for g in range(low, high + 1)),
        scale=(lo_scale, hi_scale),
        file_format=file_format,
        layout=layout,
        progress=True,
    )
    write_long_district(district, out)
    typer.echo(
        f"wrote a {years}-year district of {students:,} students a year to {out}/ "
        f"(config: {out / get_settings().config_name})"
    )


@app.command()
def report(
    config: Path = CONFIG_OPT,
    schools: Path = SCHOOLS_OPT,
    students: Path = STUDENTS_OPT,
    year: int = typer.Option(
        None, "--year", help="School year of the district report (default: the latest)."
    ),
    out: Path = typer.Option(
        S.out_dir / "report", "--out", help="Folder for the tables, charts and HTML pages."
    ),
    pass_mark: float = typer.Option(
        CLASSIC_PASS_MARK, "--pass-mark", help="Classic format: lowest passing score (inclusive)."
    ),
    growth: bool = typer.Option(
        True,
        "--growth/--no-growth",
        help="Also write growth.html (SGPs, value-added, model card) when growth pairs exist.",
    ),
    log_mlflow: bool = typer.Option(False, "--mlflow/--no-mlflow", help="Log the report folder to MLflow."),
) -> None:
    """Write the district report (report.html + CSV tables) and, with growth pairs, the growth report."""
    import warnings

    from features.settings import REPORTS_EXPERIMENT
    from reports.build import OutsideBinsWarning, build_report, log_to_mlflow, mlflow_metrics
    from training.data import Source, load_data

    source = source_of(config, schools, students)
    if source.schools is not None:
        source = Source(schools=source.schools, students=source.students, pass_mark=pass_mark)
    with user_errors():
        data = load_data(source, progress=True)
        if year is not None and year not in data.district.years:
            raise fail(f"--year {year} is not in the data; it has {', '.join(map(str, data.district.years))}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", OutsideBinsWarning)
            result = build_report(data.district, out, year=year, progress=True)
    for warning in caught:
        typer.secho(f"warning: {warning.message}", fg=typer.colors.YELLOW, err=True)
    for line in result.omitted_lines():
        typer.echo(line)
    growth_path = None
    if growth and len(data.pairs) and result.year in set(data.pairs["school_year"].astype(int)):
        from reports.growth_report import build_growth_report

        with user_errors():
            growth_path = build_growth_report(data, out, year=result.year, progress=True)
    if log_mlflow:
        from reports.growth_report import growth_mlflow_metrics

        metrics = {**mlflow_metrics(result.tables), **(growth_mlflow_metrics(out) if growth_path else {})}
        run_id = log_to_mlflow(
            out, params={"source": source.describe(), "year": result.year}, metrics=metrics
        )
        typer.echo(f"logged {out}/ to MLflow run {run_id} (experiment {REPORTS_EXPERIMENT})")
    typer.echo(f"report ({result.year_label}): {result.html_path}")
    if growth_path:
        typer.echo(f"growth report: {growth_path}")


TASKS = ("growth", "support")


def families_for(task: str, wanted: list[str]) -> list[str]:
    """The task's families among those asked for (all defaults when none were asked for)."""
    from training.families import DEFAULT_FAMILIES, FAMILIES
    from training.support import DEFAULT_SUPPORT_FAMILIES, SUPPORT_FAMILIES

    known, default = (
        (FAMILIES, DEFAULT_FAMILIES) if task == "growth" else (SUPPORT_FAMILIES, DEFAULT_SUPPORT_FAMILIES)
    )
    return [f for f in wanted if f in known] if wanted else list(default)


@app.command()
def tune(
    config: Path = CONFIG_OPT,
    schools: Path = SCHOOLS_OPT,
    students: Path = STUDENTS_OPT,
    subject: list[str] = SUBJECTS_OPT,
    family: list[str] = typer.Option(
        [], "--family", help="Families (default: lgbm linear keras for growth, lgbm logistic for support)."
    ),
    task: list[str] = typer.Option(
        [],
        "--task",
        help="growth and/or support (default: both; support only for subjects with proficiency levels).",
    ),
    trials: int = typer.Option(
        S.trials, "--trials", help="Finished trials per study (resumed studies count)."
    ),
    timeout: float = typer.Option(
        S.timeout,
        "--timeout",
        help="Seconds per study per worker; no trial starts after it, one in progress finishes.",
    ),
    workers: int = typer.Option(1, "--workers", help="Worker processes on each study."),
    storage: str = STORAGE_OPT,
    tune_rows: int = typer.Option(S.tune_rows, "--tune-rows", help="Training rows per trial (0 = all)."),
    seed: int = SEED_OPT,
    split: str = SPLIT_OPT,
    holdout_schools: bool = HOLDOUT_OPT,
    protected_inputs: bool = PROTECTED_OPT,
    study: str = typer.Option(None, "--study", help="Resume this study by name even if tuned on other data."),
) -> None:
    """Tune each family with Optuna (one study per subject, task, family and data); re-run to resume."""
    from training.data import DataConfig, load_data, prepare
    from training.support import why_no_support
    from training.tuning import TuneConfig
    from training.tuning import tune as run_tune

    bad = [t for t in task if t not in TASKS]
    if bad:
        raise fail(f"--task takes growth or support; found {', '.join(bad)}")
    unknown = [f for f in family if not any(f in families_for(t, [f]) for t in TASKS)]
    if unknown:
        raise fail(
            f"unknown family {', '.join(unknown)}; growth: lgbm hgb linear extratrees keras; "
            "support: lgbm logistic"
        )
    source = source_of(config, schools, students)
    with user_errors():
        data = load_data(source, progress=True)
        for subj in subjects_of(data, subject):
            data_config = DataConfig(subj, seed, split, holdout_schools, protected_inputs)
            prepared = prepare(data, data_config) if workers == 1 else None
            for tsk in task or TASKS:
                message = why_no_support(data.district, subj) if tsk == "support" else None
                if message:
                    if task:  # asked for explicitly
                        raise fail(message)
                    typer.secho(f"warning: {message}; tuning growth only", fg=typer.colors.YELLOW, err=True)
                    continue
                names = families_for(tsk, family)
                for fam in names:
                    tune_config = TuneConfig(
                        source=source,
                        data=data_config,
                        family=fam,
                        task=tsk,
                        trials=trials,
                        timeout=timeout,
                        workers=workers,
                        storage=storage,
                        tune_rows=tune_rows or None,
                        study=study,
                    )
                    try:
                        result = run_tune(tune_config, prepared)
                    except ValueError as err:
                        raise fail(str(err)) from None
                    typer.echo(
                        f"{result.study_name}: best {result.best_value:.4f} "
                        f"after {len(result.trials)} trial(s)"
                    )


@app.command()
def train(
    config: Path = CONFIG_OPT,
    schools: Path = SCHOOLS_OPT,
    students: Path = STUDENTS_OPT,
    subject: list[str] = SUBJECTS_OPT,
    family: list[str] = typer.Option(
        [], "--family", help="Growth families to consider (default: lgbm linear keras)."
    ),
    storage: str = STORAGE_OPT,
    margin: float = typer.Option(
        S.margin_pct, "--margin", help="Growth gate: % below the linear baseline's RMSE."
    ),
    out: Path = typer.Option(S.out_dir / "evaluation", "--out", help="Folder for the evaluation reports."),
    seed: int = SEED_OPT,
    split: str = SPLIT_OPT,
    holdout_schools: bool = HOLDOUT_OPT,
    protected_inputs: bool = PROTECTED_OPT,
    support: bool = typer.Option(
        True, "--support/--no-support", help="Also train the needs-support classifier."
    ),
    refit: bool = typer.Option(True, "--refit/--no-refit", help="Refit the champion on train + validation."),
    bento: bool = typer.Option(True, "--bento/--no-bento", help="Export champions to the BentoML store."),
) -> None:
    """Fit the tuned families, compare with the baselines, register the best; gate the champion alias."""
    from training.data import DataConfig, load_data
    from training.families import DEFAULT_FAMILIES
    from training.train import TrainConfig, train_subject

    source = source_of(config, schools, students)
    failed = []
    with user_errors():
        data = load_data(source, progress=True)
        for subj in subjects_of(data, subject):
            train_config = TrainConfig(
                source=source,
                data=DataConfig(subj, seed, split, holdout_schools, protected_inputs),
                storage=storage,
                families=tuple(family or DEFAULT_FAMILIES),
                margin_pct=margin,
                out_dir=out,
                export_bento=bento,
                refit=refit,
            )
            result = train_subject(train_config, data, support=support)
            for summary in (result["growth"], result["support"]):
                if summary is None:
                    continue
                report_champion(summary)
                if not summary["gate_passed"]:
                    failed.append(f"{summary['registered_model']} v{summary['version']}: {summary['gate']}")
            for sentence in result["fairness"]:
                typer.secho(f"fairness: {sentence}", fg=typer.colors.YELLOW)
            print_review_links(subj)
    if failed:
        raise fail(
            "champion gate failed (registered without the alias; the previous champion stays):\n  "
            + "\n  ".join(failed)
            + f"\nThe margins are --margin / GROWTH_MARGIN_PCT ({margin:g}% for growth) and "
            f"GROWTH_SUPPORT_MARGIN_PCT ({get_settings().support_margin_pct:g}% for needs support). "
            "Records that hold little beyond prior scores may not clear them: lowering one is a choice "
            "to make and document, not a fix.",
            code=2,
        )


def print_review_links(subject: str) -> None:
    """Where reviewers compare the runs: the MLflow UI (`make ui`) in the saved reviewers' view."""
    import mlflow

    from training.tracking import experiment_name, review_url

    for task in TASKS:
        experiment = mlflow.get_experiment_by_name(experiment_name(subject, task))
        if experiment is not None:
            typer.echo(f"MLflow ({experiment.name}): {review_url(experiment.experiment_id)}")


def report_champion(summary: dict) -> None:
    table = summary.get("families") if summary["kind"] == "growth" else summary.get("table")
    typer.echo(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    state = "@champion" if summary["gate_passed"] else "gate failed"
    typer.echo(
        f"{summary['kind']} champion for {summary['subject']}: {summary['champion_family']} -> "
        f"{summary['registered_model']} v{summary['version']} ({state}); {summary['gate']}"
    )


@app.command()
def predict(
    config: Path = CONFIG_OPT,
    schools: Path = SCHOOLS_OPT,
    students: Path = STUDENTS_OPT,
    year: int = typer.Option(
        None, "--year", help="Target year (default: the year after the data: a forecast)."
    ),
    out: Path = typer.Option(
        S.out_dir / "predictions.parquet", "--out", help="Output file (.parquet or .csv)."
    ),
) -> None:
    """Score every student of a year with every champion (growth with interval, needs support, SGP).

    A forecast (the default) reads only the two latest school years it uses; `growth validate` checks
    every year."""
    from reports.formatting import year_label
    from serving.batch import score_year
    from serving.predictor import NoChampionError

    if out.suffix.lower() not in (".parquet", ".csv"):
        raise fail(f"--out must end in .parquet or .csv; found {out.name}")
    source = source_of(config, schools, students)
    with user_errors():
        try:
            result = score_year(source, year, out, progress=True, needed_years_only=True)
        except NoChampionError as err:
            raise fail(str(err)) from None
        except ValueError as err:
            raise fail(str(err)) from None
    # the classic format's years are placeholders: say "the next year", not "2"
    when = f"the {year_label(result.year, classic=True)}" if result.classic else str(result.year)
    typer.echo(f"scored {result.scored:,} students of {when} -> {out}")
    for subject in result.without_support:
        typer.echo(
            f"no needs-support champion for {subject} (none passed its gate): "
            f"{subject}_needs_support_probability is empty"
        )
    if result.unscorable:
        typer.echo(f"{result.unscorable:,} students could not be scored; reasons in {result.side_file}")


@app.command()
def sgp(
    config: Path = CONFIG_OPT,
    schools: Path = SCHOOLS_OPT,
    students: Path = STUDENTS_OPT,
    year: list[int] = typer.Option([], "--year", help="Target year(s) (default: every year with pairs)."),
    out: Path = typer.Option(S.out_dir / "sgp.csv", "--out", help="Output file (.csv or .parquet)."),
) -> None:
    """Student growth percentiles of every student, subject and target year (docs/sgp.md)."""
    from serving.batch import write_atomic_frame
    from training.data import load_data
    from training.measures import all_sgps, target_years

    if out.suffix.lower() not in (".parquet", ".csv"):
        raise fail(f"--out must end in .parquet or .csv; found {out.name}")
    source = source_of(config, schools, students)
    with user_errors():
        data = load_data(source, progress=True)
        known = target_years(data)
        unknown = [y for y in year if y not in known]
        if unknown or not known:
            raise fail(
                f"no growth pairs for {', '.join(map(str, unknown or year))}; target years with pairs: "
                f"{', '.join(map(str, known)) or 'none (SGPs need two consecutive school years)'}"
            )
        sgps = all_sgps(data, year or None, progress=True)
    write_atomic_frame(sgps, out)
    counts = sgps.groupby(["school_year", "subject"])["sgp"].count()
    for (y, subject), n in counts.items():
        typer.echo(f"{y} {subject}: {n:,} SGPs")
    typer.echo(f"wrote {len(sgps):,} rows to {out}")


@app.command()
def serve(
    port: int = typer.Option(S.port, "--port", help="HTTP port."),
    host: str = typer.Option(S.host, "--host", help="Interface to listen on (0.0.0.0: all interfaces)."),
    max_records: int = typer.Option(
        S.max_records, "--max-records", help="Largest accepted request, in records."
    ),
    workers: int = typer.Option(0, "--workers", help="Server processes (default: one per CPU core)."),
    access_log: bool = typer.Option(
        S.access_log,
        "--access-log/--no-access-log",
        help="One log line per request (off by default; /metrics counts requests; cost: docs/serving.md).",
    ),
) -> None:
    """Serve every champion over HTTP: POST /predict, GET /models, /docs, /healthz, /readyz, /metrics."""
    import os

    from serving.predictor import champion_entries, no_champion_error

    entries = champion_entries()  # metadata only: the server process loads the models itself
    if not any(e.info.labels["kind"] == "growth" for e in entries):
        raise fail(str(no_champion_error()))
    for entry in entries:
        labels, meta = entry.info.labels, entry.info.metadata
        typer.echo(
            f"{labels['subject']} {labels['kind']}: {entry.tag} "
            f"(registry version {meta.get('registry_version')}, {meta.get('family')})"
        )
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "GROWTH_MAX_RECORDS": str(max_records),
        "GROWTH_SERVE_WORKERS": str(workers),
        "GROWTH_ACCESS_LOG": str(access_log).lower(),
    }
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


Command = Callable[..., None]

if __name__ == "__main__":
    app()
