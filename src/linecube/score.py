"""Anomaly scores, latents and explanations for every galaxy.

For every (un-augmented) galaxy in cubes.h5, in batches:

* latent vector (AE: z; VAE: mu) -> ``latents.h5`` (/latent (N, d), /plateifu);
* score = mean absolute error between input and reconstruction over all
  190 x 32 x 32 voxels, in the cube's flux units (1e-17 erg/s/cm^2/A/spaxel),
  whatever flux scaling the model was trained with (the paper's definition);
* per-line shares: the fraction of the absolute error in each line's window
  (19 columns ``share_<line>``, summing to 1);
* two companions of the score: ``score_usable``, the same MAE over usable voxels
  only (mask == 0: no DONOTUSE, no padding), and ``score_chi``, the mean of
  |I - I'| * sqrt(ivar) over usable voxels (residuals in units of each voxel's
  noise, so a noisier cube does not look more anomalous);
* for the top-K galaxies and the most anomalous AGN: the reconstruction and a
  per-spaxel residual map (mean |I - I'| along wavelength) -> ``reconstructions.h5``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .formats import atomic_path, read_layout, read_strings, write_csv_atomic
from .scaling import FluxScaler

log = logging.getLogger("linecube")


def line_shares(abs_err: np.ndarray, n_lines: int, window_bins: int) -> np.ndarray:
    """Share of the absolute error in each line's window: (N, n_lines), rows sum to 1.

    abs_err: (N, n_lines*window_bins, y, x).
    """
    per_line = abs_err.reshape(abs_err.shape[0], n_lines, window_bins, -1).sum(axis=(2, 3), dtype=np.float64)
    tot = per_line.sum(axis=1, keepdims=True)
    return np.divide(per_line, tot, out=np.full_like(per_line, 1.0 / n_lines), where=tot > 0)


def mae_scores(flux: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Mean absolute error per galaxy over all voxels, (N,), float64."""
    return np.abs(flux.astype(np.float64) - recon).reshape(len(flux), -1).mean(axis=1)


class Reconstructor:
    """Batched encoder/decoder pass of a trained model in flux units."""

    def __init__(self, model_path: str | os.PathLike, model_cfg: dict, layout):
        import tensorflow as tf

        from .models import ModelConfig, load_model

        self.model = load_model(model_path)
        self.mcfg = ModelConfig.from_config(model_cfg, layout.n_lines, layout.window_bins, layout.crop)
        self.scaler = FluxScaler(model_cfg.get("flux_scaling", "none"), float(model_cfg.get("asinh_softening", 1.0)))
        m = self.model

        @tf.function(reduce_retracing=True)
        def fn(x):
            z = m.encode(x, training=False)
            return z, m.decoder(z, training=False)

        self._fn = fn

    def __call__(self, flux: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(latent (N, d), reconstruction (N, 190, y, x) in flux units)."""
        from .models import from_model_layout, to_model_layout

        s = self.scaler.galaxy_scale(flux, mask)
        x = to_model_layout(self.scaler.forward(flux, s), self.mcfg)
        z, xr = self._fn(x)
        recon = self.scaler.inverse(from_model_layout(np.asarray(xr, dtype=np.float32), self.mcfg), s)
        return np.asarray(z, dtype=np.float32), recon


def iter_batches(path: str | os.PathLike, batch: int):
    """Yield (start, flux, ivar, mask) batches of cubes.h5 in file order, read one
    batch ahead by a background thread (into two alternating preallocated buffers)
    so reading overlaps inference. A yielded batch is valid until the next one."""
    import h5py

    with h5py.File(path, "r") as h5:
        ds = [h5["flux"], h5["ivar"], h5["mask"]]
        n = ds[0].shape[0]
        starts = list(range(0, n, batch))
        bufs = [[np.empty((batch, *d.shape[1:]), d.dtype) for d in ds] for _ in range(2)]

        def read(k):
            s = starts[k]
            m = min(batch, n - s)
            out = bufs[k % 2]
            for d, b in zip(ds, out):
                d.read_direct(b, np.s_[s : s + m], np.s_[0:m])
            return s, *(b[:m] for b in out)

        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(read, 0) if starts else None
            for k in range(len(starts)):
                cur = fut.result()
                fut = pool.submit(read, k + 1) if k + 1 < len(starts) else None
                yield cur


def load_agn_flags(cat_path, plateifus, mangaids):
    from .agn import match_agn

    return match_agn(cat_path, plateifus, mangaids) if cat_path else None


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
) -> dict:
    """Score every galaxy; write scores.csv, latents.h5 and reconstructions.h5."""
    import h5py
    import pandas as pd
    from tqdm.auto import tqdm

    from .train import configure_tensorflow

    configure_tensorflow(0)
    out_dir = Path(out_dir)
    with h5py.File(cubes_h5, "r") as h5:
        layout, lines = read_layout(h5)
        plateifus = read_strings(h5["plateifu"])
        mangaids = read_strings(h5["mangaid"])
    n = len(plateifus)
    rec = Reconstructor(model_path, model_cfg, layout)
    latents = None
    scores = np.empty(n)
    score_usable = np.empty(n)
    score_chi = np.empty(n)
    mean_abs_flux = np.empty(n)
    shares = np.empty((n, layout.n_lines))
    t0 = time.perf_counter()
    bar = tqdm(total=n, desc=f"score {Path(model_path).parent.name}", unit="cube", disable=not progress, file=sys.stderr)
    for start, flux, ivar, mask in iter_batches(cubes_h5, batch_size):
        z, recon = rec(flux, mask)
        if latents is None:
            latents = np.empty((n, z.shape[1]), dtype=np.float32)
        sl = slice(start, start + len(flux))
        latents[sl] = z
        f64 = flux.astype(np.float64)
        err = np.abs(f64 - recon)
        scores[sl] = err.reshape(len(flux), -1).mean(axis=1)
        mean_abs_flux[sl] = np.abs(f64).reshape(len(flux), -1).mean(axis=1)
        usable = (mask == 0).reshape(len(flux), -1)
        n_use = np.maximum(usable.sum(axis=1), 1)
        score_usable[sl] = (err.reshape(len(flux), -1) * usable).sum(axis=1) / n_use
        chi = err * np.sqrt(np.maximum(ivar, 0))
        score_chi[sl] = (chi.reshape(len(flux), -1) * usable).sum(axis=1) / n_use
        shares[sl] = line_shares(err, layout.n_lines, layout.window_bins)
        bar.update(len(flux))
    bar.close()
    dt = time.perf_counter() - t0

    df = pd.DataFrame({"plateifu": plateifus, "mangaid": mangaids, "score": scores})
    df["rank"] = df["score"].rank(ascending=False, method="first").astype(int)
    df["percentile"] = 100.0 * df["score"].rank(pct=True, method="average")
    df["score_usable"] = score_usable
    df["score_chi"] = score_chi
    df["mean_abs_flux"] = mean_abs_flux
    for k, name in enumerate(lines.names):
        df[f"share_{name}"] = shares[:, k]
    agn = load_agn_flags(agn_catalog, plateifus, mangaids)
    if agn is not None:
        for c in agn.columns:
            df[c] = agn[c].to_numpy()
    df = df.sort_values("rank").reset_index(drop=True)
    write_csv_atomic(df, out_dir / "scores.csv")

    with atomic_path(out_dir / "latents.h5") as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("latent", data=latents)
            h5.create_dataset("plateifu", data=np.array(plateifus, dtype=object), dtype=h5py.string_dtype("utf-8"))
            h5.attrs["model"] = str(model_path)
            h5.attrs["description"] = "latent vector of each galaxy (AE: z; VAE: mu), rows in cubes.h5 order"

    # reconstructions + residual maps for the top-K, the most anomalous AGN and requested galaxies
    keep = list(df["plateifu"].iloc[:top_k])
    if agn is not None and "agn" in df:
        keep += list(df.loc[df["agn"], "plateifu"].iloc[:top_k])
    keep += [p for p in (extra_plateifus or []) if p in set(plateifus)]
    keep = list(dict.fromkeys(keep))
    write_reconstructions(cubes_h5, rec, keep, plateifus, out_dir / "reconstructions.h5", batch_size)
    summary = {
        "n": n,
        "seconds": dt,
        "cubes_per_second": n / dt if dt > 0 else float("nan"),
        "median_score": float(np.median(scores)),
        **brightness_check(scores, mean_abs_flux),
    }
    log.info(
        "scored %d galaxies in %.1f s (%.1f cubes/s); median score %.4g",
        n,
        dt,
        summary["cubes_per_second"],
        summary["median_score"],
    )
    log.info(
        "brightness check: median score / mean|flux| = %.3f (1 = no better than an all-zero "
        "reconstruction); Spearman rho(score, mean|flux|) = %.3f (near 1: the ranking mostly "
        "follows how bright the galaxy is)",
        summary["median_score_over_mean_abs_flux"],
        summary["spearman_score_vs_mean_abs_flux"],
    )
    return summary


def brightness_check(scores: np.ndarray, mean_abs_flux: np.ndarray) -> dict:
    """How much of the score is brightness: the median of score / mean|flux| (the
    MAE of an all-zero reconstruction; < 1 means the model beats zeros) and the
    Spearman rank correlation of score with mean|flux| (both per galaxy, flux units)."""
    from scipy.stats import spearmanr

    scores = np.asarray(scores, dtype=float)
    maf = np.asarray(mean_abs_flux, dtype=float)
    ok = maf > 0
    ratio = float(np.median(scores[ok] / maf[ok])) if ok.any() else float("nan")
    rho = float(spearmanr(scores, maf)[0]) if len(scores) > 2 and np.ptp(maf) > 0 and np.ptp(scores) > 0 else float("nan")
    return {"median_score_over_mean_abs_flux": ratio, "spearman_score_vs_mean_abs_flux": rho}


def write_reconstructions(cubes_h5, rec: Reconstructor, keep: list[str], plateifus: list[str], out, batch_size: int) -> None:
    """Inputs, reconstructions and residual maps of the chosen galaxies."""
    import h5py

    from .data import read_rows

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
