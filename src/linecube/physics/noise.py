"""MaNGA's spatially correlated noise: one model for every sum, comparison and
noise realisation in linecube.

A MaNGA cube's spaxels (0.5") are resampled from 2" fibres over dithered
exposures, so the noise of neighbouring spaxels is strongly correlated. Westfall
et al. (2019, AJ 158, 231; the DAP paper) show the correlation is well
approximated by a Gaussian in spaxel separation d,

    rho(d) = exp(-d^2 / (2 sigma_c^2)),  sigma_c ~ 1.92 spaxels,

and the DRP ships the measured correlation matrices at four broad-band
wavelengths (the GCORREL/RCORREL/ICORREL/ZCORREL binary tables: INDXI_C1,
INDXI_C2, INDXJ_C1, INDXJ_C2, RHOIJ). :func:`fit_correlation_sigma` turns such a
table into sigma_c; without one, :data:`CORREL_SIGMA_SPAXELS` is used.

The per-voxel variance (1/IVAR) is unchanged by the correlation; only sums over
spaxels are: Var(sum_i w_i x_i) = sum_ij w_i sigma_i rho_ij w_j sigma_j
(:func:`sum_variance`), which for N neighbouring spaxels is several times what
independent spaxels would give (the DAP's calibration: the S/N of a sum of N
spaxels is overstated by a factor 1 + 1.62 log10 N when they are treated as
independent).

Arrays are (..., y, x) spaxel maps or (..., wavelength, y, x) cubes, float.
Plain numpy/scipy.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Gaussian correlation length of MaNGA cube noise (spaxels; Westfall et al. 2019)
CORREL_SIGMA_SPAXELS = 1.92

#: correlations below this are ignored (kernel support: ~3.7 sigma_c)
_RHO_CUT = 1e-3


@lru_cache(maxsize=16)
def correlation_kernel(sigma: float = CORREL_SIGMA_SPAXELS) -> np.ndarray:
    """rho(d) on a (2r+1, 2r+1) grid of spaxel offsets, float64, 1 at the centre."""
    sigma = float(sigma)
    r = max(1, int(np.ceil(sigma * np.sqrt(-2.0 * np.log(_RHO_CUT)))))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    k = np.exp(-(yy**2 + xx**2) / (2.0 * sigma**2)) if sigma > 0 else (yy == 0) & (xx == 0)
    k = np.asarray(k, dtype=np.float64)
    k.flags.writeable = False
    return k


def sum_variance(sigma_map: np.ndarray, weights: np.ndarray | None = None, sigma_c: float = CORREL_SIGMA_SPAXELS) -> np.ndarray:
    """Variance of sum_i w_i x_i over the last two (y, x) axes, where x_i has noise
    sigma_i (``sigma_map``, same units as the flux, 0 where unusable) correlated
    as rho(d) = exp(-d^2 / (2 sigma_c^2)). Leading axes are kept: a (N, y, x) map
    gives (N,). ``weights`` default 1 (a plain sum). sigma_c = 0: independent."""
    from scipy.signal import fftconvolve

    a = np.asarray(sigma_map, dtype=np.float64)
    if weights is not None:
        a = a * np.asarray(weights, dtype=np.float64)
    if sigma_c <= 0:
        return (a**2).sum(axis=(-2, -1))
    k = correlation_kernel(float(sigma_c))
    lead = a.shape[:-2]
    flat = a.reshape(-1, *a.shape[-2:])
    conv = fftconvolve(flat, k[None], mode="same", axes=(-2, -1))
    out = (flat * conv).sum(axis=(-2, -1))
    return np.maximum(out, 0.0).reshape(lead)


def independence_overstatement(n: np.ndarray | float) -> np.ndarray:
    """The DAP's calibration (Westfall et al. 2019): the factor by which the S/N of
    a sum of ``n`` neighbouring spaxels is overstated when they are treated as
    independent, 1 + 1.62 log10 n (n <= ~100)."""
    return 1.0 + 1.62 * np.log10(np.maximum(np.asarray(n, dtype=np.float64), 1.0))


@lru_cache(maxsize=16)
def _smoothing_norm(sigma_c: float) -> float:
    """1 / sqrt(sum g^2) of the separable Gaussian g (sigma_c / sqrt(2), sum 1) that
    :func:`correlate_field` smooths with: the factor that restores unit variance."""
    from scipy.ndimage import gaussian_filter

    r = int(np.ceil(4.0 * sigma_c)) + 1
    delta = np.zeros((2 * r + 1, 2 * r + 1))
    delta[r, r] = 1.0
    g = gaussian_filter(delta, float(sigma_c) / np.sqrt(2.0), mode="constant", truncate=4.0)
    return float(1.0 / np.sqrt((g**2).sum()))


def correlate_field(white: np.ndarray, sigma_c: float = CORREL_SIGMA_SPAXELS) -> np.ndarray:
    """N(0, 1) deviates (..., y, x), independent per spaxel, made spatially
    correlated as rho(d) = exp(-d^2 / 2 sigma_c^2) with unit variance per spaxel
    (float32): smoothed by a Gaussian of sigma_c / sqrt(2) (whose autocorrelation is
    rho), rescaled. The field wraps around the map's edges (periodic), so every
    spaxel has the same variance. In place when ``white`` is float32."""
    from scipy.ndimage import gaussian_filter

    w = np.asarray(white, dtype=np.float32)
    if sigma_c <= 0:
        return w
    sig = (0.0,) * (w.ndim - 2) + (float(sigma_c) / np.sqrt(2.0),) * 2
    out = gaussian_filter(w, sig, mode="wrap", truncate=4.0, output=np.float32)
    out *= np.float32(_smoothing_norm(float(sigma_c)))
    return out


def correlated_normal(rng: np.random.Generator, shape: tuple[int, ...], sigma_c: float = CORREL_SIGMA_SPAXELS) -> np.ndarray:
    """Standard-normal deviates of ``shape`` (..., y, x), float32, correlated in
    (y, x) as MaNGA cube noise is (:func:`correlate_field`)."""
    return correlate_field(rng.standard_normal(shape, dtype=np.float32), sigma_c)


def fit_correlation_sigma(i_c1, i_c2, j_c1, j_c2, rho) -> float:
    """sigma_c (spaxels) of the Gaussian rho(d) = exp(-d^2 / 2 sigma_c^2) that best
    fits a DRP correlation table (pairs of spaxel indices and their correlation):
    least squares of log rho on d^2 over the pairs with 0.01 < rho < 1 and d > 0.
    NaN when the table has no such pair."""
    d2 = (np.asarray(i_c1, float) - np.asarray(j_c1, float)) ** 2 + (np.asarray(i_c2, float) - np.asarray(j_c2, float)) ** 2
    r = np.asarray(rho, dtype=np.float64)
    ok = (d2 > 0) & (r > 0.01) & (r < 1.0) & np.isfinite(r)
    if not ok.any():
        return float("nan")
    # log rho = -d^2 / (2 s^2): slope through the origin
    slope = float((d2[ok] * np.log(r[ok])).sum() / (d2[ok] ** 2).sum())
    return float(np.sqrt(-1.0 / (2.0 * slope))) if slope < 0 else float("nan")


def correlation_sigma_or_default(value: float | None) -> float:
    """A cube's fitted sigma_c if it is a number in (0.3, 6) spaxels, else the
    published :data:`CORREL_SIGMA_SPAXELS`."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return CORREL_SIGMA_SPAXELS
    return v if np.isfinite(v) and 0.3 < v < 6.0 else CORREL_SIGMA_SPAXELS


__all__ = [
    "CORREL_SIGMA_SPAXELS",
    "correlate_field",
    "correlated_normal",
    "correlation_kernel",
    "correlation_sigma_or_default",
    "fit_correlation_sigma",
    "independence_overstatement",
    "sum_variance",
]
