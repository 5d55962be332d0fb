"""Nearest neighbours in the UMAP (or PCA) space: scikit-learn KD-tree, Euclidean.

As in the paper's Fig. 3, the neighbours of a galaxy are the galaxies closest to
it in the 3-D UMAP embedding of the latents; ``space='pca'`` searches the PCA
space instead (more faithful to the latent geometry, less to the picture).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np
import pandas as pd


class UnknownGalaxy(KeyError):
    """A plate-IFU that is not in the results; the message lists close matches."""

    def __str__(self) -> str:
        return str(self.args[0])


def space_columns(df: pd.DataFrame, space: str) -> list[str]:
    prefix = {"umap": "umap", "pca": "pc"}[space]
    cols = [c for c in df.columns if c.startswith(prefix) and c[len(prefix) :].isdigit()]
    if not cols:
        raise ValueError(f"no {space} columns in the embedding")
    return sorted(cols, key=lambda c: int(c[len(prefix) :]))


def knn(coords: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(distances, indices) of the k nearest neighbours of each query row,
    excluding the query itself. coords (N, d); queries: row indices."""
    from sklearn.neighbors import KDTree

    tree = KDTree(coords, metric="euclidean")
    k_eff = min(k + 1, len(coords))
    dist, idx = tree.query(coords[queries], k=k_eff)
    out_d, out_i = [], []
    for q, d, i in zip(queries, dist, idx):
        keep = i != q
        out_d.append(d[keep][:k])
        out_i.append(i[keep][:k])
    return np.array(out_d), np.array(out_i)


def query_set(scores: pd.DataFrame, top_agn: int, plateifus: list[str]) -> list[str]:
    """The top-N most anomalous AGN plus any listed plate-IFUs (known ones only)."""
    q = []
    if "agn" in scores and top_agn > 0:
        q += list(scores.loc[scores["agn"].astype(bool)].sort_values("rank")["plateifu"].iloc[:top_agn])
    known = set(scores["plateifu"])
    q += [p for p in plateifus if p in known]
    return list(dict.fromkeys(q))


def neighbors_frame(embedding: pd.DataFrame, queries: list[str], k: int, space: str) -> pd.DataFrame:
    """(query, rank, neighbor, distance) for every query plate-IFU."""
    cols = space_columns(embedding, space)
    coords = embedding[cols].to_numpy(float)
    pos = {p: i for i, p in enumerate(embedding["plateifu"])}
    rows = [pos[q] for q in queries]
    if not rows:
        return pd.DataFrame(columns=["query", "rank", "neighbor", "distance"])
    dist, idx = knn(coords, np.array(rows), k)
    out = []
    for q, d, i in zip(queries, dist, idx):
        for r, (dd, ii) in enumerate(zip(d, i), start=1):
            out.append({"query": q, "rank": r, "neighbor": embedding["plateifu"].iloc[ii], "distance": float(dd)})
    return pd.DataFrame(out)


class BadResultsFile(ValueError):
    """A results file (embedding.csv, scores.csv) that cannot be used as it is."""


def read_results_table(path: Path, numeric: list[str] | None = None) -> pd.DataFrame:
    """Read embedding.csv or scores.csv and check it: a ``plateifu`` column, at
    least one row, no duplicate plate-IFU, finite values in ``numeric`` columns
    (all ``pc*``/``umap*``/``score`` columns when None); errors name file and rows."""
    try:
        df = pd.read_csv(path, dtype={"plateifu": str, "mangaid": str})
    except pd.errors.EmptyDataError:
        raise BadResultsFile(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise BadResultsFile(f"{path}: not a readable CSV ({e})") from None
    if "plateifu" not in df:
        raise BadResultsFile(f"{path}: no plateifu column")
    if df.empty:
        raise BadResultsFile(f"{path}: no galaxies (header only)")
    dup = df["plateifu"].duplicated(keep=False)
    if dup.any():
        rows = ", ".join(f"{p} (rows {', '.join(str(i + 2) for i in np.nonzero((df['plateifu'] == p).to_numpy())[0])})"
                         for p in dict.fromkeys(df.loc[dup, "plateifu"]))  # fmt: skip
        raise BadResultsFile(f"{path}: duplicate plate-IFU: {rows}")
    if numeric is None:
        numeric = [c for c in df.columns if c == "score" or c.startswith(("pc", "umap")) and c[-1].isdigit()]
    absent = [c for c in numeric if c not in df]
    if absent:
        raise BadResultsFile(f"{path}: missing column(s) {', '.join(absent)}: rerun the workflow")
    for c in numeric:
        v = pd.to_numeric(df[c], errors="coerce").to_numpy(float)
        bad = np.nonzero(~np.isfinite(v))[0]
        if len(bad):
            rows = ", ".join(str(i + 2) for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
            raise BadResultsFile(f"{path}: column {c} is not a finite number in row(s) {rows}")
    return df


def neighbors_table(
    plateifu: str, *, k: int = 5, model: str = "ae", space: str = "umap", results: str | os.PathLike = "results"
) -> pd.DataFrame:
    """The neighbours of one galaxy with their scores and AGN flags (the CLI's table)."""
    from linecube.io.manga import parse_plateifu

    plateifu = str(plateifu).strip()
    res = Path(results)
    emb_path, sc_path = res / model / "embedding.csv", res / model / "scores.csv"
    for p in (emb_path, sc_path):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist: run the workflow (snakemake) for model {model!r} first")
    emb = read_results_table(emb_path)
    scores = read_results_table(sc_path).set_index("plateifu")
    missing = sorted(set(emb["plateifu"]) - set(scores.index))
    if missing:
        raise BadResultsFile(
            f"{sc_path}: {len(missing)} galaxies of {emb_path} have no row (e.g. {missing[0]}): rerun the workflow"
        )
    if k < 1:
        raise BadResultsFile(f"-k: must be at least 1, got {k}")
    try:
        parse_plateifu(plateifu)
    except ValueError as e:
        raise UnknownGalaxy(str(e)) from None
    if plateifu not in set(emb["plateifu"]):
        close = difflib.get_close_matches(plateifu, list(emb["plateifu"]), n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(close)}" if close else ""
        raise UnknownGalaxy(f"{plateifu} is not in {emb_path} ({len(emb)} galaxies){hint}")
    nb = neighbors_frame(emb, [plateifu], k, space)
    table = pd.concat(
        [pd.DataFrame([{"query": plateifu, "rank": 0, "neighbor": plateifu, "distance": 0.0}]), nb], ignore_index=True
    )
    extra = [c for c in ("score", "rank", "percentile", "agn", "wise_agn", "bat_agn", "radio_agn", "broad_agn") if c in scores]
    info = scores.loc[table["neighbor"], extra].reset_index(drop=True).rename(columns={"rank": "score_rank"})
    return pd.concat([table.rename(columns={"rank": "nn"}), info], axis=1)


def format_table(table: pd.DataFrame) -> str:
    """A fixed-width table for the terminal."""
    t = table.copy()
    if "score" in t:
        t["score"] = t["score"].map(lambda v: f"{v:.4g}")
    if "percentile" in t:
        t["percentile"] = t["percentile"].map(lambda v: f"{v:.1f}")
    t["distance"] = t["distance"].map(lambda v: f"{v:.3f}")
    flags = [c for c in ("wise_agn", "bat_agn", "radio_agn", "broad_agn") if c in t]
    if flags:
        t["agn_flags"] = t[flags].apply(lambda r: ",".join(c.removesuffix("_agn") for c in flags if bool(r[c])) or "-", axis=1)
        t = t.drop(columns=flags + (["agn"] if "agn" in t else []))
    t["nn"] = t["nn"].map(lambda v: "query" if v == 0 else str(v))
    return t.drop(columns=["query"]).to_string(index=False)
