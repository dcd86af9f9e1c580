"""The feature encoder: JSON state, odd input at scoring time, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from models.features import FeatureEncoder, SchemaMismatchError, infer_schema
from pipeline.demo.data import generate_purchases

ID = ("purchase_id", "customer_id")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_purchases(400, seed=3)[0]


def test_fit_transform_is_finite_and_round_trips_through_json(frame: pd.DataFrame) -> None:
    enc = FeatureEncoder(infer_schema(frame, exclude=ID)).fit(frame)
    X = enc.transform(frame)
    assert X.shape == (len(frame), sum(enc.block_widths))
    assert np.isfinite(X).all()
    state = json.loads(json.dumps(enc.to_dict()))  # plain JSON, nothing else
    again = FeatureEncoder.from_dict(state).transform(frame)
    np.testing.assert_array_equal(X, again)


def test_unseen_category_missing_values_and_inf_are_handled(frame: pd.DataFrame) -> None:
    enc = FeatureEncoder(infer_schema(frame, exclude=ID)).fit(frame)
    odd = frame.head(5).copy()
    odd["channel"] = ["carrier-pigeon", None, "web", "app", "store"]
    odd["basket_value"] = [np.nan, np.inf, -np.inf, 1e300, 0.0]
    odd["is_member"] = pd.Series([True, None, False, True, False], dtype=object)
    X = enc.transform(odd)
    assert np.isfinite(X).all()
    other = enc.state_["blocks"][enc.feature_names.index("channel")]["levels"]
    assert "carrier-pigeon" not in other


def test_column_order_does_not_matter_but_a_missing_column_is_named(frame: pd.DataFrame) -> None:
    enc = FeatureEncoder(infer_schema(frame, exclude=ID)).fit(frame)
    shuffled = frame[list(reversed(frame.columns))]
    np.testing.assert_array_equal(enc.transform(frame), enc.transform(shuffled))
    with pytest.raises(SchemaMismatchError, match="basket_value"):
        enc.transform(frame.drop(columns=["basket_value"]))


def test_high_cardinality_category_stays_bounded() -> None:
    n = 100_000
    df = pd.DataFrame({"city": [f"c{i}" for i in range(n)], "x": np.arange(n, dtype=float)})
    enc = FeatureEncoder(max_levels=30).fit(df)
    assert enc.transform(df.head(10)).shape[1] <= 30 + 1 + 1


def test_all_categorical_constant_and_single_row_inputs() -> None:
    cats = pd.DataFrame({"a": ["x", "y", "x"], "b": ["u", "u", "v"]})
    assert FeatureEncoder().fit_transform(cats).shape == (3, 6)  # 2 levels + other, each
    const = pd.DataFrame({"c": [5.0, 5.0, 5.0], "d": [1.0, 2.0, 3.0]})
    assert np.isfinite(FeatureEncoder().fit_transform(const)).all()
    one = pd.DataFrame({"x": [1.0], "y": ["a"]})
    assert FeatureEncoder().fit_transform(one).shape == (1, 3)


def test_old_schema_version_is_refused(frame: pd.DataFrame) -> None:
    state = FeatureEncoder(infer_schema(frame, exclude=ID)).fit(frame).to_dict()
    state["schema_version"] = 0
    with pytest.raises(SchemaMismatchError, match="schema version"):
        FeatureEncoder.from_dict(state)


def test_empty_frame_cannot_be_fitted() -> None:
    from pipeline.config.dataset import SentinelError

    with pytest.raises(SentinelError, match="empty"):
        FeatureEncoder().fit(pd.DataFrame({"x": pd.Series([], dtype=float)}))
