"""Per-galaxy statistics of a scoring pass, before any score: the model's
reconstructions batch by batch (:class:`Reconstructor` over :func:`iter_batches`),
the paper's MAE and line shares, the localised residual and its significance per
line, the features and their S/N, H-alpha's flux scale (:func:`collect_stats` ->
:class:`RawStats`), kept in ``raw_stats.npz`` (:func:`save_raw_stats`) so that new
cubes are scored against the same reference galaxies (:mod:`linecube.analysis.newcubes`).
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from linecube.data.fluxscale import FluxScaler
from linecube.io.atomic import atomic_path
from linecube.io.formats import clean_masked, halpha_index, read_meta


def line_shares(abs_err: np.ndarray, n_lines: int, window_bins: int) -> np.ndarray:
    """Share of the absolute error in each line's window: (N, n_lines), rows sum to 1.

    abs_err: (N, n_lines*window_bins, y, x).
    """
    per_line = abs_err.reshape(abs_err.shape[0], n_lines, window_bins, -1).sum(axis=(2, 3), dtype=np.float64)
    tot = per_line.sum(axis=1, keepdims=True)
    return np.divide(per_line, tot, out=np.full_like(per_line, 1.0 / n_lines), where=tot > 0)


def mae_scores(flux: np.ndarray, recon: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Mean absolute error per galaxy, (N,), float64: over the usable voxels
    (``mask`` 0), or over all voxels without a mask."""
    err = np.abs(flux.astype(np.float64) - recon).reshape(len(flux), -1)
    if mask is None:
        return err.mean(axis=1)
    use = (mask == 0).reshape(len(flux), -1)
    return (err * use).sum(axis=1) / np.maximum(use.sum(axis=1), 1)


class Reconstructor:
    """Batched encoder/decoder pass of a trained model in flux units, on the
    Keras backend in use (one compiled inference function: ``predict_on_batch``)."""

    def __init__(self, model_path: str | os.PathLike, model_cfg: dict, layout, line_names=None):
        import keras

        from linecube.model.autoencoder import load_model
        from linecube.model.spec import ModelConfig

        self.model = load_model(model_path)
        self.mcfg = ModelConfig.from_config(model_cfg, layout.n_lines, layout.window_bins, layout.crop)
        self.scaler = FluxScaler.from_config(model_cfg, line_names, layout.window_bins)
        m = self.model
        inp = keras.Input(m.encoder.input_shape[1:], name="cube")
        code = m.encoder(inp)
        code = code[0] if m.variational else code
        self._infer = keras.Model(inp, [code[:, : m.latent_dim], m.decoder(code)], name="infer")

    def __call__(self, flux: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(latent (N, d), reconstruction (N, 190, y, x) in flux units)."""
        from linecube.model.spec import from_model_layout, to_model_layout

        s = self.scaler.galaxy_scale(flux, mask)
        x = to_model_layout(self.scaler.forward(flux, s), self.mcfg)
        z, xr = self._infer.predict_on_batch(x)
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
            clean_masked(out[0][:m], out[1][:m], out[2][:m])  # a file from before extraction zeroed them
            return s, *(b[:m] for b in out)

        with ThreadPoolExecutor(max_workers=1) as pool:
            fut = pool.submit(read, 0) if starts else None
            for k in range(len(starts)):
                cur = fut.result()
                fut = pool.submit(read, k + 1) if k + 1 < len(starts) else None
                yield cur


def load_agn_flags(cat_path, plateifus, mangaids):
    from linecube.io.agn import match_agn

    return match_agn(cat_path, plateifus, mangaids) if cat_path else None


@dataclass
class RawStats:
    """Per-galaxy quantities from one pass over the cubes (rows in file order).

    latents (N, d); paper (N,) the paper's MAE score; usable, chi (N,) its two
    companions; mean_abs_flux (N,); shares (N, L) of the absolute error per line;
    halpha (N,) the galaxy flux scale; line_resid (N, L) the localised residual
    per line (:func:`linecube.analysis.residual.line_residual_stats`); features (N, F) the
    baseline's (:func:`linecube.analysis.features.galaxy_features`) and feature_snr (N, F)
    the S/N each rests on; ha_snr (N,) the
    Halpha window's S/N against the correlated noise; ifu_fibres (N,) the bundle;
    line_signif (N, L) the residual's chi^2 excess per line
    (:func:`linecube.analysis.residual.line_significance_stats`); resid_peak (N,) the flat
    (y, x) index of the spaxel with the largest localised residual."""

    latents: np.ndarray
    paper: np.ndarray
    usable: np.ndarray
    chi: np.ndarray
    mean_abs_flux: np.ndarray
    shares: np.ndarray
    halpha: np.ndarray
    line_resid: np.ndarray
    features: np.ndarray
    feature_snr: np.ndarray
    ha_snr: np.ndarray
    ifu_fibres: np.ndarray
    line_signif: np.ndarray
    resid_peak: np.ndarray


def collect_stats(
    cubes_h5: str | os.PathLike,
    rec,
    line_names: list[str],
    window_bins: int,
    *,
    batch_size: int = 32,
    residual_q: float = 95.0,
    residual_noise_k: float = 2.0,
    progress: bool = True,
    desc: str = "score",
) -> RawStats:
    """One pass over cubes.h5: reconstruct each batch with ``rec`` (a callable
    (flux, mask) -> (latent, reconstruction in flux units)) and keep only the
    per-galaxy quantities of :class:`RawStats`."""
    from tqdm.auto import tqdm

    from linecube.analysis.features import FEATURE_NAMES, galaxy_features
    from linecube.analysis.residual import line_residual_stats, line_significance_stats
    from linecube.data.fluxscale import halpha_scale

    ha_col = FEATURE_NAMES.index("nii_ha")  # a ratio to Halpha: the S/N it rests on is Halpha's

    n_lines = len(line_names)
    ha = halpha_index(line_names)
    import h5py

    parts: dict[str, list] = {k: [] for k in RawStats.__dataclass_fields__}
    with h5py.File(cubes_h5, "r") as h5:
        total = h5["flux"].shape[0]
        correl = read_meta(h5, "correl_sigma")
        fibres = read_meta(h5, "ifu_fibres")
    bar = tqdm(total=total, desc=desc, unit="cube", disable=not progress, file=sys.stderr)
    for start, flux, ivar, mask in iter_batches(cubes_h5, batch_size):
        z, recon = rec(flux, mask)
        nb = len(flux)
        cs = correl[start : start + nb]
        f64 = flux.astype(np.float64)
        use3 = mask == 0
        err = np.abs(f64 - recon) * use3  # a flagged voxel counts nowhere
        usable = use3.reshape(nb, -1)
        n_use = np.maximum(usable.sum(axis=1), 1)
        scale = halpha_scale(flux, ivar, mask, ha, window_bins, correl_sigma=cs)
        stats, resid_map = line_residual_stats(
            flux, recon, ivar, mask, scale, n_lines, window_bins, q=residual_q, noise_k=residual_noise_k
        )
        parts["latents"].append(np.asarray(z, np.float32))
        parts["paper"].append(mae_scores(flux, recon, mask))
        parts["usable"].append(err.reshape(nb, -1).sum(axis=1) / n_use)
        chi = err * np.sqrt(np.maximum(ivar, 0))
        parts["chi"].append(chi.reshape(nb, -1).sum(axis=1) / n_use)
        parts["mean_abs_flux"].append((np.abs(f64) * use3).reshape(nb, -1).sum(axis=1) / n_use)
        parts["shares"].append(line_shares(err, n_lines, window_bins))
        parts["halpha"].append(scale)
        parts["line_resid"].append(stats)
        feats, fsnr = galaxy_features(flux, ivar, mask, line_names, window_bins, correl_sigma=cs, with_snr=True)
        parts["features"].append(feats)
        parts["feature_snr"].append(fsnr)
        parts["ha_snr"].append(fsnr[:, ha_col])
        parts["resid_peak"].append(resid_map.reshape(nb, -1).argmax(axis=1))
        parts["ifu_fibres"].append(np.asarray(fibres[start : start + nb]))
        parts["line_signif"].append(line_significance_stats(flux, recon, ivar, mask, n_lines, window_bins))
        bar.update(nb)
    bar.close()
    return RawStats(**{k: np.concatenate(v) if v else np.zeros((0,)) for k, v in parts.items()})


def join_stats(a: RawStats, b: RawStats) -> RawStats:
    """Two :class:`RawStats` as one, ``a``'s rows first."""
    return RawStats(**{k: np.concatenate([getattr(a, k), getattr(b, k)]) for k in RawStats.__dataclass_fields__})


def save_raw_stats(path, raw: RawStats, plateifus: list[str], ref_rows: np.ndarray, line_names: list[str], seed: int) -> None:
    """Every galaxy's :class:`RawStats`, the reference rows and the plate-IFUs (an
    .npz, written atomically): what scoring a new cube against the run needs
    (:func:`linecube.analysis.newcubes.score_cubes`), without a second pass over cubes.h5."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, plateifu=np.array(plateifus, dtype=str), ref=np.asarray(ref_rows, dtype=int),
                     line_names=np.array(line_names, dtype=str), seed=np.array(seed),
                     **{f"raw.{k}": v for k, v in vars(raw).items()})  # fmt: skip


def load_raw_stats(path) -> tuple[RawStats, list[str], np.ndarray, list[str], int]:
    """Inverse of :func:`save_raw_stats`: (raw, plate-IFUs, reference rows, line names, seed)."""
    with np.load(path, allow_pickle=False) as z:
        raw = RawStats(**{k: z[f"raw.{k}"] for k in RawStats.__dataclass_fields__})
        return raw, [str(p) for p in z["plateifu"]], z["ref"], [str(n) for n in z["line_names"]], int(z["seed"])
