"""The physical reference for scoring: what this machine can do at best, on the same file.

Usage::

    python -m benchmarks.reference --workdir DIR [--repeat K]

``DIR`` is a ``benchmarks.throughput --workdir`` folder after a run (it holds ``data.parquet``,
the sentinel's bundle ``sentinel.bundle`` and its scored output ``scored_sentinel.parquet``).
Prints, each the best of ``K`` runs:

- the network's multiply-adds per row (from the bundle's Keras layers) and the FLOPs per row;
- what this CPU does: float32 matrix products (GFLOP/s, NumPy's BLAS on every core), and the
  network's pass on 100,000 rows, the faster of the same products in NumPy and the model's own
  ``encode_reconstruct`` (Keras on TensorFlow's oneDNN kernels);
- memory bandwidth (a NumPy copy of 512 MiB, GB/s);
- Parquet: reading ``data.parquet`` whole (rows/s, MB/s) and writing the scored output's table
  again with the product's writer settings (rows/s);
- the limit these imply for end-to-end scoring on this machine: rows/s if scoring were only
  the read, the network's FLOPs at the measured rate and the write, with no other work.

No timing here is an assertion; the figures go into ``docs/throughput.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """The fastest of ``repeat`` wall-clock timings of ``fn()``, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def network_macs(bundle_dir: Path) -> tuple[int, list[tuple[int, int]]]:
    """Multiply-adds per row of the bundle's encoder and decoder, and each Dense layer's
    (inputs, outputs)."""
    from models.bundle import load_bundle

    model = load_bundle(bundle_dir).detector.model_
    keras_model = getattr(model, "model_", None)
    if keras_model is None:  # PCA: two projections
        comps = np.asarray(model.components_)
        shapes = [(comps.shape[1], comps.shape[0]), (comps.shape[0], comps.shape[1])]
    else:
        # the layers a row goes through, in order: encoder (or the VAE's body and mean), decoder
        encoder = getattr(keras_model, "encoder", None)
        layers = (
            list(encoder.layers) if encoder is not None else [*keras_model.body.layers, keras_model.z_mean]
        ) + list(keras_model.decoder.layers)
        shapes = [(int(layer.kernel.shape[0]), int(layer.kernel.shape[1])) for layer in layers]
    return sum(i * o for i, o in shapes), shapes


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reference", description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, required=True, help="a benchmarks.throughput --workdir folder")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    data = args.workdir / "data.parquet"
    scored = args.workdir / "scored_sentinel.parquet"
    bundle = args.workdir / "sentinel.bundle"
    for path in (data, scored, bundle):
        if not path.exists():
            p.error(f"{path} is missing: run python -m benchmarks.throughput --workdir {args.workdir} first")

    import pyarrow.parquet as pq

    from pipeline.score.scorer import _text_columns

    macs, shapes = network_macs(bundle)
    flops_row = 2 * macs
    rng = np.random.default_rng(0)
    a = rng.random((2048, 2048), dtype="float32")
    gemm_s = best_of(lambda: a @ a, args.repeat)
    gemm_gflops = 2 * 2048**3 / gemm_s / 1e9
    # the network's own products: 100,000 rows through its Dense layers
    x = rng.random((100_000, shapes[0][0]), dtype="float32")
    weights = [rng.random(s, dtype="float32") for s in shapes]

    def net() -> None:
        h = x
        for w in weights:
            h = np.maximum(h @ w, 0.0)

    net_s = best_of(net, args.repeat)
    from models.bundle import load_bundle

    latent_model = load_bundle(bundle).detector.model_
    model_s = best_of(lambda: latent_model.encode_reconstruct(x), args.repeat)
    net_s = min(net_s, model_s)  # the faster of NumPy's BLAS and the model's own (oneDNN) pass
    net_gflops = flops_row * len(x) / net_s / 1e9
    big = np.ones(64 << 20)  # 512 MiB of float64
    copy_s = best_of(big.copy, args.repeat)
    bandwidth = 2 * big.nbytes / copy_s / 1e9  # read + write

    meta = pq.ParquetFile(data).metadata
    rows = meta.num_rows
    size = data.stat().st_size
    read_s = best_of(lambda: pq.read_table(data), args.repeat)
    table = pq.read_table(scored)
    out = args.workdir / ".reference-write.parquet"
    write_s = best_of(
        lambda: pq.write_table(table, out, use_dictionary=_text_columns(table.schema), row_group_size=100_000),
        args.repeat,
    )
    out.unlink(missing_ok=True)
    compute_s = flops_row * rows / (net_gflops * 1e9)
    limit = rows / (read_s + compute_s + write_s)

    cores = os.cpu_count()
    print(f"machine: {cores} cores; python {sys.version.split()[0]}")
    print(f"network: Dense layers {shapes}: {macs:,} multiply-adds = {flops_row:,} FLOPs per row")
    print(f"float32 matrix product 2048x2048 (BLAS, {cores} cores): {gemm_gflops:,.0f} GFLOP/s")
    print(f"the network on 100,000 rows: the model's own pass {model_s * 1e3:.1f} ms; the fastest "
          f"{net_s * 1e3:.1f} ms = {net_gflops:,.1f} GFLOP/s = {len(x) / net_s:,.0f} rows/s")
    print(f"memory bandwidth (copy of 512 MiB): {bandwidth:,.1f} GB/s")
    print(f"Parquet read of {data.name} ({rows:,} rows, {size / 1e6:,.0f} MB): {read_s:.2f} s = "
          f"{rows / read_s:,.0f} rows/s, {size / read_s / 1e6:,.0f} MB/s")
    print(f"Parquet write of the scored table ({table.num_columns} columns, "
          f"{scored.stat().st_size / 1e6:,.0f} MB): {write_s:.2f} s = {rows / write_s:,.0f} rows/s")
    print(f"limit: read + network + write only = {read_s + compute_s + write_s:.2f} s = {limit:,.0f} rows/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
