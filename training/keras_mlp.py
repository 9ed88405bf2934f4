"""A TensorFlow/Keras MLP as a scikit-learn regressor, so it sits in the same Pipeline as the
transform and is saved, registered and served like every other family."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

EpochReport = Callable[[int, float], None]


class KerasMLPRegressor(BaseEstimator, RegressorMixin):
    """Dense network on the encoded features (one-hot categoricals), early-stopped on validation loss.

    The target is standardised inside ``fit`` and restored in ``predict`` so learning rates
    transfer between targets of different spread.
    """

    def __init__(
        self,
        hidden_layers: int = 2,
        units: int = 128,
        dropout: float = 0.1,
        learning_rate: float = 1e-3,
        l2: float = 1e-5,
        batch_size: int = 512,
        max_epochs: int = 60,
        patience: int = 6,
        seed: int = 42,
        verbose: int = 0,
    ):
        self.hidden_layers = hidden_layers
        self.units = units
        self.dropout = dropout
        self.learning_rate = learning_rate
        self.l2 = l2
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.seed = seed
        self.verbose = verbose

    def _build(self, n_features: int):
        import keras

        keras.utils.set_random_seed(self.seed)
        regulariser = keras.regularizers.L2(self.l2) if self.l2 > 0 else None
        layers = [keras.Input((n_features,))]
        for depth in range(self.hidden_layers):
            layers.append(
                keras.layers.Dense(
                    max(8, self.units // (2**depth)), activation="relu", kernel_regularizer=regulariser
                )
            )
            if self.dropout > 0:
                layers.append(keras.layers.Dropout(self.dropout))
        layers.append(keras.layers.Dense(1))
        model = keras.Sequential(layers)
        model.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss="mse")
        return model

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        X_val: np.ndarray | None = None,
        y_val: np.ndarray | None = None,
        epoch_report: EpochReport | None = None,
        fixed_epochs: bool = False,
    ) -> KerasMLPRegressor:
        """Train; ``epoch_report(epoch, val_rmse)`` is called after every epoch (Optuna pruning hook).

        ``fixed_epochs``: train exactly ``max_epochs`` epochs on all of X (the refit on train +
        validation, whose epoch count the validation fit chose)."""
        import keras

        X = np.asarray(X, dtype="float32")
        y = np.asarray(y, dtype="float32")
        if fixed_epochs:
            return self._fit_fixed(X, y)
        if X_val is None or y_val is None:
            rng = np.random.default_rng(self.seed)
            hold = rng.random(len(X)) < 0.1
            X, X_val, y, y_val = X[~hold], X[hold], y[~hold], y[hold]
        X_val = np.asarray(X_val, dtype="float32")
        self.y_mean_, self.y_std_ = float(y.mean()), float(y.std() or 1.0)
        scale = self.y_std_

        def standardise(values: np.ndarray) -> np.ndarray:
            return (np.asarray(values, dtype="float32") - self.y_mean_) / scale

        callbacks: list = [keras.callbacks.EarlyStopping(patience=self.patience, restore_best_weights=True)]
        if epoch_report is not None:
            callbacks.append(
                keras.callbacks.LambdaCallback(
                    on_epoch_end=lambda epoch, logs: epoch_report(
                        epoch, float(np.sqrt(logs["val_loss"])) * scale
                    )
                )
            )
        self.model_ = self._build(X.shape[1])
        history = self.model_.fit(
            X,
            standardise(y),
            validation_data=(X_val, standardise(y_val)),
            epochs=self.max_epochs,
            batch_size=self.batch_size,
            callbacks=callbacks,
            verbose=self.verbose,
            shuffle=True,
        )
        self.best_epoch_ = int(np.argmin(history.history["val_loss"])) + 1
        self.n_features_in_ = X.shape[1]
        self.dense_ = dense_weights(self.model_)
        return self

    def _fit_fixed(self, X: np.ndarray, y: np.ndarray) -> KerasMLPRegressor:
        self.y_mean_, self.y_std_ = float(y.mean()), float(y.std() or 1.0)
        self.model_ = self._build(X.shape[1])
        self.model_.fit(
            X,
            (y - self.y_mean_) / self.y_std_,
            epochs=self.max_epochs,
            batch_size=self.batch_size,
            verbose=self.verbose,
            shuffle=True,
        )
        self.best_epoch_ = self.max_epochs
        self.n_features_in_ = X.shape[1]
        self.dense_ = dense_weights(self.model_)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The trained network's forward pass in numpy (dense layers and ReLU; dropout is off at
        inference; ``dense_forward``): the same float32 arithmetic as Keras, without TensorFlow's per-call
        overhead, so a single record costs microseconds, a served model never imports TensorFlow, and a
        row gets the same number alone or in a batch."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.dense_[0][0].shape[0]:
            expected = self.dense_[0][0].shape[0]
            raise ValueError(f"expected a matrix of {expected} features; got shape {X.shape}")
        return dense_forward(self.dense_, X) * self.y_std_ + self.y_mean_

    def __getstate__(self) -> dict:
        """Pickle the weights, not the Keras model: loading a saved model needs numpy only."""
        state = dict(self.__dict__)
        state.pop("model_", None)
        return state

    def __setstate__(self, state: dict) -> None:
        """Models pickled with their Keras object (release 0.1.0) get their weights extracted once."""
        self.__dict__.update(state)
        if "dense_" not in state and "model_" in state:
            self.dense_ = dense_weights(state["model_"])


BLOCK = 8  # rows per matrix product: the same product shape (so the same rounding) for any batch size


def dense_forward(layers: list[tuple[np.ndarray, np.ndarray]], X: np.ndarray) -> np.ndarray:
    """ReLU layers then one linear output unit, in float32, BLOCK rows per product (zero-padded), the
    output as a row-wise sum: a row's result does not depend on the other rows of the batch."""
    n = len(X)
    blocks = -(-n // BLOCK)
    h = np.zeros((blocks * BLOCK, X.shape[1]), dtype=np.float32)
    h[:n] = X
    h = h.reshape(blocks, BLOCK, X.shape[1])
    *hidden, (w_out, b_out) = layers
    for w, b in hidden:
        h = np.maximum(h @ np.asarray(w, dtype=np.float32) + np.asarray(b, dtype=np.float32), np.float32(0.0))
    raw = np.add.reduce(h * np.asarray(w_out, dtype=np.float32)[:, 0], axis=-1) + np.float32(b_out[0])
    return raw.reshape(-1)[:n].astype(float)


def dense_weights(model) -> list[tuple[np.ndarray, np.ndarray]]:
    """(kernel, bias) of every Dense layer in order, as float32 arrays."""
    import keras

    return [
        (np.asarray(layer.kernel.numpy(), dtype=np.float32), np.asarray(layer.bias.numpy(), dtype=np.float32))
        for layer in model.layers
        if isinstance(layer, keras.layers.Dense)
    ]
