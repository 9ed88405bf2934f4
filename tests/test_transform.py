"""The feature transform: one fitted object, no target leakage, identical after a save/load round trip."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.school_aggregates import school_aggregates
from features.split import split_rows
from features.transform import FORBIDDEN, feature_pipeline, model_pipeline
from training.data import DataConfig, prepare
from training.families import FAMILIES, fit_family
from training.tracking import use_experiment
from training.train import model_input

HGB_PARAMS = {
    "learning_rate": 0.1,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 20,
    "l2_regularization": 0.0,
    "max_features": 1.0,
    "max_iter": 60,
}


@pytest.fixture(scope="module")
def prepared(small_district: Path):
    return prepare(DataConfig(small_district / "schools.csv", small_district / "students.csv", "math", 3))


@pytest.fixture(scope="module")
def fitted(prepared):
    estimator = fit_family(
        FAMILIES["hgb"],
        HGB_PARAMS,
        0,
        prepared.n_numeric,
        prepared.X_train,
        prepared.y_part("train"),
        prepared.X_val,
        prepared.y_part("val"),
    )
    return model_pipeline(prepared.transform, estimator)


def test_school_features_come_from_the_shared_aggregates(prepared) -> None:
    train = prepared.part("train")
    table = prepared.transform.named_steps["school"].school_table_
    shared = school_aggregates(train, prepared.schools, "prior_math_score", "prior_reading_score")
    pd.testing.assert_series_equal(table["school_prior_avg_math"], shared["avg_math"], check_names=False)
    pd.testing.assert_series_equal(
        table["school_prior_pct_overall_passing"], shared["pct_overall_passing"], check_names=False
    )


def test_no_target_year_scores_in_features(prepared, fitted) -> None:
    frame = prepared.part("test").head(200)
    changed = frame.assign(math_score=0.0, reading_score=100.0, student_name="X")
    school_step = prepared.transform.named_steps["school"]
    features = school_step.transform(frame)
    assert FORBIDDEN.isdisjoint(features.columns)
    pd.testing.assert_frame_equal(features, school_step.transform(changed))
    np.testing.assert_array_equal(fitted.predict(frame), fitted.predict(changed))


def test_school_aggregates_use_prior_year_scores_only(small_district: Path) -> None:
    """Scrambling target-year scores must not change any school feature."""
    p = prepare(DataConfig(small_district / "schools.csv", small_district / "students.csv", "math", 3))
    train = p.part("train")
    scrambled = train.assign(math_score=np.random.default_rng(0).permutation(train["math_score"].to_numpy()))
    refit = feature_pipeline(scrambled, p.schools).fit(scrambled)
    np.testing.assert_allclose(refit.transform(train), p.transform.transform(train))


def test_transform_round_trip_through_pickle(prepared, fitted) -> None:
    frame = model_input(prepared.part("test"))
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict(frame), fitted.predict(frame))
    np.testing.assert_array_equal(restored[:-1].transform(frame), fitted[:-1].transform(frame))


def test_transform_round_trip_through_mlflow(prepared, fitted, isolated_stores: Path) -> None:
    import mlflow

    frame = model_input(prepared.part("test").head(300))
    use_experiment("math")  # the isolated store's URI, and an experiment that exists in it
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(fitted, name="model", serialization_format="cloudpickle")
    np.testing.assert_allclose(mlflow.pyfunc.load_model(info.model_uri).predict(frame), fitted.predict(frame))


def test_keras_model_survives_round_trip(prepared) -> None:
    params = {
        "hidden_layers": 1,
        "units": 16,
        "dropout": 0.0,
        "learning_rate": 3e-3,
        "l2": 1e-6,
        "batch_size": 256,
    }
    estimator = fit_family(
        FAMILIES["keras"],
        {**params},
        0,
        prepared.n_numeric,
        prepared.X_train,
        prepared.y_part("train"),
        prepared.X_val,
        prepared.y_part("val"),
    )
    pipeline = model_pipeline(prepared.transform, estimator)
    frame = model_input(prepared.part("test").head(100))
    np.testing.assert_allclose(
        pickle.loads(pickle.dumps(pipeline)).predict(frame), pipeline.predict(frame), rtol=1e-6
    )


def test_unseen_school_gets_district_fallback(prepared, fitted) -> None:
    frame = model_input(prepared.part("test").head(3)).assign(school_name=["New High School"] * 3)
    step = fitted.named_steps["school"]
    assert step.unseen_schools(frame) == ["New High School"]
    features = step.transform(frame)
    assert features["school_prior_avg_math"].notna().all()
    assert np.isfinite(fitted.predict(frame)).all()


def test_missing_optional_values_are_imputed(prepared, fitted) -> None:
    frame = model_input(prepared.part("test").head(5))
    frame.loc[:, ["homework_completion_pct", "prior_days_absent", "parental_education"]] = np.nan
    assert np.isfinite(fitted.predict(frame)).all()


def test_split_is_deterministic_and_can_hold_out_schools(prepared) -> None:
    students = prepared.students
    first, again = split_rows(students, seed=5), split_rows(students, seed=5)
    np.testing.assert_array_equal(first.test, again.test)
    assert len(set(first.train) & set(first.test)) == 0
    by_school = split_rows(students, seed=5, holdout_schools=True)
    train_schools = set(students.iloc[by_school.train]["school_name"])
    assert train_schools.isdisjoint(students.iloc[by_school.test]["school_name"])
    assert train_schools.isdisjoint(students.iloc[by_school.val]["school_name"])


def test_refit_replaces_the_cached_school_lookup(prepared) -> None:
    """A refitted step must not serve the school table of its previous fit."""
    step = feature_pipeline(prepared.part("train"), prepared.schools).named_steps["school"]
    train = prepared.part("train")
    one_school = train[train["school_name"] == train["school_name"].iloc[0]]
    step.fit(train)
    before = step.transform(one_school.head(3))
    few = one_school.head(10)
    step.fit(few)  # the school's row now comes from these ten students only
    after = step.transform(one_school.head(3))
    assert step.unseen_schools(train) != []
    expected = few["prior_math_score"].mean()
    assert expected != pytest.approx(one_school["prior_math_score"].mean())
    assert after["school_prior_avg_math"].tolist() == pytest.approx([expected] * 3)
    assert before["school_total_students"].iloc[0] == len(one_school)
