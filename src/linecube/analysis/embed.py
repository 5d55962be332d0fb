"""PCA then UMAP of the latent vectors.

PCA to ``pca_components`` (the paper: 50, ~90 % of the variance), then UMAP
(McInnes et al. 2018) to 3 dimensions. Seeded (``random_state``, the default) it
is deterministic and single-threaded: umap-learn forces ``n_jobs=1`` with a seed.
``seed=None`` runs it on ``n_jobs`` threads, and then two runs differ. With fewer galaxies than components, PCA keeps n - 1 and says
so. UMAP's first call in a process compiles its numba code (~30 s).
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np

log = logging.getLogger("linecube")


def fit_pca(latents: np.ndarray, n_components: int, seed: int | None = None):
    """The PCA of :func:`pca_reduce`, fitted (full SVD: deterministic, whatever the seed)."""
    from sklearn.decomposition import PCA

    n, d = latents.shape
    k = max(1, min(n_components, n - 1, d))
    return PCA(n_components=k, random_state=seed, svd_solver="full").fit(latents.astype(np.float64))


def pca_reduce(latents: np.ndarray, n_components: int, seed: int | None):
    """(scores (N, k), explained_variance_ratio (k,)); k = min(n_components, N-1, d)."""
    from sklearn.decomposition import PCA

    n, d = latents.shape
    k = max(1, min(n_components, n - 1, d))
    if k < n_components:
        log.warning("PCA: %d galaxies and %d latent dimensions allow %d of the %d components asked for", n, d, k, n_components)
    pca = PCA(n_components=k, random_state=seed, svd_solver="full")
    return pca.fit_transform(latents.astype(np.float64)), pca.explained_variance_ratio_


def import_umap():
    """umap-learn without TensorFlow. Its package imports TensorFlow for
    ``ParametricUMAP`` (which linecube never uses): ~4 s of a 12 s job on 2 cores
    (docs/benchmarks.md). Where TensorFlow is not imported yet, it is hidden for
    this one import (umap-learn then skips ``ParametricUMAP``); anything imported
    later still gets the real TensorFlow."""
    import sys

    if "umap" in sys.modules:
        return sys.modules["umap"]
    hide = "tensorflow" not in sys.modules
    if hide:
        sys.modules["tensorflow"] = None  # `import tensorflow` raises ImportError
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImportWarning)
            import umap
    finally:
        if hide and "tensorflow" in sys.modules and sys.modules["tensorflow"] is None:
            del sys.modules["tensorflow"]
    return umap


def umap_reduce(
    x: np.ndarray, n_components: int, n_neighbors: int, min_dist: float, seed: int | None, n_jobs: int = 1
) -> np.ndarray:
    """UMAP of x (N, d) to (N, n_components); n_neighbors capped at N - 1 for
    small samples. seed=None: unseeded, on n_jobs threads."""
    umap = import_umap()
    n = len(x)
    nn = max(2, min(n_neighbors, n - 1))
    if nn < n_neighbors:
        log.warning("UMAP: %d galaxies: n_neighbors lowered from %d to %d", n, n_neighbors, nn)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reducer = umap.UMAP(
            n_components=n_components,
            n_neighbors=nn,
            min_dist=min_dist,
            random_state=seed,
            n_jobs=1 if seed is not None else max(1, int(n_jobs)),
            init="spectral" if n > n_components + 1 else "random",
            metric="euclidean",
        )
        out = reducer.fit_transform(x).astype(np.float64)
    for w in caught:
        msg = str(w.message)
        if "n_jobs value" in msg and "overridden" in msg:
            continue  # seeded UMAP runs single-threaded by design
        log.warning("UMAP: %s", " ".join(msg.split()))
    graph = getattr(reducer, "graph_", None)
    if graph is not None and n > 2:
        from scipy.sparse.csgraph import connected_components

        k, labels = connected_components(graph, directed=False)
        if k > 1:
            sizes = np.sort(np.bincount(labels))[::-1]
            log.warning(
                "UMAP: the %d-neighbour graph of %d galaxies is not fully connected (%d components, sizes %s): "
                "distances between the islands, and neighbours across them, mean little",
                nn,
                n,
                k,
                ", ".join(str(v) for v in sizes[:6]) + (" ..." if k > 6 else ""),
            )
    return out


def embed(
    latents: np.ndarray,
    plateifus,
    *,
    pca_components=50,
    umap_components=3,
    umap_neighbors=15,
    umap_min_dist=0.1,
    seed: int | None = 42,
    n_jobs: int = 1,
):
    """DataFrame (plateifu, pc1..pck, umap1..umapm) and the PCA variance table."""
    import pandas as pd

    pcs, evr = pca_reduce(latents, pca_components, seed)
    if seed is None:
        log.info("UMAP: unseeded (embed.seed: null), %d threads: the embedding differs from run to run", n_jobs)
    emb = umap_reduce(pcs, umap_components, umap_neighbors, umap_min_dist, seed, n_jobs)
    df = pd.DataFrame({"plateifu": list(plateifus)})
    for i in range(pcs.shape[1]):
        df[f"pc{i + 1}"] = pcs[:, i]
    for i in range(emb.shape[1]):
        df[f"umap{i + 1}"] = emb[:, i]
    var = pd.DataFrame({"component": np.arange(1, len(evr) + 1), "explained_variance_ratio": evr, "cumulative": np.cumsum(evr)})
    return df, var


def embed_file(latents_h5: str | os.PathLike, out_csv, out_variance, **kw) -> dict:
    import h5py

    from linecube.io.atomic import write_csv_atomic
    from linecube.io.formats import read_strings

    with h5py.File(latents_h5, "r") as h5:
        z = h5["latent"][()]
        p = read_strings(h5["plateifu"])
    df, var = embed(z, p, **kw)
    write_csv_atomic(df, out_csv)
    write_csv_atomic(var, out_variance)
    total = float(var["cumulative"].iloc[-1])
    log.info(
        "PCA: %d components explain %.1f %% of the latent variance; UMAP to %d dimensions",
        len(var),
        100 * total,
        kw.get("umap_components", 3),
    )
    return {"components": len(var), "explained": total}
