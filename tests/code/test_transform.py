"""The one transform: identical numbers for a batch and for single records, no target-year data in the
features, school features from the year before the target year only, and the behaviours serving needs
(unseen schools, missing optional fields, pickling)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.pairs import growth_pairs
from features.school_aggregates import school_year_table
from features.split import split_pairs
from serving.predictor import columns_of
from training.data import DataConfig, Source, load_data, prepare


@pytest.fixture(scope="module")
def prepared(long_district: Path):
    return prepare(load_data(Source(config=long_district / "district.toml")), DataConfig("math"))


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-like records (None for missing), as an HTTP client would send them."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def test_batch_and_single_records_give_identical_features(prepared) -> None:
    inputs = prepared.inputs("test").head(200)
    batch = prepared.transform.transform(inputs)
    singles = np.vstack(
        [prepared.transform.transform(columns_of([r], prepared.input_columns)) for r in records(inputs)]
    )
    assert batch.shape == (200, len(prepared.transform.feature_names_))
    assert np.array_equal(batch, singles)
    assert np.isfinite(batch).all()


def test_a_large_batch_looks_up_texts_once_and_gives_the_numbers_of_single_records(prepared) -> None:
    """Above the small-batch size, texts and school-year keys are looked up once per distinct value:
    the same features and unseen flags as record by record, with unknown and missing values mixed in."""
    inputs = prepared.inputs("test").head(600).reset_index(drop=True)
    rows = records(inputs)
    for i, row in enumerate(rows):
        if i % 7 == 0:
            row["school_id"] = f"new-{i % 3}"  # unseen schools
        if i % 5 == 0:
            row["gender"] = None
        if i % 11 == 0:
            row["parental_education"] = "a value never seen"
        if i % 13 == 0:
            row["school_year"] = None
        if i % 17 == 0:
            row["grade"] = "99"
    columns = columns_of(rows, prepared.input_columns)
    batch, unseen = prepared.transform.transform_with_unseen(columns)
    singles = [
        prepared.transform.transform_with_unseen(columns_of([r], prepared.input_columns)) for r in rows
    ]
    assert np.array_equal(batch, np.vstack([f for f, _ in singles]), equal_nan=True)
    assert np.array_equal(unseen, np.concatenate([u for _, u in singles]))
    assert unseen.sum() >= len(rows) // 7


def test_text_lookups_agree_for_every_batch_size_and_kind_of_value() -> None:
    """The per-distinct-value lookup of large batches equals the per-record one of small batches,
    whatever the values (texts, numbers that compare equal across types, missing values)."""
    from features.transform import SMALL_BATCH, Lookup

    lookup = Lookup.of(["3", "4", "1", "1.0", "True", "nan", "x"])
    values = ["3", "4", None, 1, 1.0, True, np.nan, "x", "y", np.str_("3"), 4, "1.0", pd.NA, np.int64(4)]
    small = np.array(values, dtype=object)
    large = np.array(values * (SMALL_BATCH // len(values) + 1), dtype=object)
    expected = lookup.positions(small, len(small))
    assert np.array_equal(lookup.positions(large, len(large))[: len(small)], expected[: len(small)])
    texts = np.array(["3", None, "x", "y", "4"] * SMALL_BATCH, dtype=object)
    assert np.array_equal(
        lookup.positions(texts, len(texts)), np.tile(lookup.positions(texts[:5], 5), SMALL_BATCH)
    )
    pairs = Lookup.of(["a\x1f2024", "b\x1f2025"])
    schools = np.array(["a", "b", None, "a", "c"] * SMALL_BATCH, dtype=object)
    years = np.array([2024, 2025, 2024, 2025, 2024] * SMALL_BATCH)
    assert np.array_equal(pairs.pair_positions(schools, years)[:5], [0, 1, -1, -1, -1])
    mixed = np.array([1, "a", 1.0] * SMALL_BATCH, dtype=object)  # not all texts: the per-key route
    assert np.array_equal(
        Lookup.of(["1\x1f2024", "1.0\x1f2024"]).pair_positions(mixed, np.full(len(mixed), 2024))[:3],
        [0, -1, 1],
    )


def test_target_year_scores_never_reach_the_features(prepared) -> None:
    frame = prepared.part("test").head(500).copy()
    before = prepared.transform.transform(frame)
    for column in [c for c in frame.columns if c.startswith("score_") or c.endswith("_growth")]:
        frame[column] = np.random.default_rng(0).permutation(frame[column].to_numpy())
    assert np.array_equal(before, prepared.transform.transform(frame))
    assert not any(
        n.startswith("score_") or n.endswith("_growth") and not n.startswith("school_")
        for n in prepared.transform.feature_names_
    )


def test_school_features_come_from_the_year_before_only(long_district: Path) -> None:
    """Scrambling every score of the last year changes no school feature of that year's pairs."""
    data = load_data(Source(config=long_district / "district.toml"))
    district = data.district
    last = district.years[-1]
    table = school_year_table(district.students, district.schools, district.subject_names, data.pairs)
    scrambled = district.students.copy()
    rows = scrambled["school_year"] == last
    rng = np.random.default_rng(1)
    for subject in district.subject_names:
        scrambled.loc[rows, f"score_{subject}"] = rng.permutation(
            scrambled.loc[rows, f"score_{subject}"].to_numpy()
        )
    district.students = scrambled
    table2 = school_year_table(scrambled, district.schools, district.subject_names, growth_pairs(district))
    earlier = table.index.get_level_values("school_year") < last
    numeric = table.select_dtypes("number").columns
    pd.testing.assert_frame_equal(table.loc[earlier, numeric], table2.loc[earlier, numeric])
    assert not table.loc[~earlier, numeric].equals(
        table2.loc[~earlier, numeric]
    )  # the year itself did change


def test_unseen_school_gets_that_years_district_row_and_is_flagged(prepared) -> None:
    inputs = prepared.inputs("test").head(50)
    unknown = inputs.assign(school_id="never seen")
    transform = prepared.transform
    assert not transform.unseen_school(inputs).any()
    assert transform.unseen_school(unknown).all()
    rows, unseen = transform.school_rows(unknown)
    year = int(inputs["school_year"].iloc[0]) - 1
    assert unseen.all() and (rows == transform.fallback_row_[year]).all()


def test_missing_optional_fields_are_imputed_not_refused(prepared) -> None:
    inputs = prepared.inputs("test").head(20)
    required = inputs[["school_id", "grade", "school_year", "prior_math_score"]]
    features = prepared.transform.transform(required)
    assert features.shape == (20, len(prepared.transform.feature_names_))
    assert np.isfinite(features).all()
    sent = ("prior_math_score_missing", "school_history_missing")
    missing = [n for n in prepared.transform.feature_names_ if n.endswith("_missing") and n not in sent]
    columns = [prepared.transform.feature_names_.index(n) for n in missing]
    raw = prepared.transform._raw(required)
    assert len(columns) >= 10 and (raw[:, columns] == 1).all()  # every optional field absent is flagged
    assert (raw[:, prepared.transform.feature_names_.index("prior_math_score_missing")] == 0).all()


def test_a_column_constant_in_training_is_held_at_its_training_value(prepared) -> None:
    """A 3-year district: no training pair has the score two years back, every test pair has it. The
    model never saw those columns vary, so whatever a record sends, they stay as in training; every
    other column still follows the input."""
    from features.transform import GrowthTransform

    transform = prepared.transform
    train = prepared.inputs("train").copy()
    train["prior2_math_score"] = np.nan
    train["prior2_reading_score"] = np.nan
    fitted = GrowthTransform(**transform.get_params()).fit(train)
    names = fitted.feature_names_
    held = {names[j] for j in fitted.held_}
    assert {"prior2_math_score", "prior2_math_score_missing", "prior2_math_score_z", "gain_math"} <= held
    assert "prior_math_score" not in held
    test = prepared.inputs("test").head(200)
    assert test["prior2_math_score"].notna().mean() > 0.5
    out = fitted.transform(test)
    columns = sorted(fitted.held_)
    assert (out[:, columns] == 0.0).all()
    assert np.array_equal(out[:, columns], fitted.transform(train.head(200))[:, columns])
    assert out[:, names.index("prior_math_score")].std() > 0.1  # a column that varied still follows
    single = np.vstack([fitted.transform(columns_of([r], prepared.input_columns)) for r in records(test)])
    assert np.array_equal(out, single)


def test_protected_attributes_can_be_left_out(long_district: Path) -> None:
    data = load_data(Source(config=long_district / "district.toml"))
    without = prepare(data, DataConfig("math", protected_inputs=False))
    names = without.transform.feature_names_
    for protected in ("gender=", "econ_disadvantaged", "english_learner", "special_education"):
        assert not any(n.startswith(protected) for n in names), protected
    assert "gender" not in without.input_columns


def test_transform_round_trips_through_pickle(prepared) -> None:
    inputs = prepared.inputs("val").head(100)
    copy = pickle.loads(pickle.dumps(prepared.transform))
    assert np.array_equal(copy.transform(inputs), prepared.transform.transform(inputs))


def test_future_split_tests_the_last_year_and_cuts_the_rest_by_school_year(prepared) -> None:
    split, frame = prepared.split, prepared.frame
    years = frame["school_year"].to_numpy()
    assert set(years[split.test]) == {years.max()}
    assert years[np.concatenate([split.train, split.val, split.cal])].max() < years.max()
    keys = frame["school_id"].astype(str) + "|" + frame["school_year"].astype(str)
    parts = [set(keys.iloc[getattr(split, p)]) for p in ("train", "val", "cal")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    again = split_pairs(frame, seed=42, scheme="future")
    assert all(np.array_equal(getattr(split, p), getattr(again, p)) for p in ("train", "val", "cal", "test"))
    assert "leave-future-out" in split.describe()


def test_a_district_with_few_school_years_is_cut_by_student_and_says_so(prepared) -> None:
    """Two schools give two school-years before the test year: too few to make train, validation and
    calibration of whole school-years, so the past is cut by student (each part non-empty, no student
    in two parts) and the scheme says why; the test year stays the latest."""
    frame = prepared.frame.copy()
    frame["school_id"] = np.where(frame.index % 2 == 0, "A", "B")
    split = split_pairs(frame, seed=5, scheme="future")
    assert (
        split.scheme
        == "future (by student: only "
        + str(2 * (frame["school_year"].nunique() - 1))
        + " school-years before the test year)"
    )
    students = [set(frame["student_id"].iloc[getattr(split, p)]) for p in ("train", "val", "cal")]
    assert all(students) and not (students[0] & students[1]) and not (students[1] & students[2])
    assert set(frame["school_year"].iloc[split.test]) == {frame["school_year"].max()}


def test_rounding_never_leaves_a_part_empty() -> None:
    from features.split import _cut

    parts = _cut(np.arange(3), {"train": 0.7, "val": 0.15, "cal": 0.15}, seed=0)
    assert sorted(len(v) for v in parts.values()) == [1, 1, 1]
    parts = _cut(np.arange(200) % 40, {"train": 0.7, "val": 0.15, "cal": 0.15}, seed=0)
    assert [len(np.unique(np.arange(200)[v] % 40)) for v in parts.values()] == [28, 6, 6]


def test_random_split_by_student(prepared) -> None:
    split = split_pairs(prepared.frame, seed=3, scheme="random")
    ids = prepared.frame["student_id"].astype(str)
    assert not set(ids.iloc[split.train]) & set(ids.iloc[split.test])
    assert len(split.test) / len(prepared.frame) == pytest.approx(0.15, abs=0.03)
