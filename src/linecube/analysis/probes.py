"""Representation probes: how much physics a space of galaxy vectors carries.

A *space* is one vector per galaxy, (N, d) float, rows aligned with a truth table
(the simulator's ``truth.csv``, or any table of known properties). The probes
follow the zero-shot protocol of AstroCLIP (Parker et al. 2024, MNRAS 531, 4990):

* :func:`knn_probe`: distance-weighted k nearest neighbours in the space as it is
  (Euclidean, as ``linecube neighbors`` searches it), cross-validated (5 folds):
  R^2 for a continuous parameter (pooled out-of-fold predictions), balanced
  accuracy for a class label;
* :func:`linear_probe`: ridge regression / logistic regression (balanced class
  weights) on the standardised space, the same folds;
* :func:`purity`: the share of each galaxy's 5 nearest neighbours with its class,
  and for AGN-like galaxies (Seyfert, LINER, composite) the share of AGN-like
  neighbours: the claim of the paper's Fig. 3;
* :func:`invariance_ratios`: a galaxy's distance to its own augmented copy over
  its distance to its nearest other galaxy (< 1: the copy is recognised);
* :func:`oracle_spaces`: the probes' ceilings, spaces made of the true parameters;
* :func:`within_groups`: what is left of a parameter at a fixed value of another
  (the disc scale at one IFU size: MaNGA sizes its bundles to the galaxy, so a probe
  of an angular size also reads the footprint).

Probe galaxies should be held out from training and normal (no injected
anomaly); the caller chooses them. Every function is numpy / scikit-learn only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

#: neighbours of the kNN probe (the samples here are hundreds, not AstroCLIP's 10^5: 64 would smooth too much)
KNN_K = 10
#: folds of every cross-validated probe
FOLDS = 5
#: neighbours counted by :func:`purity`
PURITY_K = 5
#: the classes that count as AGN-like for purity (the simulator's names)
AGN_LIKE = ("seyfert", "liner", "composite")


def _folds(y: np.ndarray, classify: bool, seed: int):
    from sklearn.model_selection import KFold, StratifiedKFold

    if classify:
        counts = np.unique(y, return_counts=True)[1]
        n = int(min(FOLDS, counts.min())) if len(counts) else FOLDS
        if n >= 2:
            return StratifiedKFold(n, shuffle=True, random_state=seed)
    return KFold(FOLDS, shuffle=True, random_state=seed)


def _score(y: np.ndarray, pred: np.ndarray, classify: bool) -> float:
    from sklearn.metrics import balanced_accuracy_score, r2_score

    if classify:
        return float(balanced_accuracy_score(y, pred))
    return float(r2_score(y, pred))


def _valid(x: np.ndarray, y: np.ndarray, classify: bool) -> np.ndarray:
    ok = np.isfinite(x).all(axis=1)
    if not classify:
        ok &= np.isfinite(np.asarray(y, dtype=float))
    return ok


def _usable(x, y, classify: bool):
    """The galaxies a probe can use, (x, y) as float64 (y as given for a class), or
    (None, None) when fewer than ``2 * FOLDS`` remain or a class probe has one class."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y) if classify else np.asarray(y, dtype=np.float64)
    ok = _valid(x, y, classify)
    x, y = x[ok], y[ok]
    if len(y) < 2 * FOLDS or (classify and len(np.unique(y)) < 2):
        return None, None
    return x, y


def knn_probe(x: np.ndarray, y: Sequence, *, classify: bool, k: int = KNN_K, seed: int = 0) -> float:
    """Cross-validated distance-weighted kNN probe of ``y`` from ``x`` (N, d).

    ``classify``: balanced accuracy of a class label; else R^2 of a number. NaN
    when fewer than ``2 * FOLDS`` usable galaxies or one class only."""
    from sklearn.model_selection import cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier, KNeighborsRegressor

    x, y = _usable(x, y, classify)
    if x is None:
        return float("nan")
    cv = _folds(y, classify, seed)
    # no more neighbours than the smallest training fold holds (a rare class can force 2 folds)
    smallest = min(len(tr) for tr, _ in cv.split(x, y))
    kk = max(1, min(k, smallest - 1))
    est = KNeighborsClassifier(kk, weights="distance") if classify else KNeighborsRegressor(kk, weights="distance")
    pred = cross_val_predict(est, x, y, cv=cv)
    return _score(y, pred, classify)


def linear_probe(x: np.ndarray, y: Sequence, *, classify: bool, seed: int = 0) -> float:
    """Cross-validated linear probe: ridge (alpha chosen by inner CV) on the
    standardised space for a number (R^2), logistic regression with balanced
    class weights for a class (balanced accuracy)."""
    from sklearn.linear_model import LogisticRegression, RidgeCV
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _usable(x, y, classify)
    if x is None:
        return float("nan")
    if classify:
        est = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))
    else:
        est = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
    pred = cross_val_predict(est, x, y, cv=_folds(y, classify, seed))
    return _score(y, pred, classify)


def neighbour_indices(x: np.ndarray, k: int) -> np.ndarray:
    """(N, k) indices of each row's k nearest other rows (Euclidean)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(x) - 1)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(x)
    idx = nn.kneighbors(x, return_distance=False)
    out = np.empty((len(x), k), dtype=int)
    for i, row in enumerate(idx):
        row = row[row != i][:k]
        out[i] = row
    return out


def purity(x: np.ndarray, classes: Sequence[str], k: int = PURITY_K, agn_like: Sequence[str] = AGN_LIKE) -> dict:
    """Neighbour purity in space ``x``: ``class`` (mean share of the k nearest
    neighbours with the galaxy's own class, over all galaxies), ``agn`` (over the
    AGN-like galaxies, the mean share of AGN-like neighbours; NaN without any)
    and ``agn_chance`` (the AGN-like share of the sample: what random neighbours give)."""
    x = np.asarray(x, dtype=np.float64)
    c = np.asarray(classes, dtype=object)
    if len(c) < k + 1:
        return {"class": float("nan"), "agn": float("nan"), "agn_chance": float("nan")}
    nb = neighbour_indices(x, k)
    same = (c[nb] == c[:, None]).mean(axis=1)
    agn = np.isin(c, list(agn_like))
    agn_share = agn[nb].mean(axis=1)
    return {
        "class": float(same.mean()),
        "agn": float(agn_share[agn].mean()) if agn.any() else float("nan"),
        "agn_chance": float(agn.mean()),
    }


def invariance_ratios(x: np.ndarray, x_copy: np.ndarray) -> np.ndarray:
    """Per galaxy: distance to its own copy (row i of ``x_copy``) over the distance
    to its nearest other galaxy of ``x``; (N,)."""
    x = np.asarray(x, dtype=np.float64)
    x_copy = np.asarray(x_copy, dtype=np.float64)
    own = np.linalg.norm(x - x_copy, axis=1)
    nb = neighbour_indices(x, 1)[:, 0]
    other = np.linalg.norm(x - x[nb], axis=1)
    return own / np.maximum(other, 1e-30)


def probe_space(
    x: np.ndarray,
    truth: Mapping[str, np.ndarray],
    class_column: str = "class",
    parameters: Sequence[str] = (),
    seed: int = 0,
) -> dict:
    """Every probe of one space: ``knn`` and ``linear`` ({parameter: score}, the
    class under ``class_column``), ``purity`` (the class purity), ``agn_purity``."""
    out: dict = {"knn": {}, "linear": {}}
    for name in [class_column, *parameters]:
        if name not in truth:
            continue
        cls = name == class_column
        out["knn"][name] = knn_probe(x, truth[name], classify=cls, seed=seed)
        out["linear"][name] = linear_probe(x, truth[name], classify=cls, seed=seed)
    if class_column in truth:
        p = purity(x, truth[class_column])
        out["purity"] = p["class"]
        out["agn_purity"] = p["agn"]
        out["agn_chance"] = p["agn_chance"]
    return out


def oracle_spaces(truth: Mapping[str, np.ndarray], parameters: Sequence[str]) -> dict[str, np.ndarray]:
    """The probes' ceilings on these galaxies: spaces made of the true parameters,
    each standardised (mean 0, sd 1; a missing value at the mean): the two BPT
    ratios (``log_n2ha``, ``log_o3hb``; when the table has them) and every one of
    ``parameters``. What a probe of the class reaches when a space holds exactly
    the table's numbers (the kNN probe of a few hundred galaxies stays well below
    1 even then)."""

    def std(cols):
        x = np.column_stack([np.asarray(truth[c], float) for c in cols])
        x = (x - np.nanmean(x, 0)) / np.maximum(np.nanstd(x, 0), 1e-12)
        return np.nan_to_num(x)

    out = {}
    if "log_n2ha" in truth and "log_o3hb" in truth:
        out["true_bpt_ratios"] = std(["log_n2ha", "log_o3hb"])
    if len(parameters):
        out["true_parameters"] = std(list(parameters))
    return out


def within_groups(y: Sequence[float], groups: Sequence) -> np.ndarray:
    """``y`` minus its mean over the galaxies of the same group (N,): what a space
    must know beyond the group to predict ``y``. A group of one galaxy gives 0."""
    y = np.asarray(y, float)
    g = np.asarray(groups)
    out = np.empty_like(y)
    for v in np.unique(g):
        sel = g == v
        out[sel] = y[sel] - np.nanmean(y[sel])
    return out
