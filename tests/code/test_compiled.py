"""The compiled evaluators (training.compiled) against the fitted estimators they replace, and the
exactness that matters most: a record scored alone gets the same numbers as in any batch.

Small models are fitted here on the session's long district (LightGBM capped at a few hundred rounds,
a Keras-shaped MLP from random weights, so TensorFlow is not needed). Tolerances: LightGBM, the
spline basis, the isotonic map and the ensemble of exact members are compared bit for bit; linear
heads fitted on float64 within 1e-9. scikit-learn keeps float32 coefficients for the transform's
float32 matrix and computes those heads in float32 through BLAS, whose rounding depends on the batch
size (its own one-row and many-row numbers differ by ~1e-6): those are compared at float32 rounding,
like the MLP (whose numpy forward pass also varies with the batch size).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import SplineTransformer
from threadpoolctl import threadpool_limits

from serving.predictor import Champion, ModelInfo, Predictor, Served, columns_of
from training import compiled, keras_mlp
from training.data import DataConfig, Source, load_data, prepare
from training.families import FAMILIES, FeatureInfo, fit_family, fit_lgbm
from training.intervals import MISSING_BUCKETS, IntervalModel, bucket_of, count_missing, scale_design
from training.keras_mlp import KerasMLPRegressor
from training.model import AveragedRegressor, GrowthModel, SupportModel
from training.support import SUPPORT_FAMILIES, calibrate, fit_support

SEED = 7
ROUNDS = 300
TRAIN = slice(0, 2000)  # fit on the first 2,000 training pairs: enough for shapes, quick to fit
CHUNKS = (1, 2, 7, compiled.SINGLE_ROWS, compiled.SINGLE_ROWS + 1, 100, compiled.SMALL_THREADS + 3)
FLOAT32_RTOL, FLOAT32_ATOL = 1e-5, 1e-4  # float32 rounding of values of magnitude ~1..100


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def prepared(long_district: Path):
    return prepare(load_data(Source(config=long_district / "district.toml")), DataConfig("math"))


@pytest.fixture(scope="module")
def info(prepared) -> FeatureInfo:
    return FeatureInfo(tuple(prepared.transform.feature_names_))


def records(frame: pd.DataFrame) -> list[dict]:
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


@pytest.fixture(scope="module")
def edge_inputs(prepared) -> pd.DataFrame:
    """Test-part inputs plus edge cases: unseen schools, optional fields removed, priors far outside the
    training range, no target year, no prior score of the subject."""
    base = prepared.inputs("test").reset_index(drop=True)
    rng = np.random.default_rng(SEED)
    optional = [c for c in base.columns if c not in ("school_id", "grade", "prior_math_score")]
    unseen = base.head(300).assign(school_id="no such school")
    stripped = base.iloc[300:600].copy()
    for name in optional:
        drop = rng.random(len(stripped)) < 0.5
        stripped[name] = stripped[name].astype(object).where(~drop, None)
    extreme = base.iloc[600:900].copy()
    extreme["prior_math_score"] = rng.choice([-5000.0, 0.0, 5000.0, 1e6], size=len(extreme))
    extreme["commute_minutes"] = rng.choice([None, 0.0, 1e4], size=len(extreme))
    no_year = base.iloc[900:1000].drop(columns=["school_year"]).assign(school_year=None)
    no_prior = base.iloc[1000:1100].assign(prior_math_score=None)
    return pd.concat([base, unseen, stripped, extreme, no_year, no_prior], ignore_index=True)


@pytest.fixture(scope="module")
def rows(prepared, edge_inputs) -> np.ndarray:
    """A few thousand finite feature rows: the edge inputs' features and random rows up to 4 SD away."""
    features = prepared.transform.transform(edge_inputs)
    rng = np.random.default_rng(SEED + 1)
    noise = rng.normal(scale=4.0, size=(1500, features.shape[1])).astype(np.float32)
    picked = features[rng.integers(0, len(features), 1500)]
    random_rows = np.where(rng.random(noise.shape) < 0.5, noise, picked)
    out = np.ascontiguousarray(np.vstack([features, random_rows]).astype(np.float32))
    assert np.isfinite(out).all()
    return out


@pytest.fixture(scope="module")
def nan_rows(rows) -> np.ndarray:
    rng = np.random.default_rng(SEED + 2)
    return np.where(rng.random(rows.shape) < 0.05, np.float32(np.nan), rows)


@pytest.fixture(scope="module")
def lgbm(prepared, info):
    estimator = FAMILIES["lgbm"].build(
        {"learning_rate": 0.2, "num_leaves": 15, "min_child_samples": 20, "max_bin": 63}, SEED, info
    )
    estimator.set_params(n_estimators=ROUNDS, n_jobs=1)
    X, y = prepared.X, prepared.y_part
    return fit_lgbm(estimator, X["train"][TRAIN], y("train")[TRAIN], X["val"], y("val"), None)


def fit(prepared, info, name: str, params: dict, dtype=np.float32):
    """One family fitted on one thread (the machine's cores are shared with other test processes)."""
    X, y = prepared.X["train"][TRAIN].astype(dtype), prepared.y_part("train")[TRAIN]
    if name == "extratrees":
        return FAMILIES[name].build(params, SEED, info).set_params(n_jobs=1).fit(X, y)
    with threadpool_limits(1):
        return fit_family(FAMILIES[name], params, SEED, info, X, y, prepared.X["val"], prepared.y_part("val"))


@pytest.fixture(scope="module")
def linear(prepared, info):
    return fit(prepared, info, "linear", {"alpha": 1.0, "n_knots": 6, "degree": 3})


@pytest.fixture(scope="module")
def keras(prepared) -> KerasMLPRegressor | None:
    """A fitted-looking MLP (He-initialised weights, two ReLU layers) without TensorFlow; None when this
    checkout's KerasMLPRegressor predicts through TensorFlow instead of its numpy weights."""
    if not hasattr(keras_mlp, "dense_weights"):
        return None
    rng = np.random.default_rng(SEED + 3)
    sizes = [prepared.X["train"].shape[1], 48, 24, 1]
    model = KerasMLPRegressor(hidden_layers=2, units=48, seed=SEED)
    model.dense_ = [
        (
            (rng.normal(size=(a, b)) * np.sqrt(2 / a)).astype(np.float32),
            rng.normal(scale=0.1, size=b).astype(np.float32),
        )
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    model.y_mean_, model.y_std_, model.n_features_in_ = 12.5, 30.0, sizes[0]
    return model


@pytest.fixture(scope="module")
def labels(prepared) -> dict[str, np.ndarray]:
    cut = np.median(prepared.y_part("train"))
    out = {part: (prepared.y_part(part) < cut).astype(float) for part in ("train", "val", "cal")}
    out["train"] = out["train"][TRAIN]
    return out


def fit_classifier(prepared, info, labels, name: str, params: dict, dtype=np.float32):
    family = SUPPORT_FAMILIES[name]
    if name == "lgbm":
        family = type(family)(**{**family.__dict__, "build": _capped(family.build)})
    X = prepared.X["train"][TRAIN].astype(dtype)
    with threadpool_limits(1):
        return fit_support(family, params, SEED, info, X, labels["train"], prepared.X["val"], labels["val"])


def _capped(build):
    return lambda params, seed, info: build(params, seed, info).set_params(n_estimators=ROUNDS, n_jobs=1)


@pytest.fixture(scope="module")
def lgbm_classifier(prepared, info, labels):
    params = {"learning_rate": 0.1, "num_leaves": 15, "min_child_samples": 20, "max_bin": 63}
    return fit_classifier(prepared, info, labels, "lgbm", params)


@pytest.fixture(scope="module")
def logistic(prepared, info, labels):
    return fit_classifier(prepared, info, labels, "logistic", {"C": 0.5, "n_knots": 5})


def by_chunks(evaluate, X: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([evaluate(X[i : i + size]) for i in range(0, len(X), size)])


def assert_row_exact(evaluate, X: np.ndarray, one_by_one: int = 600) -> None:
    """The same numbers for every row whatever the batch it comes in (and in reverse order)."""
    whole = evaluate(X)
    for size in CHUNKS:
        part = X[:one_by_one] if size == 1 else X[:2000] if size < 100 else X
        assert np.array_equal(by_chunks(evaluate, part, size), whole[: len(part)], equal_nan=True), size
    assert np.array_equal(evaluate(X[::-1].copy())[::-1], whole, equal_nan=True)


# --------------------------------------------------------------------------- growth families
def test_lightgbm_is_bit_identical_to_its_predict_for_every_batch_size(lgbm, rows, nan_rows) -> None:
    evaluate = compiled.regressor(lgbm)
    for X in (rows, nan_rows):
        assert np.array_equal(evaluate(X), lgbm.predict(X))
        assert np.array_equal(evaluate(X[:5]), lgbm.predict(X[:5]))  # the single-row fast path
        assert_row_exact(evaluate, X)
    wide = rows.astype(np.float64)  # float64 input: its own fast configuration, the same numbers
    assert np.array_equal(evaluate(wide[:3]), lgbm.predict(wide[:3]))
    assert np.array_equal(evaluate(wide), lgbm.predict(wide))
    fewer = pickle.loads(pickle.dumps(lgbm))  # predict uses the first best_iteration trees when it is set
    fewer.booster_.best_iteration = lgbm.booster_.num_trees() // 2
    assert np.array_equal(compiled.regressor(fewer)(rows[:5]), fewer.predict(rows[:5]))
    assert np.array_equal(compiled.regressor(fewer)(rows), fewer.predict(rows))
    assert not np.array_equal(fewer.predict(rows), lgbm.predict(rows))


def test_compiled_forest_is_bit_identical_to_lightgbm_and_cached_once(lgbm, rows, nan_rows, tmp_path) -> None:
    """lleaves' native code (one block of trees, summed in LightGBM's order) gives LightGBM's numbers,
    for every batch size, NaNs, values exactly at split thresholds and a batch of 100,000 rows; the
    object file is written once and loaded after."""
    forest = compiled._CompiledForest.of(lgbm, cache=tmp_path)
    assert forest is not None
    splits = lgbm.booster_.trees_to_dataframe().dropna(subset=["threshold"]).head(600)
    column = {name: j for j, name in enumerate(lgbm.booster_.feature_name())}
    at_splits = rows[: len(splits)].astype(np.float64)  # each row has one feature exactly at a split
    at_splits[np.arange(len(splits)), splits["split_feature"].map(column).to_numpy()] = splits["threshold"]
    at_splits[::5, ::3] = 0.0
    for X in (rows, nan_rows, at_splits):
        assert np.array_equal(forest(X), lgbm.predict(X))
        assert_row_exact(forest, X)
    many = np.resize(rows, (100_000, rows.shape[1]))
    assert np.array_equal(forest(many), lgbm.predict(many))
    (written,) = tmp_path.glob("*.o")
    stamp = written.stat().st_mtime_ns
    again = compiled._CompiledForest.of(pickle.loads(pickle.dumps(lgbm)), cache=tmp_path)
    assert np.array_equal(again(nan_rows), lgbm.predict(nan_rows))
    assert [p.name for p in tmp_path.iterdir()] == [written.name]  # loaded, not compiled again
    assert written.stat().st_mtime_ns == stamp
    fewer = pickle.loads(pickle.dumps(lgbm))  # best_iteration set: only those trees, as predict does
    fewer.booster_.best_iteration = lgbm.booster_.num_trees() // 2
    assert np.array_equal(compiled._CompiledForest.of(fewer, cache=tmp_path)(rows), fewer.predict(rows))
    assert len(list(tmp_path.glob("*.o"))) == 2


def test_only_raw_score_regressors_are_compiled(lgbm_classifier, lgbm, rows, tmp_path) -> None:
    assert compiled._CompiledForest.of(lgbm_classifier, cache=tmp_path) is None  # a sigmoid after the trees
    poisson = lightgbm.LGBMRegressor(objective="poisson", n_estimators=5, verbose=-1, n_jobs=1)
    poisson.fit(rows[:500], np.abs(lgbm.predict(rows[:500])) + 1)
    assert compiled._CompiledForest.of(poisson, cache=tmp_path) is None  # exp() after the trees
    assert isinstance(compiled.regressor(poisson, forests=True), compiled._LightGBMRegressor)
    assert isinstance(compiled.regressor(lgbm), compiled._LightGBMRegressor)  # training: no compilation
    assert isinstance(compiled.regressor(lgbm, forests=True), compiled._CompiledForest)
    assert not list(tmp_path.glob("*.o"))


def test_a_forest_that_cannot_be_cached_is_compiled_in_memory(lgbm, rows, tmp_path) -> None:
    blocked = tmp_path / "a file, not a folder"
    blocked.write_text("")
    forest = compiled._CompiledForest.of(lgbm, cache=blocked / "forests")
    assert forest is not None and np.array_equal(forest(rows), lgbm.predict(rows))


def test_spline_basis_is_bit_identical_and_linear_within_rounding(prepared, info, linear, rows) -> None:
    evaluate = compiled.regressor(linear)
    splines = linear.steps[0][1]
    assert np.array_equal(evaluate.expansion(rows), splines.transform(rows))  # beyond the knots too
    np.testing.assert_allclose(evaluate(rows), linear.predict(rows), rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
    assert_row_exact(evaluate, rows)
    wide = fit(prepared, info, "linear", {"alpha": 1.0, "n_knots": 6, "degree": 3}, dtype=np.float64)
    X = rows.astype(np.float64)
    assert np.array_equal(compiled.regressor(wide).expansion(X), wide.steps[0][1].transform(X))
    assert np.abs(compiled.regressor(wide)(X) - wide.predict(X)).max() <= 1e-9


@pytest.mark.parametrize(
    ("degree", "extrapolation", "bias"),
    [(1, "constant", True), (2, "continue", False), (3, "periodic", True)],
)
def test_other_spline_settings(prepared, info, rows, degree: int, extrapolation: str, bias: bool) -> None:
    splines = SplineTransformer(n_knots=4, degree=degree, extrapolation=extrapolation, include_bias=bias)
    expand = ColumnTransformer([("s", splines, info.student_continuous)], remainder="passthrough")
    model = Pipeline([("splines", expand), ("ridge", Ridge(alpha=3.0))])
    model.fit(prepared.X["train"][TRAIN].astype(np.float64), prepared.y_part("train")[TRAIN])
    X = rows.astype(np.float64)
    evaluate = compiled.regressor(model)
    if extrapolation == "periodic":  # not compiled: the pipeline's own predict
        assert type(evaluate).__name__ == "_Plain"
        return
    expanded = model.steps[0][1].transform(X)
    assert np.array_equal(evaluate.expansion(X), expanded)
    # only the order of the dot product's additions differs: bounded by its terms' magnitude (the
    # "continue" polynomials grow large far outside the knots)
    terms = np.abs(expanded) @ np.abs(model.steps[-1][1].coef_) + abs(model.steps[-1][1].intercept_)
    assert (np.abs(evaluate(X) - model.predict(X)) <= 1e-13 * terms + 1e-12).all()


def test_linear_raises_on_nan_like_scikit_learn(linear, nan_rows) -> None:
    with pytest.raises(ValueError, match="NaN"):
        compiled.regressor(linear)(nan_rows[:50])


def test_keras_evaluator_is_row_exact_and_within_float32_of_its_predict(keras, rows) -> None:
    if keras is None:
        pytest.skip("KerasMLPRegressor has no numpy forward pass in this checkout")
    evaluate = compiled.regressor(keras)
    assert type(evaluate).__name__ == "_Keras"
    np.testing.assert_allclose(evaluate(rows), keras.predict(rows), rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
    assert_row_exact(evaluate, rows)


def ensemble_of(lgbm, linear, keras) -> AveragedRegressor:
    if keras is None:
        return AveragedRegressor([lgbm, linear], [0.6, 0.4], ["lgbm", "linear"])
    return AveragedRegressor([lgbm, linear, keras], [0.5, 0.3, 0.2], ["lgbm", "linear", "keras"])


@pytest.mark.slow
def test_ensemble_and_fallbacks(prepared, info, lgbm, linear, keras, rows) -> None:
    ensemble = ensemble_of(lgbm, linear, keras)
    evaluate = compiled.regressor(ensemble)
    np.testing.assert_allclose(evaluate(rows), ensemble.predict(rows), rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)
    assert_row_exact(evaluate, rows)
    pair = AveragedRegressor([lgbm, lgbm], [0.25, 0.75], ["lgbm", "lgbm"])
    assert np.array_equal(compiled.regressor(pair)(rows), pair.predict(rows))

    hgb = fit(prepared, info, "hgb", {"learning_rate": 0.1, "max_leaf_nodes": 15, "min_samples_leaf": 20,
                                      "l2_regularization": 0.1, "max_features": 1.0, "max_iter": 30})
    evaluate = compiled.regressor(hgb)
    assert type(evaluate).__name__ == "_Plain"  # the generic fallback: the estimator's own predict
    assert np.array_equal(evaluate(rows), hgb.predict(rows))
    with threadpool_limits(1):  # scikit-learn's OpenMP start-up per tree dominates small calls
        assert_row_exact(evaluate, rows[:400], one_by_one=40)

    trees = fit(prepared, info, "extratrees", {"n_estimators": 20, "min_samples_leaf": 20,
                                               "max_features": 0.5, "max_samples": 0.5})
    evaluate = compiled.regressor(trees)
    assert np.abs(evaluate(rows) - trees.predict(rows)).max() <= 1e-9
    assert_row_exact(evaluate, rows[:600], one_by_one=100)


# --------------------------------------------------------------------------- support classifiers
def test_lightgbm_classifier_is_bit_identical(lgbm_classifier, rows, nan_rows) -> None:
    evaluate = compiled.classifier(lgbm_classifier)
    for X in (rows, nan_rows):
        assert np.array_equal(evaluate(X), lgbm_classifier.predict_proba(X))
        assert np.array_equal(evaluate(X[:3]), lgbm_classifier.predict_proba(X[:3]))
        assert_row_exact(evaluate, X)


def test_logistic_on_splines(prepared, info, labels, logistic, rows) -> None:
    evaluate = compiled.classifier(logistic)
    np.testing.assert_allclose(evaluate(rows), logistic.predict_proba(rows), rtol=0, atol=1e-6)
    assert_row_exact(evaluate, rows)
    wide = fit_classifier(prepared, info, labels, "logistic", {"C": 0.5, "n_knots": 5}, dtype=np.float64)
    X = rows.astype(np.float64)
    assert np.abs(compiled.classifier(wide)(X) - wide.predict_proba(X)).max() <= 1e-9


@pytest.mark.parametrize("which", ["lgbm", "logistic"])
def test_calibrated_classifier(prepared, labels, lgbm_classifier, logistic, rows, which: str) -> None:
    base = {"lgbm": lgbm_classifier, "logistic": logistic}[which]
    calibrated = calibrate(base, prepared.X["cal"], labels["cal"])
    raw = base.predict_proba(rows)[:, 1]
    assert np.array_equal(compiled.isotonic(calibrated.calibrator)(raw), calibrated.calibrator.predict(raw))
    wide = raw.astype(np.float64)
    assert np.array_equal(compiled.isotonic(calibrated.calibrator)(wide), calibrated.calibrator.predict(wide))
    # the compiled classifier's raw probabilities (equal to scikit-learn's for LightGBM, within float32
    # rounding for the float32 logistic head), then scikit-learn's own calibration map: exactly
    compiled_raw = compiled.classifier(base)(rows)[:, 1]
    if which == "lgbm":
        assert np.array_equal(compiled_raw, raw)
    expected = np.clip(calibrated.calibrator.predict(compiled_raw), 1e-6, 1 - 1e-6)
    assert np.array_equal(calibrated.predict_proba(rows)[:, 1], expected)
    assert_row_exact(calibrated.predict_proba, rows)
    assert compiled.CACHE not in pickle.loads(pickle.dumps(calibrated)).__dict__


# --------------------------------------------------------------------------- intervals and missing fields
def test_count_missing_matches_pandas(edge_inputs) -> None:
    optional = [*edge_inputs.columns[3:], "not_a_column"]

    def reference(X) -> np.ndarray:
        n = len(X) if isinstance(X, pd.DataFrame) else len(next(iter(X.values())))
        total = np.zeros(n, dtype=np.int64)
        for name in optional:
            if name not in X:
                total += 1
            else:
                total += pd.isna(pd.Series(np.asarray(X[name], dtype=object))).to_numpy()
        return total

    as_records = records(edge_inputs)
    columns = columns_of(as_records, list(edge_inputs.columns))
    assert np.array_equal(count_missing(edge_inputs, optional), reference(edge_inputs))
    assert np.array_equal(count_missing(columns, optional), reference(columns))
    singles = np.concatenate([count_missing(columns_of([r], list(edge_inputs.columns)), optional)
                              for r in as_records[:400]])
    assert np.array_equal(singles, reference(columns)[:400])
    odd = {"a": np.array([None, np.nan, pd.NA, pd.NaT, "x", 0, np.float32("nan"), np.datetime64("NaT")],
                         dtype=object)}
    assert count_missing(odd, ["a"]).tolist() == [1, 1, 1, 1, 0, 0, 1, 1]


def test_bucket_of_matches_the_band_loop() -> None:
    n_missing = np.array([*range(-3, 40), 10**6, 10**6 + 1, 2**40], dtype=np.int64)
    unseen = np.arange(len(n_missing)) % 3 == 0
    band = np.zeros(len(n_missing), dtype=np.int64)
    for i, (lo, hi) in enumerate(MISSING_BUCKETS):  # the definition: the last band containing the count
        band[(n_missing >= lo) & (n_missing <= hi)] = i
    assert np.array_equal(bucket_of(n_missing, unseen), band * 2 + unseen)


# --------------------------------------------------------------------------- the served path
@pytest.fixture(scope="module")
def predictor(prepared, labels, lgbm, linear, keras, lgbm_classifier, logistic) -> Predictor:
    """Two subjects: math an lgbm + linear + MLP ensemble with logistic support, "reading" (fitted on the
    same rows: only the numbers' exactness matters here) LightGBM with LightGBM support; the support
    transform of reading is an unpickled copy (equal state, not the same object)."""
    transform = prepared.transform
    features = prepared.X["cal"]
    optional = tuple(c for c in prepared.input_columns if c not in ("school_id", "grade", "school_year",
                                                                   "prior_math_score"))
    cal = prepared.inputs("cal")
    design = scale_design(features, count_missing(cal, optional), transform.unseen_school(cal))
    scale = lightgbm.LGBMRegressor(objective="l1", n_estimators=150, num_leaves=15, n_jobs=1, verbose=-1)
    scale.fit(design, np.abs(prepared.y_part("cal") - lgbm.predict(features)))
    interval = IntervalModel(0.9, optional, scale, np.linspace(1.2, 2.0, 8), np.full(8, 100))
    columns = tuple(prepared.input_columns)

    def growth(subject: str, estimator) -> Champion:
        model = GrowthModel(subject, "x", transform, estimator, interval, columns,
                            ("school_id", "grade", f"prior_{subject}_score"))
        return Champion(ModelInfo(subject, "growth", subject, "1", None, "x"), model)

    def support(subject: str, base, own_transform) -> Champion:
        model = SupportModel(subject, "x", own_transform, calibrate(base, features, labels["cal"]), columns)
        return Champion(ModelInfo(subject, "support", subject, "1", None, "x"), model)

    ensemble = ensemble_of(lgbm, linear, keras)
    return Predictor(
        Served(
            {"math": growth("math", ensemble), "reading": growth("reading", lgbm)},
            {
                "math": support("math", logistic, transform),
                "reading": support("reading", lgbm_classifier, pickle.loads(pickle.dumps(transform))),
            },
        )
    )


def test_compiled_forests_change_no_served_number(predictor, edge_inputs) -> None:
    """The predictor compiles its LightGBM regressors (point, ensemble member, interval scale);
    LightGBM's own predictor gives every number the same."""
    assert isinstance(predictor.served.growth["reading"].model.__dict__[compiled.CACHE]["estimator"][1],
                      compiled._CompiledForest)
    plain = Predictor(pickle.loads(pickle.dumps(predictor.served)), compile_forests=False)
    columns = columns_of(records(edge_inputs), list(edge_inputs.columns))
    n = len(edge_inputs)
    fast, slow = predictor.predict_columns(columns, n), plain.predict_columns(columns, n)
    for subject in fast:
        for key in fast[subject]:
            assert np.array_equal(fast[subject][key], slow[subject][key], equal_nan=True), (subject, key)


def test_records_one_at_a_time_equal_any_batch_and_the_frame(predictor, edge_inputs) -> None:
    assert predictor.shared_features == {"math": True, "reading": True}
    picks = np.random.default_rng(SEED + 4).permutation(len(edge_inputs))[:1000]
    frame = edge_inputs.iloc[picks].reset_index(drop=True)
    as_records = records(frame)
    batch = predictor.predict(as_records)
    scored = predictor.predict_frame(frame)
    singles = [predictor.predict([r]) for r in as_records[:300]]
    for i, single in enumerate(singles):
        assert single["predictions"][0] == batch["predictions"][i]
    assert any(s["predictions"][0]["math"] is None for s in singles)
    for subject in ("math", "reading"):
        entries = [s["predictions"][0][subject] for s in singles]

        def column(key, entries=entries):
            return np.array([np.nan if e is None else e[key] for e in entries], dtype=float)

        expected = {
            "predicted_growth": column("predicted_growth"),
            "predicted_score": column("predicted_score"),
            "needs_support_probability": column("needs_support_probability"),
            "growth_low": np.array([np.nan if e is None else e["growth_interval"][0] for e in entries]),
            "growth_high": np.array([np.nan if e is None else e["growth_interval"][1] for e in entries]),
        }
        for key, values in expected.items():
            assert np.array_equal(scored[f"{subject}_{key}"].to_numpy()[:300], values, equal_nan=True), key
    warned = [w for s in singles for w in s["warnings"]]
    assert any("unknown to the model" in w for w in warned)
    assert any("no prior_math_score" in w for w in warned)


def test_requests_scored_together_equal_each_scored_alone(predictor, edge_inputs) -> None:
    """The service's coalescing (serving.coalesce): several requests in one call, each answer equal to
    scoring that request alone, warnings (unseen schools, missing priors) included."""
    picks = np.random.default_rng(SEED + 5).permutation(len(edge_inputs))[:400]
    rows = records(edge_inputs.iloc[picks].reset_index(drop=True))
    sizes = [1, 3, 1, 40, 7, 1, 90, 2, 255]  # both sides of the per-element threshold, alone and merged
    requests, start = [], 0
    for size in sizes:
        requests.append(rows[start : start + size])
        start += size
    together = predictor.predict_many(requests)
    alone = [predictor.predict(request) for request in requests]
    assert together == alone
    assert any(answer["warnings"] for answer in alone)


def test_a_support_model_with_its_own_transform_uses_it(predictor, edge_inputs) -> None:
    growth, support = predictor.served.growth["reading"], predictor.served.support["reading"]
    other = pickle.loads(pickle.dumps(support.model))
    other.transform.mean_ = other.transform.mean_ + 0.25  # a different fit
    alone = Predictor(Served({"reading": growth}, {"reading": Champion(support.info, other)}))
    assert alone.shared_features == {"reading": False}
    columns = columns_of(records(edge_inputs.head(50)), alone.columns)
    got = alone.predict_columns(columns, 50)["reading"]["needs_support"]
    assert np.array_equal(got, other.predict_proba(columns)[:, 1])


def test_models_keep_their_evaluators_out_of_pickles(predictor, edge_inputs) -> None:
    model = predictor.served.growth["math"].model
    columns = columns_of(records(edge_inputs.head(20)), predictor.columns)
    before = model.predict_interval(columns)
    assert compiled.CACHE in model.__dict__ and compiled.CACHE in model.interval.__dict__
    copy = pickle.loads(pickle.dumps(model))
    assert compiled.CACHE not in copy.__dict__ and compiled.CACHE not in copy.interval.__dict__
    after = copy.predict_interval(columns)
    for key in before:
        assert np.array_equal(before[key], after[key])
    features = model.features(columns)
    sigma = model.interval.sigma(features, before["n_missing"], before["unseen"])
    design = scale_design(features, before["n_missing"], before["unseen"])
    assert np.array_equal(sigma, np.maximum(model.interval.scale.predict(design), 1e-6))
