"""Flux scaling for the models; scores are always reported in the cube's units.

* ``none`` (the paper): the models see native flux, 1e-17 erg/s/cm^2/A/spaxel.
* ``asinh``: y = asinh(flux / a), a = ``asinh_softening`` (flux units): linear
  for faint voxels, logarithmic for bright lines, so a few very bright galaxies
  do not dominate the loss.
* ``per_galaxy``: y = flux / s, s = the 99th percentile of |flux| over the
  galaxy's usable voxels (floor 1e-3): every galaxy on one scale.
* ``halpha``: y = flux / s, s = 1/1000 of the galaxy's total Halpha window flux
  over usable voxels (:func:`halpha_scale`): one galaxy-level
  scale, never per line, so line ratios, shapes and kinematics are kept while
  brightness is divided out (spender's normalisation, Melchior et al. 2023).

Arrays are (..., wavelength, y, x) numpy; ``inverse`` maps reconstructions back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linecube.config import schema_enum
from linecube.io.formats import HALPHA, CubeLayout, halpha_index, load_lines, sigma_from_ivar

PER_GALAXY = ("per_galaxy", "halpha")


@dataclass(frozen=True)
class FluxScaler:
    """One number per galaxy (or a pointwise transform) that brings cubes to the
    model's units; build it with :meth:`from_config` (no defaults here: they live in
    the schema)."""

    kind: str
    softening: float
    ref_line: int  #: index of Halpha in the line list (``halpha``)
    window_bins: int

    def __post_init__(self):
        if self.kind not in (kinds := schema_enum("model", "flux_scaling")):
            raise ValueError(f"flux_scaling must be one of {kinds}, got {self.kind!r}")

    @classmethod
    def from_config(cls, model_cfg: dict, line_names=None, window_bins: int = CubeLayout.window_bins) -> FluxScaler:
        """The scaler of a validated ``model:`` config; ``line_names`` locate Halpha."""
        from linecube.config import with_defaults

        model_cfg = with_defaults("model", model_cfg)
        names = list(line_names) if line_names is not None else []
        kind = model_cfg["flux_scaling"]
        if kind == "halpha" and HALPHA not in names:
            raise ValueError("flux_scaling: halpha needs Halpha in the line list")
        return cls(
            kind,
            float(model_cfg["asinh_softening"]),
            halpha_index(names) if HALPHA in names else load_lines().halpha,
            int(window_bins),
        )

    @property
    def per_galaxy(self) -> bool:
        """True when the scale depends on the galaxy (needs its mask)."""
        return self.kind in PER_GALAXY

    def galaxy_scale(self, flux: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Per-galaxy scale s (shape flux.shape[:-3]); 1 unless kind is per-galaxy."""
        lead = flux.shape[:-3]
        if self.kind == "halpha":
            f = flux.reshape(-1, *flux.shape[-3:])
            m = mask.reshape(-1, *mask.shape[-3:])
            s = halpha_scale(f, None, m, self.ref_line, self.window_bins) / NORM_PER
            return s.astype(np.float32).reshape(lead)
        if self.kind != "per_galaxy":
            return np.ones(lead, dtype=np.float32)
        f = np.abs(flux).reshape(*lead, -1)
        m = (mask == 0).reshape(*lead, -1)
        out = np.empty(int(np.prod(lead, dtype=int)), dtype=np.float32)
        for i, (fi, mi) in enumerate(zip(f.reshape(-1, f.shape[-1]), m.reshape(-1, m.shape[-1]))):
            vals = fi[mi]
            out[i] = max(float(np.percentile(vals, 99)) if vals.size else 1.0, 1e-3)
        return out.reshape(lead)

    def forward(self, flux: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
        if self.kind == "none":
            return flux.astype(np.float32, copy=False)
        if self.kind == "asinh":
            return np.arcsinh(flux / np.float32(self.softening)).astype(np.float32, copy=False)
        s = np.asarray(scale, dtype=np.float32)[..., None, None, None]
        return (flux / s).astype(np.float32, copy=False)

    def inverse(self, y: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
        if self.kind == "none":
            return y.astype(np.float32, copy=False)
        if self.kind == "asinh":
            return (np.float32(self.softening) * np.sinh(y)).astype(np.float32)
        s = np.asarray(scale, dtype=np.float32)[..., None, None, None]
        return (y * s).astype(np.float32)


#: normalised flux unit: 1/1000 of the galaxy's total Halpha window flux
NORM_PER = 1000.0


def halpha_scale(
    flux: np.ndarray,
    ivar: np.ndarray | None,
    mask: np.ndarray,
    line_index: int,
    window_bins: int,
    floor_sigma: float = 5.0,
    correl_sigma=None,
) -> np.ndarray:
    """Galaxy flux scale (N,), float64: total flux of the Halpha window (line
    ``line_index``) over usable voxels, in flux units x bins. Floored at 5 % of
    the mean window's total |flux| (a galaxy without Halpha keeps a scale set by
    its other lines and continuum), at ``floor_sigma`` times the noise of the
    sum when ``ivar`` is given (spatially correlated as MaNGA's noise is:
    ``correl_sigma`` per galaxy, spaxels, :mod:`linecube.physics.noise`), and at 1e-6."""
    n = flux.shape[0]
    sl = slice(line_index * window_bins, (line_index + 1) * window_bins)
    use_all = mask == 0
    f = flux[:, sl].astype(np.float64)
    use = use_all[:, sl]
    tot = (f * use).reshape(n, -1).sum(axis=1)
    n_lines = flux.shape[1] // window_bins
    floor = 0.05 * (np.abs(flux) * use_all).reshape(n, -1).sum(axis=1, dtype=np.float64) / max(n_lines, 1)
    if ivar is not None:
        from linecube.physics.noise import correlation_sigma_or_default, sum_variance

        sig = np.where(use, sigma_from_ivar(ivar[:, sl]), 0.0).astype(np.float64)  # (N, B, y, x)
        cs = np.broadcast_to(np.asarray([np.nan] if correl_sigma is None else correl_sigma, dtype=np.float64), (n,))
        var = np.array([sum_variance(sig[i], sigma_c=correlation_sigma_or_default(cs[i])).sum() for i in range(n)])
        floor = np.maximum(floor, floor_sigma * np.sqrt(var))
    return np.maximum(np.maximum(tot, floor), 1e-6)
