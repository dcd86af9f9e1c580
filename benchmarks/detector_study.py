"""The detector's design study: component evidence cached once, combination rules compared by fold.

Choosing the default detector is the one place where it is easy to fool oneself: a rule picked
on the same sets it is reported on says nothing about new data. This study keeps the two fixed
folds of ``benchmarks.folds`` apart:

1. ``cache``: for every set and seed (ADBench protocol, ``benchmarks.adbench.split``), fit the
   product's detector once per latent-model kind with every component switched on, and store
   each component's evidence (``-log`` tail p-value against the training rows) for the test rows,
   plus an isolation forest's on the same encoded matrix. Minutes per kind; done once.
2. ``choose``: every candidate rule (which components, how they are combined) is scored from the
   cache in milliseconds; the best rule on fold A is reported on fold B and the other way round.

    python -m benchmarks.detector_study cache /work/shared/data/adbench --seeds 0,1,2
    python -m benchmarks.detector_study choose
    python -m benchmarks.detector_study knn-scales /work/shared/data/adbench  # k-NN per input scaling

The chosen rule becomes ``LatentDetector``'s default; ``python -m benchmarks.adbench --folds``
then measures that default end to end, through the product's own training and scoring.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.special import logsumexp
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score

from benchmarks.adbench import find_datasets, load_dataset, split
from benchmarks.folds import fold_of
from benchmarks.harness import parse_seeds, write_section

log = logging.getLogger("benchmarks.detector_study")
CACHE = Path("var/study")
KINDS = ("ae", "pca")


def _frame(X: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])


def _evidence_of(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """``-log`` empirical upper-tail p-value of ``test`` among ``train`` (both raw scores)."""
    s = np.sort(train)
    above = len(s) - np.searchsorted(s, test, side="left")
    return np.log(len(s) + 1.0) - np.log1p(above)


def cache_one(path: Path, seed: int, kind: str) -> dict[str, np.ndarray]:
    from models.bundle import Bundle

    X, y = load_dataset(path)
    X_train, X_test, _, y_test = split(X, y, seed)
    kind, _, offset = kind.partition("@")  # "ae@1": the same split, another model seed
    kind, _, variance = kind.partition("~")  # "ae~0.9": latent size for 90 % of the variance
    params = {"kind": kind, "random_state": seed + 1000 * int(offset or 0),
              "components": ["recon", "residual", "latent", "density", "tails"]}
    if variance:
        params["latent_variance"] = float(variance)
    bundle = Bundle.train(_frame(X_train), None, detector_params=params)
    enc_train = bundle.encoder.transform(_frame(X_train))
    enc_test = bundle.encoder.transform(_frame(X_test))
    ev = bundle.detector.component_evidence(enc_test)
    forest = IsolationForest(n_estimators=100, max_samples=256, random_state=seed).fit(enc_train)
    ev["isolation"] = _evidence_of(-forest.score_samples(enc_train), -forest.score_samples(enc_test))
    return {**ev, "y": y_test}


def knn_input_one(path: Path, seed: int, k: int = 5, reference: int = 5000) -> dict[str, np.ndarray]:
    """Mean distance to the ``k`` nearest training rows in the encoded input space, as evidence."""
    from sklearn.neighbors import NearestNeighbors

    from models.features import FeatureEncoder

    X, y = load_dataset(path)
    X_train, X_test, _, _ = split(X, y, seed)
    enc = FeatureEncoder().fit(_frame(X_train))
    A, B = enc.transform(_frame(X_train)), enc.transform(_frame(X_test))
    rng = np.random.default_rng(seed)
    ref = np.sort(rng.choice(len(A), size=min(reference, len(A)), replace=False))
    nn = NearestNeighbors(n_neighbors=min(k + 1, len(ref))).fit(A[ref])
    d_train = nn.kneighbors(A, return_distance=True)[0]
    in_ref = np.zeros(len(A), dtype=bool)
    in_ref[ref] = True
    train = np.where(in_ref, d_train[:, 1:].mean(axis=1), d_train[:, :-1].mean(axis=1))
    test = nn.kneighbors(B, n_neighbors=min(k, len(ref)), return_distance=True)[0].mean(axis=1)
    return {"knn_input": _evidence_of(train, test)}


def duplicates_one(path: Path, seed: int) -> dict[str, np.ndarray]:
    """The duplicate-record evidence of the test rows (the test part is one scored frame)."""
    from models.detector import DuplicateRecords
    from models.features import FeatureEncoder

    X, y = load_dataset(path)
    X_train, X_test, _, _ = split(X, y, seed)
    enc = FeatureEncoder().fit(_frame(X_train))
    A, B = enc.transform(_frame(X_train)), enc.transform(_frame(X_test))
    model = DuplicateRecords().fit(A, np.arange(A.shape[1]))
    return {"duplicates": model.score(B)[0]}


MODEL_FREE = {"knn": knn_input_one, "dup": duplicates_one}

#: Input scalings for ``knn-scales``: ``raw`` is what PyOD's KNN sees (the files' own units).
SCALINGS = ("raw", "z-score", "encoded")


def knn_by_scaling(path: Path, seed: int, k: int = 5, reference: int = 5000) -> list[dict[str, object]]:
    """ROC-AUC of a plain k-NN detector (distance to the ``k``-th nearest training row, PyOD's
    default, and the mean of the ``k`` distances) on the test rows, per input scaling: the raw
    columns, z-scored columns, and the product's encoding (``models.features``)."""
    from sklearn.neighbors import NearestNeighbors

    from models.features import FeatureEncoder

    X, y = load_dataset(path)
    A, B, _, y_test = split(X, y, seed)
    mu, sd = A.mean(axis=0), A.std(axis=0) + 1e-12
    enc = FeatureEncoder().fit(_frame(A))
    views = {"raw": (A, B), "z-score": ((A - mu) / sd, (B - mu) / sd),
             "encoded": (enc.transform(_frame(A)), enc.transform(_frame(B)))}
    rng = np.random.default_rng(seed)
    ref = np.sort(rng.choice(len(A), size=min(reference, len(A)), replace=False))
    rows = []
    for name, (P, Q) in views.items():
        d = NearestNeighbors(n_neighbors=min(k, len(ref))).fit(P[ref]).kneighbors(Q)[0]
        rows.append({"dataset": path.stem, "seed": seed, "scaling": name,
                     "kth": roc_auc_score(y_test, d[:, -1]), "mean": roc_auc_score(y_test, d.mean(axis=1))})
    return rows


KNN_SCALES_HEADER = """## How much of k-NN's lead is the files' units

Generated by `python -m benchmarks.detector_study knn-scales /work/shared/data/adbench --markdown
docs/detector-study.md`. A plain k-NN detector (5 neighbours among at most 5,000 training rows;
distance to the 5th, PyOD's default) on the same splits, seen through three scalings of the
columns: `raw` (the files' own units, what PyOD's KNN gets), `z-score` (each column to mean 0,
standard deviation 1 on the training rows) and `encoded` (the product's encoding,
`models.features`). Mean ROC-AUC over the fold's sets and seeds 0-2, then the sets where the
raw units change the figure most.

"""


def _knn_scales_markdown(df: pd.DataFrame) -> str:
    means = df.groupby(["fold", "scaling"])["kth"].mean()
    lines = ["| fold | " + " | ".join(SCALINGS) + " |", "|---|" + "---|" * len(SCALINGS)]
    lines += [f"| {f} | " + " | ".join(f"{means[(f, s)]:.4f}" for s in SCALINGS) + " |" for f in sorted(df["fold"].unique())]
    per_set = df.groupby(["dataset", "scaling"])["kth"].mean().unstack()
    gap = (per_set["raw"] - per_set["z-score"]).sort_values(key=np.abs, ascending=False).head(6)
    lines += ["", "| set (fold) | raw | z-score | raw - z-score |", "|---|---|---|---|"]
    lines += [f"| {d} ({fold_of(d)}) | {per_set.loc[d, 'raw']:.3f} | {per_set.loc[d, 'z-score']:.3f} | {g:+.3f} |"
              for d, g in gap.items()]
    return "\n".join(lines)


def cmd_knn_scales(args: argparse.Namespace) -> None:
    """Why PyOD's KNN leads on fold A: how much of it is the files' raw column units."""
    rows = [r for path in find_datasets([args.data]) for seed in args.seeds for r in knn_by_scaling(path, seed)]
    df = pd.DataFrame(rows)
    df["fold"] = df["dataset"].map(fold_of)
    table = df.groupby(["fold", "scaling"])[["kth", "mean"]].mean().unstack(0).round(4)
    print(table.to_string())
    if args.markdown:
        write_section(args.markdown, "knn-scales", KNN_SCALES_HEADER + _knn_scales_markdown(df))
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")


def cmd_cache(args: argparse.Namespace) -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    jobs = list(itertools.product(find_datasets([args.data]), args.seeds, args.kinds))
    for i, (path, seed, kind) in enumerate(jobs, 1):
        out = CACHE / f"{path.stem}__{seed}__{kind}.npz"
        if out.exists():
            continue
        start = time.perf_counter()
        np.savez(out, **(MODEL_FREE[kind](path, seed) if kind in MODEL_FREE else cache_one(path, seed, kind)))
        log.info("[%d/%d] %s seed %d %s: %.1f s", i, len(jobs), path.stem, seed, kind, time.perf_counter() - start)


# ----------------------------------------------------------------------------- rules

FAMILY = {"recon": "reconstruction", "residual": "reconstruction", "latent": "latent", "density": "latent",
          "tails": "marginal", "isolation": "isolation", "knn_input": "neighbours", "duplicates": "duplicates"}


def rule_score(ev: dict[str, np.ndarray], comps: tuple[str, ...], how: str) -> np.ndarray:
    """Combine the evidence of ``comps``: ``families`` (mean within a family, sum across),
    ``fisher`` (sum of all), ``max`` (largest family mean), ``hmp`` (the harmonic mean of the
    families' p-values, as ``log sum 1/p``: valid under any dependence between them),
    ``hmp-all`` (the same over every component), ``top2`` (the two largest family means
    summed); the suffix ``-wmax`` takes each family's largest component instead of its mean."""
    if how == "fisher":
        return sum(ev[c] for c in comps)
    if how == "hmp-all":
        return logsumexp(np.stack([ev[c] for c in comps]), axis=0)
    within = np.max if how.endswith("-wmax") else np.mean
    how = how.removesuffix("-wmax")
    if how == "capped":  # no growth beyond the largest training value
        cap = np.log(len(ev["y"]) / 0.3 * 0.7 + 1)
        ev = {c: np.minimum(ev[c], cap) for c in comps}
        how = "families"
    elif how == "pmean":  # mean of 1 - p: rank-like, the bulk counts as much as the tail
        ev = {c: -np.expm1(-ev[c]) for c in comps}
        how = "families"
    fams: dict[str, list[np.ndarray]] = {}
    for c in comps:
        fams.setdefault(FAMILY[c], []).append(ev[c])
    means = np.stack([within(v, axis=0) for v in fams.values()])
    if how == "hmp":
        return logsumexp(means, axis=0)
    if how == "top2":
        return np.sort(means, axis=0)[-2:].sum(axis=0)
    return np.max(means, axis=0) if how == "max" else np.sum(means, axis=0)


#: The candidate grid, kept small on purpose: every extra rule is one more chance to fit the
#: folds' noise. Every rule keeps a reconstruction and a latent component (the product's core).
COMPONENT_SETS = (
    ("recon", "residual", "latent", "density"),
    ("recon", "residual", "latent", "density", "tails"),
    ("recon", "residual", "latent", "density", "isolation"),
    ("recon", "residual", "latent", "density", "tails", "isolation"),
    ("residual", "latent", "tails", "isolation"),
    ("residual", "latent", "tails"),
    ("recon", "residual", "latent", "density", "knn_input"),
    ("recon", "residual", "latent", "density", "tails", "knn_input"),
    ("recon", "residual", "latent", "density", "isolation", "knn_input"),
    ("recon", "residual", "latent", "density", "tails", "isolation", "knn_input"),
    ("recon", "residual", "latent", "density", "tails", "duplicates"),
)
#: Latent models: one kind, both kinds averaged per component, or PCA below a training size.
#: ``ae~V``: the autoencoder with its latent size set to explain ``V`` of the variance (the
#: product's default is 0.7), alone or below a training size.
MODELS = ("ae", "pca", "ae+pca", "pca<1000", "pca<3000", "ae*3", "ae*3<3000",
          "ae~0.5", "ae~0.9", "ae~0.9<3000", "ae~0.5<3000")


def candidate_rules(models: tuple[str, ...] = MODELS) -> list[tuple[str, tuple[str, ...], str]]:
    return [(m, c, how) for m in models for c in COMPONENT_SETS for how in ("families", "fisher", "capped", "pmean")]


MODEL_DEPENDENT = ("recon", "residual", "latent", "density")


def _average(runs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.mean([r[k] for r in runs], axis=0) if k in MODEL_DEPENDENT else runs[0][k] for k in runs[0]}


def evidence_for(model: str, per_kind: dict[str, dict[str, np.ndarray]], n_train: int) -> dict[str, np.ndarray] | None:
    """The evidence a model choice sees: one kind's, or several fits' averaged component-wise
    (``ae+pca``; ``ae*3``: three seeds of the autoencoder; ``ae*3<N``: that below N rows)."""
    if model.startswith("ae*3"):
        runs = [per_kind.get(k) for k in ("ae", "ae@1", "ae@2")]
        if any(r is None for r in runs):
            return None
        limit = int(model.split("<")[1]) if "<" in model else None
        return _average(runs) if limit is None or n_train < limit else runs[0]
    if "<" in model:
        kind, limit = model.split("<")
        return per_kind.get(kind if n_train < int(limit) else "ae")
    if model == "ae+pca":
        if not {"ae", "pca"} <= set(per_kind):
            return None
        a, b = per_kind["ae"], per_kind["pca"]
        return _average([a, b])
    return per_kind.get(model)


def load_cache() -> dict[tuple[str, int, str], dict[str, np.ndarray]]:
    out = {}
    extra: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for f in sorted(CACHE.glob("*.npz")):
        name, seed, kind = f.stem.split("__")
        with np.load(f) as z:
            (extra.setdefault((name, int(seed)), {}) if kind in MODEL_FREE else out.setdefault((name, int(seed), kind), {})).update(
                {k: z[k] for k in z.files})
    for (name, seed, _kind), ev in out.items():  # model-free components join every kind
        ev.update(extra.get((name, seed), {}))
    return out


def evaluate_rules(cache: dict, rules: list) -> pd.DataFrame:
    rows = []
    grouped: dict[tuple[str, int], dict[str, dict[str, np.ndarray]]] = {}
    for (name, seed, kind), ev in cache.items():
        grouped.setdefault((name, seed), {})[kind] = ev
    for (name, seed), per_kind in grouped.items():
        y = next(iter(per_kind.values()))["y"]
        n_train = int(round(len(y) / 0.3 * 0.7))
        for model, comps, how in rules:
            ev = evidence_for(model, per_kind, n_train)
            if ev is None:
                continue
            s = rule_score(ev, comps, how)
            rows.append({"dataset": name, "seed": seed, "rule": f"{model}|{'+'.join(comps)}|{how}",
                         "roc_auc": roc_auc_score(y, s), "avg_precision": average_precision_score(y, s)})
    df = pd.DataFrame(rows)
    df["fold"] = df["dataset"].map(fold_of)
    # only (set, seed) pairs that every rule could score, so the means compare like with like
    complete = df.groupby(["dataset", "seed"])["rule"].transform("nunique") == df["rule"].nunique()
    return df[complete]


def cmd_choose(args: argparse.Namespace) -> None:
    cache = load_cache()
    df = evaluate_rules(cache, candidate_rules(tuple(args.models)))
    by = df.groupby(["fold", "rule"])[["roc_auc", "avg_precision"]].mean()
    keys = set(zip(df.dataset, df.seed, strict=True))
    if args.baseline_csv and args.baseline_csv.exists():
        base = pd.read_csv(args.baseline_csv)
        base = base[[(d, s) in keys for d, s in zip(base.dataset, base.seed, strict=True)]]
        base["fold"] = base["dataset"].map(fold_of)
        print("PyOD on the same sets and seeds:")
        print(base.groupby(["fold", "detector"])[["roc_auc", "avg_precision"]].mean().round(4).unstack(0).to_string())
    md = [f"Cached evidence of {df['dataset'].nunique()} sets x seeds {sorted(int(x) for x in df['seed'].unique())}; "
          f"{df['rule'].nunique()} candidate rules (`model|components|combination`).", ""]
    for pick, report in (("A", "B"), ("B", "A")):
        best = by.loc[pick].sort_values("roc_auc", ascending=False).head(args.top)
        print(f"\n== top rules on fold {pick} (with their fold-{report} figures) ==")
        md += [f"### Best {args.top} rules chosen on fold {pick}, and the same rules on fold {report}", "",
               f"| rule | fold {pick} ROC-AUC / AP (chosen here) | fold {report} ROC-AUC / AP (held out) |", "|---|---|---|"]
        other = by.loc[report]
        for rule, r in best.iterrows():
            o = other.loc[rule]
            print(f"{rule:60s} {pick}: {r.roc_auc:.4f}/{r.avg_precision:.4f}   {report}: {o.roc_auc:.4f}/{o.avg_precision:.4f}")
            md.append(f"| `{rule}` | {r.roc_auc:.4f} / {r.avg_precision:.4f} | {o.roc_auc:.4f} / {o.avg_precision:.4f} |")
        md.append("")
    if args.rules:
        md += ["### Named rules on both folds", "", "| rule | fold A ROC-AUC / AP | fold B ROC-AUC / AP |", "|---|---|---|"]
        md += [f"| `{rule}` | " + " | ".join(f"{by.loc[(f, rule)].roc_auc:.4f} / {by.loc[(f, rule)].avg_precision:.4f}" for f in "AB") + " |"
               for rule in args.rules]
        md.append("")
    if args.markdown:
        write_section(args.markdown, "choose", STUDY_HEADER + "\n".join(md))
    if args.rules:
        print("\n== named rules ==")
        for rule in args.rules:
            print(rule, {f: (round(by.loc[(f, rule)].roc_auc, 4), round(by.loc[(f, rule)].avg_precision, 4)) for f in "AB"})


#: ``combine``: how the families' evidence is added up, every other choice the default's.
COMBINATIONS = ("families", "families-wmax", "fisher", "max", "top2", "hmp", "hmp-wmax", "hmp-all")
SMALL_SET_ROWS = 8000  # the unseen sets the issue describes are all below this many rows


def cmd_combine(args: argparse.Namespace) -> None:
    """The combination rule alone: each rule of ``COMBINATIONS`` on the default's components,
    per fold and on the sets under ``SMALL_SET_ROWS`` rows (the unseen sets' shape)."""
    cache = {k: v for k, v in load_cache().items() if k[2] == args.model}
    comps = tuple(args.components.split("+"))
    rules = [(args.model, comps, how) for how in COMBINATIONS]
    df = evaluate_rules(cache, rules)
    df["how"] = df["rule"].str.rsplit("|", n=1).str[1]
    sizes = {p.stem: len(load_dataset(p)[1]) for p in find_datasets([args.data])}
    df["small"] = df["dataset"].map(sizes) < SMALL_SET_ROWS
    by_fold = df.groupby(["how", "fold"])[["roc_auc", "avg_precision"]].mean().unstack("fold")
    small = df[df["small"]].groupby("how")[["roc_auc", "avg_precision"]].mean()
    n_small = df.loc[df["small"], "dataset"].nunique()
    lines = [f"Components `{args.model}|{'+'.join(comps)}`, {df['dataset'].nunique()} sets x seeds "
             f"{sorted(int(x) for x in df['seed'].unique())}; the last column: the {n_small} sets under "
             f"{SMALL_SET_ROWS:,} rows (both folds).", "",
             f"| combination | fold A ROC-AUC / AP | fold B ROC-AUC / AP | under {SMALL_SET_ROWS:,} rows ROC-AUC / AP |",
             "|---|---|---|---|"]
    for how in COMBINATIONS:
        cells = [f"{by_fold.loc[how, ('roc_auc', f)]:.4f} / {by_fold.loc[how, ('avg_precision', f)]:.4f}" for f in "AB"]
        cells.append(f"{small.loc[how, 'roc_auc']:.4f} / {small.loc[how, 'avg_precision']:.4f}")
        lines.append(f"| `{how}` | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.markdown:
        write_section(args.markdown, "combine", COMBINE_HEADER + "\n".join(lines))


COMBINE_HEADER = """## How the families are added up

Generated by `python -m benchmarks.detector_study combine /work/shared/data/adbench --markdown
docs/detector-study.md` from the cached evidence (`cache --kinds ae`). The components stay the
default's; only the rule that turns the families' `-log p` into one score changes (see
`rule_score`): `hmp` is the harmonic mean p-value of the families (Wilson, 2019), a combination
that stays valid however dependent the families are; `max` is Tippett's (the smallest p-value);
`-wmax` takes a family's largest component instead of its mean.

"""


STUDY_HEADER = """# The detector's design study

Generated by `python -m benchmarks.detector_study choose --markdown docs/detector-study.md --rules
RULE...` (the named rules' table) from the evidence cached by `python -m benchmarks.detector_study cache` (see the module docstring).
The folds are those of `benchmarks/folds.py`. A rule is `model|components|combination`:
*model* `ae`, `pca`, `ae+pca` (both averaged), `pca<N` (PCA below N training rows), `ae*3` (three
autoencoder seeds averaged), `ae*3<N`, `ae~V` (the latent size that explains `V` of the
variance instead of the default 0.7), `ae~V<N`; *components* as in `models/detector.py` plus
`isolation` (an isolation forest on the encoded rows) and `knn_input` (mean distance to the 5
nearest training rows in the encoded input space), which the study measures but the product
does not ship; *combination* `families` (mean `-log p` within a family, summed across),
`fisher` (sum of all), `capped` (families, no growth past the largest training value),
`pmean` (families of `1 - p`).

"""


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    p = argparse.ArgumentParser(prog="python -m benchmarks.detector_study", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cache")
    c.add_argument("data", type=Path)
    c.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2])
    c.add_argument("--kinds", type=lambda t: t.split(","), default=list(KINDS))
    ch = sub.add_parser("choose")
    ch.add_argument("--top", type=int, default=15)
    ch.add_argument("--rules", nargs="*", default=[])
    ch.add_argument("--models", type=lambda t: t.split(","), default=list(MODELS))
    ch.add_argument("--markdown", type=Path, default=None, help="write the tables into this file")
    ch.add_argument("--baseline-csv", type=Path, default=Path("benchmarks/results/pyod_fast.csv"))
    ks = sub.add_parser("knn-scales", help="a plain k-NN detector's ROC-AUC per fold and input scaling")
    ks.add_argument("data", type=Path)
    ks.add_argument("--seeds", type=parse_seeds, default=[0, 1, 2])
    ks.add_argument("--csv", type=Path, default=None, help="write the per-set figures here")
    ks.add_argument("--markdown", type=Path, default=None, help="write the tables into this file")
    cb = sub.add_parser("combine", help="the combination rules alone, per fold and on the small sets")
    cb.add_argument("data", type=Path, help="the ADBench folder (for the sets' sizes)")
    cb.add_argument("--model", default="ae")
    cb.add_argument("--components", default="recon+residual+latent+density+tails")
    cb.add_argument("--markdown", type=Path, default=None, help="write the table into this file")
    args = p.parse_args(argv)
    {"cache": cmd_cache, "choose": cmd_choose, "knn-scales": cmd_knn_scales, "combine": cmd_combine}[args.cmd](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
