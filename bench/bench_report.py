"""Benchmark: the whole district report of one school year (tables, narrative, charts, HTML, atomic
write), timed after the data is loaded, on

* the classic 150,000-student district (``growth generate``'s format, loaded by
  ``features.ingest.load_district``; generated into a temporary folder unless ``--classic DIR``),
* a large long-format district built here with numpy: ``--long-students`` students per school
  year over ``--years`` years (default 1,000,000 x 5 = 5 million student-years, i.e. 10 million
  long rows for two subjects, 15 million with the three used here), 400 schools, grades 03-10,
  math and ELA in every grade and science in 05, 08 and 10, per-grade cut scores on 200-800.

    .venv/bin/python bench/bench_report.py [--classic DIR] [--long-students 1000000] [--years 5]
                                           [--repeat 2] [--out DIR]

Prints one row per district; exits with status 1 if any run is over its budget.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.contract import score_column  # noqa: E402
from features.district_config import config_from_dict  # noqa: E402
from features.ingest import District, ValidationSummary, add_proficiency, resolve_subjects  # noqa: E402
from reports.build import build_report  # noqa: E402

CLASSIC_BUDGET_S = 10.0
LONG_BUDGET_S = 40.0  # "well under a minute" for a 1,000,000-student year
GRADES = ("03", "04", "05", "06", "07", "08", "09", "10")
LEVELS = {"Elementary": GRADES[:3], "Middle": GRADES[3:6], "High": GRADES[6:]}
LEVEL_SHARE = {"Elementary": 0.55, "Middle": 0.25, "High": 0.20}
SUBJECT_GRADES = {"math": GRADES, "ela": GRADES, "science": ("05", "08", "10")}
LABELS = {"math": "Math", "ela": "English Language Arts", "science": "Science"}
ACHIEVEMENT = ["Not Met", "Nearly Met", "Met", "Exceeded"]


def long_config(n_schools: int, n_students: int, min_group_size: int = 10) -> dict:
    """The district config of the numpy district (a long export as docs/architecture.md shows),
    with size bins around its mean school size and spending bins covering its budgets."""
    mean = n_students / n_schools
    size_bins = [0, *(int(round(mean * f, -1)) or 1 for f in (0.5, 1.0, 2.0, 8.0))]
    size_labels = [
        f"Small (<{size_bins[1]:,})",
        f"Medium ({size_bins[1]:,}-{size_bins[2]:,})",
        f"Large ({size_bins[2]:,}-{size_bins[3]:,})",
        f"Very large ({size_bins[3]:,}-{size_bins[4]:,})",
    ]
    subjects = {}
    for s, offset in (("math", 0.0), ("ela", 6.0), ("science", -4.0)):
        cuts = {}
        for i, g in enumerate(GRADES):
            centre = 380 + 22 * i + offset
            cuts[g] = [round(centre - 35), round(centre + 8), round(centre + 60)]
        subjects[s] = {
            "codes": [s.upper()],
            "label": LABELS[s],
            "scale": [200, 800],
            "levels": ACHIEVEMENT,
            "proficient": "Met",
            "cuts": cuts,
        }
    return {
        "name": f"Synthetic Unified School District ({n_schools} schools)",
        "format": "long",
        "grades": list(GRADES),
        "files": {"records": ["assessments_*.csv"], "schools": "schools.csv"},
        "columns": {
            "student_id": "id",
            "school_year": "year",
            "subject": "subject",
            "grade": "grade",
            "scale_score": "score",
            "school_id": "school",
        },
        "school_columns": {
            "school_id": "school",
            "school_name": "name",
            "type": "type",
            "budget": "budget",
            "level": "level",
        },
        "subjects": subjects,
        "report": {
            "min_group_size": min_group_size,
            "size_bins": size_bins,
            "size_labels": size_labels,
            "spending_bins": [0, 600, 640, 680, 720],
            "spending_labels": ["<$600", "$600-640", "$640-680", "$680-720"],
        },
    }


def long_district(
    n_students: int = 1_000_000,
    n_years: int = 5,
    n_schools: int = 400,
    seed: int = 42,
    first_year: int = 2020,
) -> District:
    """A validated-shape District (the student-year table ingestion produces) built with numpy:
    students move up a grade each year, schools by level, scores on a vertical 200-800 scale with
    school effects and a slow district improvement, achievement levels from per-grade cuts."""
    rng = np.random.default_rng(seed)
    config = config_from_dict(long_config(n_schools, n_students), "bench/(numpy district)/district.toml")
    subjects = resolve_subjects(config)
    # Schools: a level each, sizes by level, District or Charter, a budget around the standard bins.
    levels = rng.choice(list(LEVEL_SHARE), size=n_schools, p=list(LEVEL_SHARE.values()))
    levels[:3] = list(LEVELS)  # every level present even in a tiny district
    names = np.array([f"{_place(i)} {lvl} School" for i, lvl in enumerate(levels)], dtype=object)
    ids = np.array([f"{100000 + 37 * i}" for i in range(n_schools)], dtype=object)
    charter = rng.random(n_schools) < 0.25
    effect = rng.normal(0, 12, n_schools) + np.where(charter, 4.0, 0.0)
    # Students: a cohort grade per student, moving up one grade a year; a fixed ability.
    grade_of = rng.integers(0, len(GRADES), n_students)
    ability = rng.normal(0, 1, n_students).astype(np.float32)
    school_choice = {lvl: np.flatnonzero(levels == lvl) for lvl in LEVELS}
    weights = {lvl: rng.dirichlet(np.full(len(s), 3.0)) for lvl, s in school_choice.items()}
    frames = []
    for y in range(n_years):
        grade = (grade_of + y) % len(GRADES)  # graduates are replaced by new students in the lowest grade
        level_idx = np.searchsorted([3, 6], grade, side="right")
        school = np.empty(n_students, dtype=np.int32)
        for i, (lvl, pool) in enumerate(school_choice.items()):
            mine = level_idx == i
            school[mine] = rng.choice(pool, size=int(mine.sum()), p=weights[lvl])
        table = {
            "student_id": np.arange(n_students, dtype=np.int64) + y * 10**7 * (grade < y),
            "school_year": np.full(n_students, first_year + y, dtype=np.int16),
            "grade": grade.astype(np.int16),
            "school": school,
        }
        for s, tested_grades in SUBJECT_GRADES.items():
            tested = np.isin(np.array(GRADES)[grade], tested_grades) & (rng.random(n_students) > 0.03)
            centre = 400 + 22 * grade + 1.5 * y + effect[school]
            score = np.round(centre + 45 * (ability + rng.normal(0, 0.45, n_students))).clip(200, 800)
            table[score_column(s)] = np.where(tested, score, np.nan).astype(np.float32)
        frames.append(pd.DataFrame(table))
    students = pd.concat(frames, ignore_index=True)
    del frames
    students["student_id"] = students["student_id"].astype(str).astype("category")
    students["grade"] = pd.Categorical.from_codes(
        students["grade"].to_numpy(), categories=list(GRADES), ordered=True
    )
    school = students.pop("school").to_numpy()
    students.insert(3, "school_id", pd.Categorical.from_codes(school, categories=list(ids)))
    students.insert(4, "school_name", pd.Categorical.from_codes(school, categories=list(names)))
    summary = ValidationSummary(subjects=tuple(s.name for s in subjects))
    add_proficiency(students, subjects, summary)  # levels and flags from the cuts, as ingestion derives them
    sizes = np.bincount(
        school[students["school_year"].to_numpy() == first_year + n_years - 1], minlength=n_schools
    )
    schools = pd.DataFrame(
        {
            "school_id": ids.astype(str),
            "school_name": names.astype(str),
            "type": pd.Categorical(
                np.where(charter, "Charter", "District"), categories=["District", "Charter"]
            ),
            "size": sizes,
            "budget": (np.maximum(sizes, 1) * rng.uniform(560, 700, n_schools)).round(),
            "level": pd.Categorical(levels, categories=list(LEVELS)),
        }
    )
    return District(config, students, schools, subjects, GRADES, summary)


def _place(i: int) -> str:
    first = [
        "Lincoln",
        "Washington",
        "Jefferson",
        "Roosevelt",
        "Madison",
        "Franklin",
        "Hamilton",
        "Jackson",
        "Monroe",
        "Adams",
        "Kennedy",
        "Grant",
        "Harrison",
        "Wilson",
        "Garfield",
        "Cleveland",
        "Hoover",
        "Taylor",
        "Polk",
        "Tyler",
    ]
    second = ["Park", "Hill", "Valley", "Ridge", "Lake", "Grove", "Creek", "Heights", "Meadow", "Springs"]
    return f"{first[i % len(first)]} {second[(i // len(first)) % len(second)]}" + (
        f" {i // (len(first) * len(second)) + 1}" if i >= len(first) * len(second) else ""
    )


def classic_district(folder: Path | None, students: int) -> tuple[District, str]:
    from features.ingest import load_district

    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="classic")) / "district"
        subprocess.run(
            [
                str(Path(sys.executable).parent / "growth"),
                "generate",
                "--students",
                str(students),
                "--format",
                "classic",
                "--out",
                str(folder),
            ],
            check=True,
            capture_output=True,
        )
    return load_district(schools=folder / "schools.csv", students=folder / "students.csv"), str(folder)


def time_report(district: District, repeat: int, out: Path) -> list[float]:
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(repeat):
            start = time.perf_counter()
            build_report(district, out / f"report-{i}")
            times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--classic", type=Path, default=None, help="A classic district folder (default: generate)."
    )
    parser.add_argument("--classic-students", type=int, default=150_000)
    parser.add_argument("--long-students", type=int, default=1_000_000, help="Students per school year.")
    parser.add_argument("--years", type=int, default=5)
    parser.add_argument("--schools", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=None, help="Keep the reports here (default: a temp folder)."
    )
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        start = time.perf_counter()
        classic, source = classic_district(args.classic, args.classic_students)
        load_s = time.perf_counter() - start
        times = time_report(classic, args.repeat, out / "classic")
        rows.append(
            (
                "classic",
                f"{len(classic.year()):,} students ({source})",
                classic.schools.shape[0],
                1,
                load_s,
                times,
                CLASSIC_BUDGET_S,
            )
        )
        del classic
        start = time.perf_counter()
        long = long_district(args.long_students, args.years, args.schools)
        load_s = time.perf_counter() - start
        times = time_report(long, args.repeat, out / "long")
        rows.append(
            (
                "long",
                f"{args.long_students:,} students x {args.years} years "
                f"({len(long.students):,} student-years)",
                args.schools,
                args.years,
                load_s,
                times,
                LONG_BUDGET_S,
            )
        )
    print(f"{'district':<9} {'data':<58} {'schools':>7} {'load s':>8} {'report s (runs)':<22} {'budget':>7}")
    ok = True
    for name, data, schools, _years, load_s, times, budget in rows:
        worst = max(times)
        ok &= worst < budget
        runs = ", ".join(f"{s:.1f}" for s in times)
        verdict = "OK" if worst < budget else "OVER"
        median = statistics.median(times)
        print(
            f"{name:<9} {data:<58} {schools:>7} {load_s:>8.1f} {median:>6.1f} ({runs}){'':<4} "
            f"{budget:>5.0f} s {verdict}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
