"""What a trained model has learned: ``results/{model}/diagnostics.json``.

* Reconstruction, on held-out galaxies, in the units the model is trained in:
  its Eq. 1 loss over the training median cube's (``loss_ratio``; 1 = no more
  than a mean galaxy), the same for PCA of the training galaxies' cubes at the
  latent's dimension (``pca_loss_ratio``: the linear baseline a nonlinear model
  should beat) and for the noise alone (``noise_loss_ratio``: what a perfect
  reconstruction scores, :func:`linecube.analysis.score.loss_ratios`), and the
  **learned fraction** (1 - loss_ratio) / (1 - noise_loss_ratio): 0 a mean
  galaxy, 1 a perfect model. The science and representation benchmarks use the
  same definition.
* Training: the VAE's KL per galaxy (nats, last epoch, held-out), the divergence
  guard's thrown-away batches.
* Where a truth table gives properties (simulated surveys): the representation
  probes of :mod:`linecube.analysis.probes` on the normal galaxies, for the latent and for
  the pixel baseline (PCA of the flux-normalised cubes at the latent's dimension).

numpy / scikit-learn only, except what the caller's reconstructor runs.
"""

from __future__ import annotations

import logging
import os

import numpy as np


def eq1_numpy(x: np.ndarray, xr: np.ndarray) -> np.ndarray:
    """The paper's Eq. 1 per galaxy (N,) for (N, wavelength, y, x) arrays: per spaxel
    the MAE along wavelength summed over spaxels, plus per channel the MAE over
    the image summed over channels (numpy twin of :func:`linecube.model.losses.eq1_loss`)."""
    d = np.abs(x.astype(np.float64) - xr)
    return d.mean(axis=1).sum(axis=(1, 2)) + d.mean(axis=(2, 3)).sum(axis=1)


log = logging.getLogger("linecube")


def learned_fraction(ratio: float, noise_ratio: float) -> float:
    """How much of what the noise leaves to learn a model has learned, from its test
    Eq. 1 loss over the median cube's (``ratio``) and the same for the noise alone
    (``noise_ratio``): (1 - ratio) / (1 - noise_ratio); 0 = a mean galaxy, 1 = a
    perfect model, < 0 = worse than the median cube. NaN when either is undefined
    or the noise leaves nothing to learn."""
    if not (np.isfinite(ratio) and np.isfinite(noise_ratio)) or noise_ratio >= 0.999:
        return float("nan")
    return (1.0 - float(ratio)) / (1.0 - float(noise_ratio))


def _scaled(cubes_h5, rows, scaler) -> tuple[np.ndarray, np.ndarray]:
    """(cubes in the model's units flattened (N, V), masks (N, 190, y, x)) of ``rows``."""
    from linecube.data.dataset import read_rows

    flux, _iv, mask = read_rows(cubes_h5, rows)
    x = scaler.forward(flux, scaler.galaxy_scale(flux, mask))
    return x.reshape(len(x), -1), mask


def fit_pixel_pca(cubes_h5, fit_rows, scaler, k: int, seed: int = 0, max_fit: int = 200):
    """PCA (randomised SVD) of at most ``max_fit`` (seeded) of ``fit_rows``'
    cubes in the model's units, to ``k`` components (capped at N - 1). Memory:
    ``max_fit`` cubes in float32 (~40 MB per 100 cubes of the default layout) and
    the SVD's copies, whatever the survey's size."""
    from sklearn.decomposition import PCA

    rows = np.asarray(fit_rows, dtype=int)
    if len(rows) > max_fit:
        rows = np.sort(np.random.default_rng([seed, 13]).choice(rows, max_fit, replace=False))
    x, _ = _scaled(cubes_h5, rows, scaler)
    k = max(1, min(int(k), len(rows) - 1))
    return PCA(k, svd_solver="randomized", random_state=seed).fit(x)


def pixel_pca_scores(pca, cubes_h5, rows, scaler, batch: int = 64) -> np.ndarray:
    """(N, k) PCA scores of ``rows``' cubes (in batches)."""
    rows = np.asarray(rows, dtype=int)
    parts = [pca.transform(_scaled(cubes_h5, rows[s : s + batch], scaler)[0]) for s in range(0, len(rows), batch)]
    return np.concatenate(parts) if parts else np.zeros((0, pca.n_components_))


def pca_loss_ratio(pca, cubes_h5, rows, scaler, med_model: np.ndarray, batch: int = 64) -> float:
    """Eq. 1 of PCA's reconstruction of ``rows`` (held-out galaxies) over the median
    cube's (``med_model``, the model's units), both in the model's units."""

    rows = np.asarray(rows, dtype=int)
    num = den = 0.0
    for s in range(0, len(rows), batch):
        x, _ = _scaled(cubes_h5, rows[s : s + batch], scaler)
        rec = pca.inverse_transform(pca.transform(x))
        shape = (len(x), *med_model.shape)
        num += float(eq1_numpy(x.reshape(shape), rec.reshape(shape)).sum())
        den += float(eq1_numpy(x.reshape(shape), np.broadcast_to(med_model, shape)).sum())
    return num / max(den, 1e-30)


def probe_rows(plateifus, truth_csv) -> tuple[np.ndarray, dict]:
    """Rows (in ``plateifus`` order) of the normal galaxies the truth table knows,
    and the truth columns for those rows (numpy arrays by column name)."""
    import pandas as pd

    from linecube.analysis.validate import truth_flags

    t = pd.read_csv(truth_csv, dtype={"plateifu": str}, keep_default_na=False)
    t = t.drop_duplicates("plateifu").set_index("plateifu")
    anomalous = truth_flags(t["is_anomaly"]) if "is_anomaly" in t else np.zeros(len(t), bool)
    normal = set(t.index[~anomalous])
    rows = np.array([i for i, p in enumerate(plateifus) if p in normal], dtype=int)
    sub = t.loc[[plateifus[i] for i in rows]]
    cols = {}
    for c in sub.columns:
        v = pd.to_numeric(sub[c], errors="coerce")
        cols[c] = v.to_numpy(float) if v.notna().all() else sub[c].astype(str).to_numpy(object)
    return rows, cols


def representation_probes(latents: np.ndarray, pixels: np.ndarray, truth: dict, seed: int = 0) -> dict:
    """Probes (:func:`linecube.analysis.probes.probe_space`) of the latent and of the pixel
    baseline on the same galaxies, and the class probe's ceiling (the kNN and
    linear probes of the class on the true parameters themselves,
    :func:`linecube.analysis.probes.oracle_spaces`): {"latent": ..., "pixels_pca": ...,
    "ceiling": {"knn": x, "linear": x, "knn_bpt_ratios": x} or None, "n": N}.
    On a few dozen galaxies a learned space can pass the kNN figure: it is the
    probe on the true numbers equally weighted, not a bound."""
    from linecube.analysis.probes import knn_probe, linear_probe, oracle_spaces, probe_space
    from linecube.io.formats import PROBE_PARAMETERS

    params = [p for p in PROBE_PARAMETERS if p in truth and np.issubdtype(np.asarray(truth[p]).dtype, np.number)]
    oracles = oracle_spaces(truth, params)
    ceiling = None
    if "true_parameters" in oracles and "class" in truth:
        ceiling = {
            "knn": knn_probe(oracles["true_parameters"], truth["class"], classify=True, seed=seed),
            "linear": linear_probe(oracles["true_parameters"], truth["class"], classify=True, seed=seed),
        }
        if "true_bpt_ratios" in oracles:
            ceiling["knn_bpt_ratios"] = knn_probe(oracles["true_bpt_ratios"], truth["class"], classify=True, seed=seed)
    return {
        "n": int(len(latents)),
        "latent": probe_space(latents, truth, parameters=params, seed=seed),
        "pixels_pca": probe_space(pixels, truth, parameters=params, seed=seed),
        "ceiling": ceiling,
    }


def probe_warnings(probes: dict, margin: float = 0.05, floor: float = 0.1) -> list[str]:
    """One line for each probe where the latent scores below the pixel baseline by
    more than ``margin`` (probes where both are at most ``floor``, i.e. neither
    space carries the parameter, are skipped)."""
    out = []
    lat, pix = probes["latent"], probes["pixels_pca"]
    for kind in ("knn", "linear"):
        for p, v in lat[kind].items():
            b = pix[kind].get(p)
            if b is None or not (np.isfinite(v) and np.isfinite(b)) or max(v, b) <= floor:
                continue
            if v < b - margin:
                out.append(f"{kind} probe of {p}: latent {v:.2f} < pixels-PCA {b:.2f}")
    if "purity" in lat and lat["purity"] < pix.get("purity", -1) - margin:
        out.append(f"neighbour class purity: latent {lat['purity']:.2f} < pixels-PCA {pix['purity']:.2f}")
    return out


def history_kl(history_csv: str | os.PathLike | None) -> float | None:
    """The VAE's KL per galaxy of the last epoch (held-out when recorded), nats."""
    import pandas as pd

    if not history_csv or not os.path.exists(history_csv):
        return None
    h = pd.read_csv(history_csv)
    for c in ("test_kl", "kl"):
        if c in h and len(h):
            return float(h[c].iloc[-1])
    return None


def brightness_check(scores: np.ndarray, mean_abs_flux: np.ndarray) -> dict:
    """How much of the score is brightness: the median of score / mean|flux| (the
    MAE of an all-zero reconstruction; < 1 means the model beats zeros) and the
    Spearman rank correlation of score with mean|flux| (both per galaxy, flux units)."""
    from linecube.analysis.validate import spearman

    scores = np.asarray(scores, dtype=float)
    maf = np.asarray(mean_abs_flux, dtype=float)
    ok = maf > 0
    ratio = float(np.median(scores[ok] / maf[ok])) if ok.any() else float("nan")
    rho = spearman(scores, maf)
    rho = float("nan") if rho is None else rho
    return {"median_score_over_mean_abs_flux": ratio, "spearman_score_vs_mean_abs_flux": rho}
