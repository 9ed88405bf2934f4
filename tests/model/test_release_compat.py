"""A model saved by the previous release (0.1.0) still loads and predicts what it predicted then."""

from __future__ import annotations

from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release_0_1_0"


def test_release_0_1_0_model_loads_and_predicts_the_same() -> None:
    model = cloudpickle.loads((FIXTURE / "model.pkl").read_bytes())
    records = pd.read_csv(FIXTURE / "records.csv")
    expected = pd.read_csv(FIXTURE / "predictions.csv")["predicted_math_growth"].to_numpy()
    predicted = np.asarray(model.predict(records), dtype=float)
    assert predicted.shape == expected.shape == (40,)
    np.testing.assert_allclose(predicted, expected, rtol=0, atol=1e-9)
