"""BPT diagnostics: demarcation lines and window-integrated line fluxes.

Log ratios: N2 = [NII]6585/Halpha, S2 = ([SII]6718+6733)/Halpha,
O3 = [OIII]5008/Hbeta. Lines: Kauffmann et al. (2003), Kewley et al. (2001,
2006); values in docs/astro-facts.md.
"""

from __future__ import annotations

import numpy as np

from linecube.io.formats import CubeLayout


def kauffmann03(n2):
    """Star-forming limit in the [NII] diagram (valid for N2 < 0.05)."""
    return 0.61 / (np.asarray(n2) - 0.05) + 1.30


def kewley01(n2):
    """Maximum-starburst line in the [NII] diagram (valid for N2 < 0.47)."""
    return 0.61 / (np.asarray(n2) - 0.47) + 1.19


def kewley01_s2(s2):
    """Maximum-starburst line in the [SII] diagram (valid for S2 < 0.32)."""
    return 0.72 / (np.asarray(s2) - 0.32) + 1.30


def kewley06_seyfert_liner(s2):
    """Seyfert / LINER division in the [SII] diagram."""
    return 1.89 * np.asarray(s2) + 0.76


def classify_n2(n2, o3):
    """'star-forming', 'composite' or 'AGN/LINER' from the [NII] diagram."""
    n2, o3 = np.asarray(n2, float), np.asarray(o3, float)
    sf = (n2 < 0.05) & (o3 < kauffmann03(np.minimum(n2, 0.049)))
    agn = (n2 >= 0.47) | (o3 > kewley01(np.minimum(n2, 0.469)))
    return np.where(sf, "star-forming", np.where(agn, "AGN/LINER", "composite"))


def window_flux(flux, ivar, mask, wave, k: int, window_bins: int = CubeLayout.window_bins):
    """Continuum-subtracted flux of line k integrated over its window, per spaxel.

    flux, ivar, mask: (lines*bins, y, x); wave: (lines*bins,) observed A.
    The continuum of each spaxel is the median of the window's two outer bins
    on each side. Returns (flux map, error map) in 1e-17 erg/s/cm^2/spaxel;
    masked spaxels (any masked bin) are NaN.
    """
    sl = slice(k * window_bins, (k + 1) * window_bins)
    f, iv, m, w = flux[sl].astype(np.float64), ivar[sl].astype(np.float64), mask[sl], wave[sl]
    dlam = (w * np.log(10.0) * 1e-4)[:, None, None]  # bin width in A
    edges = np.r_[0:2, window_bins - 2 : window_bins]
    cont = np.median(f[edges], axis=0)
    F = np.sum((f - cont) * dlam, axis=0)
    var = np.sum(np.where(iv > 0, 1.0 / np.maximum(iv, 1e-30), np.inf) * dlam**2, axis=0)
    bad = np.any(m != 0, axis=0) | ~np.isfinite(var)
    return np.where(bad, np.nan, F), np.where(bad, np.nan, np.sqrt(var))


def bpt_ratios(flux, ivar, mask, wave, names, window_bins: int = CubeLayout.window_bins, min_sn: float = 3.0):
    """Per-spaxel log N2, S2 and O3 where every line involved has S/N >= min_sn."""
    idx = {n: i for i, n in enumerate(names)}
    F = {}
    for n in ("Hbeta", "[OIII]5008", "Halpha", "[NII]6585", "[SII]6718", "[SII]6733"):
        f, e = window_flux(flux, ivar, mask, wave, idx[n], window_bins)
        F[n] = np.where((f / e) >= min_sn, f, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        n2 = np.log10(F["[NII]6585"] / F["Halpha"])
        s2 = np.log10((F["[SII]6718"] + F["[SII]6733"]) / F["Halpha"])
        o3 = np.log10(F["[OIII]5008"] / F["Hbeta"])
    return n2, s2, o3
