"""The two fixed folds of the 28 visible ADBench sets (the detector's selection protocol).

Design choices are made on one fold and reported on the other, both ways, so that no figure
quoted for the default comes from the sets it was chosen on. See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import pandas as pd

FOLD_A = frozenset(
    {
        "1_ALOI", "4_breastw", "6_cardio", "12_fault", "15_Hepatitis", "18_Ionosphere", "20_letter",
        "23_mammography", "26_optdigits", "29_Pima", "32_shuttle", "38_thyroid", "42_WBC", "45_wine",
    }
)


def fold_of(dataset: str) -> str:
    """``"A"`` for the sets of fold A, ``"B"`` for every other set."""
    return "A" if dataset in FOLD_A else "B"


def fold_table(rows: pd.DataFrame, ours: str = "sentinel", rivals: tuple[str, ...] = ("IForest", "COPOD")) -> pd.DataFrame:
    """Per fold and detector: mean ROC-AUC and AP over the fold's sets and the seeds; for the
    other detectors also how many sets ``ours`` wins against them (per-set means over the seeds)
    and the two-sided Wilcoxon signed-rank p-value of those per-set ROC-AUC differences.

    ``rows``: the benchmark's rows (``dataset, detector, seed, roc_auc, avg_precision``). Only
    (set, seed) pairs that every detector finished are counted, so the means compare alike."""
    from scipy.stats import wilcoxon

    failed = set(rows.loc[rows["roc_auc"].isna(), "detector"])
    rows = rows.dropna(subset=["roc_auc"]).copy()
    # Like with like: the (set, seed) pairs every detector without failures finished. A detector
    # that failed somewhere (PyOD's PCA on rank-deficient sets) is averaged over the pairs it
    # finished among those, and its "sets" count says how many.
    core = rows[~rows["detector"].isin(failed)]
    n_core = core["detector"].nunique()
    done = core.groupby(["dataset", "seed"])["detector"].nunique()
    keep = set(done[done == n_core].index)
    rows = rows[[(d, s) in keep for d, s in zip(rows["dataset"], rows["seed"], strict=True)]]
    rows["fold"] = rows["dataset"].map(fold_of)
    per_set = rows.groupby(["fold", "detector", "dataset"])[["roc_auc", "avg_precision"]].mean()
    out = []
    for fold in sorted(rows["fold"].unique()):
        sets = per_set.loc[fold]
        for det in sets.index.get_level_values(0).unique():
            mine = sets.loc[det]
            row = {"fold": fold, "detector": det, "sets": len(mine),
                   "roc_auc": mine["roc_auc"].mean(), "avg_precision": mine["avg_precision"].mean()}
            if det != ours and ours in sets.index.get_level_values(0):
                theirs = mine["roc_auc"]
                diff = sets.loc[ours]["roc_auc"].reindex(theirs.index) - theirs
                row["ours_wins"] = int((diff > 0).sum())
                row["wilcoxon_p"] = float(wilcoxon(diff).pvalue) if (diff != 0).any() else 1.0
            out.append(row)
    return pd.DataFrame(out)


def fold_markdown(table: pd.DataFrame, ours: str = "sentinel") -> str:
    """The fold table as markdown, with the verdict against the best other detector per fold."""
    lines = []
    for fold, t in table.groupby("fold"):
        t = t.sort_values("roc_auc", ascending=False)
        lines += [f"**Fold {fold}**", "",
                  f"| detector | sets | mean ROC-AUC | mean AP | sets `{ours}` wins | Wilcoxon p |",
                  "|---|---|---|---|---|---|"]
        for _, r in t.iterrows():
            wins = "" if pd.isna(r.get("ours_wins")) else f"{int(r['ours_wins'])} of {int(r['sets'])}"
            p = "" if pd.isna(r.get("wilcoxon_p")) else f"{r['wilcoxon_p']:.3f}"
            lines.append(f"| {r['detector']} | {int(r['sets'])} | {r['roc_auc']:.4f} | {r['avg_precision']:.4f} | {wins} | {p} |")
        full = t[t["sets"] == t["sets"].max()]  # detectors measured on every set of the fold
        others = full[~full["detector"].str.startswith("sentinel")]
        mine = t[t["detector"] == ours]
        if len(others) and len(mine):
            m = mine.iloc[0]
            best = others.loc[others["roc_auc"].idxmax()]
            best_ap = others.loc[others["avg_precision"].idxmax()]
            lines += ["", f"`{ours}` vs the best other detector measured on every set: ROC-AUC "
                      f"{m['roc_auc'] - best['roc_auc']:+.4f} against {best['detector']} (target +0.02), "
                      f"AP {m['avg_precision'] - best_ap['avg_precision']:+.4f} against {best_ap['detector']} (target > 0).", ""]
    return "\n".join(lines)
