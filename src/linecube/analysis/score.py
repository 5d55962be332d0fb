"""Anomaly scores, latents and explanations for every galaxy.

For every (un-augmented) galaxy in cubes.h5, in batches:

* latent vector (AE: z; VAE: mu) -> ``latents.h5`` (/latent (N, d), /plateifu);
* every score of :data:`SCORE_COLUMNS` (``score_paper``: the paper's mean
  absolute error between input and reconstruction over all 190 x 32 x 32 voxels,
  in the cube's flux units; ``score_hybrid``, the default ranking, and the others
  as their descriptions say); ``score`` (with ``rank``, ``percentile``) is the
  one ``score.default`` names, and scores.csv says which (``score_name``);
* per-line shares: the fraction of the absolute error in each line's window
  (19 columns ``share_<line>``, summing to 1);
* two companions of the paper's score: ``score_usable``, the same MAE over usable voxels
  only (mask == 0: no DONOTUSE, no padding), and ``score_chi``, the mean of
  |I - I'| * sqrt(ivar) over usable voxels (residuals in units of each voxel's
  noise, so a noisier cube does not look more anomalous);
* for the top-K galaxies and the most anomalous AGN: the reconstruction and a
  per-spaxel residual map (mean |I - I'| along wavelength) -> ``reconstructions.h5``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from linecube.analysis.diagnostics import brightness_check, eq1_numpy
from linecube.analysis.stats import RawStats, Reconstructor, collect_stats, load_agn_flags, save_raw_stats
from linecube.config import schema_enum
from linecube.data.dataset import median_cubes
from linecube.io.atomic import atomic_path, write_csv_atomic, write_json_atomic
from linecube.io.formats import check_cubes_file, read_layout, read_strings

log = logging.getLogger("linecube")


#: every score computed for every galaxy (scores.csv columns), and what each is
SCORE_COLUMNS: dict[str, str] = {
    "score_paper": "the paper's: MAE of the reconstruction over all voxels (flux units)",
    "score_residual": "max over lines of the robust z of the localised, noise-aware, Halpha-normalised residual",
    "score_latent": "mean distance to the 10 nearest training galaxies in whitened PCA of the latents",
    "score_significance": "max over lines of the robust z of the reconstruction's chi^2 excess in noise units (PSF-smoothed, largest spaxel)",
    "score_latent_if": "IsolationForest on whitened PCA of the latents",
    "score_features": "non-deep baseline: IsolationForest + LOF on line ratios, widths, pedestals, offsets",
    "score_combined": "mean Gaussianised rank of score_residual, score_latent and score_features",
    "score_deep": "mean Gaussianised rank of score_residual and score_latent (model-based only)",
    "score_max": "largest Gaussianised rank of score_residual, score_latent and score_features",
    "score_hybrid": "the larger of score_features and score_deep: hand-made features, or the model's residual and latent together",
}


#: the scores a ``score.default`` may name


def derive_scores(
    raw: RawStats,
    ref_rows: np.ndarray,
    line_names: list[str],
    seed: int = 0,
    peers: bool = True,
    min_feature_snr: float | None = None,
) -> dict[str, np.ndarray]:
    """Every score of :data:`SCORE_COLUMNS` (plus ``explain_line``) from raw stats,
    each fitted on the reference (training) galaxies ``ref_rows`` only.

    ``peers``: the combined scores rank each component against the reference
    galaxies observed alike (same IFU bundle class, Halpha detected or not:
    :func:`linecube.analysis.ranks.peer_groups`), so neither the footprint nor a quiet
    galaxy's noise reads as an anomaly; False ranks against all of them.
    ``min_feature_snr``: features resting on weaker lines are not measured
    (:func:`linecube.analysis.features.measured`; default :data:`linecube.analysis.features.MIN_FEATURE_SNR`)."""
    from linecube.analysis.features import MIN_FEATURE_SNR, FeatureScorer, measured
    from linecube.analysis.latent import LatentDensity
    from linecube.analysis.ranks import peer_gauss_ranks, peer_groups
    from linecube.analysis.residual import residual_score

    feats = measured(raw.features, raw.feature_snr, MIN_FEATURE_SNR if min_feature_snr is None else min_feature_snr)

    ref_rows = np.asarray(ref_rows, dtype=int)
    is_ref = np.zeros(len(raw.paper), bool)
    is_ref[ref_rows] = True
    resid, explain = residual_score(raw.line_resid, ref_rows, line_names)
    dens = LatentDensity(seed=seed).fit(raw.latents[ref_rows])
    signif, _ = residual_score(raw.line_signif, ref_rows, line_names)
    out = {
        "score_paper": raw.paper,
        "score_residual": resid,
        "score_significance": signif,
        "score_latent": dens.knn(raw.latents, is_ref),
        "score_latent_if": dens.iforest(raw.latents),
        "score_features": FeatureScorer(seed).fit(feats[ref_rows])(feats, ref_rows),
    }
    groups = peer_groups(raw.ifu_fibres, raw.ha_snr) if peers else None
    g = peer_gauss_ranks({k: out[k] for k in ("score_residual", "score_latent", "score_features")}, ref_rows, groups)
    out["score_combined"] = g.mean(axis=0)
    out["score_deep"] = g[:2].mean(axis=0)
    out["score_max"] = g.max(axis=0)
    # two detectors, each on the Gaussianised-rank scale: the feature baseline, and
    # the model's two scores averaged (one of them alone does not raise it)
    out["score_hybrid"] = np.maximum(g[2], out["score_deep"])
    out["explain_line"] = np.array(explain, dtype=object)
    return out


def eq1_against(scaler, flux: np.ndarray, mask: np.ndarray, med_model: np.ndarray, *recons: np.ndarray) -> np.ndarray:
    """Eq. 1 per galaxy, in the model's units (``scaler``), of cubes ``flux``
    (N, wavelength, y, x) against the median cube ``med_model`` (row 0) and
    against each of ``recons`` (flux units; rows 1..): (1 + len(recons), N)."""
    sc = scaler.galaxy_scale(flux, mask)
    x = scaler.forward(flux, sc)
    return np.stack([eq1_numpy(x, np.broadcast_to(med_model, x.shape))] + [eq1_numpy(x, scaler.forward(r, sc)) for r in recons])


def loss_ratios(cubes_h5: str | os.PathLike, rec, rows, med_model: np.ndarray, batch_size: int = 32) -> tuple[float, float]:
    """On ``rows`` (held-out galaxies), in the units the model is trained in:
    the model's mean Eq. 1 over that of the median cube (near 1: the model has
    learned no more than a mean galaxy), and the same ratio for the noise alone,
    what a perfect reconstruction would score: Eq. 1 of E|noise| =
    sqrt(2/pi) sigma per voxel (sigma from the ivar, carried through the model's
    flux scaling; masked voxels count zero), so a lower bound."""
    from linecube.data.dataset import read_rows
    from linecube.io.formats import sigma_from_ivar

    rows = np.asarray(rows, dtype=int)
    if not len(rows):
        return float("nan"), float("nan")
    k = np.float32(np.sqrt(2.0 / np.pi))
    parts = []
    for s0 in range(0, len(rows), batch_size):
        flux, ivar, mask = read_rows(cubes_h5, rows[s0 : s0 + batch_size])
        noisy = flux + k * np.where(mask == 0, sigma_from_ivar(ivar), 0.0)
        parts.append(eq1_against(rec.scaler, flux, mask, med_model, rec(flux, mask)[1], noisy))
    med, model, noise = np.concatenate(parts, axis=1).mean(axis=1)
    return float(model / max(med, 1e-30)), float(noise / max(med, 1e-30))


def reference_rows(plateifus: list[str], split_csv: str | os.PathLike | None) -> np.ndarray:
    """Rows of the training galaxies (split.csv ``split == train``), the reference
    every score is fitted on; all rows when there is no split file."""
    import pandas as pd

    if not split_csv:
        return np.arange(len(plateifus))
    sp = pd.read_csv(split_csv, dtype={"plateifu": str})
    train = set(sp.loc[sp["split"] == "train", "plateifu"])
    rows = np.array([i for i, p in enumerate(plateifus) if p in train], dtype=int)
    if len(rows) < 5:
        log.warning("%s: only %d training galaxies in the scored file; fitting scores on all galaxies", split_csv, len(rows))
        return np.arange(len(plateifus))
    return rows


#: output name -> its file in ``out_dir`` (unless :func:`score_galaxies` is given other paths)
SCORE_OUTPUTS = {"scores": "scores.csv", "latents": "latents.h5", "reconstructions": "reconstructions.h5",
                 "diagnostics": "diagnostics.json", "stats": "raw_stats.npz"}  # fmt: skip


def score_galaxies(
    cubes_h5: str | os.PathLike,
    model_path: str | os.PathLike,
    model_cfg: dict,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 32,
    top_k: int = 20,
    agn_catalog: str | os.PathLike | None = None,
    extra_plateifus: list[str] | None = None,
    progress: bool = True,
    split_csv: str | os.PathLike | None = None,
    default_score: str = "score_hybrid",
    seed: int = 0,
    backend: str | None = None,
    bitwise: bool = False,
    history_csv: str | os.PathLike | None = None,
    divergence_csv: str | os.PathLike | None = None,
    truth_csv: str | os.PathLike | None = None,
    outputs: dict | None = None,
    links: bool = True,
) -> dict:
    """Score every galaxy; write scores.csv, latents.h5, reconstructions.h5 and
    diagnostics.json (or the paths ``outputs`` gives by name: ``scores``,
    ``latents``, ``reconstructions``, ``diagnostics``; the workflow passes its
    declared outputs) (:mod:`linecube.analysis.diagnostics`; ``history_csv`` and
    ``divergence_csv`` of the training run give the KL and the divergence
    events, ``truth_csv`` the probes).

    ``score`` (and ``rank``, ``percentile``) is ``default_score``; every score of
    :data:`SCORE_COLUMNS` is a column too, fitted on the training galaxies of
    ``split_csv``. ``bitwise``: bit-identical model outputs for one configuration
    (:func:`linecube.model.backend.select`)."""
    import h5py
    import pandas as pd

    from linecube.model import backend as kb

    if default_score not in (choices := schema_enum("score", "default")):
        raise ValueError(f"score.default must be one of {choices}, got {default_score!r}")
    check_cubes_file(cubes_h5)
    kb.select(backend, bitwise=bitwise)
    kb.configure(0)
    out_dir = Path(out_dir)
    paths = {n: Path((outputs or {}).get(n) or out_dir / f) for n, f in SCORE_OUTPUTS.items()}
    with h5py.File(cubes_h5, "r") as h5:
        layout, lines = read_layout(h5)
        plateifus = read_strings(h5["plateifu"])
        mangaids = read_strings(h5["mangaid"])
    n = len(plateifus)
    rec = Reconstructor(model_path, model_cfg, layout, lines.names)
    t0 = time.perf_counter()
    raw = collect_stats(
        cubes_h5, rec, list(lines.names), layout.window_bins, batch_size=batch_size, progress=progress,
        desc=f"score {Path(model_path).parent.name}",
    )  # fmt: skip
    dt = time.perf_counter() - t0
    ref = reference_rows(plateifus, split_csv)
    sc = derive_scores(raw, ref, list(lines.names), seed)
    save_raw_stats(paths["stats"], raw, plateifus, ref, list(lines.names), seed)
    test_rows = np.setdiff1d(np.arange(n), ref)[:200]
    ratio = noise_ratio = float("nan")
    if len(test_rows):
        _, med_model = median_cubes(cubes_h5, ref, rec.scaler, seed=seed)
        ratio, noise_ratio = loss_ratios(cubes_h5, rec, test_rows, med_model, batch_size)

    df = pd.DataFrame({"plateifu": plateifus, "mangaid": mangaids, "score": sc[default_score]})
    df["rank"] = df["score"].rank(ascending=False, method="first").astype(int)
    df["percentile"] = 100.0 * df["score"].rank(pct=True, method="average")
    df["score_name"] = default_score
    df["explain_line"] = sc["explain_line"]
    for k in SCORE_COLUMNS:
        df[k] = sc[k]
    df["score_usable"] = raw.usable
    df["score_chi"] = raw.chi
    df["mean_abs_flux"] = raw.mean_abs_flux
    df["halpha_flux"] = raw.halpha
    df["reference"] = np.isin(np.arange(n), ref)
    if links:  # the galaxy's Marvin (DR17) page and SkyServer's navigate view (figures.links)
        from linecube.io.manga import marvin_url, skyserver_url

        with h5py.File(cubes_h5, "r") as h5:
            ra, dec = h5["objra"][()], h5["objdec"][()]
        df["marvin"] = [marvin_url(p) for p in plateifus]
        df["skyserver"] = [skyserver_url(r, d) for r, d in zip(ra, dec)]
    for k, name in enumerate(lines.names):
        df[f"share_{name}"] = raw.shares[:, k]
    agn = load_agn_flags(agn_catalog, plateifus, mangaids)
    if agn is not None:
        for c in agn.columns:
            df[c] = agn[c].to_numpy()
    df = df.sort_values("rank").reset_index(drop=True)
    write_csv_atomic(df, paths["scores"])

    with atomic_path(paths["latents"]) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("latent", data=raw.latents)
            h5.create_dataset("plateifu", data=np.array(plateifus, dtype=object), dtype=h5py.string_dtype("utf-8"))
            h5.attrs["model"] = str(model_path)
            h5.attrs["description"] = "latent vector of each galaxy (AE: z; VAE: mu), rows in cubes.h5 order"

    # reconstructions + residual maps for the top-K, the most anomalous AGN and requested galaxies
    keep = list(df["plateifu"].iloc[:top_k])
    if agn is not None and "agn" in df:
        keep += list(df.loc[df["agn"], "plateifu"].iloc[:top_k])
    keep += [p for p in (extra_plateifus or []) if p in set(plateifus)]
    keep = list(dict.fromkeys(keep))
    write_reconstructions(cubes_h5, rec, keep, plateifus, paths["reconstructions"], batch_size)
    summary = {
        "n": n,
        "seconds": dt,
        "cubes_per_second": n / dt if dt > 0 else float("nan"),
        "default_score": default_score,
        "median_score": float(np.median(df["score"])) if n else float("nan"),
        **brightness_check(raw.paper, raw.mean_abs_flux),
        "spearman_default_vs_mean_abs_flux": brightness_check(sc[default_score], raw.mean_abs_flux)[
            "spearman_score_vs_mean_abs_flux"
        ],
    }
    log.info(
        "scored %d galaxies in %.1f s (%.1f cubes/s); ranking by %s, fitted on %d training galaxies",
        n,
        dt,
        summary["cubes_per_second"],
        default_score,
        len(ref),
    )
    log.info(
        "brightness check: paper score: median score / mean|flux| = %.3f (1 = no better than an all-zero "
        "reconstruction), Spearman rho(score_paper, mean|flux|) = %.3f; default score: rho = %.3f "
        "(near +-1: the ranking mostly follows how bright the galaxy is)",
        summary["median_score_over_mean_abs_flux"],
        summary["spearman_score_vs_mean_abs_flux"],
        summary["spearman_default_vs_mean_abs_flux"],
    )
    summary["test_loss_ratio"] = ratio
    summary["test_loss_noise_ratio"] = noise_ratio
    diag = model_diagnostics(
        cubes_h5, rec, ref, test_rows, med_model if len(test_rows) else None, ratio, noise_ratio, plateifus, raw.latents,
        history_csv=history_csv, divergence_csv=divergence_csv, truth_csv=truth_csv, seed=seed,
    )  # fmt: skip
    diag["default_score"] = default_score
    summary["test_loss_learned_fraction"] = diag["learned_fraction"]
    write_json_atomic(diag, paths["diagnostics"])
    log_diagnostics(diag, len(test_rows))
    return summary


def model_diagnostics(
    cubes_h5, rec, ref, test_rows, med_model, ratio, noise_ratio, plateifus, latents, *,
    history_csv=None, divergence_csv=None, truth_csv=None, seed: int = 0,
) -> dict:  # fmt: skip
    """diagnostics.json's content (:mod:`linecube.analysis.diagnostics`)."""
    import pandas as pd

    from linecube.analysis.diagnostics import (
        fit_pixel_pca,
        history_kl,
        learned_fraction,
        pca_loss_ratio,
        pixel_pca_scores,
        probe_rows,
        probe_warnings,
        representation_probes,
    )
    from linecube.model import backend as kb

    k = int(latents.shape[1])
    pca = fit_pixel_pca(cubes_h5, ref, rec.scaler, k, seed=seed) if len(ref) > 2 else None
    pca_ratio = float("nan")
    if pca is not None and med_model is not None and len(test_rows):
        pca_ratio = pca_loss_ratio(pca, cubes_h5, test_rows, rec.scaler, med_model)
    events = pd.read_csv(divergence_csv) if divergence_csv and Path(divergence_csv).exists() else None
    diag = {
        "backend": kb.name(),
        "latent_dim": k,
        "n_test": int(len(test_rows)),
        "loss_ratio": ratio,
        "pca_loss_ratio": pca_ratio,
        "pca_components": int(pca.n_components_) if pca is not None else None,
        "noise_loss_ratio": noise_ratio,
        "learned_fraction": learned_fraction(ratio, noise_ratio),
        "kl_per_galaxy": history_kl(history_csv) if rec.model.variational else None,
        "divergence_events": int(len(events)) if events is not None else None,
        "probes": None,
        "warnings": [],
    }
    if truth_csv and pca is not None:
        rows, truth = probe_rows(plateifus, truth_csv)
        if len(rows) >= 10:
            pixels = pixel_pca_scores(pca, cubes_h5, rows, rec.scaler)
            diag["probes"] = representation_probes(latents[rows], pixels, truth, seed=seed)
            diag["warnings"] += probe_warnings(diag["probes"])
    if np.isfinite(ratio) and np.isfinite(pca_ratio) and ratio > pca_ratio:
        diag["warnings"].insert(
            0, f"reconstruction: model {ratio:.3f} of the median cube's loss, worse than PCA's {pca_ratio:.3f}"
        )
    return diag


def log_diagnostics(diag: dict, n_test: int) -> None:
    """The score log's lines on what the model has learned, and its warnings."""
    if np.isfinite(diag["loss_ratio"]):
        log.info(
            "test Eq. 1 loss / training median cube's: %.3f (%d held-out galaxies); PCA at the latent's dimension "
            "(%s components): %.3f; the noise alone, what a perfect reconstruction would score: %.3f; so the model "
            "has learned %.0f %% of what the noise leaves to learn (1 - ratio over 1 - the noise's)",
            diag["loss_ratio"], n_test, diag["pca_components"], diag["pca_loss_ratio"], diag["noise_loss_ratio"],
            100 * diag["learned_fraction"],
        )  # fmt: skip
    if diag.get("kl_per_galaxy") is not None:
        log.info("VAE: KL per galaxy %.1f nats (held-out, last epoch)", diag["kl_per_galaxy"])
    if diag.get("divergence_events"):
        log.warning("training threw away %d diverging batch(es): see divergence.csv", diag["divergence_events"])
    pr = diag.get("probes")
    if pr:
        lat, pix = pr["latent"], pr["pixels_pca"]
        log.info(
            "probes on %d normal galaxies of the truth table (kNN, k = 10, 5-fold): class balanced accuracy latent %.2f "
            "vs pixels-PCA %.2f; neighbour class purity %.2f vs %.2f; v sin i R^2 %.2f vs %.2f",
            pr["n"], lat["knn"].get("class", float("nan")), pix["knn"].get("class", float("nan")),
            lat.get("purity", float("nan")), pix.get("purity", float("nan")),
            lat["knn"].get("vsini_kms", float("nan")), pix["knn"].get("vsini_kms", float("nan")),
        )  # fmt: skip
        if pr.get("ceiling"):
            c = pr["ceiling"]
            log.info(
                "  for reference, the same class probe on the true parameters themselves: kNN %.2f (the %d parameters), "
                "%.2f (the two BPT ratios); logistic %.2f",
                c["knn"], sum(1 for k in lat["knn"] if k != "class"), c.get("knn_bpt_ratios", float("nan")), c["linear"],
            )  # fmt: skip
    losing = [w for w in diag["warnings"] if "pixels-PCA" in w]
    for w in diag["warnings"]:
        if w not in losing:
            log.warning("%s", w)
    if losing:
        log.warning(
            "the latent space loses to the pixel baseline by more than 0.05 on %d probe(s) (diagnostics.json has them all): %s",
            len(losing), "; ".join(w.replace(": latent", ":").replace(" < pixels-PCA ", " < ") for w in losing),
        )  # fmt: skip


def write_reconstructions(cubes_h5, rec: Reconstructor, keep: list[str], plateifus: list[str], out, batch_size: int) -> None:
    """Inputs, reconstructions and residual maps of the chosen galaxies."""
    import h5py

    from linecube.data.dataset import read_rows

    index = {p: i for i, p in enumerate(plateifus)}
    rows = np.array([index[p] for p in keep], dtype=int)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as h5:
            k = len(rows)
            with h5py.File(cubes_h5, "r") as src:
                shape = src["flux"].shape[1:]
                h5.create_dataset("wave", data=np.stack([src["wave"][r] for r in rows]) if k else np.zeros((0, shape[0])))
                for a in ("line_names", "line_rest_wavelengths", "window_bins", "crop"):
                    h5.attrs[a] = src.attrs[a]
            h5.create_dataset("plateifu", data=np.array(keep, dtype=object), dtype=h5py.string_dtype("utf-8"))
            for name in ("flux", "recon", "mask"):
                h5.create_dataset(
                    name, shape=(k, *shape), dtype="u1" if name == "mask" else "f4", chunks=(1, *shape) if k else None
                )
            h5.create_dataset("residual", shape=(k, shape[1], shape[2]), dtype="f4")
            for s in range(0, k, batch_size):
                r = rows[s : s + batch_size]
                flux, _iv, mask = read_rows(cubes_h5, r)
                _, recon = rec(flux, mask)
                h5["flux"][s : s + len(r)] = flux
                h5["recon"][s : s + len(r)] = recon
                h5["mask"][s : s + len(r)] = mask
                h5["residual"][s : s + len(r)] = np.abs(flux - recon).mean(axis=1)
            h5.attrs["description"] = (
                "input, reconstruction (flux units) and per-spaxel residual map (mean |I-I'| along wavelength)"
            )
