"""Child process of bench/serving/run.py: prepares the request records and times in-process prediction.

    BENTOML_HOME=... .venv/bin/python bench/serving/inprocess.py --config district.toml --work DIR

Runs in its own process so the runner holds no model (and no TensorFlow) while the servers run, and so
BENTOML_HOME is read by this import of bentoml only. Writes into --work:

  records.json         N student records as a client sends them to POST /predict: one year's growth
                       pairs (serving.batch.historical_frame), validated by the service's own
                       StudentRecord model and dumped without empty fields
  mlflow_records.json  the same students as the registered math model's input rows (its signature:
                       flags as 0/1 floats, no student_id), for `mlflow models serve`
  expected.json        in-process predictions of the first records (to check the servers answer alike)
  inprocess.json       the timings (rows of the table) and a per-step breakdown of one record
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

N_EXPECTED = 50


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, required=True, help="District config (TOML/YAML).")
    parser.add_argument("--work", type=Path, required=True, help="Folder for the output files.")
    parser.add_argument("--records", type=int, default=2000, help="Student records to prepare.")
    parser.add_argument("--batch", type=int, default=1000, help="Records per batch call.")
    parser.add_argument("--duration", type=float, default=15, help="Seconds per timed row.")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def plain(value: Any) -> Any:
    """numpy / pandas scalars as JSON-ready Python values; missing as None."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, np.generic):
        value = value.item()
    return value


def prepare_records(
    frame: pd.DataFrame, predictor: Any, record_model: Any, n: int, seed: int
) -> tuple[list[dict], pd.DataFrame, int]:
    """n valid records (and their frame rows) from a year's growth pairs, as a client would send them."""
    from features.contract import FLAG_COLUMNS

    served = predictor.served
    math_prior = "prior_math_score" if "math" in served.subjects else None
    usable = frame["grade"].isin(served.grades) & frame["school_id"].notna()
    if math_prior:
        usable &= frame[math_prior].notna()  # the MLflow comparison serves the math model
    candidates = frame[usable].sample(frac=1.0, random_state=seed)
    records, rows, rejected = [], [], 0
    for index, row in zip(candidates.index, candidates.to_dict("records"), strict=True):
        raw: dict[str, Any] = {"student_id": str(row["student_id"])}
        for column in predictor.columns:
            value = plain(row.get(column))
            if value is None:
                continue
            if column in FLAG_COLUMNS:
                value = bool(value)
            elif column == "school_year":
                value = int(value)
            elif isinstance(value, float):
                value = round(value, 4)
            raw[column] = value
        try:
            record = record_model.model_validate(raw)
        except ValueError:
            rejected += 1
            continue
        records.append(record.model_dump(mode="json", exclude_none=True, exclude={"student_name"}))
        rows.append(index)
        if len(records) == n:
            break
    return records, frame.loc[rows], rejected


def mlflow_records(records: Sequence[dict], columns: Sequence[str]) -> list[dict]:
    """The registered model's input rows: its own columns only, flags as floats (its signature's type)."""
    from features.contract import FLAG_COLUMNS

    out = []
    for record in records:
        row = {}
        for column in columns:
            if column in record:
                value = record[column]
                row[column] = float(value) if column in FLAG_COLUMNS else value
        out.append(row)
    return out


def timed(func: Callable[[Any], object], items: Sequence[Any], seconds: float, min_calls: int) -> dict:
    """Latencies of calls over ``items`` in turn for ``seconds`` (and at least ``min_calls`` calls)."""
    for item in items[:3]:
        func(item)  # warm-up: first calls build caches
    latencies: list[float] = []
    started = time.perf_counter()
    i = 0
    while time.perf_counter() - started < seconds or len(latencies) < min_calls:
        item = items[i % len(items)]
        i += 1
        t0 = time.perf_counter()
        func(item)
        latencies.append((time.perf_counter() - t0) * 1000)
    wall = time.perf_counter() - started
    return {"latencies_ms": latencies, "wall_s": wall}


def summary(name: str, batch: int, timing: dict, note: str = "") -> dict:
    latencies = np.asarray(timing["latencies_ms"])
    p50, p90, p99 = np.percentile(latencies, [50, 90, 99])
    return {
        "path": name,
        "client": "in-process",
        "connections": 1,
        "batch": batch,
        "requests": len(latencies),
        "failures": 0,
        "requests_per_s": len(latencies) / timing["wall_s"],
        "predictions_per_s": len(latencies) * batch / timing["wall_s"],
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "note": note,
    }


def chunks(items: Sequence[Any] | pd.DataFrame, size: int) -> list[Any]:
    count = max(1, len(items) // size)
    if isinstance(items, pd.DataFrame):
        return [items.iloc[i * size : (i + 1) * size] for i in range(count)]
    return [items[i * size : (i + 1) * size] for i in range(count)]


def breakdown(predictor: Any, records: Sequence[dict], seconds: float) -> dict[str, float]:
    """Median ms of the steps of one single-record prediction, through the models' public methods (a
    step whose method changed is left out rather than failing the run)."""
    from serving.predictor import assemble, columns_of

    def columns(record: dict) -> dict:
        return columns_of([record], predictor.columns)

    steps: dict[str, Callable[[dict], object]] = {"columns_of": columns}
    for subject, champion in predictor.served.growth.items():
        model = champion.model
        steps[f"{subject} growth: features"] = lambda r, m=model: m.features(columns(r))
        steps[f"{subject} growth: predict_interval ({champion.info.family})"] = lambda r, m=model: (
            m.predict_interval(columns(r))
        )
        support = predictor.served.support.get(subject)
        if support is not None:
            steps[f"{subject} support: predict_proba ({support.info.family})"] = lambda r, s=support.model: (
                s.predict_proba(columns(r))
            )
    steps["predict_columns (every model)"] = lambda r: predictor.predict_columns(columns(r), 1)
    answers = {r["student_id"]: predictor.predict_columns(columns(r), 1) for r in records}
    steps["assemble (response dict)"] = lambda r: assemble(
        [r], answers[r["student_id"]], predictor.served, predictor.infos
    )
    out = {}
    for name, step in steps.items():
        try:
            out[name] = float(np.median(timed(step, records, max(0.2, seconds), 50)["latencies_ms"]))
        except Exception as err:  # the serving code is a moving target; report, do not fail
            print(f"  breakdown step {name!r} skipped: {type(err).__name__}: {err}", file=sys.stderr)
    return out


def main() -> int:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    from serving.batch import historical_frame
    from serving.predictor import Predictor
    from training.data import Source, load_data

    data = load_data(Source(config=args.config))
    year = data.district.years[-1]
    frame = historical_frame(data, year)
    predictor = Predictor.from_store()
    try:  # the service's own request models, so the handler row does what POST /predict does
        from serving.service import PredictRequest, StudentRecord

        handler_note = ""
    except Exception as err:  # the service module may not import; fall back, say so
        from serving.schemas import build_models

        served = predictor.served
        scales = {s: served.scale(s) for s in served.subjects}
        StudentRecord, PredictRequest, _ = build_models(
            served.subjects, served.grades, scales, predictor.columns
        )
        handler_note = f"models rebuilt: serving.service did not import ({err})"
    records, rows, rejected = prepare_records(frame, predictor, StudentRecord, args.records, args.seed)
    if len(records) < args.records:
        print(f"only {len(records)} usable records in {year} ({rejected} rejected)", file=sys.stderr)
    if not records:
        return 2
    growth = predictor.served.growth
    math_model = growth["math"].model if "math" in growth else next(iter(growth.values())).model
    (args.work / "records.json").write_text(json.dumps(records))
    (args.work / "mlflow_records.json").write_text(
        json.dumps(mlflow_records(records, math_model.input_columns))
    )
    expected = predictor.predict(records[:N_EXPECTED])
    (args.work / "expected.json").write_text(
        orjson.dumps(expected, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    )
    prepared_s = time.perf_counter() - started
    # as a `growth serve` worker does once its champions are loaded (serving/server_fixes.py): what is
    # alive now is never garbage, so collections during the timings walk only what requests create
    from serving.schemas import validated_records
    from serving.server_fixes import freeze_loaded_objects

    del data, frame
    freeze_loaded_objects()

    singles = [[r] for r in records]
    bodies = [orjson.dumps({"students": [r]}) for r in records]

    def handler(body: bytes) -> bytes:
        """POST /predict without HTTP: parse, validate, predict, serialise (serving/service.py)."""
        parsed = PredictRequest.model_validate(orjson.loads(body))
        dumped = validated_records(parsed.students)
        return orjson.dumps(predictor.predict(dumped), option=orjson.OPT_SERIALIZE_NUMPY)

    batch = min(args.batch, len(records))
    rows_out = [
        summary(
            "Predictor.predict (dict → response dict)",
            1,
            timed(predictor.predict, singles, args.duration, 20),
        ),
        summary(
            "/predict handler without HTTP (orjson → pydantic → predict → orjson)",
            1,
            timed(handler, bodies, args.duration, 20),
            handler_note,
        ),
        summary(
            "Predictor.predict (dicts → response dict)",
            batch,
            timed(predictor.predict, chunks(records, batch), args.duration, 3),
        ),
        summary(
            "Predictor.predict_frame (DataFrame, batch scoring path)",
            batch,
            timed(predictor.predict_frame, chunks(rows, batch), args.duration, 3),
        ),
    ]
    steps = breakdown(predictor, records[:200], min(1.0, args.duration / 10))
    infos = [info.as_dict() for info in predictor.infos]
    output = {
        "records": len(records),
        "rejected": rejected,
        "year": year,
        "config": str(args.config),
        "models": infos,
        "subjects": predictor.served.subjects,
        "mlflow_columns": list(math_model.input_columns),
        "prepare_s": prepared_s,
        "rows": rows_out,
        "breakdown_ms": steps,
    }
    (args.work / "inprocess.json").write_text(json.dumps(output, indent=2, default=str))
    for row in rows_out:
        print(
            f"  {row['path']} x{row['batch']}: p50 {row['p50_ms']:.3f} ms, "
            f"{row['predictions_per_s']:,.0f} predictions/s",
            flush=True,
        )
    if not all(math.isfinite(r["p50_ms"]) for r in rows_out):
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
