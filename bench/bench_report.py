"""Benchmark: the whole district report (tables, narrative, charts, HTML, atomic write) on a
150,000-student district, timed after the data is loaded. The budget is 5 s.

    .venv/bin/python bench/bench_report.py [--students 150000] [--repeat 3]

Uses the synthetic generator (pipelines.synthetic) when it is available, else a random district
with the contract columns. Exits with status 1 if any run is over budget.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.contract import GRADES  # noqa: E402
from reports.build import build_report  # noqa: E402

BUDGET_S = 5.0


def random_district(n_students: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fallback district: 15 schools, budgets around the standard bins, normal scores."""
    rng = np.random.default_rng(seed)
    n_schools = 15
    names = [f"School {i:02d} High School" for i in range(n_schools)]
    school_of = rng.choice(n_schools, size=n_students, p=rng.dirichlet(np.full(n_schools, 5.0)))
    sizes = np.bincount(school_of, minlength=n_schools)
    schools = pd.DataFrame(
        {
            "school_name": names,
            "type": rng.choice(["District", "Charter"], size=n_schools),
            "size": sizes,
            "budget": (sizes * rng.uniform(560, 670, size=n_schools)).round(),
            "school_id": np.arange(n_schools),
        }
    )
    students = pd.DataFrame(
        {
            "student_id": np.arange(n_students),
            "student_name": [f"Student {i}" for i in range(n_students)],
            "gender": rng.choice(["M", "F"], size=n_students),
            "grade": rng.choice(list(GRADES), size=n_students),
            "school_name": np.array(names)[school_of],
            "reading_score": rng.normal(75, 12, n_students).clip(0, 100).round(1),
            "math_score": rng.normal(72, 14, n_students).clip(0, 100).round(1),
        }
    )
    return students, schools


def load(n_students: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    try:
        from pipelines.synthetic import generate_district
    except ImportError:
        students, schools = random_district(n_students, seed)
        return students, schools, "random fallback district"
    district = generate_district(n_students=n_students, seed=seed)
    return district.students, district.schools, "pipelines.synthetic.generate_district"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=150_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    students, schools, source = load(args.students, args.seed)
    times = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(args.repeat):
            start = time.perf_counter()
            build_report(students, schools, Path(tmp) / f"report-{i}")
            times.append(time.perf_counter() - start)
    worst = max(times)
    print(f"data: {len(students):,} students, {len(schools)} schools ({source})")
    print(f"runs: {', '.join(f'{s:.2f}' for s in times)} s")
    print(
        f"report built in {times[0]:.2f} s (first run; median {statistics.median(times):.2f} s, "
        f"worst {worst:.2f} s; budget {BUDGET_S:.0f} s) -> {'OK' if worst < BUDGET_S else 'OVER BUDGET'}"
    )
    return 0 if worst < BUDGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
