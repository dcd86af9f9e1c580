"""Property-based fuzzing of the feature encoder and scoring (the validation gate, with real GX:
tests/integration/test_fuzz_validation.py, with the strategies of this file).

Arbitrary frames and mutated copies of a valid batch (odd dtypes, empty, NaN/inf, unicode,
huge and tiny values, duplicate or empty column names) either raise a ``SentinelError`` with a
one-line message, or give a result in which every row is accounted for: ``validate_frame``
puts each row in exactly one of valid or quarantined, ``transform`` gives one finite row per
input row, scoring gives one finite score in [0, 1] per input row, in the input's order.

Each bug the fuzzing found is pinned as an ``@example`` (the comment says what it was).
Example counts are small so that the file runs in well under a minute on two cores. The
bundles are the session's (tests/conftest.py), trained on purchases generated like ``BASE``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import pandas as hpd

from models.bundle import Bundle
from models.features import FeatureEncoder
from pipeline.config.dataset import SentinelError
from pipeline.demo.data import generate_purchases
from tests.conftest import TrainedBundles

ID = "purchase_id"
# A valid batch every mutated frame starts from.
BASE = generate_purchases(40, seed=7)[0]
TRACER = "fuzz_row"  # an extra column that names each input row, to follow it through

FAST = settings(max_examples=50, deadline=None, database=None)

ODD_SCALARS: list[Any] = [
    np.nan,
    None,
    pd.NA,
    pd.NaT,
    np.inf,
    -np.inf,
    1e308,
    -1.7e308,
    5e-324,
    -1e-300,
    0.0,
    -0.0,
    2**63,
    -(2**64),
    10**30,
    10**400,
    True,
    False,
    "",
    "  ",
    "\ud800",
    "名前",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "\x00",
    "NaN",
    "inf",
    "1e999",
    "False",
    "no",
    b"\xff\xfe",
    [1, 2],
    {"a": 1},
    1 + 2j,
    pd.Timestamp("2262-04-11", tz="Asia/Kathmandu"),
    pd.Timestamp("1677-09-22"),
    pd.Timedelta(days=1),
    np.datetime64("NaT"),
    "2026-11-01T10:00:00+05:00",
    "not a date",
]
odd_values = st.one_of(
    st.sampled_from(ODD_SCALARS),
    st.text(max_size=12),
    st.floats(),
    st.integers(min_value=-(2**70), max_value=2**70),
)
odd_names = st.one_of(
    st.sampled_from(["", " ", "名前", 0, None, "\ud800", "basket_value", "channel", "score"]),
    st.text(max_size=6),
)
DTYPES = [
    "object",
    "str",
    "string",
    "float32",
    "float16",
    "Int64",
    "Float64",
    "category",
    "bool",
    "boolean",
    "int8",
    "uint64",
    "complex128",
    "datetime64[ns]",
    "datetime64[ns, UTC]",
]


def _attempt(make: Any, fallback: Any) -> Any:
    """Build one piece of a test input; if pandas refuses to build it, keep ``fallback``.

    Only construction of the input goes through here, never the code under test."""
    try:
        return make()
    except Exception:  # noqa: BLE001 - pandas refusing an odd construction is not a finding
        return fallback


def _typed_value(draw: st.DrawFn, s: pd.Series) -> Any:
    """An odd value that keeps the column's kind: NaN, inf, huge, tiny, negative numbers;
    empty, blank and unicode text; missing timestamps and booleans."""
    if pd.api.types.is_bool_dtype(s):
        return draw(st.sampled_from([True, False, None]))
    if pd.api.types.is_numeric_dtype(s):
        extremes = [np.nan, np.inf, -np.inf, 1e308, -1e308, 5e-324, -1.0, 0.0, 1e15]
        return draw(st.one_of(st.sampled_from(extremes), st.floats()))
    if pd.api.types.is_datetime64_any_dtype(s):
        stamps = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1))
        return draw(st.one_of(st.just(pd.NaT), stamps))
    return draw(st.one_of(st.sampled_from(["", " ", "名前", "\u200b", None]), st.text(max_size=12)))


OPS = ("cells", "typed", "typed", "cast", "text", "drop", "rename", "duplicate", "reorder")


@st.composite
def mutated_batches(
    draw: st.DrawFn,
    min_rows: int = 0,
    max_rows: int = 12,
    max_ops: int = 4,
    max_cells: int = 12,
    unique_rows: bool = False,
) -> pd.DataFrame:
    """Rows of ``BASE`` (repeated, reordered, maybe with duplicate index labels), then a few
    mutations: odd values of any type in cells, odd values of the column's own kind, dtype
    changes, numbers as text, dropped, renamed, duplicated and reordered columns.
    ``unique_rows``: no row twice (a repeated purchase id is a rule violation of its own)."""
    n = draw(st.integers(min_rows, max_rows))
    rows = draw(st.lists(st.integers(0, len(BASE) - 1), min_size=n, max_size=n, unique=unique_rows))
    df = BASE.iloc[rows].copy()
    if draw(st.booleans()):
        df = df.reset_index(drop=True)
    for _ in range(draw(st.integers(0, max_ops))):
        width = df.shape[1]
        if not width:
            break
        op = draw(st.sampled_from(OPS))
        col = draw(st.integers(0, width - 1))
        if op in ("cells", "typed") and n:
            column = df.iloc[:, col]
            values = column.to_numpy(dtype=object, copy=True)
            cells = st.lists(st.integers(0, n - 1), min_size=1, max_size=min(n, max_cells))
            for r in draw(cells):
                values[r] = draw(odd_values) if op == "cells" else _typed_value(draw, column)
            s = pd.Series(values, index=df.index, dtype=object)
            if op == "typed" or draw(st.booleans()):
                s = _attempt(s.infer_objects, s)
            df.isetitem(col, s)
        elif op in ("cast", "text"):
            dtype = "str" if op == "text" else draw(st.sampled_from(DTYPES))
            s = _attempt(lambda f=df, c=col, d=dtype: f.iloc[:, c].astype(d), None)
            if s is not None:
                df.isetitem(col, s)
        elif op == "drop":
            df = df.iloc[:, [i for i in range(width) if i != col]]
        elif op == "rename":
            names = list(df.columns)
            names[col] = draw(st.one_of(odd_names, st.sampled_from(names)))
            df = _attempt(lambda d=df, c=names: d.set_axis(c, axis=1), df)
        elif op == "duplicate":
            df = pd.concat([df, df.iloc[:, [col]]], axis=1)
        else:
            df = df.iloc[:, draw(st.permutations(range(width)))]
    return df


def _column(draw: st.DrawFn, n: int) -> pd.Series:
    index = hpd.range_indexes(min_size=n, max_size=n)
    kind = draw(st.sampled_from(["float", "int", "bool", "text", "object", "datetime"]))
    if kind == "float":
        return draw(hpd.series(elements=st.floats(width=64), dtype=float, index=index))
    if kind == "int":
        return draw(
            hpd.series(elements=st.integers(-(2**63), 2**63 - 1), dtype="int64", index=index)
        )
    if kind == "bool":
        return draw(hpd.series(elements=st.booleans(), dtype=bool, index=index))
    if kind == "text":
        return draw(hpd.series(elements=st.text(max_size=8), dtype=object, index=index))
    if kind == "datetime":
        stamps = st.datetimes(min_value=datetime(1678, 1, 1), max_value=datetime(2261, 12, 31))
        return draw(hpd.series(elements=stamps, dtype="datetime64[ns]", index=index))
    return draw(hpd.series(elements=odd_values, dtype=object, index=index))


@st.composite
def arbitrary_frames(draw: st.DrawFn, max_rows: int = 8) -> pd.DataFrame:
    """Up to four columns of any kind, any names (duplicates, empty, not text)."""
    n = draw(st.integers(0, max_rows))
    k = draw(st.integers(1, 4))
    df = pd.concat([_column(draw, n) for _ in range(k)], axis=1)
    names = draw(st.lists(odd_names, min_size=k, max_size=k))
    return _attempt(lambda: df.set_axis(names, axis=1), df)


def assert_clear(exc: SentinelError) -> None:
    """A clear error: one non-empty line for a person."""
    # outcome statistics (pytest --hypothesis-show-statistics)
    event(f"refused: {type(exc).__name__}: {str(exc)[:40]}")
    msg = str(exc)
    assert msg.strip(), f"{type(exc).__name__} without a message"
    assert "\n" not in msg, f"{type(exc).__name__} message is more than one line: {msg!r}"


def assert_scored(out: pd.DataFrame, df: pd.DataFrame, keep_columns: bool) -> None:
    """One finite score in [0, 1] per input row, in the input's order."""
    assert len(out) == len(df)
    score = out["score"].to_numpy(dtype="float64")
    assert np.isfinite(score).all()
    assert ((score >= 0) & (score <= 1)).all()
    assert np.isfinite(out["raw_score"].to_numpy(dtype="float64")).all()
    np.testing.assert_array_equal(out["is_anomaly"].to_numpy(dtype=bool), score >= 0.5)
    if keep_columns and TRACER in df.columns:
        np.testing.assert_array_equal(out[TRACER].to_numpy(), df[TRACER].to_numpy())


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def pca_bundle(trained_bundles: TrainedBundles) -> Bundle:
    return trained_bundles.bundle("pca")


@pytest.fixture(scope="module")
def ae_bundle(trained_bundles: TrainedBundles) -> Bundle:
    # A barely trained autoencoder: what is fuzzed is the plumbing around it, not its quality.
    return trained_bundles.bundle("ae")


def with_tracer(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    out.insert(out.shape[1], TRACER, np.arange(len(out)), allow_duplicates=True)
    return out


# ---------------------------------------------------------------------- feature encoder
@FAST
@given(df=arbitrary_frames())
# lists and non-ASCII bytes in a text column: ValueError / UnicodeDecodeError in _as_str
@example(df=pd.DataFrame({"c": pd.Series([[1], {"a": 1}, b"\xff", None], dtype=object)}))
# text that is not valid Unicode: UnicodeEncodeError in the level lookup
@example(df=pd.DataFrame({"c": pd.Series(["\ud800", "a", None], dtype=object)}))
# duplicate column names: AttributeError in infer_schema
@example(df=pd.DataFrame([[1.0, 2.0]], columns=["a", "a"]))
# a column named None (pandas makes it NaN): NaN in the JSON state
@example(df=pd.DataFrame({"": [0.0], None: [0.0]}))
# spread beyond float64: scale became inf, written to features.json as non-JSON "Infinity"
@example(df=pd.DataFrame({"x": [1.7e308] * 10 + [0.0]}))
# the median of two values near float64's limit overflowed to inf
@example(df=pd.DataFrame({"x": [8.988466e307, 8.988466e307]}))
# a complex column: the imaginary part was dropped silently
@example(df=pd.DataFrame({"x": [1 + 1j, 2.0]}))
# an integer beyond float64: OverflowError from pd.to_numeric
@example(df=pd.DataFrame({"x": pd.Series([10**400, 1, None], dtype=object)}))
def test_encoder_fits_any_frame_or_says_why(df: pd.DataFrame) -> None:
    try:
        enc = FeatureEncoder().fit(df)
    except SentinelError as exc:
        assert_clear(exc)
        return
    state = json.loads(json.dumps(enc.to_dict(), allow_nan=False))  # strict, finite JSON
    X = enc.transform(df)
    assert X.shape == (len(df), sum(enc.block_widths))
    assert np.isfinite(X).all()
    np.testing.assert_array_equal(FeatureEncoder.from_dict(state).transform(df), X)
    back = enc.inverse_transform(X)
    assert len(back) == len(df)
    assert list(back.columns) == enc.feature_names


@FAST
@given(df=mutated_batches())
# a feature column twice: ValueError "Cannot construct a Series from a DataFrame"
@example(df=pd.concat([BASE.head(3), BASE.head(3)[["is_member"]]], axis=1))
@example(df=pd.concat([BASE.head(3), BASE.head(3)[["purchased_at"]]], axis=1))
def test_transform_gives_one_finite_row_per_input_row(df: pd.DataFrame, pca_bundle: Bundle) -> None:
    enc = pca_bundle.encoder
    try:
        X = enc.transform(df)
    except SentinelError as exc:
        assert_clear(exc)
        return
    assert X.shape == (len(df), sum(enc.block_widths))
    assert np.isfinite(X).all()


def test_boolean_text_is_read_as_what_it_says() -> None:
    """Found by fuzzing: text booleans went through ``bool()``, so ``"False"`` encoded as true."""
    enc = FeatureEncoder({"boolean": ["b"]}).fit(pd.DataFrame({"b": [True, False]}))
    text = pd.DataFrame({"b": ["False", "no", "0", " TRUE ", "yes", "maybe", None, ""]})
    np.testing.assert_array_equal(enc.transform(text)[:, 0], [0, 0, 0, 1, 1, 0.5, 0.5, 0.5])


# ------------------------------------------------------------------------------ scoring
@FAST
@given(df=mutated_batches(), keep_columns=st.booleans())
# an empty batch: NearestNeighbors refused the empty query (ValueError)
@example(df=BASE.iloc[:0], keep_columns=False)
# the id column twice: ValueError "Buffer has wrong number of dimensions" copying the ids
@example(df=pd.concat([BASE.head(2), BASE.head(2)[[ID]]], axis=1), keep_columns=False)
def test_pca_scoring_gives_one_score_per_row(
    df: pd.DataFrame, keep_columns: bool, pca_bundle: Bundle
) -> None:
    df = with_tracer(df)
    try:
        out = pca_bundle.score_frame(df, keep_columns=keep_columns)
    except SentinelError as exc:
        assert_clear(exc)
        return
    assert_scored(out, df, keep_columns)
    if len(df) > 1:
        # A row's score does not depend on the other rows of its batch, except through the
        # duplicates signal: copies of one record in the batch only add evidence.
        alone = pd.concat([pca_bundle.score_frame(df.iloc[[i]]) for i in range(len(df))], ignore_index=True)
        unique = out["copies_in_batch"].to_numpy() == 1
        np.testing.assert_allclose(alone["raw_score"][unique], out["raw_score"][unique], rtol=1e-5, atol=1e-6)
        assert (out["raw_score"][~unique].to_numpy() >= alone["raw_score"][~unique].to_numpy() - 1e-6).all()


@settings(FAST, max_examples=20)
@given(df=mutated_batches(max_rows=6))
# an empty batch: the Keras chunked call returned a (0, 0) array, so the errors did not broadcast
@example(df=BASE.iloc[:0])
def test_autoencoder_scoring_gives_one_score_per_row(df: pd.DataFrame, ae_bundle: Bundle) -> None:
    df = with_tracer(df)
    try:
        out = ae_bundle.score_frame(df)
    except SentinelError as exc:
        assert_clear(exc)
        return
    assert_scored(out, df, keep_columns=True)
