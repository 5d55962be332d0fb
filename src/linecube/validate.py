"""Validation against the simulator's ground truth (truth.csv).

ROC AUC of the anomaly score for injected anomalies vs normal galaxies, and
recall in the top 1 %, 5 % and 10 % of the ranking, overall and per anomaly
type; AGN vs non-AGN score distributions (medians, AUC, two-sample KS test).
The same detection metrics are reported for the companion scores
``score_usable`` and ``score_chi`` (``overall_<name>``, ``per_type_<name>``),
and for ``mean_abs_flux``, the galaxy's mean |flux| (what an all-zero
reconstruction scores): a model that does not beat this brightness baseline
has learned nothing a ranking by brightness would not give.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

FRACTIONS = (0.01, 0.05, 0.10)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (None when one class is empty)."""
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return None
    return float(roc_auc_score(labels, scores))


def recall_at(labels: np.ndarray, scores: np.ndarray, fraction: float) -> float | None:
    """Fraction of the positives ranked in the top ``fraction`` of all galaxies
    (top ceil(fraction * N), at least 1)."""
    labels = np.asarray(labels, dtype=bool)
    if not labels.any():
        return None
    k = max(1, math.ceil(fraction * len(scores)))
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return float(labels[top].sum() / labels.sum())


def validate(scores: pd.DataFrame, truth: pd.DataFrame) -> dict:
    """Metrics dict (see module doc); ``scores`` from score_galaxies, ``truth`` from the simulator."""
    df = scores.merge(truth, on="plateifu", how="inner", validate="one_to_one")
    if df.empty:
        raise ValueError("no plate-IFU of the scores is in truth.csv")
    s = df["score"].to_numpy(float)
    anom = df["is_anomaly"].astype(str).str.lower().isin(["true", "1"]).to_numpy()
    out: dict = {
        "n_galaxies": int(len(df)),
        "n_anomalies": int(anom.sum()),
        "overall": {"roc_auc": roc_auc(anom, s), **{f"recall_top_{int(f * 100)}pct": recall_at(anom, s, f) for f in FRACTIONS}},
        "per_type": {},
    }
    types = df["anomaly_type"].fillna("").astype(str)
    for t in sorted(set(types[anom])):
        is_t = (types == t).to_numpy()
        sub = is_t | ~anom
        out["per_type"][t] = {
            "n": int(is_t.sum()),
            "roc_auc": roc_auc(is_t[sub], s[sub]),
            **{f"recall_top_{int(f * 100)}pct": recall_at(is_t, s, f) for f in FRACTIONS},
            "median_rank": float(np.median(df.loc[is_t, "rank"])) if "rank" in df else None,
        }
    for alt in ("score_usable", "score_chi", "mean_abs_flux"):
        if alt in df:
            v = df[alt].to_numpy(float)
            out[f"overall_{alt}"] = {
                "roc_auc": roc_auc(anom, v),
                **{f"recall_top_{int(f * 100)}pct": recall_at(anom, v, f) for f in FRACTIONS},
            }
            out[f"per_type_{alt}"] = {
                t: roc_auc((types == t).to_numpy()[(types == t).to_numpy() | ~anom], v[(types == t).to_numpy() | ~anom])
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
            "roc_auc_agn_vs_non": roc_auc(a, s),
            "ks_pvalue": float(ks_2samp(s[a], s[~a]).pvalue) if a.any() and (~a).any() else None,
            "median_score_by_method": {
                m: float(np.median(s[df[m].astype(bool).to_numpy()]))
                for m in ("wise_agn", "bat_agn", "radio_agn", "broad_agn")
                if m in df and df[m].astype(bool).any()
            },
        }
    return out
