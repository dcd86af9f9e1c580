"""Synthetic purchases at a clothing retailer, with labelled anomalies.

Every purchase comes from a customer whose hidden *style* (classic, trendy, sporty, luxury),
*budget* and *engagement* drive the visible columns, so the columns are correlated through a few
latent factors that a latent model can learn. Anomalies of four kinds are injected at a
configurable rate and labelled in a separate file:

- ``extreme``: a few values far outside anything normal (a 40-item basket, a 30k basket);
- ``impossible``: combinations that cannot happen (cash on the web shop, an in-store purchase
  with express shipping costs, a discount without a coupon);
- ``atypical``: plausible values that do not fit the customer type (a young budget customer
  with a luxury basket and a long membership);
- ``bot``: bursts of near-identical orders, seconds apart, with sessions of a few seconds.

Optionally a small share of rows is *broken* (null ids, negative counts, unknown channel) so
that row-level quarantine has something to catch, and a whole batch can be broken (a required
column missing) so that batch-level quarantine has something to catch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.config.dataset import SentinelError

STYLES = np.array(["classic", "trendy", "sporty", "luxury"])
STYLE_WEIGHTS = np.array([0.35, 0.30, 0.25, 0.10])
CHANNELS = np.array(["web", "app", "store"])
PAYMENTS = np.array(["card", "paypal", "klarna", "cash", "gift_card"])
COUNTRIES = np.array(["DE", "FR", "NL", "ES", "IT", "PL"])
CATEGORIES = np.array(
    ["dresses", "suits", "sneakers", "sportswear", "accessories", "outerwear", "denim"]
)
# Category preferences per style (rows follow STYLES).
CATEGORY_PREFS = np.array(
    [
        [0.20, 0.25, 0.05, 0.05, 0.15, 0.20, 0.10],  # classic
        [0.30, 0.02, 0.18, 0.05, 0.15, 0.05, 0.25],  # trendy
        [0.02, 0.01, 0.35, 0.45, 0.07, 0.07, 0.03],  # sporty
        [0.25, 0.30, 0.02, 0.01, 0.25, 0.15, 0.02],  # luxury
    ]
)
CHANNEL_PREFS = np.array(
    [[0.40, 0.15, 0.45], [0.35, 0.55, 0.10], [0.45, 0.40, 0.15], [0.30, 0.20, 0.50]]
)
PRICE_LEVEL = np.array([60.0, 35.0, 45.0, 260.0])  # typical item price per style
AGE_MEAN = np.array([48.0, 26.0, 34.0, 45.0])

ANOMALY_KINDS = ("extreme", "impossible", "atypical", "bot")
LABEL_SUFFIX = ".labels.csv"


def labels_path_for(batch_path: str) -> str:
    """Where the labels of a generated batch live: beside it, ``<stem>.labels.csv``."""
    for ext in (".parquet", ".csv"):
        if batch_path.endswith(ext):
            return batch_path[: -len(ext)] + LABEL_SUFFIX
    return batch_path + LABEL_SUFFIX


def _normal_purchases(rng: np.random.Generator, n: int, start: pd.Timestamp) -> pd.DataFrame:
    style_idx = rng.choice(len(STYLES), size=n, p=STYLE_WEIGHTS)
    budget = rng.lognormal(mean=0.0, sigma=0.35, size=n)  # multiplies prices
    engagement = rng.beta(2.0, 3.0, size=n)  # 0..1, loyalty and activity

    u = rng.random(n)
    cum = np.cumsum(CHANNEL_PREFS[style_idx], axis=1)
    channel_idx = (u[:, None] > cum).sum(axis=1)
    u = rng.random(n)
    cum = np.cumsum(CATEGORY_PREFS[style_idx], axis=1)
    category_idx = np.minimum((u[:, None] > cum).sum(axis=1), len(CATEGORIES) - 1)

    channel = CHANNELS[channel_idx]
    item_count = 1 + rng.poisson(0.8 + 2.5 * engagement * budget.clip(0.5, 2.0))
    avg_item_price = PRICE_LEVEL[style_idx] * budget * rng.lognormal(0.0, 0.15, size=n)
    used_coupon = rng.random(n) < (0.15 + 0.45 * (STYLES[style_idx] == "trendy"))
    discount_pct = np.where(used_coupon, rng.choice([10.0, 15.0, 20.0, 30.0], size=n), 0.0)
    basket_value = item_count * avg_item_price * (1.0 - discount_pct / 100.0)
    is_member = rng.random(n) < (0.2 + 0.7 * engagement)
    # Non-members' tenure is drawn per row: one draw for the whole batch (as it was) gave every
    # non-member of a batch the same tenure, a different one per batch, so two batches of this
    # generator were never from one distribution (drift read 2-21x on "unchanged" batches).
    tenure_days = np.where(
        is_member, rng.gamma(2.0, 250.0 * (0.5 + engagement)), rng.gamma(1.2, 60.0, size=n)
    ).round()
    web_like = channel != "store"
    session_minutes = np.where(
        web_like, rng.gamma(2.0, 4.0 + 10.0 * engagement), 0.0
    ).round(1)
    pages_viewed = np.where(web_like, 1 + rng.poisson(3 + session_minutes * 0.8), 0)
    express = web_like & (rng.random(n) < 0.1 + 0.3 * (budget > 1.3))
    shipping_cost = np.where(
        web_like, np.where(basket_value > 80, 0.0, 4.95) + np.where(express, 9.95, 0.0), 0.0
    )
    returns_90d = rng.poisson(0.2 + 1.2 * (STYLES[style_idx] == "trendy") * engagement)
    loyalty_points = np.where(is_member, (basket_value * (1 + engagement)).round(), 0).astype(
        int
    )
    age = np.clip(rng.normal(AGE_MEAN[style_idx], 8.0), 16, 90).round()

    payment_probs = np.where(
        (channel == "store")[:, None],
        np.array([0.55, 0.0, 0.0, 0.40, 0.05]),
        np.array([0.45, 0.30, 0.20, 0.0, 0.05]),
    )
    u = rng.random(n)
    payment = PAYMENTS[(u[:, None] > np.cumsum(payment_probs, axis=1)).sum(axis=1).clip(0, 4)]
    country = rng.choice(COUNTRIES, size=n, p=[0.35, 0.2, 0.12, 0.13, 0.12, 0.08])
    gift_wrap = rng.random(n) < 0.05 + 0.1 * (STYLES[style_idx] == "luxury")
    # Purchases spread over the day, more in the evening.
    seconds = np.sort((rng.beta(2.5, 1.8, size=n) * 86_399).astype(int))
    ts = start + pd.to_timedelta(seconds, unit="s")

    return pd.DataFrame(
        {
            "purchase_id": np.arange(n),  # replaced by string ids at the end
            "customer_id": rng.integers(10_000, 99_999, size=n),
            "purchased_at": ts,
            "channel": channel,
            "payment_method": payment,
            "country": country,
            "top_category": CATEGORIES[category_idx],
            "item_count": item_count.astype("int64"),
            "avg_item_price": avg_item_price.round(2),
            "discount_pct": discount_pct,
            "basket_value": basket_value.round(2),
            "shipping_cost": shipping_cost.round(2),
            "returns_90d": returns_90d.astype("int64"),
            "customer_tenure_days": tenure_days.astype("int64"),
            "customer_age": age.astype("int64"),
            "session_minutes": session_minutes,
            "pages_viewed": pages_viewed.astype("int64"),
            "loyalty_points": loyalty_points,
            "is_member": is_member,
            "used_coupon": used_coupon,
            "express_shipping": express,
            "gift_wrap": gift_wrap,
        }
    )


def _inject_anomalies(
    rng: np.random.Generator, df: pd.DataFrame, rate: float
) -> tuple[pd.DataFrame, np.ndarray]:
    """Overwrite a share ``rate`` of rows with anomalies; return the frame and the kind per row."""
    n = len(df)
    kinds = np.full(n, "", dtype=object)
    n_anom = int(round(rate * n))
    if n_anom == 0:
        return df, kinds
    idx = rng.choice(n, size=n_anom, replace=False)
    assigned = rng.choice(len(ANOMALY_KINDS), size=n_anom)
    df = df.copy()
    for k, kind in enumerate(ANOMALY_KINDS):
        rows = idx[assigned == k]
        if len(rows) == 0:
            continue
        kinds[rows] = kind
        if kind == "extreme":
            df.loc[rows, "item_count"] = rng.integers(25, 60, size=len(rows))
            df.loc[rows, "basket_value"] = (
                df.loc[rows, "item_count"] * df.loc[rows, "avg_item_price"] * 1.0
            ).round(2)
            df.loc[rows, "returns_90d"] = rng.integers(8, 20, size=len(rows))
        elif kind == "impossible":
            df.loc[rows, "channel"] = "web"
            df.loc[rows, "payment_method"] = "cash"
            df.loc[rows, "session_minutes"] = 0.0
            df.loc[rows, "pages_viewed"] = 0
            df.loc[rows, "discount_pct"] = 50.0
            df.loc[rows, "used_coupon"] = False
        elif kind == "atypical":
            df.loc[rows, "customer_age"] = rng.integers(17, 21, size=len(rows))
            df.loc[rows, "top_category"] = "suits"
            df.loc[rows, "avg_item_price"] = rng.uniform(600, 1200, size=len(rows)).round(2)
            df.loc[rows, "basket_value"] = (
                df.loc[rows, "item_count"] * df.loc[rows, "avg_item_price"]
            ).round(2)
            df.loc[rows, "customer_tenure_days"] = rng.integers(3000, 5000, size=len(rows))
        elif kind == "bot":
            # One template order repeated, two seconds apart.
            copied = df.columns.drop(["purchase_id", "purchased_at"])
            df.loc[rows, copied] = df.loc[[rows[0]] * len(rows), copied].to_numpy()
            df.loc[rows, "purchased_at"] = df.loc[rows[0], "purchased_at"] + pd.to_timedelta(
                2 * np.arange(len(rows)), unit="s"
            )
            df.loc[rows, "channel"] = "web"
            df.loc[rows, "session_minutes"] = 0.1
            df.loc[rows, "pages_viewed"] = 1
            df.loc[rows, "item_count"] = 12
            df.loc[rows, "basket_value"] = (12 * df.loc[rows, "avg_item_price"]).round(2)
    return df, kinds


def _break_rows(rng: np.random.Generator, df: pd.DataFrame, rate: float) -> np.ndarray:
    """Make a share ``rate`` of rows invalid for the data contract; return their positions."""
    n_bad = int(round(rate * len(df)))
    if n_bad == 0:
        return np.array([], dtype=int)
    rows = rng.choice(len(df), size=n_bad, replace=False)
    df.loc[rows[0::3], "purchase_id"] = None
    df.loc[rows[1::3], "item_count"] = -3
    df.loc[rows[2::3], "channel"] = "fax"
    return rows


def generate_purchases(
    n_rows: int,
    *,
    seed: int = 0,
    anomaly_rate: float = 0.02,
    bad_row_rate: float = 0.0,
    broken: bool = False,
    day: str = "2026-11-01",
    batch_tag: str | None = None,
    first_id: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate one batch of purchases and its labels.

    Parameters
    ----------
    n_rows : number of purchases.
    seed : random seed; the same arguments give the same batch.
    anomaly_rate : share of rows replaced by labelled anomalies.
    bad_row_rate : share of rows made invalid (null id, negative count, unknown channel).
    broken : drop the required column ``basket_value`` so the whole batch fails validation.
    day : calendar day of the purchases (``YYYY-MM-DD``).
    batch_tag : prefix of the purchase ids; defaults to the day.
    first_id : number of the first purchase id (a chunk of a larger batch starts after the
        ones before it).

    Returns
    -------
    (batch, labels) where labels has ``purchase_id, is_anomaly, anomaly_kind``.
    """
    if n_rows < 1:
        raise SentinelError(f"--rows must be at least 1, got {n_rows}")
    if not 0.0 <= anomaly_rate <= 0.5:
        raise SentinelError(f"--anomaly-rate must be between 0 and 0.5, got {anomaly_rate}")
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(day)
    df = _normal_purchases(rng, n_rows, start)
    df, kinds = _inject_anomalies(rng, df, anomaly_rate)
    tag = batch_tag or start.strftime("%Y%m%d")
    df["purchase_id"] = [f"P{tag}-{i:07d}" for i in range(first_id, first_id + n_rows)]
    df["purchase_id"] = df["purchase_id"].astype(object)
    labels = pd.DataFrame(
        {
            "purchase_id": df["purchase_id"].copy(),
            "is_anomaly": kinds != "",
            "anomaly_kind": kinds,
        }
    )
    _break_rows(rng, df, bad_row_rate)
    if broken:
        df = df.drop(columns=["basket_value"])
    return df, labels


#: Rows generated at a time by ``write_purchases`` (about 150 MiB of frames at once).
GENERATE_CHUNK = 500_000


def write_purchases(
    out: Path, n_rows: int, *, chunk_rows: int = GENERATE_CHUNK, seed: int = 0, **options: Any
) -> tuple[int, int]:
    """Generate ``n_rows`` purchases into ``out`` (``.parquet`` or ``.csv``) and their labels
    beside it (``labels_path_for``), ``chunk_rows`` rows at a time, so memory stays that of
    one chunk whatever ``n_rows`` is. Both files are written under temporary names and renamed
    when whole. Up to ``chunk_rows`` rows, the batch is exactly ``generate_purchases``'s; a
    larger one is chunks of it, each from its own seed (``(seed, chunk)``), with ids running on.
    ``options`` go to ``generate_purchases``. Returns (rows, labelled anomalies)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.storage import atomic_path

    if chunk_rows < 1:
        raise SentinelError(f"chunk_rows must be at least 1, got {chunk_rows}")
    out = Path(out)
    if out.suffix not in (".parquet", ".csv"):
        raise SentinelError(f"--out must end in .parquet or .csv, got {out}")
    lab = Path(labels_path_for(str(out)))
    anomalies = 0
    with atomic_path(out) as tmp, atomic_path(lab) as tmp_lab:
        writer: pq.ParquetWriter | None = None
        schema: pa.Schema | None = None
        try:
            for i, start in enumerate(range(0, max(n_rows, 1), chunk_rows)):
                n = min(chunk_rows, n_rows - start)
                chunk_seed = seed if n_rows <= chunk_rows else np.random.SeedSequence([seed, i])
                df, labels = generate_purchases(n, seed=chunk_seed, first_id=start, **options)
                anomalies += int(labels["is_anomaly"].sum())
                if out.suffix == ".csv":
                    df.to_csv(tmp, mode="a", header=i == 0, index=False)
                else:
                    table = pa.Table.from_pandas(df, preserve_index=False)
                    if writer is None:
                        schema = table.schema
                        writer = pq.ParquetWriter(tmp, schema)
                    writer.write_table(table.cast(schema))
                labels.to_csv(tmp_lab, mode="a", header=i == 0, index=False)
        finally:
            if writer is not None:
                writer.close()
    return n_rows, anomalies
