"""The model's residual as an anomaly score (``score_residual``, ``score_significance``).

* :func:`line_residual_stats`: the localised, noise-aware reconstruction
  residual: per voxel max(|I - I'| - k sigma, 0) / scale (only what the noise
  does not explain, in units of the galaxy's Halpha flux,
  :func:`linecube.data.fluxscale.halpha_scale`), summed over each line's window
  bins per spaxel, then per line a high percentile over usable spaxels.
* :func:`line_significance_stats`: the residual's chi^2 excess per line.
* :class:`RobustZ` turns each line into a robust z-score against the training
  galaxies (median, 1.4826 x MAD); :func:`residual_score` takes the maximum over
  lines, and the line that wins is the explanation.

Cubes are (N, lines * window_bins, y, x) in flux units (1e-17 erg/s/cm^2/A/spaxel)
with their ivar and mask (0 = usable); numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from linecube.data.fluxscale import NORM_PER
from linecube.io.formats import line_windows, sigma_from_ivar


def line_residual_stats(
    flux: np.ndarray,
    recon: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    scale: np.ndarray,
    n_lines: int,
    window_bins: int,
    *,
    q: float = 95.0,
    noise_k: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Localised, noise-aware residual of a reconstruction.

    Per voxel e = max(|I - I'| - noise_k * sigma, 0) / (scale / NORM_PER) over
    usable voxels (noise_k = 0: the plain normalised residual); per spaxel and
    line the sum of e over the window bins; per line the ``q``-th percentile over
    the spaxels whose window is mostly usable.

    Returns (stats (N, n_lines), per-spaxel map (N, y, x): e summed over all
    channels), float64.
    """
    n = flux.shape[0]
    d = np.abs(flux.astype(np.float32) - recon.astype(np.float32))
    if noise_k > 0:
        d -= np.float32(noise_k) * sigma_from_ivar(ivar)
        np.maximum(d, 0.0, out=d)
    use = mask == 0
    d *= use
    d /= (np.asarray(scale, dtype=np.float32) / np.float32(NORM_PER))[:, None, None, None]
    per = line_windows(d, n_lines, window_bins).sum(axis=2, dtype=np.float64)  # (N, L, y, x)
    ok = line_windows(use, n_lines, window_bins).mean(axis=2) > 0.5
    vals = np.where(ok, per, np.nan).reshape(n, n_lines, -1)
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            stats = np.nanpercentile(vals, q, axis=2)
    stats = np.nan_to_num(stats, nan=0.0)
    return stats, per.sum(axis=1)


def line_significance_stats(
    flux: np.ndarray, recon: np.ndarray, ivar: np.ndarray, mask: np.ndarray, n_lines: int, window_bins: int, box: int = 5
) -> np.ndarray:
    """Where the reconstruction departs from the cube beyond the noise, in noise units:
    per voxel z = (I - I') sqrt(ivar) over usable voxels; per spaxel and line the
    chi^2 excess sum_b z^2 - (usable bins) over the window; averaged over a
    ``box`` x ``box`` neighbourhood (MaNGA's PSF, 2.5" = 5 spaxels); per line the
    largest over the spaxels (N, n_lines), float64. Not normalised by brightness:
    it asks whether the model explains the galaxy to its noise, line by line."""
    from scipy.ndimage import uniform_filter

    use = (mask == 0) & (ivar > 0)
    z2 = np.where(use, (flux.astype(np.float32) - recon.astype(np.float32)) ** 2 * np.maximum(ivar, 0), 0.0)
    chi = line_windows(z2, n_lines, window_bins).sum(axis=2, dtype=np.float64) - line_windows(use, n_lines, window_bins).sum(
        axis=2
    )
    ok = line_windows(use, n_lines, window_bins).mean(axis=2) > 0.5
    sm = uniform_filter(np.where(ok, chi, 0.0), size=(1, 1, box, box), mode="constant")
    frac = uniform_filter(ok.astype(np.float64), size=(1, 1, box, box), mode="constant")
    mean = np.where(frac > 0.5, sm / np.maximum(frac, 1e-9), -np.inf)
    out = mean.reshape(mean.shape[0], n_lines, -1).max(axis=2)
    return np.where(np.isfinite(out), out, 0.0)


@dataclass
class RobustZ:
    """Robust z-score per column: (x - median) / (1.4826 MAD), both fitted on a
    reference set (the training galaxies); the MAD is floored at 1e-3 of the
    column's median absolute value (and 1e-12) so a constant column is not
    divided by zero."""

    center: np.ndarray
    spread: np.ndarray

    @classmethod
    def fit(cls, ref: np.ndarray) -> RobustZ:
        import warnings

        ref = np.asarray(ref, dtype=np.float64)
        if ref.ndim == 1:
            ref = ref[:, None]
        with warnings.catch_warnings():  # a column never measured: NaN centre, its z NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(ref, axis=0)
            mad = 1.4826 * np.nanmedian(np.abs(ref - med), axis=0)
        floor = np.maximum(1e-3 * np.abs(med), 1e-12)
        return cls(med, np.maximum(mad, floor))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        out = (x.reshape(len(x), -1) - self.center) / self.spread
        return out if x.ndim > 1 else out[:, 0]


def residual_score(stats: np.ndarray, ref_rows: np.ndarray, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """``score_residual`` (N,): the maximum over lines of each line's robust z
    (fitted on ``ref_rows``), and the name of the line that gives it."""
    z = RobustZ.fit(stats[ref_rows])(stats)
    k = np.argmax(z, axis=1)
    return z[np.arange(len(z)), k], [names[i] for i in k]
