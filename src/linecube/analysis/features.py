"""Anomaly scores without a model: hand-made features that measure shape, line
ratios and kinematics, not brightness (``score_features``, the non-deep baseline).

The paper's score (the mean absolute error of a reconstruction, in flux units)
grows with how much line flux a galaxy has, so it ranks bright galaxies first; the
scores that replace it as the default ranking live in :mod:`linecube.analysis.residual`
(the model's residual), :mod:`linecube.analysis.latent` (the latent's density), here
(the features) and :mod:`linecube.analysis.ranks` (their combination). All take cubes
(N, lines * window_bins, y, x) in flux units (1e-17 erg/s/cm^2/A/spaxel), their
ivar and mask (0 = usable).

:func:`galaxy_features` + :class:`FeatureScorer`: window-integrated line ratios to
Halpha, line widths (integrated and per spaxel), Balmer pedestals (a broad
component raises the continuum of the Balmer windows above the stellar continuum
interpolated from windows outside its profile; in the nucleus as a
signal-to-noise), Halpha centroid offset and concentration, continuum/Halpha
offsets -> robust standardisation -> IsolationForest (Liu, Ting & Zhou 2008) and
LOF (Breunig et al. 2000), their Gaussianised ranks averaged, fitted on training
galaxies. Fluxes are normalised by one galaxy-level scale
(:func:`linecube.data.fluxscale.halpha_scale`), never per line: line ratios are
what define most anomalies (spender, Melchior et al. 2023, AJ 166, 74).

numpy/scikit-learn only (no TensorFlow).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from linecube.analysis.ranks import gauss_rank
from linecube.analysis.residual import RobustZ
from linecube.io.formats import line_windows, load_lines, sigma_from_ivar

#: (feature name, numerator lines) of the window-integrated ratios to Halpha
RATIO_FEATURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("oii_ha", ("[OII]3727", "[OII]3730")),
    ("hb_ha", ("Hbeta",)),
    ("oiii_ha", ("[OIII]5008",)),
    ("oi_ha", ("[OI]6302",)),
    ("nii_ha", ("[NII]6585",)),
    ("sii_ha", ("[SII]6718", "[SII]6733")),
)


WIDTH_LINES: tuple[str, ...] = ("Halpha", "[NII]6585", "[OIII]5008", "Hbeta")


#: continuum references of the Balmer pedestals: one window on each side of the
#: line, both outside the broad-line profile; the stellar continuum under the
#: line is their linear interpolation in wavelength. A broad Balmer line (FWHM
#: 2,000-10,000 km/s) is a near-flat pedestal over a 10-bin (690 km/s) window; it
#: also raises the [NII]6550/6585 windows (~700-950 km/s from Halpha), so a
#: reference there cancels it.
PEDESTAL_REFERENCES: dict[str, tuple[str, str]] = {
    "Halpha": ("[OI]6366", "[SII]6733"),
    "Hbeta": ("[OIII]4364", "[OIII]4960"),
}


#: the windows a broad Balmer line raises, whose continua the pedestal averages:
#: for Halpha the [NII] pair beside it too (three samples of the broad profile
#: within ~1,000 km/s instead of one)
PEDESTAL_WINDOWS: dict[str, tuple[str, ...]] = {
    "Halpha": ("[NII]6550", "Halpha", "[NII]6585"),
    "Hbeta": ("Hbeta",),
}


#: nuclear aperture (spaxels from the crop centre; MaNGA's PSF FWHM, 2.5", is 5
#: spaxels) and the ring a disc's own excess is measured in
NUCLEUS_RADIUS = 3.0


RING_RADII = (3.0, 8.0)


FEATURE_NAMES: tuple[str, ...] = (
    *(n for n, _ in RATIO_FEATURES),
    *(f"width_{ln}" for ln in WIDTH_LINES),
    "spaxel_width_Halpha",
    "pedestal_Halpha",
    "pedestal_Hbeta",
    "nuclear_pedestal_Halpha",
    "nuclear_pedestal_Hbeta",
    "halpha_centroid_offset",
    "halpha_concentration",
    "continuum_halpha_offset",
    "oiii_halpha_offset",
)


def required_lines() -> tuple[str, ...]:
    """Every line the scores and features read by name (derived from the feature
    definitions here, so a line list is checked against what the code uses)."""
    names = {"Halpha", "[OIII]5008"}
    for _, num in RATIO_FEATURES:
        names.update(num)
    names.update(WIDTH_LINES)
    for pair in PEDESTAL_REFERENCES.values():
        names.update(pair)
    for wins in PEDESTAL_WINDOWS.values():
        names.update(wins)
    return tuple(sorted(names))


def missing_lines(names: Sequence[str]) -> list[str]:
    """The lines of :func:`required_lines` that a line list (its names) lacks."""
    have = set(names)
    return [n for n in required_lines() if n not in have]


def _line_maps(flux: np.ndarray, mask: np.ndarray, n_lines: int, window_bins: int):
    """Continuum-subtracted windows (N, L, B, y, x) and continuum maps (N, L, y, x):
    the continuum of each spaxel's window is the median of its four outermost bins."""
    f = line_windows(np.where(mask == 0, flux, 0.0).astype(np.float32), n_lines, window_bins)
    cont = np.median(_edge_bins(f), axis=2)
    return f - cont[:, :, None], cont


def _edge_bins(w: np.ndarray) -> np.ndarray:
    """The four outermost bins (two per side) of windows (N, L, B, y, x)."""
    return np.concatenate([w[:, :, :2], w[:, :, -2:]], axis=2)


def _radius(ny: int, nx: int) -> np.ndarray:
    """Distance (spaxels) of each spaxel (ny, nx) from the crop centre."""
    yy, xx = np.mgrid[:ny, :nx]
    return np.hypot(yy - (ny - 1) / 2.0, xx - (nx - 1) / 2.0)


@lru_cache(maxsize=1)
def _packaged_rest() -> dict[str, float]:
    """Rest wavelengths (Angstrom) by name from the packaged line list, read once."""
    lines = load_lines()
    return dict(zip(lines.names, (float(r) for r in lines.rest)))


def _continuum_variance(ivar: np.ndarray, mask: np.ndarray, n_lines: int, window_bins: int) -> np.ndarray:
    """Variance (N, L, y, x) of :func:`_line_maps`' continuum: the median of four
    edge bins, (1.2533 sigma)^2 / 4 for Gaussian noise (0 where all are masked)."""
    sig = line_windows(np.where(mask == 0, sigma_from_ivar(ivar), 0.0), n_lines, window_bins).astype(np.float64)
    return 1.2533**2 * (_edge_bins(sig) ** 2).mean(axis=2) / 4.0


def _pedestal_maps(
    cont: np.ndarray, cvar: np.ndarray, idx: Mapping[str, int], rest: Mapping[str, float], line: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per spaxel (N, y, x): the mean continuum of ``line``'s :data:`PEDESTAL_WINDOWS`
    minus the stellar continuum interpolated linearly in wavelength between its two
    :data:`PEDESTAL_REFERENCES`, that difference's variance (from ``cvar``), and
    the interpolated reference continuum itself (flux units). ``idx``: line
    positions by name in ``cont``'s axis 1."""
    lo, hi = PEDESTAL_REFERENCES[line]
    diffs, variances, refs = [], [], []
    for w in PEDESTAL_WINDOWS[line]:
        a = (rest[hi] - rest[w]) / (rest[hi] - rest[lo])  # weight of the blue reference
        ref = a * cont[:, idx[lo]].astype(np.float64) + (1 - a) * cont[:, idx[hi]].astype(np.float64)
        diffs.append(cont[:, idx[w]] - ref)
        refs.append(ref)
        variances.append(cvar[:, idx[w]] + a**2 * cvar[:, idx[lo]] + (1 - a) ** 2 * cvar[:, idx[hi]])
    # the windows share their references: their errors are correlated, so this
    # variance (as if independent) is a lower bound, alike for every galaxy
    return np.mean(diffs, axis=0), np.sum(variances, axis=0) / len(diffs) ** 2, np.mean(refs, axis=0)


def nuclear_pedestal_snr(d: np.ndarray, var: np.ndarray, ref: np.ndarray, correl_sigma=None) -> np.ndarray:
    """Signal-to-noise (N,) of a nuclear pedestal: the excess ``d`` (N, y, x)
    summed within :data:`NUCLEUS_RADIUS` of the crop centre, minus the ring's
    (:data:`RING_RADII`) excess scaled by the ratio of the reference continuum
    ``ref`` in the two apertures (what a disc's own absorption or continuum slope
    would put in the centre), over its noise from ``var``. A broad-line region is
    a point source: it raises the centre only. The noise of the two sums is
    that of spatially correlated spaxels (``correl_sigma`` per galaxy, spaxels;
    :func:`linecube.physics.noise.sum_variance`)."""
    from linecube.physics.noise import correlation_sigma_or_default, sum_variance

    rr = _radius(*d.shape[-2:])
    inner, ring = rr < NUCLEUS_RADIUS, (rr >= RING_RADII[0]) & (rr < RING_RADII[1])
    k = np.abs(ref[:, inner]).sum(axis=1) / np.maximum(np.abs(ref[:, ring]).sum(axis=1), 1e-9)
    excess = d[:, inner].sum(axis=1) - k * d[:, ring].sum(axis=1)
    n = len(d)
    cs = np.broadcast_to(np.asarray([np.nan] if correl_sigma is None else correl_sigma, dtype=np.float64), (n,))
    sd = np.sqrt(np.maximum(var, 0.0))
    noise2 = np.empty(n)
    for i in range(n):
        w = inner.astype(np.float64) - k[i] * ring  # the weights of the difference
        noise2[i] = sum_variance(sd[i], w, correlation_sigma_or_default(cs[i]))
    return excess / np.maximum(np.sqrt(noise2), 1e-9)


def _moments(spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and second moment (bins) along the last axis of positive spectra."""
    p = np.maximum(spec, 0.0)
    b = np.arange(spec.shape[-1], dtype=np.float64)
    tot = p.sum(axis=-1)
    safe = np.where(tot > 0, tot, 1.0)
    mu = (p * b).sum(axis=-1) / safe
    var = (p * (b - mu[..., None]) ** 2).sum(axis=-1) / safe
    return mu, np.sqrt(var)


def _centroid(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flux-weighted (y, x) centroid of positive maps (N, y, x), and their totals."""
    p = np.maximum(m, 0.0).astype(np.float64)
    ny, nx = m.shape[-2:]
    yy, xx = np.mgrid[:ny, :nx].astype(np.float64)
    tot = p.sum(axis=(1, 2))
    safe = np.where(tot > 0, tot, 1.0)
    return (p * yy).sum(axis=(1, 2)) / safe, (p * xx).sum(axis=(1, 2)) / safe, tot


#: S/N (MaNGA's correlated noise, :mod:`linecube.physics.noise`) below which a line's
#: integrated flux does not define a ratio, width or position (:func:`measured`:
#: "not measured", neutral in :class:`FeatureScorer`); 0: every feature is used
MIN_FEATURE_SNR = 0.0


def line_flux_snr(
    lines: np.ndarray, ivar: np.ndarray, mask: np.ndarray, n_lines: int, window_bins: int, correl_sigma=None
) -> tuple[np.ndarray, np.ndarray]:
    """Window-integrated, continuum-subtracted line flux (N, L) summed over the crop
    and its S/N, with the noise of the sum from each voxel's sigma and MaNGA's
    spatial correlation (:func:`linecube.physics.noise.sum_variance`; ``correl_sigma`` per
    galaxy in spaxels, default the published 1.92). ``lines``: (N, L, B, y, x)."""
    from linecube.physics.noise import correlation_sigma_or_default, sum_variance

    n = lines.shape[0]
    tot = lines.sum(axis=(2, 3, 4), dtype=np.float64)
    sig = line_windows(np.where(mask == 0, sigma_from_ivar(ivar), 0.0), n_lines, window_bins).astype(np.float64)
    # per spaxel: sum over the window's bins minus B x its continuum (median of four edge bins)
    var_sp = (sig**2).sum(axis=2) + window_bins**2 * 1.2533**2 * (_edge_bins(sig) ** 2).mean(axis=2) / 4.0
    cs = np.broadcast_to(np.asarray([np.nan] if correl_sigma is None else correl_sigma, dtype=np.float64), (n,))
    var = np.empty((n, n_lines))
    for i in range(n):
        var[i] = sum_variance(np.sqrt(var_sp[i]), sigma_c=correlation_sigma_or_default(cs[i]))
    return tot, tot / np.sqrt(np.maximum(var, 1e-30))


def galaxy_features(
    flux: np.ndarray,
    ivar: np.ndarray,
    mask: np.ndarray,
    names: Sequence[str],
    window_bins: int,
    rest: Mapping[str, float] | None = None,
    correl_sigma=None,
    with_snr: bool = False,
):
    """The baseline's features (N, len(FEATURE_NAMES)), float64, from cubes
    (N, lines * window_bins, y, x) in flux units, their ivar and masks.

    Ratios are asinh(10 F_line / F_Halpha) of window-integrated, continuum-
    subtracted fluxes (a signed log that tolerates faint or negative lines);
    widths are second moments in bins; offsets are in spaxels from the crop
    centre; pedestals are the continuum of a Balmer line's
    :data:`PEDESTAL_WINDOWS` minus the stellar continuum interpolated between its
    :data:`PEDESTAL_REFERENCES`: over the whole galaxy per bin over F_Halpha, and
    in the nucleus as a signal-to-noise (:func:`nuclear_pedestal_snr`, its
    noise from ``ivar``). ``rest``: rest wavelengths (Angstrom) by line name,
    default the packaged line list's.

    ``with_snr``: also return (N, F) the S/N of the line(s) each feature rests
    on, against the spatially correlated noise (``correl_sigma``: per galaxy,
    spaxels; :func:`line_flux_snr`): the ratios, Halpha widths, pedestals over
    F_Halpha and positions rest on Halpha, each other width on its own line
    (inf: a feature that is itself a S/N). :func:`measured` turns a threshold on
    it into "not measured" (NaN).
    """
    names = list(names)
    n_lines = len(names)
    idx = {n: i for i, n in enumerate(names)}
    lines, cont = _line_maps(flux, mask, n_lines, window_bins)
    lf = lines.sum(axis=2)  # (N, L, y, x) line flux per spaxel
    tot, snr = line_flux_snr(lines, ivar, mask, n_lines, window_bins, correl_sigma)
    ha = idx["Halpha"]
    f_ha = np.maximum(tot[:, ha], 1e-6)
    inf = np.full(len(f_ha), np.inf)
    ha_ok = snr[:, ha]
    cols, need = [], []
    for _, num in RATIO_FEATURES:
        cols.append(np.arcsinh(10.0 * sum(tot[:, idx[x]] for x in num) / f_ha))
        need.append(ha_ok)
    spec = lines.sum(axis=(3, 4), dtype=np.float64)  # (N, L, B)
    for ln in WIDTH_LINES:
        cols.append(_moments(spec[:, idx[ln]])[1])
        need.append(snr[:, idx[ln]])
    # per-spaxel Halpha widths, weighted by the spaxel's Halpha flux
    _, sw = _moments(np.moveaxis(lines[:, ha].astype(np.float64), 1, -1))  # (N, y, x)
    wgt = np.maximum(lf[:, ha], 0.0).astype(np.float64)
    cols.append((sw * wgt).sum(axis=(1, 2)) / np.maximum(wgt.sum(axis=(1, 2)), 1e-12))
    need.append(ha_ok)
    rest = _packaged_rest() if rest is None else rest
    cvar = _continuum_variance(ivar, mask, n_lines, window_bins)
    peds = {bal: _pedestal_maps(cont, cvar, idx, rest, bal) for bal in PEDESTAL_REFERENCES}
    for d, _, _ in peds.values():
        cols.append(d.sum(axis=(1, 2)) * window_bins / f_ha)
        need.append(ha_ok)
    for d, var, ref in peds.values():
        cols.append(nuclear_pedestal_snr(d, var, ref, correl_sigma))
        need.append(inf)
    ny, nx = flux.shape[-2:]
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    inner = (_radius(ny, nx) < NUCLEUS_RADIUS)[None]
    hy, hx, _ = _centroid(lf[:, ha])
    cols.append(np.hypot(hy - cy, hx - cx))
    need.append(ha_ok)
    cols.append((wgt * inner).sum(axis=(1, 2)) / np.maximum(wgt.sum(axis=(1, 2)), 1e-12))
    need.append(ha_ok)
    ccy, ccx, _ = _centroid(cont.mean(axis=1))
    cols.append(np.hypot(hy - ccy, hx - ccx))
    need.append(ha_ok)
    oiii = idx["[OIII]5008"]
    oy, ox, _ = _centroid(lf[:, oiii])
    cols.append(np.hypot(hy - oy, hx - ox))
    need.append(np.minimum(ha_ok, snr[:, oiii]))
    out = np.nan_to_num(np.stack(cols, axis=1), nan=0.0, posinf=0.0, neginf=0.0)
    return (out, np.stack(need, axis=1)) if with_snr else out


def measured(features: np.ndarray, feature_snr: np.ndarray, min_snr: float = MIN_FEATURE_SNR) -> np.ndarray:
    """The features with those resting on lines below ``min_snr`` set to NaN ("not
    measured": neutral in :class:`FeatureScorer`); ``min_snr`` 0 keeps every one."""
    return np.where(feature_snr >= min_snr, features, np.nan) if min_snr > 0 else np.asarray(features)


class FeatureScorer:
    """Robust standardisation (fitted on reference galaxies) -> IsolationForest
    (Liu, Ting & Zhou 2008) and the local outlier factor (LOF, Breunig et al.
    2000), the two detectors Astronomaly offers (Lochner & Bassett 2021); the
    score is the mean of their Gaussianised ranks against the reference.

    A reference galaxy's LOF is the one computed without itself among its
    neighbours (scikit-learn's ``negative_outlier_factor_``), so training and
    new galaxies are ranked alike."""

    def __init__(self, seed: int = 0, n_estimators: int = 300, n_neighbors: int = 20):
        self.seed = int(seed)
        self.n_estimators = int(n_estimators)
        self.n_neighbors = int(n_neighbors)

    def fit(self, ref: np.ndarray) -> FeatureScorer:
        from sklearn.ensemble import IsolationForest
        from sklearn.neighbors import LocalOutlierFactor

        ref = np.asarray(ref, dtype=np.float64)
        self.z = RobustZ.fit(ref)
        t = self._t(ref)
        self.forest = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed).fit(t)
        k = max(1, min(self.n_neighbors, len(ref) - 1))
        self.lof = LocalOutlierFactor(n_neighbors=k, novelty=True).fit(t)
        self.ref_scores = np.stack([-self.forest.score_samples(t), -self.lof.negative_outlier_factor_])
        return self

    def _t(self, x: np.ndarray) -> np.ndarray:
        """Robust z, clipped; a feature not measured (NaN) is 0: the reference's median."""
        return np.nan_to_num(np.clip(self.z(x), -50, 50), nan=0.0)

    def detectors(self, x: np.ndarray, ref_rows: np.ndarray | None = None) -> np.ndarray:
        """(2, N): IsolationForest and LOF scores (higher = more anomalous);
        ``ref_rows``: the rows of ``x`` that are the fitted reference, in order."""
        t = self._t(x)
        out = np.stack([-self.forest.score_samples(t), -self.lof.score_samples(t)])
        if ref_rows is not None:
            out[1, np.asarray(ref_rows, dtype=int)] = self.ref_scores[1]
        return out

    def __call__(self, x: np.ndarray, ref_rows: np.ndarray | None = None) -> np.ndarray:
        """Mean Gaussianised rank (:func:`gauss_rank`) of the two detectors;
        reference rows (``ref_rows``, as in :meth:`detectors`) leave-one-out."""
        d = self.detectors(x, ref_rows)
        own = np.zeros(d.shape[1], bool)
        if ref_rows is not None:
            own[np.asarray(ref_rows, dtype=int)] = True
        return np.mean([gauss_rank(r, v, own) for r, v in zip(self.ref_scores, d)], axis=0)
