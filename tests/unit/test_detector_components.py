"""The detector's components beyond reconstruction and latent position: each catches its own
kind of anomaly, names the signal and the columns that drove it, and survives a save and load.

PCA latent models keep these fast (no Keras training); the components do not depend on the kind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from models.bundle import Bundle, load_bundle
from models.detector import (
    SIGNALS,
    THRESHOLD_TIE,
    CategoryCombinations,
    DuplicateRecords,
    LatentDetector,
    MarginalTails,
    _threshold_clear_of_ties,
    combine_families,
)

PCA = {"kind": "pca", "alert_rate": 0.02, "random_state": 0}


def _shop(n: int, seed: int, cash_on_web: int = 0) -> pd.DataFrame:
    """Orders whose payment depends on the channel: cash only in the store."""
    rng = np.random.default_rng(seed)
    channel = rng.choice(["web", "store"], size=n, p=[0.6, 0.4])
    payment = np.where(channel == "store", rng.choice(["cash", "card"], size=n), rng.choice(["card", "paypal"], size=n))
    payment[np.flatnonzero(channel == "web")[:cash_on_web]] = "cash"  # a dirty training set
    return pd.DataFrame({
        "order_id": [f"o{seed}-{i}" for i in range(n)],
        "amount": rng.lognormal(3.0, 0.4, size=n).round(2),
        "items": rng.integers(1, 6, size=n),
        "channel": channel,
        "payment": payment,
        "member": rng.random(n) < 0.5,
    })


def _train(df: pd.DataFrame, **params: object) -> Bundle:
    schema = {"numeric": ["amount", "items"], "categorical": ["channel", "payment"], "boolean": ["member"], "datetime": []}
    return Bundle.train(df, schema, id_column="order_id", detector_params={**PCA, **params})


def test_families_count_correlated_evidence_once() -> None:
    x = np.array([1.0, 5.0])
    assert np.allclose(combine_families({"recon": x, "residual": x}), x)  # one family: the mean
    assert np.allclose(combine_families({"recon": x, "tails": x}), 2 * x)  # two families: the sum


def test_marginal_tails_flag_a_value_far_out_in_its_own_column(tmp_path: Path) -> None:
    train = _shop(2000, 0)
    test = _shop(300, 1)
    test.loc[7, "items"] = 40  # ordinary in every other way
    bundle = _train(train)
    scored = bundle.score_frame(test, keep_columns=False)
    assert scored["raw_score"].idxmax() == 7
    assert scored.loc[7, "is_anomaly"]
    assert scored.loc[7, "top_features"][0] == "items"
    bundle.save(tmp_path / "b")
    again = load_bundle(tmp_path / "b").score_frame(test, keep_columns=False)
    np.testing.assert_allclose(again["raw_score"], scored["raw_score"])


def test_marginal_tails_count_knots_exactly_on_awkward_columns() -> None:
    """The knot tables (``_KnotTable``) give the counts of a search per value: ties (integer
    and one-hot columns), a constant column, a heavy tail whose bulk crowds a few cells, values
    beyond every knot and exactly on one, one training row."""
    rng = np.random.default_rng(1)

    def frame(n: int) -> np.ndarray:
        return np.column_stack([
            rng.normal(size=n), rng.integers(0, 5, n), rng.random(n) < 0.1, np.full(n, 7.0),
            rng.standard_cauchy(n), np.round(rng.normal(size=n), 1),
        ]).astype("float32")

    for n_train in (5000, 40, 1):
        train, test = frame(n_train), frame(3000)
        test[:4, 0] = [-1e30, 1e30, train[0, 0], np.nextafter(train[0, 0], np.float32(np.inf))]
        test[:3, 3] = [6.5, 7.0, 7.5]
        model = MarginalTails().fit(train)
        total, per_column = model.score(test)
        m = len(model.knots_)
        left = np.stack([np.searchsorted(model.knots_[:, j], test[:, j], side="right") for j in range(test.shape[1])])
        right = m - np.stack([np.searchsorted(model.knots_[:, j], test[:, j], side="left") for j in range(test.shape[1])])
        log_m = np.float32(np.log(m + 1.0))
        nl = log_m - np.log1p(left.astype("float32"))
        nr = log_m - np.log1p(right.astype("float32"))
        np.testing.assert_array_equal(per_column, np.maximum(nl, nr).T)
        sides = model.skew_sign_ < 0
        expected = np.maximum(np.maximum(nl.sum(0), nr.sum(0)), nl[sides].sum(0) + nr[~sides].sum(0))
        np.testing.assert_allclose(total, expected, rtol=1e-6)

    # knots spanning more than float32 holds (the cell arithmetic would overflow): all searched
    wide = MarginalTails().fit(np.array([[-3e38], [3e38], [0.0], [1.0]], dtype="float32"))
    query = np.array([[-3e38], [3e38], [0.5], [-1e30], [5.0]], dtype="float32")
    knots = wide.knots_[:, 0]
    log_m = np.float32(np.log(len(knots) + 1.0))
    left = log_m - np.log1p(np.searchsorted(knots, query[:, 0], side="right").astype("float32"))
    right = log_m - np.log1p((len(knots) - np.searchsorted(knots, query[:, 0], side="left")).astype("float32"))
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(wide.score(query)[1][:, 0], np.maximum(left, right))


def test_impossible_combination_is_flagged_and_explained_even_when_training_holds_a_few(tmp_path: Path) -> None:
    train = _shop(3000, 0, cash_on_web=15)  # 0.5 % of training rows are the impossible pair
    test = _shop(400, 2)
    test.loc[[3, 4, 5], ["channel", "payment"]] = ["web", "cash"]
    bundle = _train(train)
    scored = bundle.score_frame(test, keep_columns=False)
    flagged = scored.loc[[3, 4, 5]]
    assert flagged["is_anomaly"].all()
    # both the combination and the reconstruction see it; either way it is explained by the pair
    assert flagged["signal"].isin(["combination", "reconstruction"]).all()
    assert all(set(t[:2]) == {"channel", "payment"} for t in flagged["top_features"])
    combos = bundle.detector.component_evidence(bundle.encoder.transform(test))["combos"]
    assert combos[[3, 4, 5]].min() > 3
    assert np.median(combos) == 0
    assert scored["is_anomaly"].drop(index=[3, 4, 5]).mean() < 0.06
    bundle.save(tmp_path / "b")
    again = load_bundle(tmp_path / "b").score_frame(test, keep_columns=False)
    np.testing.assert_allclose(again["raw_score"], scored["raw_score"])
    assert list(again["signal"]) == list(scored["signal"])


def test_a_record_repeated_many_times_is_flagged_as_duplicates(tmp_path: Path) -> None:
    train = _shop(3000, 0)
    test = _shop(2000, 3)
    bot = test.loc[0].copy()
    rows = np.arange(100, 130)
    for col in ("amount", "items", "channel", "payment", "member"):
        test.loc[rows, col] = bot[col]  # 30 copies of one ordinary order (ids differ)
    bundle = _train(train)
    scored = bundle.score_frame(test, keep_columns=False)
    assert scored.loc[rows, "is_anomaly"].all()
    assert (scored.loc[rows, "signal"] == "duplicates").all()
    assert (scored.loc[rows, "copies_in_batch"] == 31).all()  # with the original row 0
    clean = bundle.score_frame(_shop(2000, 4), keep_columns=False)
    assert (clean["signal"] != "duplicates").all()
    bundle.save(tmp_path / "b")
    again = load_bundle(tmp_path / "b").score_frame(test, keep_columns=False)
    np.testing.assert_allclose(again["raw_score"], scored["raw_score"])


def test_duplicates_of_a_repetitive_source_are_not_evidence() -> None:
    """Data with few distinct records repeats them by itself: the half-split null absorbs it."""
    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, size=(4000, 3)).astype("float32")  # 27 distinct records
    model = DuplicateRecords().fit(X[:3000], np.arange(3))
    assert model.burst_rows_ == 0  # every row repeats: not a burst, the source's own habit
    evidence, copies = model.score(X[3000:])
    assert copies.min() > 10
    assert evidence.max() == 0


ORDER = ["amount", "items", "channel", "payment", "member"]


def _timed(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The orders spread over one day (a timestamp column the detector encodes)."""
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, 86_400, size=len(df)))
    return df.assign(at=pd.Timestamp("2026-11-02", tz="UTC") + pd.to_timedelta(seconds, unit="s"))


def _train_timed(df: pd.DataFrame) -> Bundle:
    schema = {"numeric": ["amount", "items"], "categorical": ["channel", "payment"], "boolean": ["member"], "datetime": ["at"]}
    return Bundle.train(df, schema, id_column="order_id", detector_params=PCA)


def test_a_burst_in_the_training_data_is_not_learned_as_a_frequent_record(tmp_path: Path) -> None:
    """The training day's own bot: 30 copies of one order within a minute, among 3,000 orders of
    a day. Learned as a frequent record (share 1 %), its copies would be expected in every later
    batch and in-sample, and the threshold would be set as if they were normal rows; trimmed as
    a burst, they alert both in the training rows and when the same bot comes back."""
    rows = np.arange(100, 130)
    train = _timed(_shop(3000, 0), 0)
    train.loc[rows, ORDER] = train.loc[0, ORDER].to_numpy()
    train.loc[[0, *rows], "at"] = train.loc[0, "at"] + pd.to_timedelta(2 * np.arange(31), unit="s")
    bundle = _train_timed(train)
    assert bundle.detector.duplicates_model_.burst_rows_ == 31  # the template and its 30 copies
    in_sample = bundle.score_frame(train, keep_columns=False)
    assert in_sample.loc[rows, "is_anomaly"].all()
    assert (in_sample.loc[rows, "signal"] == "duplicates").all()
    test = _timed(_shop(2000, 3), 3)
    test.loc[rows, ORDER] = train.loc[0, ORDER].to_numpy()
    scored = bundle.score_frame(test, keep_columns=False)
    assert (scored.loc[rows, "signal"] == "duplicates").all()
    assert scored.loc[rows, "is_anomaly"].all()
    assert (bundle.score_frame(_timed(_shop(2000, 4), 4), keep_columns=False)["signal"] != "duplicates").all()
    bundle.save(tmp_path / "b")
    again = load_bundle(tmp_path / "b").score_frame(test, keep_columns=False)
    np.testing.assert_allclose(again["raw_score"], scored["raw_score"])


def test_a_threshold_among_copies_of_one_record_moves_below_them_all() -> None:
    """16 copies of one training record, their raw scores apart by float32 noise (1.2e-5 seen
    between one record's copies in different parts of a batch), with the alert quantile among
    them: every copy is above the threshold, with room to spare for the noise; a quantile with
    no training score near it stays where it is."""
    copies = 9.9 + np.linspace(-1.2e-5, 1.2e-5, 16)
    raw = np.concatenate([np.linspace(0.0, 5.0, 975), copies, np.linspace(12.0, 20.0, 9)])
    assert copies.min() < np.quantile(raw, 0.98) < copies.max()
    threshold = _threshold_clear_of_ties(raw, 0.98)
    assert (copies - threshold > 0.5 * THRESHOLD_TIE * 9.9).all()
    assert threshold > 5.0  # no further down than the copies need
    spread = np.linspace(0.0, 1.0, 1001) ** 2
    t = float(np.quantile(spread, 0.9805))
    assert _threshold_clear_of_ties(spread, 0.9805) == pytest.approx(t)
    assert (np.abs(spread - t) > THRESHOLD_TIE).all()


@pytest.mark.parametrize("timed", [True, False])
def test_a_record_repeated_through_the_day_is_learned_not_trimmed(timed: bool) -> None:
    """A default order making up 3 % of every day, spread over the day (or with no timestamps
    to tell): the source's habit. Learned as frequent, so its copies the next day are expected
    and do not alert as duplicates (trimmed, every one of them would)."""
    def day(seed: int) -> pd.DataFrame:
        df = _timed(_shop(3000, seed), seed)
        habit = np.arange(0, 3000, 33)  # 91 rows, through the whole day
        df.loc[habit, ORDER] = [20.0, 1, "web", "card", False]
        return df if timed else df.drop(columns="at")

    bundle = _train_timed(day(0)) if timed else _train(day(0))
    assert bundle.detector.duplicates_model_.burst_rows_ == 0
    scored = bundle.score_frame(day(5), keep_columns=False)
    assert (scored["signal"] != "duplicates").all()


def test_a_batch_that_is_entirely_one_record_scores_and_alerts() -> None:
    bundle = _train(_shop(2000, 0))
    batch = pd.concat([_shop(1, 5)] * 500, ignore_index=True)
    batch["order_id"] = [f"x{i}" for i in range(500)]
    scored = bundle.score_frame(batch, keep_columns=False)
    assert np.isfinite(scored["raw_score"]).all()
    assert scored["is_anomaly"].all()
    assert (scored["signal"] == "duplicates").all()


def test_constant_in_training_but_varying_at_scoring_stays_finite() -> None:
    train = _shop(1000, 0).assign(amount=10.0)
    test = _shop(200, 1)
    scored = _train(train).score_frame(test, keep_columns=False)
    assert np.isfinite(scored["raw_score"]).all()
    assert np.isfinite(scored["score"]).all()


def test_two_thousand_columns() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2000)).astype("float32")
    det = LatentDetector(**PCA).fit(X)
    s = det.explain(X[:5])
    assert s["raw_score"].shape == (5,)
    assert np.isfinite(s["raw_score"]).all()
    knots = det.tails_model_.knots_
    assert knots.shape[1] == 2000
    assert knots.shape[0] <= 300


def test_tails_and_combinations_on_their_own() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 3)).astype("float32")
    tails = MarginalTails().fit(X)
    total, per_column = tails.score(np.array([[0, 0, 0], [0, 9, 0]], dtype="float32"))
    assert total[1] > total[0]
    assert per_column[1].argmax() == 1
    onehot = np.zeros((1000, 4), dtype="float32")  # two 2-level columns, always equal
    level = rng.integers(0, 2, size=1000)
    onehot[np.arange(1000), level] = 1
    onehot[np.arange(1000), 2 + level] = 1
    combos = CategoryCombinations().fit(onehot, [np.array([0, 1]), np.array([2, 3])], ["categorical", "categorical"])
    value, worst = combos.score(np.array([[1, 0, 1, 0], [1, 0, 0, 1]], dtype="float32"))
    assert value[0] == 0
    assert value[1] > 3
    assert worst.tolist() == [-1, 0]


def test_detector_saved_before_the_families_scores_as_it_did(tmp_path: Path) -> None:
    """Calibration files of the previous release have four components and no ``combine`` key:
    loading one keeps Fisher's rule and gives the same scores."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 4)).astype("float32")
    old = LatentDetector(**PCA, components=["recon", "residual", "latent", "density"], combine="fisher").fit(X)
    before = old.explain(X[:200])["raw_score"]
    old.save(tmp_path)
    calib = tmp_path / "calibration.json"
    state = json.loads(calib.read_text())
    for key in ("components", "combine", "family_weights"):
        state["params"].pop(key)
    calib.write_text(json.dumps(state))
    again = LatentDetector.load(tmp_path)
    assert again.combine == "fisher"
    np.testing.assert_allclose(again.explain(X[:200])["raw_score"], before)


def test_signals_are_a_fixed_list() -> None:
    assert SIGNALS[0] == "reconstruction"
    assert "duplicates" in SIGNALS
    assert len(set(SIGNALS)) == len(SIGNALS)
