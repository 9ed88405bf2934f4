"""Fast evaluators of fitted estimators, exact for every batch size, so a single HTTP record and a
100,000-row batch get the same numbers from the same code.

scikit-learn's and LightGBM's ``predict`` spend milliseconds per call on validation and set-up
before a single record is scored. Serving instead evaluates the fitted state directly:

- LightGBM (``LGBMRegressor``, binary ``LGBMClassifier``, the interval scale model): the booster's
  own C predictor, through its single-row fast path for up to ``SINGLE_ROWS`` rows and
  ``LGBM_BoosterPredictForMat`` above. Both run the same per-row C++ function (trees summed in
  order in double precision), so the two branches are bit-identical to each other and to
  ``booster.predict`` (checked in ``tests/code/test_compiled.py``).
- LightGBM regressors in serving and batch scoring (``regressor(..., forests=True)``): the same trees
  compiled to native code by lleaves (LLVM), one function over every tree so each row's tree outputs
  are summed in LightGBM's own order from 0.0: bit-identical to ``booster.predict`` (checked in
  ``tests/code/test_compiled.py``); on a 918-tree model 17 against 51 ms per 1,000 rows and 23 against
  35 us for one row (LightGBM's single-row fast path; docs/serving.md). Compiled once per model and
  CPU into ``Settings.forest_cache``; where lleaves cannot compile a model, LightGBM's predictor.
- Ridge / logistic regression on B-splines (``Pipeline(ColumnTransformer(SplineTransformer, ...),
  linear head)``): the Cox-de Boor recursion of ``scipy.interpolate.BSpline`` written out in numpy
  with the same operations, the same boundary rules (``extrapolation="constant"`` or
  ``"continue"``) and the same rounding to the input's dtype, so the basis equals scikit-learn's;
  then the head's dot product in float64, as an element-wise product and a row-wise sum. Every
  operation is element-wise or reduces one row, so a row's numbers cannot depend on the other rows.
  Heads fitted on float64 come within 1e-12 of scikit-learn. Fitted on the transform's float32
  matrix, scikit-learn keeps float32 coefficients and computes the head in float32 through BLAS,
  whose rounding depends on the batch size (~1e-6 between one row and many): here the same
  coefficients are applied in float64.
- The Keras MLP: ``KerasMLPRegressor``'s own numpy forward pass (``training.keras_mlp.dense_forward``),
  which processes rows in zero-padded blocks of ``BLOCK`` rows so every matrix product has the same
  shape whatever the batch size (a BLAS product's rounding depends on its shape). Within float32
  rounding of Keras' own forward pass.
- An ensemble (``AveragedRegressor``): its members' evaluators, averaged as it does.
- ExtraTrees: the trees summed in a fixed order (scikit-learn sums them in thread completion order).
- The isotonic calibration map: ``interp1d``'s arithmetic on the fitted thresholds (bit-identical
  to ``IsotonicRegression.predict``).
- Anything else (``HistGradientBoostingRegressor``, whose predict sums its trees per row in a fixed
  order, ...): the estimator's own ``predict``, for every batch size alike.

Evaluators are built lazily from the fitted objects and cached on the model object that owns them
(``cached``); the cache is dropped when the object is pickled (``without_cache``), so saved models
stay the plain fitted objects and models saved before this module existed load and run unchanged.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

CACHE = "_compiled"
SINGLE_ROWS = 16  # LightGBM: up to this many rows one at a time through the single-row fast path
SMALL_THREADS = 256  # LightGBM: below this many rows, one thread (no OpenMP start-up)
SMALL_BATCH = 256  # up to this many rows: per-element missing-value tests, spline intervals by comparison
CHUNK_ROWS = 4096  # row-wise evaluators take large batches in blocks of this size (a multiple of
# training.keras_mlp.BLOCK, the rows per matrix product of the Keras forward pass)

Evaluator = Callable[[np.ndarray], np.ndarray]


# ---------------------------------------------------------------- cache on the owning model object
def cached(owner: Any, key: str, source: Any, build: Callable[[], Any]) -> Any:
    """``build()``'s result for ``owner``, built once and rebuilt when ``source`` (the fitted object it
    was built from) is replaced. Kept in ``owner.__dict__`` (works for frozen dataclasses too);
    owners drop it when pickled (``without_cache``)."""
    store = owner.__dict__.get(CACHE)
    if store is None:
        store = owner.__dict__[CACHE] = {}
    hit = store.get(key)
    if hit is not None and hit[0] is source:
        return hit[1]
    value = build()
    store[key] = (source, value)
    return value


def store(owner: Any, key: str, source: Any, value: Any) -> None:
    """Put an evaluator built another way (``regressor(..., forests=True)``) where ``cached`` finds it."""
    owner.__dict__.setdefault(CACHE, {})[key] = (source, value)


def without_cache(state: dict) -> dict:
    """A pickling state without the evaluators (they hold C handles and are rebuilt on use)."""
    if CACHE not in state:
        return state
    state = dict(state)
    del state[CACHE]
    return state


# ---------------------------------------------------------------- missing values
def isna(values: Any) -> np.ndarray:
    """``pd.isna(pd.Series(np.asarray(values, dtype=object))).to_numpy()`` without building a Series
    (the same test: None, NaN, NaT, pd.NA and a Decimal NaN are missing)."""
    dtype = getattr(values, "dtype", None)
    if isinstance(dtype, np.dtype):
        if dtype.kind == "f":
            return np.isnan(np.asarray(values))
        if dtype.kind in "iub":
            return np.zeros(len(values), dtype=bool)
    array = np.asarray(values, dtype=object)
    if array.ndim == 1 and len(array) <= SMALL_BATCH:
        return np.array([is_missing(v) for v in array], dtype=bool).reshape(len(array))
    return np.asarray(pd.isna(array), dtype=bool)


def is_missing(value: Any) -> bool:
    """pandas' per-element test (``pandas._libs.missing.checknull``), with the common types first."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    kind = type(value)
    if kind is str or kind is int or kind is bool:
        return False
    return bool(_checknull(value))


def _checknull(value: Any) -> bool:
    from pandas._libs.missing import checknull

    return checknull(value)


# ---------------------------------------------------------------- fitted-state comparison
def same_state(a: Any, b: Any) -> bool:
    """Whether two fitted objects (e.g. two unpickled copies of one transform) hold equal state."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
        )
    if isinstance(a, (pd.DataFrame, pd.Series, pd.Index)):
        if isinstance(a, pd.DataFrame) and not a.dtypes.equals(b.dtypes):
            return False
        return bool(a.equals(b)) and (isinstance(a, pd.Index) or a.index.equals(b.index))
    if isinstance(a, Mapping):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a == b or (a != a and b != b)
    if isinstance(a, (str, bytes, int, bool, type(None), set, frozenset, np.generic)):
        return bool(a == b)
    if hasattr(a, "__dict__"):
        return same_state(vars(a), vars(b))
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - anything we cannot compare is "not the same"
        return False


def _by_rows(evaluate: Evaluator, X: np.ndarray, size: int) -> np.ndarray:
    """``evaluate`` on consecutive blocks of ``size`` rows (row-wise evaluators only: same numbers,
    intermediates that stay in cache and bounded memory for large batches)."""
    if len(X) <= size:
        return evaluate(X)
    return np.concatenate([evaluate(X[start : start + size]) for start in range(0, len(X), size)])


# ---------------------------------------------------------------- public entry points
def regressor(estimator: Any, forests: bool = False) -> Evaluator:
    """features -> float64 predictions, as ``np.asarray(estimator.predict(features), dtype=float)``.

    ``forests``: LightGBM regressors as compiled native code (serving and batch scoring, which score
    many rows with one model; the numbers are the same, the compilation costs seconds once per model)."""
    build = _regressor_builder(estimator, forests)
    if build is not None:
        evaluator = build(estimator)
        if evaluator is not None:
            return evaluator
    return _Plain(estimator)


def classifier(estimator: Any) -> Evaluator:
    """features -> (n, 2) class probabilities, as ``estimator.predict_proba(features)``."""
    evaluator = None
    if _is_lightgbm(estimator) and _lgbm_binary(estimator):
        evaluator = _LightGBMProba(_LightGBM(estimator.booster_), estimator)
    elif _is_pipeline(estimator):
        evaluator = _spline_linear(estimator, proba=True)
    return evaluator if evaluator is not None else _PlainProba(estimator)


def isotonic(calibrator: Any) -> Evaluator:
    """raw scores -> ``calibrator.predict(raw)`` (scikit-learn's IsotonicRegression)."""
    if (
        getattr(calibrator, "out_of_bounds", None) == "clip"
        and hasattr(calibrator, "X_thresholds_")
        and np.asarray(calibrator.X_thresholds_).ndim == 1
    ):
        return _Isotonic(calibrator)
    return calibrator.predict


def _regressor_builder(estimator: Any, forests: bool) -> Callable[[Any], Evaluator | None] | None:
    if _is_lightgbm(estimator):
        if forests:
            return lambda e: _CompiledForest.of(e) or _lightgbm_regressor(e)
        return _lightgbm_regressor
    if hasattr(estimator, "dense_") and hasattr(estimator, "y_std_"):
        return _Keras.of
    if type(estimator).__name__ == "AveragedRegressor":
        return lambda e: _Averaged([regressor(m, forests) for m in e.estimators], list(e.weights))
    if type(estimator).__name__ == "ExtraTreesRegressor" and getattr(estimator, "n_outputs_", 1) == 1:
        return _Forest
    if _is_pipeline(estimator):
        return lambda e: _spline_linear(e, proba=False)
    return None


class _Plain:
    """The estimator's own predict (used for every batch size alike)."""

    def __init__(self, estimator: Any):
        self.estimator = estimator

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(X), dtype=float)


class _PlainProba:
    def __init__(self, estimator: Any):
        self.estimator = estimator

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return self.estimator.predict_proba(X)


# ---------------------------------------------------------------- LightGBM
_DTYPE_FLOAT32, _DTYPE_FLOAT64 = 0, 1
_PREDICT_NORMAL = 0
_ROW_MAJOR = 1
_FUNCTIONS: dict[str, Any] = {}


def _is_lightgbm(estimator: Any) -> bool:
    return (
        type(estimator).__module__.startswith("lightgbm")
        and hasattr(estimator, "booster_")
        and hasattr(estimator.booster_, "_handle")
    )


def _lgbm_single_output(estimator: Any) -> bool:
    return not callable(getattr(estimator, "_objective", None)) and (
        estimator.booster_.num_model_per_iteration() == 1
    )


def _lgbm_binary(estimator: Any) -> bool:
    return _lgbm_single_output(estimator) and len(getattr(estimator, "classes_", ())) == 2


def _c_functions() -> dict[str, Any]:
    """Prototypes of the LightGBM C functions used here (private objects: ``_LIB`` itself is untouched)."""
    if not _FUNCTIONS:
        from lightgbm.basic import _LIB

        c_int, c_void_p, c_int64 = ctypes.c_int, ctypes.c_void_p, ctypes.c_int64
        p_int64 = ctypes.POINTER(c_int64)
        prototypes = {
            "LGBM_BoosterPredictForMatSingleRowFastInit": (
                c_void_p,
                c_int,
                c_int,
                c_int,
                c_int,
                ctypes.c_int32,
                ctypes.c_char_p,
                ctypes.POINTER(c_void_p),
            ),
            "LGBM_BoosterPredictForMatSingleRowFast": (c_void_p, c_void_p, p_int64, c_void_p),
            "LGBM_BoosterPredictForMat": (
                c_void_p,
                c_void_p,
                c_int,
                ctypes.c_int32,
                ctypes.c_int32,
                c_int,
                c_int,
                c_int,
                c_int,
                ctypes.c_char_p,
                p_int64,
                c_void_p,
            ),
            "LGBM_FastConfigFree": (c_void_p,),
        }
        for name, argtypes in prototypes.items():
            _FUNCTIONS[name] = ctypes.CFUNCTYPE(c_int, *argtypes)((name, _LIB))
    return _FUNCTIONS


def _check(code: int) -> None:
    if code != 0:
        from lightgbm.basic import _LIB, LightGBMError

        raise LightGBMError(_LIB.LGBM_GetLastError().decode("utf-8"))


class _LightGBM:
    """Raw-to-output predictions of a booster (``predict_type`` normal: what ``Booster.predict`` returns),
    for the iterations ``Booster.predict`` uses by default (``best_iteration``)."""

    def __init__(self, booster: Any):
        self.booster = booster  # keeps the C handle alive
        self.num_iteration = int(booster.best_iteration)
        self.n_features = int(booster.num_feature())
        self._fast: dict[int, ctypes.c_void_p] = {}
        self._lock = threading.Lock()
        self._c = _c_functions()

    def _fast_config(self, dtype: int) -> ctypes.c_void_p:
        config = self._fast.get(dtype)
        if config is None:
            with self._lock:
                config = self._fast.get(dtype)
                if config is None:
                    config = ctypes.c_void_p()
                    _check(
                        self._c["LGBM_BoosterPredictForMatSingleRowFastInit"](
                            self.booster._handle,
                            _PREDICT_NORMAL,
                            0,
                            self.num_iteration,
                            dtype,
                            self.n_features,
                            b"",
                            ctypes.byref(config),
                        )
                    )
                    self._fast[dtype] = config
        return config

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.dtype not in (np.float32, np.float64):  # as lightgbm.basic._np2d_to_np1d
            X = X.astype(np.float32)
        X = np.ascontiguousarray(X)
        n = len(X)
        dtype = _DTYPE_FLOAT32 if X.dtype == np.float32 else _DTYPE_FLOAT64
        out = np.empty(n, dtype=np.float64)
        written = ctypes.c_int64(0)
        if n <= SINGLE_ROWS:
            config = self._fast_config(dtype)
            predict = self._c["LGBM_BoosterPredictForMatSingleRowFast"]
            data, step, result, count = X.ctypes.data, X.strides[0], out.ctypes.data, ctypes.byref(written)
            with self._lock:  # a FastConfig holds one row buffer: one caller at a time
                for i in range(n):
                    _check(predict(config, data + i * step, count, result + 8 * i))
            return out
        threads = 1 if n < SMALL_THREADS else 0  # 0: OpenMP's default
        _check(
            self._c["LGBM_BoosterPredictForMat"](
                self.booster._handle,
                X.ctypes.data,
                dtype,
                n,
                X.shape[1],
                _ROW_MAJOR,
                _PREDICT_NORMAL,
                0,
                self.num_iteration,
                f"num_threads={threads}".encode(),
                ctypes.byref(written),
                out.ctypes.data,
            )
        )
        if written.value != n:
            raise ValueError("LightGBM wrote an unexpected number of predictions")
        return out

    def __del__(self) -> None:
        try:
            for config in self._fast.values():
                self._c["LGBM_FastConfigFree"](config)
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass


def _lightgbm_regressor(estimator: Any) -> Evaluator | None:
    return _LightGBMRegressor(estimator) if _lgbm_single_output(estimator) else None


class _LightGBMRegressor:
    def __init__(self, estimator: Any):
        self.estimator = estimator
        self.booster = _LightGBM(estimator.booster_)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if np.ndim(X) != 2 or np.shape(X)[1] != self.booster.n_features:
            return np.asarray(self.estimator.predict(X), dtype=float)  # its own error message
        return self.booster(X)


class _LightGBMProba:
    def __init__(self, booster: _LightGBM, estimator: Any):
        self.booster = booster
        self.estimator = estimator

    def __call__(self, X: np.ndarray) -> np.ndarray:
        if np.ndim(X) != 2 or np.shape(X)[1] != self.booster.n_features:
            return self.estimator.predict_proba(X)
        p = self.booster(X)
        return np.vstack((1.0 - p, p)).transpose()  # as LGBMClassifier.predict_proba


# ---------------------------------------------------------------- LightGBM trees as native code
# Objectives whose prediction is the raw score (no link function applied after the trees).
IDENTITY_OBJECTIVES = frozenset({"regression", "regression_l1", "huber", "fair", "quantile", "mape"})
# lleaves' compile options besides fblocksize (every tree in one block); they are part of the cache key.
FOREST_OPTIONS = {"finline": False, "raw_score": True, "fcodemodel": "large", "use_fp64": True}


def _forest_text(estimator: Any) -> str | None:
    """The model text of the trees ``Booster.predict`` uses (best iteration), or None when the model is
    not a single-output regressor whose prediction is its raw score."""
    if not _is_lightgbm(estimator) or not _lgbm_single_output(estimator) or hasattr(estimator, "classes_"):
        return None
    booster = estimator.booster_
    text = booster.model_to_string()  # default num_iteration: the best iteration, as predict uses
    for line in text.splitlines():
        if line.startswith("objective="):
            words = line.removeprefix("objective=").split()
            return text if words and words[0] in IDENTITY_OBJECTIVES and "sqrt" not in words else None
    return None


class _CompiledForest:
    """A LightGBM regressor's trees as one native function (lleaves), in a row-wise loop.

    Compiled without cache blocking (``fblocksize`` = every tree), so each row's sum runs over the
    trees in order from 0.0 in double precision, as LightGBM's ``PredictRaw`` does; the splits are the
    model text's thresholds (printed with 17 digits: the same doubles) and its missing-value rules.
    Tree functions are not inlined (compiling a 1,000-tree model takes seconds instead of a minute).
    The object file is cached per model text, lleaves/llvmlite version and CPU (``forest_cache``),
    written to a temporary name and renamed, so concurrent workers never read half a file.
    """

    def __init__(self, estimator: Any, entry: Callable[..., None], n_features: int, engine: Any):
        self.estimator = estimator
        self.n_features = n_features
        self._entry = entry
        self._engine = engine  # keeps the compiled code alive

    @classmethod
    def of(cls, estimator: Any, cache: Path | None = None) -> _CompiledForest | None:
        text = _forest_text(estimator)
        if text is None:
            return None
        try:
            entry, engine = _compile_forest(text, cache)
        except Exception as err:  # noqa: BLE001 - LightGBM's own predictor gives the same numbers
            log.warning(
                "LightGBM model not compiled (%s: %s); LightGBM's predictor used", type(err).__name__, err
            )
            return None
        return cls(estimator, entry, int(estimator.booster_.num_feature()), engine)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            return np.asarray(self.estimator.predict(X), dtype=float)  # its own error message
        data = np.ascontiguousarray(X, dtype=np.float64)
        n = len(data)
        out = np.zeros(n, dtype=np.float64)
        # One thread, releasing the GIL while it runs: batch scoring runs its chunks in a thread per
        # core (serving.batch.score_frame), each worker of the server serves its own requests.
        self._entry(data.ctypes.data, out.ctypes.data, 0, n)  # addresses: the entry takes void pointers
        return out


# The compiled root function: void forest_root(double *data, double *out, int32 start, int32 stop),
# called with plain addresses (lleaves' own prototype takes ctypes pointers, ~3 us each to build).
_ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)


def _forest_key(text: str) -> str:
    from importlib.metadata import version

    import llvmlite.binding as llvm

    llvm.initialize()
    llvm.initialize_native_target()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        features = ""
    options = repr(sorted(FOREST_OPTIONS.items()))
    salt = "|".join((version("lleaves"), version("llvmlite"), llvm.get_host_cpu_name(), features, options))
    return hashlib.sha256(f"{salt}\n{text}".encode()).hexdigest()[:32]


def _compile_forest(text: str, cache: Path | None) -> tuple[Callable[..., None], Any]:
    """The compiled entry point ``f(data, out, start, stop)`` and the engine that owns it."""
    import tempfile

    import lleaves

    if cache is None:
        from features.settings import get_settings

        cache = get_settings().forest_cache
    key = _forest_key(text)
    with tempfile.TemporaryDirectory() as scratch:
        model_file = Path(scratch) / "model.txt"
        model_file.write_text(text)
        model = lleaves.Model(model_file=str(model_file))
        options = {"fblocksize": max(model.num_trees(), 1), **FOREST_OPTIONS}
        target = _cache_file(cache, key)
        if target is None:  # no writable cache: compile in memory
            model.compile(**options)
        elif target.exists():
            model.compile(cache=str(target), **options)
        else:
            partial = Path(scratch) / "forest.o"
            model.compile(cache=str(partial), **options)
            _publish(partial, target)
    engine = model._execution_engine
    return _ENTRY(engine.get_function_address("forest_root")), engine


def _cache_file(cache: Path, key: str) -> Path | None:
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        log.warning("forest cache %s not writable (%s): compiling in memory", cache, err)
        return None
    return cache / f"{key}.o"


def _publish(partial: Path, target: Path) -> None:
    """Move a finished object file into the cache under its final name (atomic on one file system)."""
    if not partial.exists():
        return
    staged = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        staged.write_bytes(partial.read_bytes())
        os.replace(staged, target)
    except OSError as err:
        log.warning("compiled forest not cached in %s: %s", target.parent, err)
        staged.unlink(missing_ok=True)


# ---------------------------------------------------------------- splines + linear head
def _is_pipeline(estimator: Any) -> bool:
    return type(estimator).__name__ == "Pipeline" and hasattr(estimator, "steps")


class _SplineBasis:
    """``SplineTransformer.transform`` (dense output) for the columns it was fitted on."""

    def __init__(self, spline: Any):
        self.spline = spline
        self.degree = int(spline.degree)
        self.extrapolate = spline.extrapolation == "continue"
        splines = spline.bsplines_
        self.knots = np.ascontiguousarray(np.stack([np.asarray(s.t, dtype=np.float64) for s in splines]))
        self.n_splines = int(splines[0].c.shape[1])
        self.n_features = len(splines)
        k = self.degree
        self.last = self.knots.shape[1] - k - 2  # highest interval index (scipy's n - 1)
        self.xmin = self.knots[:, k]
        self.xmax = self.knots[:, -k - 1]
        if not self.extrapolate:
            self.f_min = np.stack([s(x) for s, x in zip(splines, self.xmin, strict=True)])
            self.f_max = np.stack([s(x) for s, x in zip(splines, self.xmax, strict=True)])
        self.flat_knots = self.knots.ravel()
        self.rows_of_knots = np.arange(self.n_features) * self.knots.shape[1]
        self.offsets = np.arange(1 - k, k + 1)
        self.first_column = np.arange(self.n_features) * self.n_splines - k  # + l: column of B_{l-k}
        self.nonzero = np.arange(k + 1)  # the k + 1 splines not zero at x: B_{l-k} .. B_l
        self.repeated = bool((np.diff(self.knots, axis=1) <= 0).any())
        keep = np.ones(self.n_splines * self.n_features, dtype=bool)
        if not spline.include_bias:
            keep[self.n_splines - 1 :: self.n_splines] = False
        self.keep = None if keep.all() else np.flatnonzero(keep)
        self.n_out = int(keep.sum())

    @classmethod
    def of(cls, spline: Any) -> _SplineBasis | None:
        if (
            type(spline).__name__ != "SplineTransformer"
            or spline.extrapolation not in ("constant", "continue")
            or getattr(spline, "sparse_output", False)
            or len({len(s.t) for s in spline.bsplines_}) != 1
        ):
            return None
        return cls(spline)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """X: (n, n_features) finite values; the basis in X's float dtype, as scikit-learn gives it."""
        n = len(X)
        dtype = X.dtype if X.dtype in (np.float64, np.float32, np.float16) else np.float64
        k, F = self.degree, self.n_features
        x = np.asarray(X, dtype=np.float64)
        outside = None
        if not self.extrapolate:
            inside = (self.xmin <= x) & (x <= self.xmax)
            if not inside.all():
                outside = ~inside
        xe = x if outside is None else np.where(outside, self.xmin, x)  # outside: replaced below
        # scipy's find_interval: the l with t[l] <= x < t[l+1], k <= l <= last (knots <= x, minus one)
        if n <= SMALL_BATCH:  # two exact integer computations of the same count: the faster one
            interval = (xe[:, :, None] >= self.knots).sum(axis=2) - 1
        else:
            interval = np.empty((n, F), dtype=np.int64)
            for f in range(F):
                interval[:, f] = np.searchsorted(self.knots[f], xe[:, f], side="right") - 1
        np.minimum(np.maximum(interval, k, out=interval), self.last, out=interval)  # np.clip, no wrapper
        # The knots t[l-k+1] .. t[l+k] around each value, (2k, n, F), and their distances to x
        window = self.flat_knots[self.offsets[:, None, None] + (self.rows_of_knots + interval)]
        after = window[k:] - xe  # t[l+m] - x, m = 1..k
        before = xe - window[:k]  # x - t[l+m-j] for m - j = 1-k..0
        # Cox-de Boor as scipy.interpolate._bspl._deBoor_D (nu = 0), its inner loop over m done at
        # once with the same operations: h[a] = B_{l-k+a}(x)
        h = np.ones((1, n, F))
        with np.errstate(divide="ignore", invalid="ignore"):
            for j in range(1, k + 1):
                width = window[k : k + j] - window[k - j : k]  # t[l+m] - t[l+m-j], m = 1..j
                w = h / width
                if self.repeated:  # scipy skips equal knots: no contribution
                    w = np.where(width == 0.0, 0.0, w)
                h = np.empty((j + 1, n, F))
                np.multiply(w, after[:j], out=h[:j])  # h[m-1] += w (t[l+m] - x)
                h[j] = 0.0
                h[1:] += w * before[k - j :]  # h[m] = w (x - t[l+m-j])
        values = h.transpose(1, 2, 0)  # (n, F, k + 1)
        if outside is not None:
            values = np.where(outside[:, :, None], 0.0, values)
        out = np.zeros((n, F * self.n_splines), dtype=dtype)
        first = (np.arange(n) * (F * self.n_splines))[:, None] + (interval + self.first_column)
        out.reshape(-1)[first[:, :, None] + self.nonzero] = values
        if outside is not None:
            self._extrapolate_constant(out, x)
        return out if self.keep is None else out[:, self.keep]

    def _extrapolate_constant(self, out: np.ndarray, x: np.ndarray) -> None:
        """Below the first knot the first ``degree`` splines keep their boundary values, above the last
        the last ``degree`` (scikit-learn's extrapolation="constant")."""
        k, ns = self.degree, self.n_splines
        below = x < self.xmin
        above = x > self.xmax
        for f in np.flatnonzero(below.any(axis=0)):
            out[below[:, f], f * ns : f * ns + k] = self.f_min[f, :k]
        for f in np.flatnonzero(above.any(axis=0)):
            out[above[:, f], (f + 1) * ns - k : (f + 1) * ns] = self.f_max[f, -k:]


class _Expansion:
    """A ColumnTransformer of SplineTransformers and passthrough blocks (or one SplineTransformer)."""

    def __init__(self, n_in: int, blocks: list[tuple[np.ndarray, _SplineBasis | None, slice]], n_out: int):
        self.n_in = n_in
        self.blocks = blocks  # (input columns, basis or None for passthrough, output slice)
        self.n_out = n_out

    @classmethod
    def of(cls, step: Any) -> _Expansion | None:
        name = type(step).__name__
        if name == "SplineTransformer":
            basis = _SplineBasis.of(step)
            if basis is None:
                return None
            n_in = int(step.n_features_in_)
            return cls(n_in, [(np.arange(n_in), basis, slice(0, basis.n_out))], basis.n_out)
        if name != "ColumnTransformer" or getattr(step, "sparse_output_", False):
            return None
        if getattr(step, "_sklearn_output_config", {}).get("transform") not in (None, "default"):
            return None
        n_in = int(step.n_features_in_)
        blocks, width = [], 0
        for label, transformer, columns in step.transformers_:
            if isinstance(transformer, str) and transformer == "drop":
                continue
            try:
                index = np.arange(n_in)[columns]
            except (IndexError, TypeError, ValueError):
                return None
            if index.size == 0:
                continue
            out = step.output_indices_.get(label)
            if out is None:
                return None
            if (isinstance(transformer, str) and transformer == "passthrough") or _identity(transformer):
                basis = None
                size = index.size
            else:
                basis = _SplineBasis.of(transformer)
                if basis is None or basis.n_features != index.size:
                    return None
                size = basis.n_out
            if out.stop - out.start != size:
                return None
            blocks.append((index, basis, out))
            width = max(width, out.stop)
        covered = sorted((s.start, s.stop) for _, _, s in blocks)
        if [a for a, _ in covered] != [0, *(b for _, b in covered[:-1])]:
            return None
        return cls(n_in, blocks, width)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        parts = [
            (out, X[:, index] if basis is None else basis(X[:, index])) for index, basis, out in self.blocks
        ]
        dtype = np.result_type(*(p.dtype for _, p in parts))
        expanded = np.empty((len(X), self.n_out), dtype=dtype)
        for out, part in parts:
            expanded[:, out] = part
        return expanded


def _identity(transformer: Any) -> bool:
    """The fitted form of ``remainder="passthrough"``: a FunctionTransformer without a function."""
    return (
        type(transformer).__name__ == "FunctionTransformer"
        and transformer.func is None
        and not getattr(transformer, "validate", False)
    )


class _SplineLinear:
    """Pipeline(expansion, Ridge | LinearRegression | binary LogisticRegression)."""

    def __init__(self, pipeline: Any, expansion: _Expansion, coef: np.ndarray, intercept: float, proba: bool):
        self.pipeline = pipeline
        self.expansion = expansion
        self.coef = np.ascontiguousarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.proba = proba

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if (
            X.ndim != 2
            or X.shape[1] != self.expansion.n_in
            or X.dtype.kind != "f"
            or not np.isfinite(X).all()
        ):
            # scikit-learn raises for NaN/inf (and checks everything else): let it
            if self.proba:
                return self.pipeline.predict_proba(X)
            return np.asarray(self.pipeline.predict(X), dtype=float)
        decision = _by_rows(self._decision, X, CHUNK_ROWS)
        if not self.proba:
            return decision
        from scipy.special import expit

        p = expit(decision)
        return np.stack([1 - p, p], axis=1)  # as LinearClassifierMixin._predict_proba_lr

    def _decision(self, X: np.ndarray) -> np.ndarray:
        """X @ coef + intercept, as an element-wise product and one row-wise sum per row."""
        expanded = self.expansion(X)
        return np.add.reduce(expanded.astype(np.float64, copy=False) * self.coef, axis=1) + self.intercept


def _spline_linear(pipeline: Any, proba: bool) -> _SplineLinear | None:
    steps = [
        s for _, s in pipeline.steps if s is not None and not (isinstance(s, str) and s == "passthrough")
    ]
    if len(steps) != 2 or any(isinstance(s, str) for s in steps):
        return None
    expansion = _Expansion.of(steps[0])
    head = steps[1]
    if expansion is None or not hasattr(head, "coef_") or not hasattr(head, "intercept_"):
        return None
    name = type(head).__name__
    coef = np.asarray(head.coef_, dtype=np.float64)
    intercept = np.ravel(np.asarray(head.intercept_, dtype=np.float64))
    if proba:
        if name != "LogisticRegression" or len(head.classes_) != 2 or coef.shape[0] != 1:
            return None
        coef = coef[0]
    elif name not in ("Ridge", "LinearRegression") or coef.ndim != 1:
        return None
    if coef.shape != (expansion.n_out,) or intercept.size != 1:
        return None
    return _SplineLinear(pipeline, expansion, coef, intercept[0], proba)


# ---------------------------------------------------------------- Keras MLP (numpy weights)
class _Keras:
    """``KerasMLPRegressor``'s dense ReLU layers (its own forward pass, on the weights held here)."""

    def __init__(self, estimator: Any):
        self.layers = [
            (np.ascontiguousarray(w, dtype=np.float32), np.asarray(b, dtype=np.float32))
            for w, b in estimator.dense_
        ]
        self.n_features = self.layers[0][0].shape[0]
        self.y_std = estimator.y_std_
        self.y_mean = estimator.y_mean_
        self.estimator = estimator

    @classmethod
    def of(cls, estimator: Any) -> _Keras | None:
        dense = getattr(estimator, "dense_", None)
        if not dense or dense[-1][0].shape[1] != 1:
            return None
        return cls(estimator)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            return np.asarray(self.estimator.predict(X), dtype=float)
        return _by_rows(self._forward, X, CHUNK_ROWS)

    def _forward(self, X: np.ndarray) -> np.ndarray:
        from training.keras_mlp import dense_forward  # the estimator's own forward pass: one definition

        return dense_forward(self.layers, X) * self.y_std + self.y_mean


# ---------------------------------------------------------------- ensembles and forests
class _Averaged:
    """``AveragedRegressor.predict`` with each member's evaluator (same accumulation order)."""

    def __init__(self, members: list[Evaluator], weights: list[float]):
        self.members = members
        self.weights = weights

    def __call__(self, X: np.ndarray) -> np.ndarray:
        total = np.zeros(len(X))
        for member, weight in zip(self.members, self.weights, strict=True):
            total += weight * member(X)
        return total


class _Forest:
    """ExtraTrees' mean of tree predictions, summed in tree order (float32 input, as sklearn casts)."""

    def __init__(self, forest: Any):
        self.forest = forest

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.forest.n_features_in_ or not np.isfinite(X).all():
            return np.asarray(self.forest.predict(X), dtype=float)
        X = np.ascontiguousarray(X, dtype=np.float32)
        total = np.zeros(len(X))
        for tree in self.forest.estimators_:
            total += tree.predict(X, check_input=False)
        total /= len(self.forest.estimators_)
        return total


# ---------------------------------------------------------------- calibration
class _Isotonic:
    """``IsotonicRegression.predict`` (out_of_bounds="clip"): clip to the fitted range, then scipy's
    ``interp1d`` linear formula in the thresholds' dtype (``np.interp`` for float64 thresholds, which
    is what interp1d delegates to then); bit-identical and element-wise."""

    def __init__(self, calibrator: Any):
        self.calibrator = calibrator
        self.x = np.asarray(calibrator.X_thresholds_)
        self.y = np.asarray(calibrator.y_thresholds_)
        if not np.issubdtype(self.y.dtype, np.inexact):
            self.y = self.y.astype(np.float64)
        self.low = calibrator.X_min_
        self.high = calibrator.X_max_
        self.use_interp = self.x.dtype in (np.float64, np.int_) and self.y.dtype in (np.float64, np.int_)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        T = np.asarray(raw, dtype=self.x.dtype).reshape(-1)
        if not np.isfinite(T).all():
            return self.calibrator.predict(raw)  # scikit-learn raises
        T = np.minimum(np.maximum(T, self.low), self.high)  # np.clip (T is finite), without its wrapper
        if len(self.y) == 1:
            res = self.y.repeat(T.shape)
        elif self.use_interp:
            res = np.interp(T, self.x, self.y)
        else:
            hi = np.searchsorted(self.x, T).clip(1, len(self.x) - 1).astype(int)
            lo = hi - 1
            x_lo, y_lo = self.x[lo], self.y[lo]
            slope = (self.y[hi] - y_lo) / (self.x[hi] - x_lo)
            res = slope * (T - x_lo) + y_lo
        return res.astype(T.dtype)
