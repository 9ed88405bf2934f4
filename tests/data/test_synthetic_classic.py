"""The synthetic district: reproducible, inside the contract, realistic, and honest about its truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.contract import GRADES, SCHOOL_COLUMNS, STUDENT_COLUMNS, TARGETS
from features.school_aggregates import OUTSIDE_BINS, school_aggregates
from pipelines.realism import REALISM_TARGETS, learnability_rmse, realism_stats
from pipelines.synthetic import (
    NOISE_SD,
    SUBJECTS,
    SyntheticDistrict,
    expected_growth,
    generate_district,
    make_schools,
    noise_bound,
    write_district,
)

TRUTH_SCHOOL_COLUMNS = [
    "school_name",
    *(f"{s}_effect{part}" for s in SUBJECTS for part in ("", "_explained", "_idiosyncratic")),
]


@pytest.fixture(scope="module")
def district() -> SyntheticDistrict:
    return generate_district(n_students=40_000, seed=42)


@pytest.fixture(scope="module")
def stats(district: SyntheticDistrict) -> dict[str, float]:
    figures = realism_stats(district)
    print("\nrealism of the 40,000-student district (seed 42):")
    for name, (low, high, _) in REALISM_TARGETS.items():
        print(f"  {name:34s} {figures[name]:8.3f}   target {low:g} to {high:g}")
    return figures


def noise(district: SyntheticDistrict, subject: str) -> pd.Series:
    cur, prior = TARGETS[subject]
    s = district.students
    return s[cur] - s[prior] - district.truth[f"expected_{subject}_growth"]


# ---------------------------------------------------------------------------------------------
# Reproducibility and contract
# ---------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_district() -> None:
    a, b = generate_district(3_000, seed=7), generate_district(3_000, seed=7)
    for name in ("schools", "students", "truth", "truth_schools"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert a.meta == b.meta


def test_different_seed_gives_different_district() -> None:
    a, b = generate_district(3_000, seed=7), generate_district(3_000, seed=8)
    assert not a.students["math_score"].equals(b.students["math_score"])
    assert not a.schools["school_name"].equals(b.schools["school_name"])


def test_progress_bar_does_not_change_the_district() -> None:
    shown, silent = generate_district(1_000, seed=3, progress=True), generate_district(1_000, seed=3)
    pd.testing.assert_frame_equal(shown.students, silent.students)


def test_columns_follow_the_contract(district: SyntheticDistrict) -> None:
    assert list(district.students.columns) == [c.name for c in STUDENT_COLUMNS]
    assert set(district.schools.columns) == {c.name for c in SCHOOL_COLUMNS}
    assert list(district.truth.columns) == ["student_id", "expected_math_growth", "expected_reading_growth"]
    assert list(district.truth_schools.columns) == TRUTH_SCHOOL_COLUMNS
    assert len(district.truth) == len(district.students) == district.meta["n_students"] == 40_000
    for frame, col in [(district.students, c) for c in STUDENT_COLUMNS] + [
        (district.schools, c) for c in SCHOOL_COLUMNS
    ]:
        values = frame[col.name]
        assert values.notna().all(), col.name
        if col.kind == "int":
            assert pd.api.types.is_integer_dtype(values), col.name
        elif col.kind == "float":
            assert pd.api.types.is_float_dtype(values), col.name
        elif col.kind == "bool":
            assert pd.api.types.is_bool_dtype(values), col.name
        if col.allowed:
            assert set(values.unique()) <= set(col.allowed), col.name
        if col.min is not None:
            assert values.min() >= col.min, col.name
        if col.max is not None:
            assert values.max() <= col.max, col.name


def test_keys_and_enrolment_are_consistent(district: SyntheticDistrict) -> None:
    students, schools = district.students, district.schools
    assert students["student_id"].is_unique
    assert schools["school_name"].is_unique and schools["school_id"].is_unique
    assert schools["school_name"].str.endswith(" High School").all()
    assert set(students["school_name"]) == set(schools["school_name"])
    counts = students["school_name"].value_counts()
    assert (schools.set_index("school_name")["size"] == counts.reindex(schools["school_name"])).all()
    assert set(students["grade"]) == set(GRADES)
    assert set(district.truth_schools["school_name"]) == set(schools["school_name"])


def test_default_district_school_structure() -> None:
    schools, _ = make_schools(150_000, np.random.default_rng(42))
    per_student = schools["budget"] / schools["size"]
    charter = schools["type"] == "Charter"
    print(
        f"\n150k: {len(schools)} schools, {charter.sum()} charters, sizes {schools['size'].min()}-"
        f"{schools['size'].max()}, per-student ${per_student.min():.0f}-${per_student.max():.0f}"
    )
    assert 50 <= len(schools) <= 60
    assert schools["size"].sum() == 150_000
    assert schools["size"].between(300, 5_000).all()
    assert schools.loc[charter, "size"].mean() < schools.loc[~charter, "size"].mean()
    assert per_student.between(570, 680).all()
    names = np.repeat(schools["school_name"].to_numpy(), schools["size"].to_numpy())
    students = pd.DataFrame(
        {"school_id": names, "school_name": names, "score_math": 70.0, "proficient_math": 1.0}
    )
    agg = school_aggregates(students, schools.assign(school_id=schools["school_name"]), ["math"])
    for col in ("spending_bin", "size_bin"):
        counts = agg[col].value_counts()
        assert counts[OUTSIDE_BINS] == 0
        assert (counts.drop(OUTSIDE_BINS) > 0).all(), col


def test_small_district_scales_down() -> None:
    small = generate_district(2_000, seed=3)
    per_student = small.schools["budget"] / small.schools["size"]
    assert len(small.schools) >= 8
    assert small.schools["size"].sum() == len(small.students) == 2_000
    assert set(small.schools["type"]) == {"District", "Charter"}
    assert per_student.between(570, 680).all()


# ---------------------------------------------------------------------------------------------
# Realism
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(REALISM_TARGETS))
def test_realism_statistic_in_range(stats: dict[str, float], name: str) -> None:
    low, high, meaning = REALISM_TARGETS[name]
    assert low <= stats[name] <= high, f"{name} ({meaning}) = {stats[name]:.3f}, expected {low:g} to {high:g}"


@pytest.mark.slow  # ~60 s: boosting on 20,000 students
def test_signal_beyond_prior_scores_is_learnable() -> None:
    rmse = learnability_rmse(generate_district(20_000, seed=5))
    print("\n20k learnability RMSE:", {k: round(v, 3) for k, v in rmse.items()})
    for subject in SUBJECTS:
        ols, hgb, floor = (rmse[f"rmse_{m}_{subject}"] for m in ("ols_priors", "hgb_all", "noise_floor"))
        assert ols > 1.15 * hgb
        assert hgb < 1.06 * floor


# ---------------------------------------------------------------------------------------------
# Truth and noise
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subject", SUBJECTS)
def test_scores_reconcile_with_truth(district: SyntheticDistrict, subject: str) -> None:
    """current = prior + expected growth + noise, and expected growth is a function of the
    observed columns and the school effects alone."""
    eps = noise(district, subject)
    assert eps.abs().max() <= noise_bound(subject) + 0.006
    recomputed = expected_growth(district.students, district.truth_schools, subject)
    np.testing.assert_allclose(recomputed, district.truth[f"expected_{subject}_growth"], atol=1e-9)
    cur, _ = TARGETS[subject]
    assert district.students[cur].between(0, 100).all()


@pytest.mark.parametrize("subject", SUBJECTS)
def test_noise_is_centred_documented_and_independent(district: SyntheticDistrict, subject: str) -> None:
    eps = noise(district, subject)
    documented = district.meta[f"noise_sd_{subject}"]
    print(f"\n{subject} noise: mean {eps.mean():+.4f}, SD {eps.std():.4f} (documented {documented})")
    assert documented == NOISE_SD[subject]
    assert abs(eps.mean()) < 4 * documented / np.sqrt(len(eps))
    assert eps.std() == pytest.approx(documented, rel=0.03)
    features = district.students.drop(
        columns=[
            "student_id",
            "student_name",
            "school_name",
            "math_score",
            "reading_score",
            "gender",
            "grade",
            "parental_education",
        ]
    )
    features = features.astype(float).assign(expected=district.truth[f"expected_{subject}_growth"])
    correlations = features.corrwith(eps)
    assert correlations.abs().max() < 0.025, correlations.abs().sort_values().tail(3)


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def test_write_district_round_trip(tmp_path) -> None:
    small = generate_district(2_000, seed=11)
    out = tmp_path / "district"
    write_district(small, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["district"]  # no temporary folder left
    assert sorted(p.name for p in out.iterdir()) == [
        "schools.csv",
        "students.csv",
        "truth.csv",
        "truth.json",
        "truth_schools.csv",
    ]
    schools = pd.read_csv(out / "schools.csv")
    students = pd.read_csv(out / "students.csv")
    assert schools.columns[0] == "School ID" and "school_id" not in schools.columns
    assert students.columns[0] == "Student ID" and "student_id" not in students.columns
    assert list(students.columns[1:]) == [c.name for c in STUDENT_COLUMNS[1:]]
    assert set(students["english_learner"].unique()) <= {0, 1}
    pd.testing.assert_series_equal(students["math_score"], small.students["math_score"])
    assert json.loads((out / "truth.json").read_text()) == small.meta
    truth = pd.read_csv(out / "truth.csv")
    eps = students["reading_score"] - students["prior_reading_score"] - truth["expected_reading_growth"]
    assert eps.abs().max() <= noise_bound("reading") + 0.006

    write_district(generate_district(1_000, seed=12), out)  # overwrites in place
    assert len(pd.read_csv(out / "students.csv")) == 1_000
