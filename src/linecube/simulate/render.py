"""Rendering: a galaxy's components as a model cube on any wavelength grid and
spaxel offsets (PSF-smoothed, continuum with a 4000 A break and Balmer
absorption), the IFU hexagon, noise realisation and storage quantisation.
"""

from __future__ import annotations

import numpy as np

from linecube.io.formats import LineList
from linecube.io.manga import C_KMS, SPAXEL_ARCSEC
from linecube.simulate.galaxy import PSF_FWHM_ARCSEC, SIGMA_INST_KMS, Component, GalaxyParams, _disc_geometry
from linecube.simulate.ratios import Ratios, line_strengths


def _psf_smooth(img: np.ndarray) -> np.ndarray:
    """Convolve a spaxel map with the 2.5" FWHM Gaussian PSF."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, PSF_FWHM_ARCSEC / 2.3548 / SPAXEL_ARCSEC, mode="constant")


def _absorption_lines(g: GalaxyParams) -> tuple[tuple[float, float, float], ...]:
    """The stellar continuum's absorption features of galaxy ``g``: (rest wavelength A,
    Gaussian sigma A, equivalent width A) of the Balmer series, Ca II K, Mg b and Na D."""
    return (
        (6564.61, 9.0, g.balmer_abs_ew),
        (4862.68, 9.0, g.balmer_abs_ew),
        (4341.68, 8.0, g.balmer_abs_ew),
        (4102.89, 8.0, g.balmer_abs_ew),
        (3971.2, 7.0, g.balmer_abs_ew),
        (3890.2, 6.0, g.balmer_abs_ew * 0.8),
        (3934.8, 5.0, 3.0 * g.d4000 + 0.5),
        (5175.0, 10.0, 4.0 * g.d4000),
        (5894.0, 6.0, 3.0 * g.d4000),
    )


#: the 4000 A break: centre and width (A) of its logistic step
BREAK_A, BREAK_WIDTH_A = 4000.0, 25.0


def _break(rest: np.ndarray, g: GalaxyParams) -> np.ndarray:
    return 1.0 - g.d4000 / (1.0 + np.exp((rest - BREAK_A) / BREAK_WIDTH_A))


def _absorption(rest: np.ndarray, lam: float, sig: float, ew: float) -> np.ndarray:
    return 1.0 - ew / (np.sqrt(2 * np.pi) * sig) * np.exp(-0.5 * ((rest - lam) / sig) ** 2)


def _stellar_features(rest: np.ndarray, g: GalaxyParams) -> np.ndarray:
    """The continuum's 4000 A break and absorption lines, a factor of the same shape
    as ``rest`` (rest-frame wavelengths, A, any shape)."""
    s = _break(rest, g)
    for lam, sig, ew in _absorption_lines(g):
        s = s * _absorption(rest, lam, sig, ew)
    return s


def continuum_shape(rest: np.ndarray, g: GalaxyParams) -> np.ndarray:
    """Stellar continuum at rest wavelengths (A), 1 at 5500 A: a power law with a
    4000 A break and Balmer / Ca II H&K / Mg b / Na D absorption."""
    return (rest / 5500.0) ** g.cont_slope * _stellar_features(rest, g)


def stellar_velocity(g: GalaxyParams, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Line-of-sight velocity of the stars (km/s) at sky offsets (arcsec), (ny, nx):
    the galaxy's disc geometry and rotation curve at the projected amplitude
    ``g.star_vmax_kms`` (stars rotate, slower than the gas by asymmetric drift)."""
    r, cos_phi = _disc_geometry(dx, dy, g.incl_deg, g.pa_deg)
    return g.star_vmax_kms * np.tanh(r / g.r_turn_arcsec) * cos_phi


def _rotate_features(flux: np.ndarray, rest: np.ndarray, g: GalaxyParams, v: np.ndarray) -> None:
    """Move the stellar features of ``flux`` (n_wave, ny, nx; the continuum made
    with the features at rest) to each spaxel's stellar velocity ``v`` (km/s, (ny,
    nx)), in place, one feature at a time (the factors multiply). Only wavelengths
    within reach of a feature (6 sigma of a line, 10 widths of the break, plus the
    largest shift) are recomputed: beyond them a factor is 1, or the break's
    saturated value, to 1e-4 of itself, so every wavelength grid gets the same values."""
    vmax = float(np.max(np.abs(v))) if v.size else 0.0
    if vmax <= 0:
        return
    reach = rest * vmax / C_KMS
    stretch = 1.0 / (1.0 + v[None] / C_KMS)  # (1, ny, nx): the stars' rest wavelength over the galaxy's
    parts = [(BREAK_A, 10 * BREAK_WIDTH_A, lambda r: _break(r, g))]
    parts += [(lam, 6 * sig, lambda r, a=(lam, sig, ew): _absorption(r, *a)) for lam, sig, ew in _absorption_lines(g)]
    for centre, half, factor in parts:
        idx = np.nonzero(np.abs(rest - centre) < half + reach)[0]
        if idx.size:
            r0 = rest[idx]
            flux[idx] *= (factor(r0[:, None, None] * stretch) / factor(r0)[:, None, None]).astype(np.float32)


def _component_maps(c: Component, g: GalaxyParams, dx: np.ndarray, dy: np.ndarray):
    """Hbeta surface brightness (PSF-convolved), line-of-sight velocity and
    dispersion maps (km/s) of one component on a spaxel grid of sky offsets."""
    r, cos_phi = _disc_geometry(dx - c.x0_arcsec, dy - c.y0_arcsec, g.incl_deg, g.pa_deg)
    if c.pa_offset_deg:  # the velocity field about another axis than the shape's
        _, cos_phi = _disc_geometry(dx - c.x0_arcsec, dy - c.y0_arcsec, g.incl_deg, g.pa_deg + c.pa_offset_deg)
    if c.profile == "disc":
        sb = np.exp(-r / c.scale_arcsec)
    elif c.profile == "ring":
        sb = np.exp(-0.5 * ((r - c.ring_radius_arcsec) / c.scale_arcsec) ** 2)
    else:
        rr = np.hypot(dx - c.x0_arcsec, dy - c.y0_arcsec)
        sb = np.exp(-0.5 * (rr / c.scale_arcsec) ** 2)
    sb = _psf_smooth(sb * c.hbeta_peak)
    v = c.vmax_kms * np.tanh(r / g.r_turn_arcsec) * cos_phi + c.v_offset_kms
    sig = np.full_like(r, np.hypot(c.sigma_kms, SIGMA_INST_KMS))
    return sb, v, sig


def render_model(
    g: GalaxyParams, wave: np.ndarray, dx: np.ndarray, dy: np.ndarray, lines: LineList
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free model flux of galaxy ``g``.

    wave: observed vacuum wavelengths (A), shape (n_wave,), any order.
    dx, dy: sky offsets of spaxel centres from the galaxy centre (arcsec), (ny, nx).
    Returns flux (n_wave, ny, nx) float32 in 1e-17 erg/s/cm^2/A/spaxel, and a
    boolean (ny, nx) map of spaxels covered by a foreground star.
    """
    wave = np.asarray(wave, dtype=np.float64)
    rest = wave / (1.0 + g.z)
    r_c, _ = _disc_geometry(dx, dy, g.incl_deg, g.pa_deg)
    cont_map = _psf_smooth(np.exp(-r_c / g.cont_scale_arcsec) * g.cont_peak)
    cont = continuum_shape(rest, g) * 10 ** (-0.4 * g.av * 0.5 * (rest / 5500.0) ** -0.7)
    flux = cont.astype(np.float32)[:, None, None] * cont_map.astype(np.float32)[None]
    _rotate_features(flux, rest, g, stellar_velocity(g, dx, dy))
    balmer = np.array([n in ("Halpha", "Hbeta", "Hgamma", "Hdelta") for n in lines.names])
    for c in g.components:
        sb, v, sig = _component_maps(c, g, dx, dy)
        if c.broad_balmer_only:
            strengths = np.where(balmer, line_strengths(Ratios(0.0, 0.0, 0.0, 0.0, 0.0), lines, g.av), 0.0)
        else:
            strengths = line_strengths(c.ratios, lines, g.av)
        vlo, vhi, smax = v.min(), v.max(), sig.max()
        for lam_rest, s in zip(lines.rest, strengths):
            if s <= 0:
                continue
            lam0 = lam_rest * (1.0 + g.z)
            lo = lam0 * (1 + (vlo - 6 * smax) / C_KMS)
            hi = lam0 * (1 + (vhi + 6 * smax) / C_KMS)
            idx = np.nonzero((wave >= lo) & (wave <= hi))[0]
            if idx.size == 0:
                continue
            mu = lam0 * (1.0 + v / C_KMS)
            sl = mu * sig / C_KMS
            amp = (sb * s) / (np.sqrt(2 * np.pi) * sl)
            w = wave[idx][:, None, None]
            flux[idx] += (amp[None] * np.exp(-0.5 * ((w - mu[None]) / sl[None]) ** 2)).astype(np.float32)
    star_map = np.zeros(dx.shape, dtype=bool)
    if g.star is not None:
        st = g.star
        rr = np.hypot(dx - st["x0"], dy - st["y0"])
        psf = _psf_smooth((rr < SPAXEL_ARCSEC).astype(float))
        psf /= max(psf.max(), 1e-12)
        # a G-type star at rest: its own continuum (no redshift), Ca H&K, Mg b, Na D
        sw = wave
        star_spec = (sw / 5500.0) ** -0.5 * (1.0 - 0.5 / (1.0 + np.exp((sw - 4000.0) / 30.0)))
        for lam, depth, sg in (
            (3934.8, 0.5, 4.0),
            (3969.6, 0.4, 4.0),
            (5175.0, 0.2, 8.0),
            (5894.0, 0.3, 4.0),
            (6564.6, 0.2, 5.0),
        ):
            star_spec = star_spec * (1 - depth * np.exp(-0.5 * ((sw - lam) / sg) ** 2))
        flux += (st["amp"] * star_spec).astype(np.float32)[:, None, None] * psf.astype(np.float32)[None]
        star_map = rr < st["radius"]
    return flux, star_map


def hexagon_mask(ny: int, nx: int, diameter_arcsec: float) -> np.ndarray:
    """Boolean (ny, nx) map of spaxels inside a flat-topped hexagonal IFU footprint
    of the given corner-to-corner diameter, centred on the cube's reference pixel."""
    yy, xx = np.mgrid[:ny, :nx].astype(float)
    cy, cx = ny / 2.0, nx / 2.0  # reference pixel CRPIX = n/2 + 1 (1-based)
    qx = np.abs(xx - cx) * SPAXEL_ARCSEC
    qy = np.abs(yy - cy) * SPAXEL_ARCSEC
    rad = diameter_arcsec / 2.0 + 1.0  # fibre radius: the dithered coverage reaches ~1" past fibre centres
    return (qy <= np.sqrt(3) / 2 * rad) & (np.sqrt(3) * qx + qy <= np.sqrt(3) * rad)


def realise_noise(
    model: np.ndarray,
    sky: np.ndarray,
    coverage: np.ndarray,
    gain: float,
    rng: np.random.Generator,
    correlated: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Add Gaussian noise to a model cube (n_wave, ny, nx); return (flux, ivar).

    var = sky(lambda)^2 / coverage(y, x) + max(model, 0) / gain. ``correlated``:
    the deviates are spatially correlated as MaNGA cube noise is
    (:func:`linecube.physics.noise.correlate_field`; the variance per voxel is the same).
    IVAR is kept to 8 significant bits (:func:`quantize_mantissa`), ample for an
    inverse variance.
    """
    cov = np.where(coverage > 0, coverage, 1.0).astype(np.float32)
    var = np.maximum(model, np.float32(0)).astype(np.float32, copy=False)  # the same float32 operations, in place
    var /= np.float32(gain)
    var += (sky.astype(np.float32) ** 2)[:, None, None] / cov[None]
    noise = rng.standard_normal(model.shape, dtype=np.float32)
    if correlated:
        from linecube.physics.noise import correlate_field

        noise = correlate_field(noise)
    noise *= np.sqrt(var, dtype=np.float32)
    flux = model + noise
    np.divide(np.float32(1.0), var, out=var)
    return flux, quantize_mantissa(var, 7)


def observed_model(model: np.ndarray, wave: np.ndarray, g: GalaxyParams) -> np.ndarray:
    """The model cube (n_wave, y, x) as it arrives through the Milky Way: dimmed by
    the galaxy's Galactic E(B-V) (CCM89, R_V 3.1; :mod:`linecube.physics.extinction`)."""
    if g.ebvgal > 0:
        from linecube.physics.extinction import redden

        return redden(model, wave, g.ebvgal)
    return model


def instrument_defects(
    g: GalaxyParams, px: np.ndarray, py: np.ndarray, n: int, inside: np.ndarray, n_wave: int
) -> tuple[np.ndarray, np.ndarray, np.random.Generator]:
    """Where the DRP would flag voxels of galaxy ``g``: dead-fibre holes (y, x) and
    scattered bad voxels (n_wave, y, x), both inside the footprint ``inside``;
    ``px``, ``py`` are the cube pixels of the map's spaxels, ``n`` the cube side.
    Returns the two maps and the generator to draw their values from (its own
    stream: the noise draws are unchanged)."""
    from linecube.simulate.galaxy import DEAD_FIBRE_RADIUS

    rng = np.random.default_rng([g.seed, 29])
    dead = np.zeros(inside.shape, bool)
    for dx, dy in g.dead_fibres:
        dead |= np.hypot(px - (n / 2.0 + dx), py - (n / 2.0 + dy)) < DEAD_FIBRE_RADIUS
    dead &= inside
    if g.bad_voxel_fraction > 0:
        bad = rng.random((n_wave, *inside.shape), dtype=np.float32) < g.bad_voxel_fraction
        bad &= inside[None]
    else:
        bad = np.zeros((n_wave, *inside.shape), bool)
    return dead, bad, rng


def spike_values(rng: np.random.Generator, n: int, peak: float) -> np.ndarray:
    """What flagged voxels may hold in a DRP cube: half zeros, half spikes of either
    sign up to 14 times the brightest valid voxel ``peak`` (float32, (n,))."""
    v = rng.uniform(1.0, 14.0, n) * float(peak) * rng.choice([-1.0, 1.0], n)
    return np.where(rng.random(n) < 0.5, 0.0, v).astype(np.float32)


def quantize_mantissa(a: np.ndarray, bits: int) -> np.ndarray:
    """Round float32 values to ``bits`` significant mantissa bits (relative
    precision 2**-bits): for inverse variances, far below their own uncertainty.

    Exactly ``ldexp(round(m * 2**bits) / 2**bits, e)`` of ``(m, e) = frexp(a)``
    (round half to even), done on the float32 bit pattern: 4x faster; subnormal
    values (no implicit leading bit) take the frexp path."""
    a = np.asarray(a, dtype=np.float32)
    drop = 24 - int(bits)  # float32 has 24 significant bits
    if not 0 < drop < 24:
        raise ValueError(f"bits must be 1-23, not {bits}")
    u = a.view(np.uint32)
    t = u >> np.uint32(drop)  # in place from here: one temporary
    t &= np.uint32(1)  # the last kept bit: ties go to even
    t += np.uint32((1 << (drop - 1)) - 1)
    t += u
    t &= np.uint32(~((1 << drop) - 1) & 0xFFFFFFFF)
    out = t.view(np.float32)
    if a.size and np.abs(a).min() < np.finfo(np.float32).tiny:  # zeros or subnormals
        sub = ((u & np.uint32(0x7F800000)) == 0) & ((u & np.uint32(0x7FFFFFFF)) != 0)
        m, e = np.frexp(a[sub])
        out[sub] = np.ldexp(np.round(m * 2.0**bits) / 2.0**bits, e).astype(np.float32)
    return out


def quantize_step(flux: np.ndarray, sigma_min: float, q: float = 16.0) -> np.ndarray:
    """Round flux to a power-of-two step <= sigma_min / q (lossy tile compression
    does the same with q = 16): the quantization noise, step / sqrt(12), adds
    < 0.05 % to the variance of the least noisy voxel, and the files shrink by half."""
    step = np.float32(2.0 ** np.floor(np.log2(sigma_min / q)))
    return (np.round(flux / step) * step).astype(np.float32)
