"""The emission-line windows and the spatial crop: where each of the 19 lines'
windows sits on MaNGA's log-linear wavelength grid at a galaxy's redshift
(:func:`window_centres`, :func:`window_indices`) and the crop of the spaxel grid
around the IFU's centre (:func:`crop_bounds`).
"""

from __future__ import annotations

import numpy as np

from linecube.io.formats import CubeLayout


def window_centres(wave: np.ndarray, rest: np.ndarray, z: float) -> np.ndarray:
    """Index of the grid bin nearest to each observed line centre rest * (1 + z).

    wave: the cube's wavelength grid (A, increasing); rest: rest wavelengths (A).
    """
    obs = np.asarray(rest, dtype=float) * (1.0 + z)
    idx = np.searchsorted(wave, obs)
    idx = np.clip(idx, 1, len(wave) - 1)
    left_closer = (obs - wave[idx - 1]) <= (wave[idx] - obs)
    return np.where(left_closer, idx - 1, idx)


def window_indices(centres: np.ndarray, window_bins: int = CubeLayout.window_bins) -> np.ndarray:
    """Wavelength indices of all windows, (n_lines * window_bins,): for each centre
    c, bins c - window_bins//2 ... c + window_bins//2 - 1."""
    half = window_bins // 2
    return (np.asarray(centres)[:, None] + np.arange(-half, window_bins - half)[None, :]).ravel()


def crop_bounds(centre: int, size: int, crop: int) -> tuple[int, int, int, int]:
    """Source range [s0, s1) on an axis of length ``size`` and its offset d0 in a
    crop of length ``crop`` centred on pixel ``centre`` (crop//2 before it)."""
    start = centre - crop // 2
    s0, s1 = max(start, 0), min(start + crop, size)
    return s0, s1, s0 - start, s1 - s0
