"""Property-based fuzzing of the validation gate with real GX (strategies and bundles:
tests/unit/test_fuzz.py): every row ends up valid or quarantined exactly once, with a reason,
and the valid rows can be scored; or a ``SentinelError`` with a one-line message.

Each bug the fuzzing found is pinned as an ``@example`` (the comment says what it was). GX is
the slow part (about a second per validation), hence the few examples.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from models.bundle import Bundle
from pipeline.config.dataset import SentinelError
from pipeline.validate.suite import BatchRejected, validate_frame
from tests.conftest import TrainedBundles
from tests.unit.test_fuzz import (
    BASE,
    TRACER,
    arbitrary_frames,
    assert_clear,
    assert_scored,
    mutated_batches,
    with_tracer,
)

# ``cfg`` (a frozen DatasetConfig) is read-only, so sharing it between examples is safe.
GX = settings(
    max_examples=10,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def pca_bundle(trained_bundles: TrainedBundles) -> Bundle:
    return trained_bundles.bundle("pca")


# --------------------------------------------------------------------------- validation
def check_validation(
    df: pd.DataFrame, cfg: Any, pca_bundle: Bundle, text_source: bool = False
) -> None:
    """Every row ends up valid or quarantined exactly once, and valid rows can be scored."""
    df = with_tracer(df)
    try:
        out = validate_frame(df, cfg, batch_id="fuzz", text_source=text_source)
    except SentinelError as exc:
        assert_clear(exc)
        return
    event("some rows quarantined" if len(out.quarantined) else "every row valid")
    assert len(out.valid) + len(out.quarantined) == len(df)
    seen = sorted([*out.valid[TRACER].tolist(), *out.quarantined[TRACER].tolist()])
    assert seen == list(range(len(df))), "a row was dropped or duplicated"
    assert out.quarantined["quarantine_reason"].astype(str).str.len().gt(0).all()
    assert_scored(pca_bundle.score_frame(out.valid), out.valid, keep_columns=True)


@GX
@given(
    df=mutated_batches(min_rows=5, max_rows=30, max_ops=3, max_cells=2, unique_rows=True),
    text_source=st.booleans(),
)
# a column twice: ValueError "truth value of a Series is ambiguous" in prepare_types
@example(df=pd.concat([BASE.head(5), BASE.head(5)[["basket_value"]]], axis=1), text_source=False)
# text that is not valid Unicode: UnicodeEncodeError inside GX's hashing of the frame
@example(
    df=BASE.head(5).assign(channel=pd.Series(["\ud800", "web", "app", "web", "app"], dtype=object)),
    text_source=False,
)
# a column named 0 or None: TypeError sorting and joining the unknown column names
@example(df=BASE.head(5).assign(**{"0": 1}).rename(columns={"0": 0}), text_source=False)
# pandas' nullable integers (Int64, as Parquet written from pandas reads back): the whole
# batch was rejected as "type int64, expected one of ... int64"
@example(
    df=BASE.head(5).astype({"item_count": "Int64", "basket_value": "Float64"}), text_source=False
)
def test_validation_accounts_for_every_row(
    df: pd.DataFrame, text_source: bool, cfg, pca_bundle: Bundle
) -> None:
    check_validation(df, cfg, pca_bundle, text_source)


@settings(GX, max_examples=3)
@given(df=arbitrary_frames(max_rows=5))
def test_validation_of_arbitrary_frames_says_why(df: pd.DataFrame, cfg, pca_bundle: Bundle) -> None:
    check_validation(df, cfg, pca_bundle)


def test_nullable_numbers_are_validated_not_rejected(cfg) -> None:
    """Found by fuzzing: a batch with pandas' nullable ``Int64``/``Float64`` numbers (what
    Parquet written from such a frame reads back as) was rejected as a whole for its types."""
    df = BASE.head(10).astype({"item_count": "Int64", "basket_value": "Float64"})
    df.loc[3, "item_count"] = pd.NA
    out = validate_frame(df, cfg, batch_id="nullable")
    assert len(out.valid) == 9
    assert out.quarantined["quarantine_reason"].tolist() == ["not_be_null:item_count"]


def test_a_column_name_that_is_not_valid_unicode_rejects_the_batch_in_words(cfg) -> None:
    """Found by fuzzing (a pytest-xdist worker crashed sending a log line that named the
    column): a lone surrogate in a column's name was logged as an unknown column and kept. The
    batch is rejected instead, and the message shows the name escaped."""
    df = BASE.head(5).assign(extra=1.0)
    df.columns = pd.Index([*df.columns[:-1], "\ud800"], dtype=object)  # text names cannot hold it
    with pytest.raises(BatchRejected, match=r"column name '\\ud800' is not valid Unicode") as err:
        validate_frame(df, cfg, batch_id="surrogate")
    str(err.value).encode("utf-8")  # the message itself can be written out
