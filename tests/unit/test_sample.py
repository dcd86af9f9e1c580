"""Synthetic records from a VAE: original columns and dtypes, realistic values, clear refusals.

Also the encoder's inverse transform they rest on: encoded rows map back to the original
columns, exactly for categories and booleans, closely for numbers and timestamps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.bundle import Bundle
from models.features import CLIP, FeatureEncoder, SchemaMismatchError, infer_schema
from pipeline.config.dataset import SentinelError
from pipeline.lifecycle.sample import MAX_SAMPLE_ROWS, sample_records
from tests.conftest import TrainedBundles

ID = ("purchase_id", "customer_id")
N = 4000


@pytest.fixture(scope="module")
def training(training_frame: pd.DataFrame) -> pd.DataFrame:
    return training_frame  # 2,000 purchases, seed 7


@pytest.fixture(scope="module")
def vae(trained_bundles: TrainedBundles) -> Bundle:
    # The session's VAE: a short training (15 epochs; the default would be 60) on ``training``;
    # the tolerances below hold for it.
    return trained_bundles.bundle("vae")


@pytest.fixture(scope="module")
def samples(vae: Bundle) -> pd.DataFrame:
    return sample_records(vae, N, seed=0)


def _iqr(s: pd.Series) -> float:
    q25, q75 = s.astype("float64").quantile([0.25, 0.75])
    return float(q75 - q25)


# ------------------------------------------------------------------ samples
def test_samples_have_the_training_columns_and_dtypes(
    training: pd.DataFrame, vae: Bundle, samples: pd.DataFrame
) -> None:
    features = vae.encoder.input_columns
    assert list(samples.columns) == ["purchase_id", *features]
    assert len(samples) == N
    for col in features:
        assert samples[col].dtype == training[col].dtype, col
    assert samples["purchase_id"].str.fullmatch(r"synthetic-\d{6}").all()
    assert samples["purchase_id"].is_unique
    assert not set(samples["purchase_id"]) & set(training["purchase_id"])


def test_samples_stay_within_what_training_saw(
    training: pd.DataFrame, vae: Bundle, samples: pd.DataFrame
) -> None:
    schema = vae.encoder.state_["schema"]
    for col in schema["categorical"]:
        assert set(samples[col].dropna()) <= set(training[col].dropna()), col
    for col in schema["numeric"]:
        assert samples[col].between(training[col].min(), training[col].max()).all(), col
        whole = (training[col] % 1 == 0).all()
        assert not whole or (samples[col] % 1 == 0).all(), f"{col} should be whole numbers"
    assert samples["avg_item_price"].round(2).equals(samples["avg_item_price"])  # cents, as trained
    # The training batch covers one day: synthetic timestamps fall on it (times of day decoded).
    assert (samples["purchased_at"].dt.normalize() == pd.Timestamp("2026-11-01")).all()


def test_samples_track_the_training_distribution(
    training: pd.DataFrame, vae: Bundle, samples: pd.DataFrame
) -> None:
    schema = vae.encoder.state_["schema"]
    # Numbers: medians within 0.3 IQR each (measured: at most 0.14), and spread kept (measured
    # 0.68 of the training IQR on average; decoded means alone: 0.16-0.21).
    for col in schema["numeric"]:
        scale = _iqr(training[col]) or float(training[col].std())
        gap = abs(samples[col].median() - training[col].median()) / scale
        assert gap <= 0.3, f"{col}: median {gap:.2f} IQR off"
    ratios = [_iqr(samples[c]) / _iqr(training[c]) for c in schema["numeric"] if _iqr(training[c])]
    assert np.mean(ratios) >= 0.45, f"synthetic spread is {np.mean(ratios):.2f} of training"
    # Categories: frequencies close (total variation distance, measured 0.10 on average, at
    # most 0.29 for payment_method; decoded means alone: 0.20-0.24, at most 0.43), and a clear
    # leader stays the most frequent level.
    tvds = {}
    for col in schema["categorical"]:
        real = training[col].value_counts(normalize=True)
        synth = samples[col].value_counts(normalize=True)
        tvds[col] = 0.5 * real.sub(synth, fill_value=0).abs().sum()
        if real.iloc[0] - real.iloc[1] >= 0.1:
            assert synth.index[0] == real.index[0], f"{col}: {synth.index[0]} is most frequent"
    assert max(tvds.values()) <= 0.4, tvds
    assert np.mean(list(tvds.values())) <= 0.18, tvds
    # Booleans: true shares within 0.2 (measured at most 0.12 off; decoded means alone: 0.27).
    for col in schema["boolean"]:
        assert abs(samples[col].mean() - training[col].mean()) <= 0.2, col
    # Time of day: purchases peak in the afternoon and evening.
    hours = samples["purchased_at"].dt.hour + samples["purchased_at"].dt.minute / 60
    real_hours = training["purchased_at"].dt.hour + training["purchased_at"].dt.minute / 60
    assert abs(hours.median() - real_hours.median()) <= 3.0


def test_same_seed_same_records_also_after_reload(vae: Bundle, tmp_path: Path) -> None:
    from models.bundle import load_bundle

    first = sample_records(vae, 300, seed=3)
    pd.testing.assert_frame_equal(first, sample_records(vae, 300, seed=3))
    assert not first.drop(columns="purchase_id").equals(
        sample_records(vae, 300, seed=4).drop(columns="purchase_id")
    )
    again = load_bundle(vae.save(tmp_path / "bundle"))
    pd.testing.assert_frame_equal(first, sample_records(again, 300, seed=3))


@pytest.mark.parametrize("kind", ["pca", "ae"])
def test_a_bundle_that_is_not_a_vae_is_refused(kind: str, trained_bundles: TrainedBundles) -> None:
    bundle = trained_bundles.bundle(kind)
    with pytest.raises(SentinelError, match=rf"'{kind}'.*\"kind\": \"vae\""):
        sample_records(bundle, 10)


@pytest.mark.parametrize("n", [0, -5, MAX_SAMPLE_ROWS + 1, 2.5, True])
def test_a_count_out_of_range_is_refused(n, vae: Bundle) -> None:
    with pytest.raises(SentinelError, match="number of records"):
        sample_records(vae, n)


# sample_to_file against the real MLflow registry: tests/integration/test_cli.py (the ``sample`` command).


# -------------------------------------------------------- inverse transform
def test_inverse_transform_round_trips_the_training_frame(training: pd.DataFrame) -> None:
    enc = FeatureEncoder(infer_schema(training, exclude=ID)).fit(training)
    X = enc.transform(training)
    back = enc.inverse_transform(X)
    assert list(back.columns) == enc.input_columns
    start = 0
    for block, width in zip(enc.state_["blocks"], enc.block_widths, strict=True):
        col = block["column"]
        real, got = training[col], back[col]
        assert got.dtype == real.dtype, col
        if block["kind"] == "numeric":
            # Exact up to float32 encoding, where the scaled value was not clipped at ±CLIP.
            inside = np.abs(X[:, start]) < CLIP
            assert inside.mean() > 0.95, col
            np.testing.assert_allclose(got[inside], real[inside], rtol=1e-4, atol=0.011)
        elif block["kind"] == "datetime":  # the encoder keeps the time to the minute
            assert (got == real.dt.floor("min")).all()
        else:  # categories (every level is kept here) and booleans: exact
            assert (got == real).all(), col
        start += width


def test_inverse_transform_restores_missing_values_rare_levels_and_odd_dtypes() -> None:
    n = 400
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "count": pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(0, 9, n)), "Int64"),
            "ratio": np.where(rng.random(n) < 0.1, np.nan, rng.random(n).round(3)),
            "city": pd.Series(rng.choice(["a", "b", "c", None], n, p=[0.5, 0.3, 0.15, 0.05])),
            "grade": pd.Categorical(rng.choice(["x", "y"], n)),
            "code": rng.choice([101, 202], n),
            "seen": pd.array(rng.random(n) < 0.5, dtype="boolean"),
            "at": pd.Series(
                pd.date_range("2026-03-02", periods=n, freq="37min", tz="Europe/Berlin")
            ),
        }
    )
    df.loc[0, "city"] = "rare-town"  # the fifth level: beyond max_levels, so __other__
    schema = {
        "numeric": ["count", "ratio"],
        "categorical": ["city", "grade", "code"],
        "boolean": ["seen"],
        "datetime": ["at"],
    }
    enc = FeatureEncoder(schema, max_levels=4).fit(df)
    back = enc.inverse_transform(enc.transform(df))
    assert back.dtypes.astype(str).to_dict() == df.dtypes.astype(str).to_dict()
    pd.testing.assert_series_equal(back["count"], df["count"])  # NA where it was NA
    np.testing.assert_allclose(back["ratio"], df["ratio"], rtol=1e-5)  # NaN where it was NaN
    assert back["city"].isna().equals(df["city"].isna())
    kept = df["city"].notna() & (df["city"] != "rare-town")
    assert (back["city"][kept] == df["city"][kept]).all()
    assert back.loc[0, "city"] in {"a", "b", "c"}  # __other__ -> the row's likeliest kept level
    assert (back["grade"] == df["grade"]).all()
    assert (back["code"] == df["code"]).all()
    assert (back["seen"] == df["seen"]).all()
    # Spread over ten days: weekday and time of day come back, in the week that starts on the
    # first training day (UTC), so the timestamps of that week come back exactly.
    assert (back["at"].dt.day_of_week == df["at"].dt.day_of_week).all()
    assert (back["at"].dt.hour == df["at"].dt.hour).all()
    first_day = df["at"].min().tz_convert("UTC").floor("D")
    assert back["at"].between(first_day, first_day + pd.Timedelta(days=7), inclusive="left").all()
    in_first_week = df["at"] < first_day + pd.Timedelta(days=7)
    assert (back["at"] == df["at"])[in_first_week].all()
    assert (back["at"] != df["at"])[~in_first_week].all()


def test_inverse_transform_works_on_a_state_saved_before_it_existed(
    training: pd.DataFrame,
) -> None:
    enc = FeatureEncoder(infer_schema(training, exclude=ID)).fit(training)
    state = json.loads(json.dumps(enc.to_dict()))
    new_keys = {"dtype", "decimals", "min", "max", "shares", "anchor", "tz", "missing"}
    for block in state["blocks"]:
        for key in new_keys:
            block.pop(key, None)
    old = FeatureEncoder.from_dict(state)
    X = old.transform(training.head(50))
    np.testing.assert_array_equal(X, enc.transform(training.head(50)))
    back = old.inverse_transform(X)
    np.testing.assert_allclose(back["customer_age"], training["customer_age"].head(50), rtol=1e-4)
    assert back["customer_age"].dtype == "float64"  # no dtype recorded: plain floats
    assert (back["channel"] == training["channel"].head(50)).all()
    assert back["purchased_at"].dt.day_of_week.nunique() == 1  # on the default anchor day
    with pytest.raises(SchemaMismatchError, match="columns"):
        old.inverse_transform(X[:, :-1])
