"""Validation against the simulator's ground truth (truth.csv).

ROC AUC of the anomaly score for injected anomalies vs normal galaxies, and
recall in the top 1 %, 5 % and 10 % of the ranking, overall and per anomaly
type; AGN vs non-AGN score distributions (medians, AUC, two-sample KS test).
The same detection metrics are reported for every ``score_*`` column (the
paper's ``score_paper``, the brightness-free scores, their combinations and
the feature baseline; ``overall_<name>``, ``per_type_<name>``),
and for ``mean_abs_flux``, the galaxy's mean |flux| (what an all-zero
reconstruction scores): a model that does not beat this brightness baseline
has learned nothing a ranking by brightness would not give.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

FRACTIONS = (0.01, 0.05, 0.10)


def auc_fast(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC from mid-ranks (Mann-Whitney U / n_pos n_neg); None when a class is empty."""
    from scipy.stats import rankdata

    labels = np.asarray(labels, dtype=bool)
    npos, nneg = int(labels.sum()), int((~labels).sum())
    if not npos or not nneg:
        return None
    r = rankdata(np.asarray(scores, dtype=float))
    return float((r[labels].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def bootstrap_auc_ci(
    scores: np.ndarray, groups: np.ndarray, labels: np.ndarray, n_boot: int = 500, seed: int = 0, level: float = 0.95
) -> list[float]:
    """Percentile bootstrap interval of the ROC AUC, resampling whole groups (a
    galaxy with its anomalous twins) with replacement."""
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels, dtype=bool)
    _, gid = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    members = [np.nonzero(gid == g)[0] for g in range(gid.max() + 1)]
    rng = np.random.default_rng([seed, 31])
    vals = []
    for _ in range(n_boot):
        pick = rng.integers(len(members), size=len(members))
        rows = np.concatenate([members[g] for g in pick])
        a = auc_fast(labels[rows], scores[rows])
        if a is not None:
            vals.append(a)
    if not vals:
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(vals, [50 * (1 - level), 100 - 50 * (1 - level)])
    return [float(lo), float(hi)]


def paired_win_rate(scores: np.ndarray, groups: np.ndarray, kinds: np.ndarray, clean: np.ndarray, types) -> float | None:
    """Fraction of anomalous twins (``kinds`` in ``types``) scoring above their own
    clean galaxy (the ``clean`` row of the same group); ties count one half."""
    scores = np.asarray(scores, dtype=float)
    groups = np.asarray(groups).astype(str)
    ref = {g: scores[i] for i, g in enumerate(groups) if clean[i]}
    wins = [
        1.0 if scores[i] > ref[g] else 0.5 if scores[i] == ref[g] else 0.0
        for i, g in enumerate(groups)
        if kinds[i] in types and g in ref
    ]
    return float(np.mean(wins)) if wins else None


def recall_at_prevalence(
    normal: np.ndarray, anomalous: np.ndarray, prevalence: float, top: float, n_boot: int = 500, seed: int = 0, n: int = 300
) -> float | None:
    """Mean recall in the top ``top`` fraction of populations of ``n`` galaxies
    with ``prevalence`` anomalies, drawn with replacement (normal ones from
    ``normal`` scores, anomalous ones from ``anomalous``)."""
    normal, anomalous = np.asarray(normal, float), np.asarray(anomalous, float)
    if not len(normal) or not len(anomalous):
        return None
    rng = np.random.default_rng([seed, 53])
    n_a = max(1, int(round(prevalence * n)))
    k = max(1, int(math.ceil(top * n)))
    rec = []
    for _ in range(n_boot):
        s = np.concatenate([rng.choice(anomalous, n_a), rng.choice(normal, n - n_a)])
        lab = np.r_[np.ones(n_a, bool), np.zeros(n - n_a, bool)]
        order = np.argsort(-s + rng.random(n) * 1e-12, kind="stable")[:k]
        rec.append(lab[order].sum() / n_a)
    return float(np.mean(rec))


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation (None for fewer than 3 values or a constant input)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b)[0])


def recall_at(labels: np.ndarray, scores: np.ndarray, fraction: float) -> float | None:
    """Fraction of the positives ranked in the top ``fraction`` of all galaxies
    (top ceil(fraction * N), at least 1)."""
    labels = np.asarray(labels, dtype=bool)
    if not labels.any():
        return None
    k = max(1, math.ceil(fraction * len(scores)))
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return float(labels[top].sum() / labels.sum())


def score_columns(df: pd.DataFrame) -> list[str]:
    """The numeric ``score_*`` columns of a scores table (not ``score_name``)."""
    return [c for c in df.columns if c.startswith("score_") and c != "score_name" and pd.api.types.is_numeric_dtype(df[c])]


def default_score_name(df: pd.DataFrame) -> str | None:
    """Which ``score_*`` column the ``score`` column holds: scores.csv's
    ``score_name`` where it has one, else the score column equal to it."""
    if "score_name" in df and df["score_name"].nunique() == 1:
        return str(df["score_name"].iloc[0])
    for c in score_columns(df):
        if np.allclose(df[c].to_numpy(float), df["score"].to_numpy(float), equal_nan=True):
            return c
    return None


def truth_flags(values) -> np.ndarray:
    """truth.csv's ``is_anomaly`` column (true/false, 1/0, any case) as a bool array."""
    return pd.Series(values).astype(str).str.strip().str.lower().isin(["true", "1"]).to_numpy()


def validate(scores: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Metrics dict (see module doc); ``scores`` from score_galaxies, ``truth`` from the simulator."""
    df = scores.merge(truth, on="plateifu", how="inner", validate="one_to_one")
    if df.empty:
        raise ValueError("no plate-IFU of the scores is in truth.csv")
    s = df["score"].to_numpy(float)
    anom = truth_flags(df["is_anomaly"])
    out: dict = {
        "n_galaxies": int(len(df)),
        "n_anomalies": int(anom.sum()),
        "score": default_score_name(df),
        "overall": {
            "roc_auc": auc_fast(anom, s),
            "roc_auc_ci95": bootstrap_auc_ci(s, df["plateifu"].to_numpy(), anom, 500, 0) if 0 < anom.sum() < len(df) else None,
            **{f"recall_top_{int(f * 100)}pct": recall_at(anom, s, f) for f in FRACTIONS},
        },
        "per_type": {},
    }
    types = df["anomaly_type"].fillna("").astype(str)
    for t in sorted(set(types[anom])):
        is_t = (types == t).to_numpy()
        sub = is_t | ~anom
        out["per_type"][t] = {
            "n": int(is_t.sum()),
            "roc_auc": auc_fast(is_t[sub], s[sub]),
            **{f"recall_top_{int(f * 100)}pct": recall_at(is_t, s, f) for f in FRACTIONS},
            "median_rank": float(np.median(df.loc[is_t, "rank"])) if "rank" in df else None,
        }
    alts = score_columns(df) + ["mean_abs_flux"]
    for alt in alts:
        if alt in df:
            v = df[alt].to_numpy(float)
            out[f"overall_{alt}"] = {
                "roc_auc": auc_fast(anom, v),
                **{f"recall_top_{int(f * 100)}pct": recall_at(anom, v, f) for f in FRACTIONS},
            }
            out[f"per_type_{alt}"] = {
                t: auc_fast((types == t).to_numpy()[(types == t).to_numpy() | ~anom], v[(types == t).to_numpy() | ~anom])
                for t in sorted(set(types[anom]))
            }
    if "class" in df:
        out["median_score_by_class"] = {c: float(g["score"].median()) for c, g in df.groupby("class")}
    if "agn" in df:
        from scipy.stats import ks_2samp

        a = df["agn"].astype(bool).to_numpy()
        out["agn"] = {
            "n_agn": int(a.sum()),
            "median_score_agn": float(np.median(s[a])) if a.any() else None,
            "median_score_non_agn": float(np.median(s[~a])) if (~a).any() else None,
            "roc_auc_agn_vs_non": auc_fast(a, s),
            "ks_pvalue": float(ks_2samp(s[a], s[~a]).pvalue) if a.any() and (~a).any() else None,
            "median_score_by_method": {
                m: float(np.median(s[df[m].astype(bool).to_numpy()]))
                for m in ("wise_agn", "bat_agn", "radio_agn", "broad_agn")
                if m in df and df[m].astype(bool).any()
            },
        }
    return out
