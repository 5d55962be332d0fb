"""Reorder an anomaly ranking with an astronomer's labels (``linecube rerank``).

Labels come from the explorer's flag buttons (``labels.csv``: plateifu, label,
model, score; label one of ``interesting``, ``not interesting``, ``artefact``).
Following Astronomaly's active-learning idea (Lochner & Bassett 2021), a label
says something about the galaxy's neighbourhood, not only the galaxy:

- galaxies labelled ``interesting`` go to the top (in their old order);
  ``not interesting`` and ``artefact`` to the bottom;
- every other galaxy's score (its rank in scores.csv, Gaussianised) moves by a
  Gaussian kernel over its distances, in the whitened PCA space of the model's
  latents (embedding.csv's pc columns, each scaled to unit variance), to the
  labelled galaxies: up near interesting ones, down near the others.

The kernel width is the median distance of a galaxy to its ``k``-th neighbour,
so "near" means "as near as the galaxy's usual neighbours"; ``weight`` is the
largest shift, in standard deviations of the Gaussianised score.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

LABELS = ("interesting", "not interesting", "artefact")
#: sign of each label's pull on its neighbours
PULL = {"interesting": 1.0, "not interesting": -1.0, "artefact": -1.0}


class BadLabels(ValueError):
    """A labels file that cannot be used; the message names the file and the problem."""


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """labels.csv -> DataFrame (plateifu, label, model, score), one row per galaxy
    (plate-IFUs and labels stripped of spaces; repeats of one label collapse).
    Raises :class:`BadLabels` naming the file and the problem, also for one galaxy
    given two different labels."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as e:
        raise BadLabels(
            f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start}); export labels.csv from the explorer"
        ) from None
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise BadLabels(f"{path}: cannot read labels: {e}") from None
    missing = [c for c in ("plateifu", "label") if c not in df]
    if missing:
        raise BadLabels(f"{path}: missing column(s) {', '.join(missing)} (the explorer writes plateifu,label,model,score)")
    df["plateifu"] = df["plateifu"].str.strip()
    df["label"] = df["label"].str.strip().str.lower()
    bad = sorted(set(df["label"]) - set(LABELS))
    if bad:
        raise BadLabels(f"{path}: unknown label(s) {', '.join(map(repr, bad))}; use {', '.join(LABELS)}")
    conflict = df.groupby("plateifu")["label"].nunique()
    conflict = conflict[conflict > 1]
    if len(conflict):
        p = conflict.index[0]
        rows = ", ".join(
            f"row {i + 2} ({lab})" for i, lab in zip(np.flatnonzero(df["plateifu"] == p), df.loc[df["plateifu"] == p, "label"])
        )
        raise BadLabels(f"{path}: {len(conflict)} galaxies have conflicting labels, e.g. {p}: {rows}; keep one label per galaxy")
    return df.drop_duplicates("plateifu", keep="last").reset_index(drop=True)


def whitened_space(embedding: pd.DataFrame) -> np.ndarray:
    """(N, k) float64: embedding.csv's pc1..pck, each divided by its standard deviation."""
    from linecube.analysis.neighbors import space_columns

    try:
        cols = space_columns(embedding, "pca")
    except ValueError:
        raise BadLabels("embedding.csv has no pc columns") from None
    x = embedding[cols].to_numpy(np.float64)
    if np.isnan(x).any():
        raise BadLabels("embedding.csv does not cover every galaxy of scores.csv")
    sd = x.std(axis=0)
    return x / np.where(sd > 0, sd, 1.0)


def rerank(
    scores: pd.DataFrame, embedding: pd.DataFrame, labels: pd.DataFrame, *, weight: float = 1.0, k: int = 5
) -> pd.DataFrame:
    """scores.csv rows reordered with the labels: adds ``label``, ``rank_before``,
    ``rerank_score`` and a new ``rank`` (1 = look at first). Labels of galaxies
    not in scores.csv are ignored (counted in ``attrs['unknown_labels']``)."""
    from scipy.spatial.distance import cdist
    from scipy.stats import norm

    from linecube.analysis.neighbors import knn

    df = scores.merge(embedding, on="plateifu", how="left", suffixes=("", "_emb"))
    n = len(df)
    lab = dict(zip(labels["plateifu"], labels["label"]))
    df["label"] = [lab.get(p, "") for p in df["plateifu"]]
    x = whitened_space(df)
    # the ranking's own order, Gaussianised: rank 1 -> highest
    base = norm.ppf((n - df["rank"].to_numpy(np.float64) + 0.5) / n)
    dist, _ = knn(x, np.arange(n), max(1, min(k, n - 1)))
    h = float(np.median(dist[:, -1])) or 1.0
    shift = np.zeros(n)
    for label, sign in PULL.items():
        rows = np.flatnonzero(df["label"].to_numpy() == label)
        if len(rows):
            shift += sign * np.exp(-0.5 * cdist(x, x[rows], "sqeuclidean") / h**2).max(axis=1)
    score = base + weight * shift
    top = df["label"].to_numpy() == "interesting"
    bottom = np.isin(df["label"].to_numpy(), ["not interesting", "artefact"])
    score = np.where(top | bottom, base, score)
    # the label decides the tier whatever the weight: interesting, unlabelled, then the rest
    tier = np.where(top, 2, np.where(bottom, 0, 1))
    order = np.lexsort((np.arange(n), -score, -tier))
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(1, n + 1)
    out = scores.copy()
    out["label"] = df["label"].to_numpy()
    out["rank_before"] = scores["rank"].to_numpy()
    out["rerank_score"] = np.round(score + 1e6 * (tier - 1), 6)
    out["rank"] = rank
    out = out.sort_values("rank").reset_index(drop=True)
    out.attrs["unknown_labels"] = int(len(set(lab) - set(df["plateifu"])))
    return out


def _written_by_rerank(path: Path) -> bool:
    """A regular file whose CSV header has the columns :func:`rerank` adds."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = fh.readline().rstrip("\r\n").split(",")
    except OSError:
        return False
    return {"plateifu", "rank_before", "rerank_score", "label"} <= set(head)


def rerank_files(
    results: str | os.PathLike, model: str, labels_csv: str | os.PathLike, *, weight: float = 1.0, k: int = 5
) -> tuple[Path, pd.DataFrame]:
    """results/{model}/scores.csv + embedding.csv + labels -> results/{model}/scores_ranked.csv
    (held under a lock: a second rerank of the same model is told so, not raced)."""
    d = Path(results) / model
    for f in ("scores.csv", "embedding.csv"):
        if not (d / f).is_file():
            raise BadLabels(f"{d / f}: not found (run the workflow for model {model} first)")
    labels = read_labels(labels_csv)
    if "model" in labels and (labels["model"] != "").any():
        if model not in set(labels["model"]):
            raise BadLabels(
                f"{labels_csv}: labels were made on model(s) {', '.join(sorted(set(labels['model']) - {''}))}, not {model}"
            )
        labels = labels[labels["model"].isin([model, ""])]  # another model's labels judge another ranking
    from linecube.analysis.neighbors import BadResultsFile, read_results_table

    if not (np.isfinite(weight) and weight >= 0):
        raise BadLabels(f"--weight: must be a finite number >= 0, got {weight}")
    if k < 1:
        raise BadLabels(f"-k: must be at least 1, got {k}")
    try:
        scores = read_results_table(d / "scores.csv", numeric=["score", "rank"])
        emb = read_results_table(d / "embedding.csv")
    except BadResultsFile as e:
        raise BadLabels(str(e)) from None
    from linecube.io.atomic import Busy, exclusive

    path = d / "scores_ranked.csv"
    try:
        with exclusive(path):
            return _rerank_into(path, scores, emb, labels, weight, k)
    except Busy as e:
        raise BadLabels(str(e)) from None


def _rerank_into(path: Path, scores, emb, labels, weight: float, k: int) -> tuple[Path, pd.DataFrame]:
    from linecube.io.atomic import write_csv_atomic

    if path.exists() or path.is_symlink():
        if not _written_by_rerank(path):
            raise BadLabels(
                f"{path}: exists and was not written by linecube rerank (no rank_before and rerank_score columns); "
                "refusing to replace it: move it away first"
            )
    out = rerank(scores, emb, labels, weight=weight, k=k)
    write_csv_atomic(out, path)
    return path, out
