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


def test_decimals_and_dates_become_numbers_and_timestamps_and_the_encoder_reads_them_alike() -> None:
    """What Arrow's ``DECIMAL`` and ``date32`` become in pandas (Python objects) is given NumPy
    types; text, mixed objects and everything else stays as it is (the same frame when there is
    nothing to convert); the encoder reads the objects to the values of the converted frame."""
    import datetime
    import decimal

    from models.features import native_types

    raw = pd.DataFrame({
        "amount": [decimal.Decimal("12.50"), None, decimal.Decimal("-3.01")],
        "day": [datetime.date(2026, 11, 2), datetime.date(2026, 11, 7), None],
        "mixed": pd.Series([decimal.Decimal("1"), "x", None], dtype=object),
        "text": ["a", "b", "c"],
    })
    typed = native_types(raw)
    assert typed["amount"].dtype == "float64"
    assert typed["amount"].isna().tolist() == [False, True, False]
    assert typed["amount"].iloc[0] == 12.5
    assert pd.api.types.is_datetime64_dtype(typed["day"])
    assert typed["day"].iloc[1] == pd.Timestamp("2026-11-07")
    assert typed["mixed"].dtype == object
    assert typed["text"].tolist() == ["a", "b", "c"]
    assert raw["amount"].dtype == object  # not changed in place
    big_id = pd.DataFrame({"id": [decimal.Decimal(2**53 + 1), decimal.Decimal(2**53)], "v": [decimal.Decimal("1.5")] * 2})
    only = native_types(big_id, ["v"])  # an id stored as DECIMAL(38, 0) stays exact
    assert only["id"].tolist() == [decimal.Decimal(2**53 + 1), decimal.Decimal(2**53)]
    assert only["v"].dtype == "float64"
    plain = pd.DataFrame({"x": [1.0, 2.0]})
    assert native_types(plain) is plain
    twice = pd.DataFrame([[decimal.Decimal("1"), decimal.Decimal("2")]], columns=["a", "a"])
    assert list(native_types(twice).dtypes) == ["float64", "float64"]  # by position

    schema = {"numeric": ["amount"], "categorical": [], "boolean": [], "datetime": ["day"]}
    encoder = FeatureEncoder(schema).fit(typed)
    np.testing.assert_array_equal(encoder.transform(raw), encoder.transform(typed))
