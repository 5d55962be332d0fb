"""The latent as an anomaly score: :class:`LatentDensity`, whitened PCA of the
latent vectors, then the mean distance to the k nearest training galaxies
(``score_latent``) and an IsolationForest (``score_latent_if``), fitted on the
training galaxies only (Astronomaly's approach, Lochner & Bassett 2021, A&C 36,
100481: features -> density-based outlier scores). numpy/scikit-learn only.
"""

from __future__ import annotations

import numpy as np


class LatentDensity:
    """Whitened PCA of latent vectors -> kNN distance and IsolationForest, fitted on
    reference (training) galaxies (Astronomaly: Lochner & Bassett 2021)."""

    def __init__(self, n_components: int = 16, k: int = 10, seed: int = 0):
        self.n_components = int(n_components)
        self.k = int(k)
        self.seed = int(seed)

    def fit(self, ref: np.ndarray) -> LatentDensity:
        from sklearn.decomposition import PCA
        from sklearn.ensemble import IsolationForest
        from sklearn.neighbors import NearestNeighbors

        ref = np.asarray(ref, dtype=np.float64)
        nc = max(1, min(self.n_components, ref.shape[1], ref.shape[0] - 1))
        self.pca = PCA(nc, whiten=True, random_state=self.seed).fit(ref)
        w = self.pca.transform(ref)
        self.k_eff = max(1, min(self.k, len(ref) - 1))
        self.nn = NearestNeighbors(n_neighbors=self.k_eff + 1).fit(w)
        self.forest = IsolationForest(n_estimators=200, random_state=self.seed).fit(w)
        return self

    def knn(self, z: np.ndarray, is_ref: np.ndarray | None = None) -> np.ndarray:
        """Mean distance to the k nearest reference galaxies (whitened units); a
        reference galaxy does not count itself."""
        w = self.pca.transform(np.asarray(z, dtype=np.float64))
        dist, _ = self.nn.kneighbors(w)
        is_ref = np.zeros(len(w), bool) if is_ref is None else np.asarray(is_ref, bool)
        own = np.where(is_ref[:, None], dist[:, 1:], dist[:, :-1])
        return own.mean(axis=1)

    def iforest(self, z: np.ndarray) -> np.ndarray:
        """IsolationForest anomaly score (higher = more anomalous)."""
        return -self.forest.score_samples(self.pca.transform(np.asarray(z, dtype=np.float64)))
