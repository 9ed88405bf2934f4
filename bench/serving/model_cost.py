"""The models' own cost, one thread: per call by request size, and the ceiling of any serving path.

Scores the bench's records with every champion (growth, interval and needs-support probability for
each served subject; LightGBM held to one thread) and prints

* the median milliseconds of ``Predictor.predict`` (records -> response) for calls of 1 to 256
  records: what one call of the service's coalescing costs (serving/coalesce.py);
* the median milliseconds of ``Predictor.predict_columns`` for ``--batch`` records and the predictions
  per second that all cores could reach if they did nothing else (no HTTP, JSON, validation or load
  generator):

    .venv/bin/python bench/serving/model_cost.py [--config data/district/district.toml] [--batch 1000]
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before LightGBM loads: one OpenMP thread

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
CALL_SIZES = (1, 8, 16, 32, 64, 128, 256)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=None)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    from inprocess import prepare_records

    from features.settings import get_settings
    from serving.batch import historical_frame
    from serving.predictor import Predictor, columns_of
    from serving.server_fixes import freeze_loaded_objects
    from serving.service import StudentRecord
    from training.data import Source, load_data

    config = args.config or get_settings().default_config
    data = load_data(Source(config=config))
    predictor = Predictor.from_store()
    records, _, _ = prepare_records(
        historical_frame(data, data.district.years[-1]), predictor, StudentRecord, args.batch, 0
    )
    columns = columns_of(records, predictor.columns)
    del data
    freeze_loaded_objects()
    for size in CALL_SIZES:
        calls = [records[(k * size) % len(records) :][:size] for k in range(args.repeats * 4)]
        calls = [c for c in calls if len(c) == size]
        predictor.predict(calls[0])
        times = []
        for call in calls:
            start = time.perf_counter()
            predictor.predict(call)
            times.append(time.perf_counter() - start)
        median_ms = statistics.median(times) * 1000
        print(f"Predictor.predict, {size:>3} record(s) per call: median {median_ms:.2f} ms")
    predictor.predict_columns(columns, len(records))
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        predictor.predict_columns(columns, len(records))
        times.append(time.perf_counter() - start)
    ms = statistics.median(times) * 1000
    cores = os.cpu_count() or 1
    per_core = len(records) / (ms / 1000)
    print(f"predict_columns, {len(records):,} records, one thread: median {ms:.1f} ms ({args.repeats} runs)")
    total = cores * per_core
    print(f"= {per_core:,.0f} records/s per core; {cores} cores doing nothing else: {total:,.0f} /s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
