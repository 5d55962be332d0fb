"""A synthetic MaNGA survey written in the real DR17 formats.

``simulate_survey`` writes, under ``out`` (a ``redux_dir``):

* ``{drpver}/drpall-{drpver}.fits``: the drpall catalogue (HDU 1 ``MANGA`` with the
  DR17 column names and dtypes, HDU 2 ``MASTAR``);
* ``{drpver}/{plate}/stack/manga-{plate}-{ifudsgn}-LOGCUBE.fits.gz``: LOGCUBEs with
  all 24 HDUs in DR17 order and the DRP header keys;
* ``agn.csv``: mangaid, plateifu and boolean wise_agn, bat_agn, radio_agn,
  broad_agn, like the DR17 MaNGA AGN catalogue (AGN rows only);
* ``truth.csv``: plateifu, class, is_anomaly, anomaly_type.

Storage: FLUX is rounded to a power-of-two step <= sigma_min/16 and IVAR to 8
significant bits (as lossy FITS tile compression would); both add noise far below
the simulated noise and halve the files, so the bundled sample fits its 3 GB.

Galaxy model (defaults from ``docs/astro-facts.md``): an exponential disc of
ionised gas on a tanh rotation curve, optionally a nuclear component with AGN /
LINER line ratios, Case-B Balmer ratios with dust, fixed atomic doublet ratios, a
stellar continuum with a 4000 A break and Balmer absorption, all convolved with a
2.5" FWHM PSF, observed on the DRP log-lambda grid at redshift z. Noise: sky
(blue end and sky lines noisier) plus a Poisson-like term, IVAR = 1/sigma^2.

The same model renders on any wavelength grid (``render_model``), so the scale mode
can evaluate only the 190 channels that extraction keeps.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .bpt import kauffmann03, kewley01, kewley06_seyfert_liner
from .formats import (
    BUNIT,
    C_KMS,
    CD3_3,
    CRVAL3,
    DR17_DRPVER,
    DRP3QUAL_CRITICAL,
    IFU_CUBE_SIZE,
    IFU_DIAMETER_ARCSEC,
    NWAVE,
    SPAXEL_ARCSEC,
    DRP3PixMask,
    LineList,
    atomic_path,
    drpall_path,
    load_lines,
    log_wave_grid,
    logcube_path,
)

CLASSES: tuple[str, ...] = ("star-forming", "composite", "seyfert", "liner")
CLASS_PROBS: tuple[float, ...] = (0.6, 0.15, 0.1, 0.15)
ANOMALY_TYPES: tuple[str, ...] = (
    "blueberry",
    "broad_balmer",
    "double_peaked",
    "off_centre",
    "shock",
    "foreground_star",
)
#: IFU sizes of the bundled sample and how often each is drawn (small bundles
#: dominate so the sample stays within its disk budget).
IFU_SIZES: tuple[int, ...] = (19, 37, 61, 91, 127)
IFU_PROBS: tuple[float, ...] = (0.5, 0.3, 0.12, 0.05, 0.03)


@dataclass(frozen=True)
class SurveyStyle:
    """How a simulated survey is drawn: class and IFU-size mixes, brightness, noise
    and line-ratio families. ``default`` is the bundled sample's; ``alt`` is a
    second, differently built survey for the science benchmark (more AGN and
    LINER-like galaxies, larger IFUs, fainter lines, 2.5x the sky noise, a
    metal-rich star-forming sequence), so that a score is not judged on one
    simulator setting only."""

    name: str = "default"
    class_probs: tuple[float, ...] = CLASS_PROBS
    ifu_probs: tuple[float, ...] = IFU_PROBS
    brightness: float = 1.0  #: multiplies every line component's surface brightness
    noise: float = 1.0  #: multiplies the sky noise (and divides the gain)
    sf_n2_shift: float = 0.0  #: dex added to log [NII]/Halpha of star-forming discs


SURVEY_STYLES: dict[str, SurveyStyle] = {
    "default": SurveyStyle(),
    "alt": SurveyStyle(
        "alt",
        class_probs=(0.35, 0.2, 0.2, 0.25),
        ifu_probs=(0.15, 0.25, 0.25, 0.2, 0.15),
        brightness=0.5,
        noise=2.5,
        sf_n2_shift=0.25,
    ),
}

SIGMA_INST_KMS = 70.0  #: instrumental dispersion (R ~ 2000)
PSF_FWHM_ARCSEC = 2.5
CASE_B = {"Halpha": 2.86, "Hgamma": 0.47, "Hdelta": 0.26}


# --------------------------------------------------------------------------
# Line ratios
# --------------------------------------------------------------------------


@dataclass
class Ratios:
    """Log line ratios of one gas component (BPT axes plus [OI], [OII])."""

    n2: float  #: log [NII]6585/Halpha
    o3: float  #: log [OIII]5008/Hbeta
    s2: float  #: log ([SII]6718+6733)/Halpha
    o1: float  #: log [OI]6302/Halpha
    o2: float  #: log ([OII]3727+3730)/Hbeta
    t_o3: float = 0.01  #: [OIII]4364/[OIII]5008 (electron temperature)
    s2_density: float = 1.4  #: [SII]6718/6733
    s2_4072: float = 0.03  #: [SII]4072/Hbeta


def draw_ratios(kind: str, rng: np.random.Generator) -> Ratios:
    """Draw log line ratios typical of an excitation class (astro-facts.md)."""
    if kind == "star-forming":
        n2 = rng.uniform(-0.9, -0.3)
        o3 = max(-0.6, kauffmann03(n2) - rng.uniform(0.1, 0.4))
        return Ratios(n2, o3, rng.uniform(-0.6, -0.35), rng.uniform(-1.8, -1.3), rng.uniform(0.2, 0.5))
    if kind == "composite":
        n2 = rng.uniform(-0.3, -0.05)
        lo, hi = kauffmann03(n2), kewley01(n2)
        o3 = lo + rng.uniform(0.25, 0.75) * (hi - lo)
        return Ratios(n2, o3, rng.uniform(-0.45, -0.2), rng.uniform(-1.4, -1.0), rng.uniform(0.3, 0.55), 0.015)
    if kind == "seyfert":
        n2 = rng.uniform(-0.2, 0.3)
        s2 = rng.uniform(-0.4, 0.0)
        o3 = max(rng.uniform(0.5, 1.1), kewley06_seyfert_liner(s2) + 0.1)
        return Ratios(n2, o3, s2, rng.uniform(-1.2, -0.7), rng.uniform(0.4, 0.6), rng.uniform(0.02, 0.05))
    if kind == "liner":
        n2 = rng.uniform(0.0, 0.4)
        s2 = rng.uniform(-0.2, 0.2)
        o3 = max(rng.uniform(-0.3, 0.4), float(kewley01(n2)) + 0.1 if n2 < 0.4 else -0.3)
        o3 = min(o3, kewley06_seyfert_liner(s2) - 0.05)
        return Ratios(n2, o3, s2, rng.uniform(-0.9, -0.5), rng.uniform(0.6, 0.8), 0.03, 1.2, 0.06)
    if kind == "blueberry":
        return Ratios(rng.uniform(-1.7, -1.4), rng.uniform(0.8, 0.95), -1.0, -2.0, 0.1, 0.04, 1.3, 0.01)
    if kind == "shock":
        return Ratios(
            rng.uniform(0.1, 0.3), rng.uniform(0.0, 0.3), rng.uniform(0.25, 0.45), rng.uniform(-0.3, 0.0), 0.8, 0.05, 1.1, 0.15
        )
    raise ValueError(f"unknown excitation class {kind!r}")


def line_strengths(r: Ratios, lines: LineList, av: float) -> np.ndarray:
    """Integrated flux of every line relative to dust-free Hbeta = 1, attenuated by
    A_V with the Charlot & Fall (2000) curve A(lambda) = A_V (lambda/5500)^-0.7."""
    ha = CASE_B["Halpha"]
    o3 = 10**r.o3
    n2 = 10**r.n2 * ha
    s2 = 10**r.s2 * ha
    o1 = 10**r.o1 * ha
    o2 = 10**r.o2
    rel = {
        "[OII]3727": o2 / 2.5,
        "[OII]3730": o2 * 1.5 / 2.5,
        "HeI3889": 0.1,
        "[SII]4072": r.s2_4072,
        "Hdelta": CASE_B["Hdelta"],
        "Hgamma": CASE_B["Hgamma"],
        "[OIII]4364": r.t_o3 * o3,
        "Hbeta": 1.0,
        "[OIII]4933": 0.002 * o3,
        "[OIII]4960": o3 / 2.98,
        "[OIII]5008": o3,
        "[OI]6302": o1,
        "[OI]6366": o1 / 3.0,
        "[NI]6529": 0.004 * ha,
        "[NII]6550": n2 / 3.05,
        "Halpha": ha,
        "[NII]6585": n2,
        "[SII]6718": s2 * r.s2_density / (1 + r.s2_density),
        "[SII]6733": s2 / (1 + r.s2_density),
    }
    out = np.array([rel.get(n, 0.0) for n in lines.names])
    return out * 10 ** (-0.4 * av * (lines.rest / 5500.0) ** -0.7)


# --------------------------------------------------------------------------
# Galaxy parameters
# --------------------------------------------------------------------------


@dataclass
class Component:
    """One emission-line component: surface-brightness profile, kinematics, ratios."""

    kind: str  #: excitation class of its line ratios
    profile: str  #: "disc" (exponential) or "gauss" (compact)
    scale_arcsec: float  #: disc scale length or Gaussian sigma (arcsec)
    hbeta_peak: float  #: central Hbeta surface brightness (1e-17 erg/s/cm^2/spaxel)
    sigma_kms: float  #: gas velocity dispersion (before the instrumental one)
    vmax_kms: float = 0.0  #: projected rotation amplitude (v_max sin i)
    v_offset_kms: float = 0.0  #: systemic offset (double peaks)
    x0_arcsec: float = 0.0  #: centre offset from the galaxy centre (arcsec, +x)
    y0_arcsec: float = 0.0
    ratios: Ratios | None = None
    broad_balmer_only: bool = False  #: a broad-line region: Balmer lines only


@dataclass
class GalaxyParams:
    """Everything needed to render one galaxy; drawn by :func:`draw_galaxy`."""

    index: int
    plate: int
    ifudsgn: int
    ifusize: int
    mangaid: str
    z: float
    ifura: float
    ifudec: float
    objra: float
    objdec: float
    cls: str
    anomaly: str
    incl_deg: float
    pa_deg: float
    r_turn_arcsec: float
    cont_peak: float  #: central continuum at 5500 A rest (flux units)
    cont_scale_arcsec: float
    cont_slope: float
    d4000: float
    balmer_abs_ew: float
    av: float
    sky_sigma: float  #: sky noise per spaxel at 5500 A (flux units)
    gain: float  #: Poisson-like term: var += model / gain
    components: list[Component] = field(default_factory=list)
    star: dict | None = None  #: foreground star (x0, y0 arcsec, amplitude)
    agn: dict = field(default_factory=dict)
    seed: int = 0

    @property
    def plateifu(self) -> str:
        return f"{self.plate}-{self.ifudsgn}"


def _disc_geometry(dx: np.ndarray, dy: np.ndarray, incl_deg: float, pa_deg: float):
    """Deprojected radius and cos(azimuth) of sky offsets (arcsec) in a disc plane."""
    pa = np.deg2rad(pa_deg)
    cos_i = max(np.cos(np.deg2rad(incl_deg)), 0.15)
    xp = dx * np.cos(pa) + dy * np.sin(pa)  # along the major axis
    yp = (-dx * np.sin(pa) + dy * np.cos(pa)) / cos_i
    r = np.hypot(xp, yp)
    cos_phi = np.divide(xp, r, out=np.zeros_like(r), where=r > 0)
    return r, cos_phi


def draw_galaxy(
    index: int,
    plate: int,
    ifudsgn: int,
    ifusize: int,
    cls: str,
    anomaly: str,
    rng: np.random.Generator,
    seed: int,
    style: SurveyStyle | None = None,
) -> GalaxyParams:
    """Draw the parameters of one galaxy of class ``cls`` with an optional anomaly.

    ``style`` (default :data:`SURVEY_STYLES` ``["default"]``) scales brightness and
    noise and shifts the star-forming line ratios after the draws, so a style
    changes no other parameter of the galaxy."""
    ifura = rng.uniform(120.0, 240.0)
    ifudec = rng.uniform(0.0, 60.0)
    # galaxy centre within ~0.3" of the IFU centre, as for targeted MaNGA galaxies
    off = rng.normal(0.0, 0.3, 2) / 3600.0
    objra = ifura + off[0] / np.cos(np.deg2rad(ifudec))
    objdec = ifudec + off[1]
    z = float(np.clip(rng.lognormal(np.log(0.035), 0.5), 0.01, 0.15))
    diam = IFU_DIAMETER_ARCSEC[ifusize]
    h = rng.uniform(0.18, 0.35) * diam  # disc scale length matched to the bundle (1.5 Re design)
    incl = float(np.degrees(np.arccos(rng.uniform(0.25, 1.0))))
    vmax = rng.uniform(100, 300) * np.sin(np.deg2rad(incl))
    hb_peak = float(rng.lognormal(np.log(6.0), 0.7))  # central Hbeta (flux per spaxel)
    disc_kind = "liner" if cls == "liner" else "star-forming"
    comps = [
        Component(
            disc_kind,
            "disc",
            h,
            hb_peak if cls != "liner" else hb_peak * 0.25,
            rng.uniform(30, 70),
            vmax,
            ratios=draw_ratios(disc_kind, rng),
        )
    ]
    if cls in ("composite", "seyfert", "liner"):
        nuc_sigma = rng.uniform(1.0, 2.0) if cls != "liner" else rng.uniform(2.0, 4.0)
        nuc_peak = hb_peak * (rng.uniform(0.8, 2.0) if cls == "seyfert" else rng.uniform(0.4, 1.0))
        comps.append(Component(cls, "gauss", nuc_sigma, nuc_peak, rng.uniform(80, 180), 0.3 * vmax, ratios=draw_ratios(cls, rng)))
    g = GalaxyParams(
        index=index,
        plate=plate,
        ifudsgn=ifudsgn,
        ifusize=ifusize,
        mangaid=f"1-{200000 + index}",
        z=z,
        ifura=ifura,
        ifudec=ifudec,
        objra=float(objra),
        objdec=float(objdec),
        cls=cls,
        anomaly=anomaly,
        incl_deg=incl,
        pa_deg=rng.uniform(0, 180),
        r_turn_arcsec=rng.uniform(1.0, 4.0),
        cont_peak=float(rng.lognormal(np.log(0.6), 0.6)),
        cont_scale_arcsec=h * rng.uniform(0.6, 1.0),
        cont_slope=rng.uniform(-1.0, 0.8),
        d4000=rng.uniform(0.1, 0.55) if cls != "star-forming" else rng.uniform(0.05, 0.3),
        balmer_abs_ew=rng.uniform(1.0, 5.0),
        av=rng.uniform(0.2, 1.5),
        sky_sigma=rng.uniform(0.03, 0.08),
        gain=rng.uniform(20, 60),
        components=comps,
        seed=seed,
    )
    st = style or SURVEY_STYLES["default"]
    if st.name != "default":
        for c in g.components:
            c.hbeta_peak *= st.brightness
            if c.kind == "star-forming" and c.ratios is not None:
                c.ratios.n2 = min(c.ratios.n2 + st.sf_n2_shift, -0.15)
                c.ratios.o3 = min(c.ratios.o3, float(kauffmann03(c.ratios.n2)) - 0.1)
        g.cont_peak *= st.brightness
        g.sky_sigma *= st.noise
        g.gain /= st.noise
    _apply_anomaly(g, rng)
    return g


def with_anomaly(g: GalaxyParams, anomaly: str) -> GalaxyParams:
    """The same galaxy (every parameter, the same noise seed) carrying ``anomaly``
    (one of :data:`ANOMALY_TYPES`): a twin for paired evaluation. ``g`` must be
    normal; the anomaly's own draws come from a generator seeded by (g.seed, type),
    and ``g`` is not modified."""
    import copy

    if g.anomaly:
        raise ValueError(f"{g.plateifu} already carries an anomaly ({g.anomaly})")
    if anomaly not in ANOMALY_TYPES:
        raise ValueError(f"unknown anomaly type {anomaly!r}; expected one of {ANOMALY_TYPES}")
    twin = copy.deepcopy(g)
    twin.anomaly = anomaly
    _apply_anomaly(twin, np.random.default_rng([g.seed, 77, ANOMALY_TYPES.index(anomaly)]))
    return twin


def _apply_anomaly(g: GalaxyParams, rng: np.random.Generator) -> None:
    """Modify a galaxy in place to carry its injected anomaly (astro-facts.md)."""
    a = g.anomaly
    if not a:
        return
    if a == "blueberry":
        # compact, low-metallicity starburst: extreme [OIII]/Hbeta, weak continuum
        g.cls = "star-forming"
        g.components = [Component("blueberry", "gauss", rng.uniform(0.6, 1.0), rng.uniform(60, 150), 45.0, 30.0)]
        g.components[0].ratios = draw_ratios("blueberry", rng)
        g.cont_peak *= 0.3
        g.av = 0.1
    elif a == "broad_balmer":
        g.cls = "seyfert"
        narrow = [c for c in g.components if c.profile == "gauss"] or g.components
        peak = max(c.hbeta_peak for c in narrow)
        if not any(c.profile == "gauss" for c in g.components):
            g.components.append(Component("seyfert", "gauss", 1.2, peak, 120.0, ratios=draw_ratios("seyfert", rng)))
        fwhm = rng.uniform(3000, 8000)
        g.components.append(
            Component("seyfert", "gauss", 0.4, peak * rng.uniform(2.0, 4.0), fwhm / 2.355, broad_balmer_only=True)
        )
    elif a == "double_peaked":
        # a second, counter-rotating gas disc offset in velocity: double-peaked lines
        base = g.components[0]
        sep = rng.uniform(200, 500)
        base.v_offset_kms = -sep / 2
        twin = Component(
            base.kind,
            base.profile,
            base.scale_arcsec,
            base.hbeta_peak,
            base.sigma_kms,
            -base.vmax_kms,
            sep / 2,
            ratios=base.ratios,
        )
        g.components.append(twin)
    elif a == "off_centre":
        ang = rng.uniform(0, 2 * np.pi)
        rad = rng.uniform(0.22, 0.32) * IFU_DIAMETER_ARCSEC[g.ifusize]
        g.components.append(
            Component(
                "star-forming",
                "gauss",
                rng.uniform(1.0, 1.6),
                rng.uniform(15, 40),
                40.0,
                x0_arcsec=rad * np.cos(ang),
                y0_arcsec=rad * np.sin(ang),
                ratios=draw_ratios("star-forming", rng),
            )
        )
        for c in g.components[:-1]:
            c.hbeta_peak *= 0.3
    elif a == "shock":
        g.cls = "liner"
        g.components = [
            Component(
                "shock",
                "disc",
                c.scale_arcsec,
                c.hbeta_peak * 1.5,
                rng.uniform(150, 250),
                c.vmax_kms,
                ratios=draw_ratios("shock", rng),
            )
            for c in g.components[:1]
        ]
    elif a == "foreground_star":
        ang = rng.uniform(0, 2 * np.pi)
        rad = rng.uniform(0.1, 0.25) * IFU_DIAMETER_ARCSEC[g.ifusize]
        g.star = {"x0": rad * np.cos(ang), "y0": rad * np.sin(ang), "amp": float(rng.uniform(15, 50)), "radius": 3.0}
    else:
        raise ValueError(f"unknown anomaly type {a!r}")


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def _psf_smooth(img: np.ndarray) -> np.ndarray:
    """Convolve a spaxel map with the 2.5" FWHM Gaussian PSF."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, PSF_FWHM_ARCSEC / 2.3548 / SPAXEL_ARCSEC, mode="constant")


def continuum_shape(rest: np.ndarray, g: GalaxyParams) -> np.ndarray:
    """Stellar continuum at rest wavelengths (A), 1 at 5500 A: a power law with a
    4000 A break and Balmer / Ca II H&K / Mg b / Na D absorption."""
    s = (rest / 5500.0) ** g.cont_slope
    s = s * (1.0 - g.d4000 / (1.0 + np.exp((rest - 4000.0) / 25.0)))
    for lam, ew, sig in (
        (6564.61, g.balmer_abs_ew, 9.0),
        (4862.68, g.balmer_abs_ew, 9.0),
        (4341.68, g.balmer_abs_ew, 8.0),
        (4102.89, g.balmer_abs_ew, 8.0),
        (3971.2, g.balmer_abs_ew, 7.0),
        (3890.2, g.balmer_abs_ew * 0.8, 6.0),
        (3934.8, 3.0 * g.d4000 + 0.5, 5.0),
        (5175.0, 4.0 * g.d4000, 10.0),
        (5894.0, 3.0 * g.d4000, 6.0),
    ):
        s = s * (1.0 - ew / (np.sqrt(2 * np.pi) * sig) * np.exp(-0.5 * ((rest - lam) / sig) ** 2))
    return s


def _component_maps(c: Component, g: GalaxyParams, dx: np.ndarray, dy: np.ndarray):
    """Hbeta surface brightness (PSF-convolved), line-of-sight velocity and
    dispersion maps (km/s) of one component on a spaxel grid of sky offsets."""
    r, cos_phi = _disc_geometry(dx - c.x0_arcsec, dy - c.y0_arcsec, g.incl_deg, g.pa_deg)
    if c.profile == "disc":
        sb = np.exp(-r / c.scale_arcsec)
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


def sky_sigma(wave: np.ndarray, base: float) -> np.ndarray:
    """Sky noise per spaxel (flux units) at observed wavelengths: higher at the
    blue end, at the red end and on the bright sky lines."""
    s = 1.0 + 1.5 * np.exp(-(wave - 3600.0) / 300.0) + 0.8 * np.clip((wave - 8500.0) / 1800.0, 0, None)
    for lam, amp in ((5578.5, 4.0), (5891.6, 1.5), (5897.6, 1.5), (6301.7, 3.0), (6365.5, 1.5), (7246.0, 1.0), (7913.7, 1.0)):
        s = s + amp * np.exp(-0.5 * ((wave - lam) / 1.5) ** 2)
    return base * s


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
    model: np.ndarray, sky: np.ndarray, coverage: np.ndarray, gain: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Add Gaussian noise to a model cube (n_wave, ny, nx); return (flux, ivar).

    var = sky(lambda)^2 / coverage(y, x) + max(model, 0) / gain. IVAR is kept to
    8 significant bits (:func:`quantize_mantissa`), ample for an inverse variance.
    """
    cov = np.where(coverage > 0, coverage, 1.0).astype(np.float32)
    var = (sky.astype(np.float32) ** 2)[:, None, None] / cov[None] + np.maximum(model, 0) / np.float32(gain)
    sigma = np.sqrt(var, dtype=np.float32)
    noise = rng.standard_normal(model.shape, dtype=np.float32)
    flux = model + noise * sigma
    ivar = quantize_mantissa((1.0 / var).astype(np.float32), 7)
    return flux, ivar


def quantize_mantissa(a: np.ndarray, bits: int) -> np.ndarray:
    """Round float32 values to ``bits`` significant mantissa bits (relative
    precision 2**-bits): for inverse variances, far below their own uncertainty."""
    m, e = np.frexp(a)
    return np.ldexp(np.round(m * 2.0**bits) / 2.0**bits, e).astype(np.float32)


def quantize_step(flux: np.ndarray, sigma_min: float, q: float = 16.0) -> np.ndarray:
    """Round flux to a power-of-two step <= sigma_min / q (lossy tile compression
    does the same with q = 16): the quantization noise, step / sqrt(12), adds
    < 0.05 % to the variance of the least noisy voxel, and the files shrink by half."""
    step = np.float32(2.0 ** np.floor(np.log2(sigma_min / q)))
    return (np.round(flux / step) * step).astype(np.float32)


# --------------------------------------------------------------------------
# LOGCUBE writer
# --------------------------------------------------------------------------


def _obs_keys(g: GalaxyParams, rng: np.random.Generator) -> list[tuple[str, object, str]]:
    """DRP header keys common to PRIMARY and FLUX (sdss/datamodel mangaCube DR17)."""
    nexp = int(rng.integers(6, 13))
    see = float(rng.uniform(1.1, 1.8))
    mjd = int(57000 + (g.plate % 2000))
    return [
        ("AUTHOR", "Brian Cherinka & David Law <bcherinka@stsci.edu, dlaw@stsci.edu>", ""),
        ("VERSDRP2", DR17_DRPVER, "MaNGA DRP version (2d processing)"),
        ("VERSDRP3", DR17_DRPVER, "MaNGA DRP Version (3d processing)"),
        ("VERSPLDS", "v5_1", "Platedesign Version"),
        ("VERSFLAT", "v1_33", "Specflat Version"),
        ("VERSCORE", "v1_9_1", "MaNGAcore Version"),
        ("VERSPRIM", "v2_9", "MaNGA Preimaging Version"),
        ("VERSUTIL", "v5_5_36", "Version of idlutils"),
        ("VERSIDL", "x86_64 linux unix linux 7.1.1 Aug 21 2009 64 64", "Version of IDL"),
        ("BSCALE", 1.0, "Intensity unit scaling"),
        ("BZERO", 0.0, "Intensity zeropoint"),
        ("BUNIT", BUNIT, "Specific intensity (per spaxel)"),
        ("MASKNAME", "MANGA_DRP3PIXMASK", "Bits in sdssMaskbits.par used by mask extension"),
        ("TELESCOP", "SDSS 2.5-M", "Sloan Digital Sky Survey"),
        ("INSTRUME", "MaNGA", "SDSS-IV MaNGA IFU"),
        ("SRVYMODE", "MaNGA dither", "Survey leading this observation and its mode"),
        ("PLATETYP", "APOGEE-2&MaNGA", "Type of plate (e.g. MaNGA, APOGEE-2&MANGA)"),
        ("OBJSYS", "ICRS", "The TCC objSys"),
        ("EQUINOX", 2000.0, ""),
        ("RADESYS", "FK5", ""),
        ("LAMPLIST", "lamphgcdne.dat", ""),
        ("TPLDATA", "BOSZ_3000-11000A.fits", ""),
        ("NEXP", nexp, "Total number of exposures"),
        ("EXPTIME", round(900.1 * nexp, 2), "Total exposure time (seconds)"),
        ("BLUESN2", round(float(rng.uniform(10, 30)), 4), "Total SN2 in blue channel"),
        ("REDSN2", round(float(rng.uniform(20, 50)), 4), "Total SN2 in red channel"),
        ("AIRMSMIN", 1.04, "Minimum airmass"),
        ("AIRMSMED", 1.05, "Median airmass"),
        ("AIRMSMAX", 1.08, "Maximum airmass"),
        ("SEEMIN", round(see - 0.1, 5), "Best guider seeing"),
        ("SEEMED", round(see, 5), "Median guider seeing"),
        ("SEEMAX", round(see + 0.15, 5), "Worst guider seeing"),
        ("TRANSMIN", 0.80, "Worst guider transparency"),
        ("TRANSMED", 0.83, "Median guider transparency"),
        ("TRANSMAX", 0.84, "Best guider transparency"),
        ("MJDMIN", mjd, "MJD of first exposure"),
        ("MJDMED", mjd, "MJD of median exposure"),
        ("MJDMAX", mjd, "MJD of last exposure"),
        ("DATE-OBS", "2016-01-01", "Date of median exposure"),
        ("MJDRED", 59186, "MJD of the reduction"),
        ("DATERED", "2020-12-03", "Date of the reduction"),
        ("MNGTARG1", 2336, "manga_target1 maskbit"),
        ("MNGTARG2", 0, "manga_target2 maskbit"),
        ("MNGTARG3", 0, "manga_target3 maskbit"),
        ("IFURA", g.ifura, "IFU R.A. (J2000 deg.)"),
        ("IFUDEC", g.ifudec, "IFU Dec. (J2000 deg.)"),
        ("OBJRA", g.objra, "Object R.A. (J2000 deg.)"),
        ("OBJDEC", g.objdec, "Object Dec. (J2000 deg.)"),
        ("CENRA", round(g.ifura + 0.8, 5), "Plate center R.A. (J2000 deg.)"),
        ("CENDEC", round(g.ifudec - 0.1, 6), "Plate center Dec. (J2000 deg.)"),
        ("PLATEID", g.plate, "Current plate"),
        ("DESIGNID", g.plate + 500, "Current design"),
        ("IFUDSGN", str(g.ifudsgn), "ifuDesign"),
        ("FRLPLUG", int(rng.integers(1, 30)), "Plugged ferrule"),
        ("PLATEIFU", g.plateifu, "PLATEID-ifuDesign"),
        ("CARTID", "3", "Cart(s) used"),
        ("HARNAME", "ma060", "Harness name(s)"),
        ("METFILE", "ma060-56887-3.par", "IFU metrology file(s)"),
        ("MANGAID", g.mangaid, "MaNGA ID number"),
        ("CATIDNUM", 1, "Primary target input catalog"),
        ("PLTTARG", "plateTargets-1.par", "plateTarget reference file"),
        ("DRP3QUAL", 0, "DRP-3d quality bitmask"),
        ("IFUGLON", 78.9550411299, "IFU Galactic longitude (deg)"),
        ("IFUGLAT", 52.6212190954, "IFU Galactic latitude (deg)"),
        ("EBVGAL", 0.0144335, "Galactic reddening E(B-V)"),
        ("GFWHM", round(see * 1.9, 4), "Reconstructed FWHM in g-band (arcsec)"),
        ("RFWHM", round(see * 1.88, 4), "Reconstructed FWHM in r-band (arcsec)"),
        ("IFWHM", round(see * 1.86, 4), "Reconstructed FWHM in i-band (arcsec)"),
        ("ZFWHM", round(see * 1.84, 4), "Reconstructed FWHM in z-band (arcsec)"),
    ]


def _spatial_wcs_keys(g: GalaxyParams, n: int) -> list[tuple[str, object, str]]:
    crpix = n / 2.0 + 1.0
    return [
        ("CRPIX1", crpix, "Reference pixel (1-indexed)"),
        ("CRPIX2", crpix, "Reference pixel (1-indexed)"),
        ("CRVAL1", g.ifura, ""),
        ("CRVAL2", g.ifudec, ""),
        ("CD1_1", -0.000138889, ""),
        ("CD2_2", 0.000138889, ""),
        ("CTYPE1", "RA---TAN", ""),
        ("CTYPE2", "DEC--TAN", ""),
        ("CUNIT1", "deg", ""),
        ("CUNIT2", "deg", ""),
    ]


_OBSINFO_COLUMNS: tuple[tuple[str, str], ...] = (
    ("SLITFILE", "25A"), ("METFILE", "17A"), ("HARNAME", "5A"), ("IFUDESIGN", "J"), ("FRLPLUG", "I"),
    ("MANGAID", "8A"), ("AIRTEMP", "E"), ("HUMIDITY", "E"), ("PRESSURE", "E"), ("SEEING", "E"), ("PSFFAC", "E"),
    ("TRANSPAR", "E"), ("PLATEID", "J"), ("DESIGNID", "J"), ("CARTID", "I"), ("MJD", "J"), ("EXPTIME", "E"),
    ("EXPNUM", "12A"), ("SET", "J"), ("MGDPOS", "8A"), ("MGDRA", "E"), ("MGDDEC", "E"), ("OMEGASET_U", "E"),
    ("OMEGASET_G", "E"), ("OMEGASET_R", "E"), ("OMEGASET_I", "E"), ("OMEGASET_Z", "E"), ("EAMFIT_RA", "E"),
    ("EAMFIT_DEC", "E"), ("EAMFIT_THETA", "E"), ("EAMFIT_THETA0", "E"), ("EAMFIT_A", "E"), ("EAMFIT_B", "E"),
    ("EAMFIT_RAERR", "E"), ("EAMFIT_DECERR", "E"), ("EAMFIT_THETAERR", "E"), ("EAMFIT_THETA0ERR", "E"),
    ("EAMFIT_AERR", "E"), ("EAMFIT_BERR", "E"), ("TAIBEG", "13A"), ("HADRILL", "E"), ("LSTMID", "E"),
    ("HAMID", "E"), ("AIRMASS", "E"), ("IFURA", "D"), ("IFUDEC", "D"), ("CENRA", "D"), ("CENDEC", "D"),
    ("XFOCAL", "E"), ("YFOCAL", "E"), ("MNGTARG1", "J"), ("MNGTARG2", "J"), ("MNGTARG3", "J"), ("BLUESN2", "E"),
    ("REDSN2", "E"), ("BLUETHRUPT", "E"), ("REDTHRUPT", "E"), ("BLUEPSTAT", "E"), ("REDPSTAT", "E"),
    ("DRP2QUAL", "J"), ("THISBADIFU", "J"), ("PF_FWHM_G", "E"), ("PF_FWHM_R", "E"), ("PF_FWHM_I", "E"),
    ("PF_FWHM_Z", "E"),
)  # fmt: skip


def _obsinfo_hdu(g: GalaxyParams, nexp: int):
    from astropy.io import fits

    cols = []
    for name, fmt in _OBSINFO_COLUMNS:
        if fmt.endswith("A"):
            val = {
                "SLITFILE": f"slitmap-{g.plate}-57000-01.par",
                "METFILE": "ma060-56887-3.par",
                "HARNAME": "ma060",
                "MANGAID": g.mangaid[:8],
                "EXPNUM": "",
                "MGDPOS": "N",
                "TAIBEG": "2016-01-01T03",
            }[name]
            arr = np.array([val] * nexp)
            if name == "EXPNUM":
                arr = np.array([f"{200000 + i:08d}" for i in range(nexp)])
            if name == "MGDPOS":
                arr = np.array(["NSE"[i % 3] for i in range(nexp)])
        else:
            dtype = {"J": "i4", "I": "i2", "E": "f4", "D": "f8"}[fmt]
            val = {
                "IFUDESIGN": g.ifudsgn, "PLATEID": g.plate, "DESIGNID": g.plate + 500, "CARTID": 3, "MJD": 57000,
                "EXPTIME": 900.0, "IFURA": g.ifura, "IFUDEC": g.ifudec, "CENRA": g.ifura + 0.8, "CENDEC": g.ifudec - 0.1,
                "MNGTARG1": 2336, "SEEING": 1.4, "TRANSPAR": 0.83, "AIRMASS": 1.05, "PSFFAC": 1.0, "EAMFIT_A": 1.0,
            }.get(name, 0)  # fmt: skip
            arr = np.full(nexp, val, dtype=dtype)
            if name == "SET":
                arr = (np.arange(nexp) // 3).astype(dtype)
        cols.append(fits.Column(name=name, format=fmt, array=arr))
    hdu = fits.BinTableHDU.from_columns(cols, name="OBSINFO")
    return hdu


def _correl_hdu(name: str, inside: np.ndarray, bbwave: float, bbindex: int):
    """Sparse spaxel correlation matrix at a broad-band wavelength, as the DRP
    stores it: (INDXI_C1, INDXI_C2, INDXJ_C1, INDXJ_C2, RHOIJ) for pairs within
    2.5 spaxels, with a Gaussian fall-off (Law et al. 2016: rho ~ exp(-d^2/2/1.9^2))."""
    from astropy.io import fits

    ys, xs = np.nonzero(inside)
    rows = []
    for dy in range(-2, 3):
        for dx in range(0, 3):
            if dx == 0 and dy <= 0:
                continue
            d2 = dx * dx + dy * dy
            if d2 > 6.25:
                continue
            x2, y2 = xs + dx, ys + dy
            ok = (x2 < inside.shape[1]) & (y2 >= 0) & (y2 < inside.shape[0])
            ok[ok] = inside[y2[ok], x2[ok]]
            rows.append((xs[ok], ys[ok], x2[ok], y2[ok], np.full(ok.sum(), np.exp(-d2 / (2 * 1.9**2)))))
    c = [np.concatenate([r[k] for r in rows]) for k in range(5)]
    n = inside.size
    hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="INDXI_C1", format="J", array=c[0].astype("i4")),
            fits.Column(name="INDXI_C2", format="J", array=c[1].astype("i4")),
            fits.Column(name="INDXJ_C1", format="J", array=c[2].astype("i4")),
            fits.Column(name="INDXJ_C2", format="J", array=c[3].astype("i4")),
            fits.Column(name="RHOIJ", format="D", array=c[4]),
        ],
        name=name,
    )
    hdu.header["BBWAVE"] = (bbwave, "Wavelength (Angstroms)")
    hdu.header["BBINDEX"] = (bbindex, "Slice number")
    hdu.header["COVTYPE"] = "Correlation"
    hdu.header["COVSHAPE"] = f"({n},{n})"
    return hdu


def spectral_resolution(wave: np.ndarray) -> np.ndarray:
    """MaNGA-like resolving power R(lambda): ~1400 at 3600 A to ~2600 at 10300 A."""
    return 1400.0 + 1200.0 * (wave - 3600.0) / 6700.0


def galaxy_pixel_offsets(g: GalaxyParams, n: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Sky offsets (arcsec) of every spaxel centre from the galaxy centre on an
    n x n cube, through the cube's TAN WCS; also the centre's (x, y) pixel."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.crpix = [n / 2.0 + 1.0, n / 2.0 + 1.0]
    w.wcs.crval = [g.ifura, g.ifudec]
    w.wcs.cd = [[-0.000138889, 0.0], [0.0, 0.000138889]]
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    xc, yc = (float(v) for v in w.world_to_pixel_values(g.objra, g.objdec))
    yy, xx = np.mgrid[:n, :n].astype(float)
    # +x on the sky is west (CD1_1 < 0); the model geometry only needs offsets
    return (xx - xc) * SPAXEL_ARCSEC, (yy - yc) * SPAXEL_ARCSEC, xc, yc


def build_logcube(
    g: GalaxyParams,
    lines: LineList,
    rng: np.random.Generator,
    *,
    drp3qual: int = 0,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
):
    """Render galaxy ``g`` into an ``astropy.io.fits.HDUList`` laid out exactly as a
    DR17 LOGCUBE (24 HDUs in order, DRP header keys, (4563, NY, NX) arrays).

    ``arrays`` = (flux, ivar, mask) replaces the rendered FLUX/IVAR/MASK (e.g. to
    put real MaNGA spectra into a cube with the real headers); each must be
    (4563, n, n) for the IFU size of ``g``.
    """
    from astropy.io import fits

    n = IFU_CUBE_SIZE[g.ifusize]
    wave = log_wave_grid()
    inside = hexagon_mask(n, n, IFU_DIAMETER_ARCSEC[g.ifusize])
    if arrays is None:
        dx, dy, _, _ = galaxy_pixel_offsets(g, n)
        model, star_map = render_model(g, wave, dx, dy, lines)
        # coverage: fewer fibre-exposures on the rim of the footprint (LOWCOV there)
        from scipy.ndimage import binary_erosion

        core = binary_erosion(inside, iterations=2)
        coverage = np.where(core, 1.0, np.where(inside, 0.5, 0.0)).astype(np.float32)
        flux, ivar = realise_noise(model, sky_sigma(wave, g.sky_sigma), coverage, g.gain, rng)
        del model
        flux = quantize_step(flux, float(1.0 / np.sqrt(ivar[:, inside].max())))
        outside = ~inside
        flux[:, outside] = 0.0
        ivar[:, outside] = 0.0
        mask2d = np.zeros((n, n), dtype=np.int32)
        mask2d[outside] = DRP3PixMask.NOCOV | DRP3PixMask.DONOTUSE
        mask2d[inside & ~core] |= DRP3PixMask.LOWCOV
        mask2d[star_map & inside] |= DRP3PixMask.FORESTAR | DRP3PixMask.DONOTUSE
        mask = np.broadcast_to(mask2d, flux.shape).copy()
    else:
        flux, ivar, mask = arrays
        if flux.shape != (NWAVE, n, n):
            raise ValueError(f"arrays must be ({NWAVE}, {n}, {n}) for a {g.ifusize}-fibre IFU, got {flux.shape}")

    keys = _obs_keys(g, rng)
    nexp = int(dict((k, v) for k, v, _ in keys)["NEXP"])
    if drp3qual:
        keys = [(k, drp3qual if k == "DRP3QUAL" else v, c) for k, v, c in keys]
    primary = fits.PrimaryHDU()
    for k, v, c in keys:
        primary.header[k] = (v, c)

    def cube_header(extname: str, cls2: str, extra: list[tuple[str, object, str]]) -> fits.Header:
        h = fits.Header()
        for k, v, c in extra:
            h[k] = (v, c)
        h["HDUCLASS"] = ("SDSS", "SDSS format class")
        h["HDUCLAS1"] = "CUBE"
        h["HDUCLAS2"] = cls2
        return h

    spectral = [
        ("CTYPE3", "WAVE-LOG", ""),
        ("CRPIX3", 1, "Starting pixel (1-indexed)"),
        ("CRVAL3", CRVAL3, "Central wavelength of first pixel"),
        ("CD3_3", CD3_3, "Initial dispersion per pixel"),
        ("CUNIT3", "Angstrom", ""),
    ]
    hflux = cube_header("FLUX", "DATA", keys + spectral + _spatial_wcs_keys(g, n))
    hflux["ERRDATA"] = ("IVAR", "Error extension name")
    hflux["QUALDATA"] = ("MASK", "Mask extension name")
    hivar = cube_header("IVAR", "ERROR", [])
    hivar["HDUCLAS3"] = ("INVMSE", "Inverse variance")
    hivar["SCIDATA"] = ("FLUX", "Science extension name")
    hivar["QUALDATA"] = ("MASK", "Mask extension name")
    hmask = cube_header("MASK", "QUALITY", [])
    hmask["HDUCLAS3"] = "FLAG64BIT"
    hmask["SCIDATA"] = ("FLUX", "Science extension name")
    hmask["ERRDATA"] = ("IVAR", "Error extension name")

    res = spectral_resolution(wave)
    lsf_post = (wave / res / 2.3548).astype(np.float32)
    lsf_pre = (lsf_post * 0.95).astype(np.float32)
    lsf_post_cube = np.where(inside[None], lsf_post[:, None, None], np.float32(0)).astype(np.float32)
    lsf_pre_cube = np.where(inside[None], lsf_pre[:, None, None], np.float32(0)).astype(np.float32)

    hdus = [
        primary,
        fits.ImageHDU(flux, header=hflux, name="FLUX"),
        fits.ImageHDU(ivar, header=hivar, name="IVAR"),
        fits.ImageHDU(mask, header=hmask, name="MASK"),
        fits.ImageHDU(lsf_post_cube, name="LSFPOST"),
        fits.ImageHDU(lsf_pre_cube, name="LSFPRE"),
        fits.ImageHDU(wave, name="WAVE"),
        fits.ImageHDU(res, name="SPECRES"),
        fits.ImageHDU(np.full_like(res, 50.0), name="SPECRESD"),
        fits.ImageHDU(res * 1.05, name="PRESPECRES"),
        fits.ImageHDU(np.full_like(res, 52.0), name="PRESPECRESD"),
        _obsinfo_hdu(g, nexp),
    ]
    bands = {"G": (4702.5, 4000, 5500), "R": (6176.58, 5500, 6900), "I": (7496.12, 6900, 8200), "Z": (8946.71, 8200, 9800)}
    img_keys = _spatial_wcs_keys(g, n) + [
        ("IFURA", g.ifura, "IFU R.A. (J2000 deg.)"),
        ("IFUDEC", g.ifudec, "IFU Dec. (J2000 deg.)"),
        ("OBJRA", g.objra, "Object R.A. (J2000 deg.)"),
        ("OBJDEC", g.objdec, "Object Dec. (J2000 deg.)"),
        ("BSCALE", 1.0, "Flux unit scaling"),
        ("BZERO", 0.0, "Flux zeropoint"),
        ("BUNIT", "nanomaggies/pixel", ""),
    ]
    fwhm = {k: v for k, v, _ in keys if k.endswith("FWHM")}
    for b, (_, lo, hi) in bands.items():
        sel = (wave >= lo) & (wave < hi)
        img = (flux[sel].mean(axis=0) * 0.3).astype(np.float32)  # ~nanomaggies per spaxel for 1e-17 flux density
        h = fits.Header()
        for k, v, c in img_keys:
            h[k] = (v, c)
        h[f"{b}FWHM"] = (fwhm[f"{b}FWHM"], f"Reconstructed FWHM in {b.lower()}-band (arcsec)")
        hdus.append(fits.ImageHDU(img, header=h, name=f"{b}IMG"))
    yy, xx = np.mgrid[:n, :n].astype(float)
    for b in bands:
        sig = fwhm[f"{b}FWHM"] / 2.3548 / SPAXEL_ARCSEC
        psf = np.exp(-0.5 * (((xx - n / 2.0) ** 2 + (yy - n / 2.0) ** 2) / sig**2))
        h = fits.Header()
        for k, v, c in img_keys:
            h[k] = (v, c)
        h[f"{b}FWHM"] = (fwhm[f"{b}FWHM"], f"Reconstructed FWHM in {b.lower()}-band (arcsec)")
        hdus.append(fits.ImageHDU((psf / psf.sum()).astype(np.float32), header=h, name=f"{b}PSF"))
    for b, (bbwave, _, _) in bands.items():
        bbindex = int(np.argmin(np.abs(wave - bbwave)))
        hdus.append(_correl_hdu(f"{b}CORREL", inside, bbwave, bbindex))
    return fits.HDUList(hdus)


def write_fits_gz(hdul, path: str | os.PathLike, level: int = 1) -> None:
    """Write an HDUList as ``.fits.gz`` (single-member gzip, like the DRP's files)
    with ISA-L's fast deflate, atomically (temporary name, then rename). The gzip
    header's mtime is 0, so the same galaxy gives the same bytes."""
    from isal import igzip

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw, igzip.IGzipFile(filename="", fileobj=raw, mode="wb", compresslevel=level, mtime=0) as fh:
            hdul.writeto(fh)


# --------------------------------------------------------------------------
# drpall
# --------------------------------------------------------------------------

#: DR17 drpall MANGA columns (sdss/datamodel mangaDRPall.yaml): name, FITS format.
DRPALL_COLUMNS: tuple[tuple[str, str], ...] = (
    ("plate", "K"), ("ifudsgn", "21A"), ("plateifu", "11A"), ("mangaid", "11A"), ("versdrp2", "6A"),
    ("versdrp3", "6A"), ("verscore", "6A"), ("versutil", "7A"), ("versprim", "4A"), ("platetyp", "14A"),
    ("srvymode", "12A"), ("objra", "D"), ("objdec", "D"), ("ifuglon", "D"), ("ifuglat", "D"), ("ifura", "D"),
    ("ifudec", "D"), ("ebvgal", "D"), ("nexp", "K"), ("exptime", "D"), ("drp3qual", "K"), ("bluesn2", "D"),
    ("redsn2", "D"), ("harname", "35A"), ("frlplug", "K"), ("cartid", "11A"), ("designid", "K"), ("cenra", "D"),
    ("cendec", "D"), ("airmsmin", "D"), ("airmsmed", "D"), ("airmsmax", "D"), ("seemin", "D"), ("seemed", "D"),
    ("seemax", "D"), ("transmin", "D"), ("transmed", "D"), ("transmax", "D"), ("mjdmin", "K"), ("mjdmed", "K"),
    ("mjdmax", "K"), ("gfwhm", "D"), ("rfwhm", "D"), ("ifwhm", "D"), ("zfwhm", "D"), ("mngtarg1", "K"),
    ("mngtarg2", "K"), ("mngtarg3", "K"), ("catidnum", "K"), ("plttarg", "19A"), ("manga_tileid", "K"),
    ("nsa_iauname", "19A"), ("ifudesignsize", "K"), ("ifutargetsize", "K"), ("ifudesignwrongsize", "K"),
    ("z", "D"), ("zmin", "D"), ("zmax", "D"), ("szmin", "D"), ("szmax", "D"), ("ezmin", "D"), ("ezmax", "D"),
    ("probs", "D"), ("pweight", "D"), ("psweight", "D"), ("psrweight", "D"), ("sweight", "D"), ("srweight", "D"),
    ("eweight", "D"), ("esweight", "D"), ("esrweight", "D"), ("nsa_field", "K"), ("nsa_run", "K"),
    ("nsa_camcol", "K"), ("nsa_version", "6A"), ("nsa_nsaid", "K"), ("nsa_nsaid_v1b", "K"), ("nsa_z", "D"),
    ("nsa_zdist", "D"), ("nsa_sersic_absmag", "7D"), ("nsa_elpetro_absmag", "7D"), ("nsa_elpetro_amivar", "7D"),
    ("nsa_sersic_mass", "D"), ("nsa_elpetro_mass", "D"), ("nsa_elpetro_ba", "D"), ("nsa_elpetro_phi", "D"),
    ("nsa_extinction", "7D"), ("nsa_elpetro_th50_r", "D"), ("nsa_petro_th50", "D"), ("nsa_petro_flux", "7D"),
    ("nsa_petro_flux_ivar", "7D"), ("nsa_elpetro_flux", "7D"), ("nsa_elpetro_flux_ivar", "7D"),
    ("nsa_sersic_ba", "D"), ("nsa_sersic_n", "D"), ("nsa_sersic_phi", "D"), ("nsa_sersic_th50", "D"),
    ("nsa_sersic_flux", "7D"), ("nsa_sersic_flux_ivar", "7D"),
)  # fmt: skip


def write_drpall(rows: Sequence[dict], path: str | os.PathLike) -> None:
    """Write a DR17-format drpall (PRIMARY, MANGA, MASTAR) from row dicts; columns a
    row does not give get the DRP's placeholder (-999 or empty)."""
    from astropy.io import fits

    cols = []
    for name, fmt in DRPALL_COLUMNS:
        if fmt.endswith("A"):
            arr = np.array([str(r.get(name, "")) for r in rows], dtype=f"U{int(fmt[:-1])}")
        elif fmt == "K":
            arr = np.array([int(r.get(name, -999)) for r in rows], dtype=np.int64)
        elif fmt == "D":
            arr = np.array([float(r.get(name, -999.0)) for r in rows], dtype=np.float64)
        else:
            arr = np.array([r.get(name, [-999.0] * 7) for r in rows], dtype=np.float64).reshape(len(rows), 7)
        cols.append(fits.Column(name=name, format=fmt, array=arr))
    manga = fits.BinTableHDU.from_columns(cols, name="MANGA")
    mastar = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="plate", format="K", array=np.zeros(0, np.int64)),
            fits.Column(name="ifudsgn", format="21A", array=np.zeros(0, "U21")),
            fits.Column(name="plateifu", format="11A", array=np.zeros(0, "U11")),
            fits.Column(name="mangaid", format="11A", array=np.zeros(0, "U11")),
        ],
        name="MASTAR",
    )
    with atomic_path(path) as tmp:
        fits.HDUList([fits.PrimaryHDU(), manga, mastar]).writeto(tmp, overwrite=True)


def drpall_row(g: GalaxyParams, **overrides) -> dict:
    """The drpall row of a simulated galaxy."""
    row = {
        "plate": g.plate,
        "ifudsgn": str(g.ifudsgn),
        "plateifu": g.plateifu,
        "mangaid": g.mangaid,
        "versdrp2": DR17_DRPVER,
        "versdrp3": DR17_DRPVER,
        "verscore": "v1_9_1",
        "versutil": "v5_5_36",
        "versprim": "v2_9",
        "platetyp": "APOGEE-2&MaNGA",
        "srvymode": "MaNGA dither",
        "objra": g.objra,
        "objdec": g.objdec,
        "ifura": g.ifura,
        "ifudec": g.ifudec,
        "nexp": 9,
        "exptime": 8100.9,
        "drp3qual": 0,
        "mngtarg1": 2336,
        "mngtarg2": 0,
        "mngtarg3": 0,
        "ifudesignsize": g.ifusize,
        "ifutargetsize": g.ifusize,
        "ifudesignwrongsize": 0,
        "z": g.z,
        "nsa_z": g.z,
        "nsa_version": "v1_0_1",
        "designid": g.plate + 500,
        "cartid": "3",
        "harname": "ma060",
        "catidnum": 1,
        "plttarg": "plateTargets-1.par",
    }
    row.update(overrides)
    return row


# --------------------------------------------------------------------------
# Survey
# --------------------------------------------------------------------------


def plan_survey(
    n_galaxies: int, seed: int, anomaly_fraction: float = 0.06, style: str | SurveyStyle = "default"
) -> list[GalaxyParams]:
    """Draw the galaxies of a survey: plates, IFUs, classes and injected anomalies.

    Every anomaly type appears at least once when ``n_galaxies * anomaly_fraction``
    allows; anomalies are spread over random galaxies. Deterministic in ``seed``.
    ``style``: a :class:`SurveyStyle` or a name in :data:`SURVEY_STYLES`.
    """
    st = SURVEY_STYLES[style] if isinstance(style, str) else style
    rng = np.random.default_rng(seed)
    seeds = np.random.SeedSequence(seed).spawn(n_galaxies)
    n_anom = int(round(n_galaxies * anomaly_fraction))
    anomalies = [ANOMALY_TYPES[i % len(ANOMALY_TYPES)] for i in range(n_anom)] + [""] * (n_galaxies - n_anom)
    anomalies = list(rng.permutation(np.array(anomalies, dtype=object)))
    classes = rng.choice(len(CLASSES), size=n_galaxies, p=st.class_probs)
    sizes = rng.choice(IFU_SIZES, size=n_galaxies, p=st.ifu_probs)
    galaxies = []
    plate = 8000 + int(rng.integers(0, 1000)) // 10 * 10
    used: dict[int, int] = {}
    per_plate = 0
    for i in range(n_galaxies):
        if per_plate >= 12:
            plate += int(rng.integers(1, 40))
            used = {}
            per_plate = 0
        size = int(sizes[i])
        used[size] = used.get(size, 0) + 1
        ifudsgn = int(f"{size}{used[size]:02d}")
        per_plate += 1
        sub = np.random.default_rng(seeds[i])
        galaxies.append(
            draw_galaxy(
                i, plate, ifudsgn, size, CLASSES[classes[i]], str(anomalies[i]), sub, int(seeds[i].generate_state(1)[0]), st
            )
        )
    for g in galaxies:
        _assign_agn(g, np.random.default_rng([seed, g.index, 7]))
    return galaxies


def _assign_agn(g: GalaxyParams, rng: np.random.Generator) -> None:
    """AGN selection flags in the proportions of Comerford et al. (2020): radio
    dominates, mid-IR next, hard X-ray and broad lines rare."""
    p_radio = {"seyfert": 0.5, "liner": 0.4, "composite": 0.1, "star-forming": 0.03}[g.cls]
    p_wise = {"seyfert": 0.45, "liner": 0.05, "composite": 0.05, "star-forming": 0.005}[g.cls]
    p_bat = {"seyfert": 0.12, "liner": 0.0, "composite": 0.0, "star-forming": 0.0}[g.cls]
    flags = {
        "wise_agn": bool(rng.random() < p_wise),
        "bat_agn": bool(rng.random() < p_bat),
        "radio_agn": bool(rng.random() < p_radio),
        "broad_agn": g.anomaly == "broad_balmer",
    }
    if g.cls == "seyfert" and not any(flags.values()):
        flags["radio_agn" if rng.random() < 0.6 else "wise_agn"] = True
    g.agn = flags


def _write_one(args) -> tuple[str, int]:
    g, out, drpver, lines_path, level = args
    lines = load_lines(lines_path)
    rng = np.random.default_rng([g.seed, 1])
    hdul = build_logcube(g, lines, rng)
    path = logcube_path(out, drpver, g.plate, g.ifudsgn)
    write_fits_gz(hdul, path, level=level)
    return g.plateifu, path.stat().st_size


def simulate_survey(
    out: str | os.PathLike,
    n_galaxies: int,
    seed: int,
    *,
    drpver: str = DR17_DRPVER,
    anomaly_fraction: float = 0.06,
    lines_path: str | os.PathLike | None = None,
    threads: int = 1,
    compresslevel: int = 1,
    extras: bool = True,
    progress: bool = True,
) -> list[GalaxyParams]:
    """Write a synthetic survey in the real DR17 formats under ``out``.

    ``extras`` adds drpall rows that a real drpall also has and that sample
    selection must drop: a star (mngtarg2 only), a CRITICAL cube, a galaxy with
    no redshift and a repeat observation of a galaxy in a smaller IFU. Their
    cubes are not written (none would be used).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    out = Path(out)
    galaxies = plan_survey(n_galaxies, seed, anomaly_fraction)
    rows = [drpall_row(g) for g in galaxies]
    if extras and galaxies:
        g0 = galaxies[0]
        last_plate = max(g.plate for g in galaxies) + 7
        rows.append(drpall_row(g0, plate=last_plate, ifudsgn="1901", plateifu=f"{last_plate}-1901", ifudesignsize=19))
        rows.append(
            drpall_row(
                g0, plate=last_plate, ifudsgn="1902", plateifu=f"{last_plate}-1902", mangaid="1-999001", mngtarg1=0, mngtarg2=64
            )
        )
        rows.append(
            drpall_row(
                g0,
                plate=last_plate,
                ifudsgn="3701",
                plateifu=f"{last_plate}-3701",
                mangaid="1-999002",
                drp3qual=DRP3QUAL_CRITICAL,
            )
        )
        rows.append(
            drpall_row(
                g0, plate=last_plate, ifudsgn="3702", plateifu=f"{last_plate}-3702", mangaid="1-999003", z=-999.0, nsa_z=-999.0
            )
        )
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(g, out, drpver, lines_path, compresslevel) for g in galaxies]
    bar = tqdm(total=len(jobs), desc="simulate LOGCUBEs", unit="cube", disable=not progress, file=sys.stderr)
    if threads > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=threads, mp_context=mp.get_context("fork")) as pool:
            for _ in pool.map(_write_one, jobs):
                bar.update()
    else:
        for job in jobs:
            _write_one(job)
            bar.update()
    bar.close()
    write_drpall(rows, drpall_path(out, drpver))
    agn = pd.DataFrame(
        [{"mangaid": g.mangaid, "plateifu": g.plateifu, **g.agn} for g in galaxies if any(g.agn.values())],
        columns=["mangaid", "plateifu", "wise_agn", "bat_agn", "radio_agn", "broad_agn"],
    )
    truth = pd.DataFrame(
        [{"plateifu": g.plateifu, "class": g.cls, "is_anomaly": bool(g.anomaly), "anomaly_type": g.anomaly} for g in galaxies],
        columns=["plateifu", "class", "is_anomaly", "anomaly_type"],
    )
    from .formats import write_csv_atomic

    write_csv_atomic(agn, out / "agn.csv")
    write_csv_atomic(truth, out / "truth.csv")
    with atomic_path(out / "simulation.json") as tmp:
        tmp.write_text(
            json.dumps(
                {"n_galaxies": n_galaxies, "seed": seed, "anomaly_fraction": anomaly_fraction, "drpver": drpver,
                 "galaxies": [_params_json(g) for g in galaxies]},
                indent=1,
            )
        )  # fmt: skip
    return galaxies


def _params_json(g: GalaxyParams) -> dict:
    d = asdict(g)
    return json.loads(json.dumps(d, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


__all__ = [
    "ANOMALY_TYPES",
    "CLASSES",
    "GalaxyParams",
    "SURVEY_STYLES",
    "SurveyStyle",
    "build_logcube",
    "draw_galaxy",
    "plan_survey",
    "render_model",
    "simulate_survey",
    "with_anomaly",
    "write_drpall",
    "NWAVE",
]
