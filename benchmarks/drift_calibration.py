"""The drift figure before and after calibration, on the demo's data (docs/model-lifecycle.md).

Trains the dataset's configured detector on 80 % of one generated day (as a first training
does), calibrates its drift baseline on the other 20 % (``drift.calibrate``), then measures new
generated batches: unchanged at three sizes, prices up 50 %, prices tripled, amounts in cents,
and one record repeated. "before" is the energy over the sampling noise alone (the figure
before calibration), "after" the calibrated ``energy_ratio``.

    python -m benchmarks.drift_calibration [--rows 4000] [--dataset retail_purchases]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from models.bundle import Bundle
from pipeline.config.dataset import Settings, load_dataset
from pipeline.demo.data import generate_purchases
from pipeline.lifecycle import drift
from pipeline.lifecycle.train import schema_of, split_holdout

SHIFTS = ("unchanged", "prices +50%", "prices x3", "cents", "one record repeated")


def batch(kind: str, rows: int, seed: int) -> pd.DataFrame:
    df = generate_purchases(rows, seed=seed, anomaly_rate=0.02)[0]
    factor = {"prices +50%": 1.5, "prices x3": 3.0, "cents": 100.0}.get(kind)
    if factor:
        df["avg_item_price"] *= factor
        df["basket_value"] *= factor
    if kind == "one record repeated":
        df = df.iloc[[0] * rows].reset_index(drop=True)
    return df


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4000)
    ap.add_argument("--dataset", default="retail_purchases")
    args = ap.parse_args(argv)
    settings = Settings.from_env()
    cfg = load_dataset(settings, args.dataset)
    train, hold, _, _ = split_holdout(generate_purchases(args.rows, seed=1, anomaly_rate=0.02)[0], None)
    t0 = time.perf_counter()
    bundle = Bundle.train(train, schema_of(cfg), id_column=cfg.id_column,
                          detector_params={"alert_rate": cfg.alert_rate, "random_state": 0, **cfg.model}, metadata={})
    bundle.metadata["drift_calibration"] = drift.calibrate(bundle, hold)
    print(f"trained on {len(train)} rows in {time.perf_counter() - t0:.0f}s; calibration "
          f"{bundle.metadata['drift_calibration']} ({Path(settings.expectations_dir) / args.dataset})")
    print("| batch | rows | before | after | reconstruction |\n|---|---|---|---|---|")
    for kind in SHIFTS:
        for rows in (300, 1000, 4000) if kind == "unchanged" else (1000,):
            for seed in (11, 12, 13) if kind == "unchanged" else (11,):
                f = drift.measure(bundle, batch(kind, rows, seed))
                print(f"| {kind} | {rows:,} | {f['energy'] / f['energy_noise']:.2f} | {f['energy_ratio']:.2f} "
                      f"| {f['recon_shift']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
