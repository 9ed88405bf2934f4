"""Benchmark: Student Growth Percentiles for a whole district year, end to end, and exactness of the shortcut.

Simulates (or reads) a target year of ``--students`` students x 2 subjects (math, ELA) in grades 4-10, with
priors from grades 3-9 (``--with-prior`` share have the immediate prior, ``--second-prior`` share of those the
one before), integer scale scores on a 150-950 vertical scale with within-grade SD about 40. Times
``student_growth_percentiles`` for each subject (7 cohorts, orders 1 and 2) and compares, on
``--agreement-cohorts`` cohorts, the preprocessed fits with the plain ones (every LP on all students).

    .venv/bin/python bench/bench_sgp.py [--students 150000] [--workers 2] [--agreement-cohorts 1]
                                        [--data PATH] [--budget 60]

``--data`` takes a CSV or Parquet file with columns subject, school_year, grade, score, prior_score,
prior2_score (one row per student and subject). Prints Markdown tables and the machine load (``uptime``);
exits with status 1 when the district takes longer than ``--budget`` seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.sgp import SGPConfig, fit_cohort, knots_and_boundaries, student_growth_percentiles  # noqa: E402

PRIORS = ["prior_score", "prior2_score"]
COHORT = ["school_year", "grade"]
GRADES = range(4, 11)


def simulate(students: int, seed: int, with_prior: float, second_prior: float) -> pd.DataFrame:
    """Long frame (student x subject) of a target year with grade-specific means on a vertical scale."""
    rng = np.random.default_rng(seed)
    grade = rng.choice(np.array(GRADES), size=students)
    ability = rng.normal(0, 1, students)
    frames = []
    for subject, tilt in (("math", 0.12), ("ela", 0.06)):
        z2 = 0.85 * ability + rng.normal(0, 0.5, students)
        z1 = 0.6 * z2 + 0.35 * ability + rng.normal(0, 0.45, students)
        noise = rng.normal(0, 1, students) * (0.35 + 0.12 * np.abs(z1))
        zc = 0.75 * z1 + tilt * z1**2 + 0.15 * ability + noise

        def scale(z: np.ndarray, g: np.ndarray) -> np.ndarray:
            return np.clip(np.round(300 + 50 * (g - 3) + 40 * z), 150, 950)

        frame = pd.DataFrame(
            {
                "student_id": np.arange(students),
                "subject": subject,
                "school_year": 2025,
                "grade": grade,
                "score": scale(zc, grade),
                "prior_score": scale(z1, grade - 1),
                "prior2_score": scale(z2, grade - 2),
            }
        )
        no_prior = rng.random(students) > with_prior
        frame.loc[no_prior, PRIORS] = np.nan
        frame.loc[rng.random(students) > second_prior, "prior2_score"] = np.nan
        frame.loc[rng.random(students) < 0.01, "score"] = np.nan
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def load(path: Path) -> pd.DataFrame:
    """A district file in the benchmark's columns."""
    frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = {"subject", *COHORT, "score", *PRIORS} - set(frame.columns)
    if missing:
        raise SystemExit(f"{path} lacks columns {sorted(missing)}")
    return frame


def load_average() -> str:
    """The machine's load (the benchmark shares the machine; the figure is for an idle one)."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load: " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def time_district(frame: pd.DataFrame, workers: int) -> tuple[list[tuple], dict[str, pd.DataFrame]]:
    """End-to-end SGPs per subject; returns table rows and the results."""
    rows, results = [], {}
    for subject, part in frame.groupby("subject", sort=True):
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        out = student_growth_percentiles(part, "score", PRIORS, COHORT, workers=workers)
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
        results[subject] = out
        cohorts = part[COHORT].drop_duplicates().shape[0]
        order2 = int((out["sgp_order"] == 2).sum())
        rows.append((subject, seconds, cpu, len(part), int(out["sgp"].notna().sum()), order2, cohorts))
    return rows, results


def _cpu_seconds() -> float:
    """CPU time of this process and its finished workers: a figure the machine's load hardly changes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def agreement(frame: pd.DataFrame, cohorts: int) -> list[tuple]:
    """Plain versus preprocessed fits of the largest cohorts: time, SGP agreement, fitted-value gap."""
    rows = []
    groups = frame.groupby(["subject", *COHORT]).size().sort_values(ascending=False)
    for subject, year, grade in groups.index[:cohorts]:
        part = frame[
            (frame["subject"] == subject) & (frame["school_year"] == year) & (frame["grade"] == grade)
        ]
        kb = [knots_and_boundaries(part[p].to_numpy(dtype=float)) for p in PRIORS]
        for order in (1, 2):
            data = part.dropna(subset=["score", *PRIORS[:order]])
            y, priors = data["score"].to_numpy(dtype=float), data[PRIORS[:order]].to_numpy(dtype=float)
            knots, bounds = [k for k, _ in kb[:order]], [b for _, b in kb[:order]]
            timings, fits = {}, {}
            for name, preprocess in (("plain", False), ("preprocessed", True)):
                started = time.perf_counter()
                fits[name] = fit_cohort(y, priors, SGPConfig(preprocess=preprocess), knots, bounds)
                timings[name] = time.perf_counter() - started
            plain = fits["plain"].growth_percentiles(y, priors)
            fast = fits["preprocessed"].growth_percentiles(y, priors)
            gap = np.abs(
                fits["plain"].predict_quantiles(priors) - fits["preprocessed"].predict_quantiles(priors)
            )
            label = f"{subject} grade {grade}, order {order}"
            diff = np.abs(plain - fast)
            rows.append(
                (
                    label,
                    len(y),
                    timings["plain"],
                    timings["preprocessed"],
                    (diff == 0).mean(),
                    diff.max(),
                    gap.max(),
                )
            )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--students", type=int, default=150_000)
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--with-prior", type=float, default=0.93)
    parser.add_argument("--second-prior", type=float, default=0.9)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--agreement-cohorts", type=int, default=1)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--budget", type=float, default=60.0)
    args = parser.parse_args()

    frame = (
        load(args.data)
        if args.data
        else simulate(args.students, args.seed, args.with_prior, args.second_prior)
    )
    before = load_average()
    rows, _ = time_district(frame, args.workers)
    after = load_average()
    total = sum(r[1] for r in rows)

    print(f"\n## SGPs end to end ({args.workers} workers)\n")
    print("| subject | seconds | CPU seconds | students | with SGP | order 2 | cohorts |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for subject, seconds, cpu, n, with_sgp, order2, cohorts in rows:
        print(f"| {subject} | {seconds:.1f} | {cpu:.1f} | {n:,} | {with_sgp:,} | {order2:,} | {cohorts} |")
    n_all = sum(r[3] for r in rows)
    print(
        f"| **both** | **{total:.1f}** | {sum(r[2] for r in rows):.1f} | {n_all:,} | "
        f"{sum(r[4] for r in rows):,} | {sum(r[5] for r in rows):,} | {sum(r[6] for r in rows)} |"
    )
    print(f"\nLoad before: `{before}`  \nLoad after: `{after}`")

    if args.agreement_cohorts > 0:
        print("\n## Plain (every LP on all students) vs preprocessed fits\n")
        print("| cohort | students | plain s | preprocessed s | SGPs identical | max SGP diff | max gap |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, n, t_plain, t_fast, same, worst, gap in agreement(frame, args.agreement_cohorts):
            print(f"| {label} | {n:,} | {t_plain:.2f} | {t_fast:.2f} | {same:.2%} | {worst} | {gap:.1e} |")
    within = total <= args.budget
    print(f"\nDistrict total {total:.1f} s, budget {args.budget:.0f} s: {'OK' if within else 'OVER'}")
    return 0 if within else 1


if __name__ == "__main__":
    raise SystemExit(main())
