"""Galaxy parameters: classes, IFU sizes, survey styles, the gas components of a
galaxy, its observing conditions (sky noise), and the anomalies the simulator
can inject (``with_anomaly`` renders the same galaxy with one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from linecube.io.manga import IFU_DIAMETER_ARCSEC
from linecube.physics.bpt import kauffmann03
from linecube.simulate.ratios import Ratios, draw_ratios

#: excitation classes; ``quiescent``: an absorption-line (red-sequence) galaxy
#: with only faint diffuse LINER-like emission, a third of MaNGA's galaxies
CLASSES: tuple[str, ...] = ("star-forming", "composite", "seyfert", "liner", "quiescent")


CLASS_PROBS: tuple[float, ...] = (0.45, 0.12, 0.08, 0.1, 0.25)


ANOMALY_TYPES: tuple[str, ...] = (
    "blueberry",
    "broad_balmer",
    "double_peaked",
    "off_centre",
    "shock",
    "foreground_star",
)


#: anomaly kinds no score, feature or default of linecube was designed or tuned
#: for (the science benchmark's held-out kinds; never drawn into a survey, only
#: rendered as twins by :func:`with_anomaly`), each from the IFS literature:
#: ``outflow``: a nuclear ionised outflow, a broad blueshifted Seyfert-like
#: component (Rodriguez del Pino et al. 2019, MaNGA); ``misaligned_gas``: gas
#: rotating about another axis than the stars and the gas disc's shape
#: (kinematically misaligned or counter-rotating gas, Chen et al. 2016, MaNGA);
#: ``ring``: a star-forming ring at 40-60 % of the bundle's radius
#: (resonance / collisional rings, Buta & Combes 1996)
HELD_OUT_TYPES: tuple[str, ...] = ("outflow", "misaligned_gas", "ring")


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
        class_probs=(0.28, 0.16, 0.16, 0.2, 0.2),
        ifu_probs=(0.15, 0.25, 0.25, 0.2, 0.15),
        brightness=0.5,
        noise=2.5,
        sf_n2_shift=0.25,
    ),
}


SIGMA_INST_KMS = 70.0  #: instrumental dispersion (R ~ 2000)


PSF_FWHM_ARCSEC = 2.5
#: the stars' rotation amplitude over the gas disc's: stars rotate, slower than the
#: cold gas by asymmetric drift (their velocity dispersion supports part of them)
STELLAR_ROTATION = 0.8


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
    pa_offset_deg: float = 0.0  #: the velocity field's axis turned from the galaxy's (misaligned gas)
    ring_radius_arcsec: float = 0.0  #: profile "ring": radius of the ring (scale_arcsec its width)


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
    #: projected rotation amplitude of the stars (km/s; :data:`STELLAR_ROTATION` of the gas disc's)
    star_vmax_kms: float = 0.0
    components: list[Component] = field(default_factory=list)
    star: dict | None = None  #: foreground star (x0, y0 arcsec, amplitude)
    agn: dict = field(default_factory=dict)
    seed: int = 0
    # what the instrument and the catalogue add (:func:`draw_dr17_effects`; the
    # defaults add nothing): Galactic E(B-V) applied to the flux (mag), the
    # catalogue redshift's error (km/s), dead fibres (cube-pixel offsets of their
    # centres from the cube centre), the fraction of footprint voxels flagged
    # unusable holding zeros or spikes, and spatially correlated noise
    ebvgal: float = 0.0
    z_cat_kms: float = 0.0
    dead_fibres: tuple[tuple[float, float], ...] = ()
    bad_voxel_fraction: float = 0.0
    correlated_noise: bool = False

    @property
    def plateifu(self) -> str:
        return f"{self.plate}-{self.ifudsgn}"

    @property
    def z_cat(self) -> float:
        """The catalogue (drpall) redshift: the true one off by ``z_cat_kms``."""
        return float((1.0 + self.z) * (1.0 + self.z_cat_kms / 299792.458) - 1.0)


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
    disc_kind = "liner" if cls in ("liner", "quiescent") else "star-forming"
    faint = {"liner": 0.25, "quiescent": 0.03}.get(cls, 1.0)
    comps = [
        Component(
            disc_kind,
            "disc",
            h,
            hb_peak * faint,
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
        # (quiescent: an old population, raised below)
        balmer_abs_ew=rng.uniform(1.0, 5.0),
        av=rng.uniform(0.2, 1.5),
        sky_sigma=rng.uniform(0.03, 0.08),
        gain=rng.uniform(20, 60),
        components=comps,
        seed=seed,
        star_vmax_kms=float(STELLAR_ROTATION * vmax),
    )
    if cls == "quiescent":
        g.d4000 = float(rng.uniform(0.4, 0.6))
        g.cont_peak *= 2.0
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
    kinds = ANOMALY_TYPES + HELD_OUT_TYPES
    if anomaly not in kinds:
        raise ValueError(f"unknown anomaly type {anomaly!r}; expected one of {kinds}")
    twin = copy.deepcopy(g)
    twin.anomaly = anomaly
    _apply_anomaly(twin, np.random.default_rng([g.seed, 77, kinds.index(anomaly)]))
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
    elif a == "outflow":
        peak = max(c.hbeta_peak for c in g.components)
        g.components.append(
            Component(
                "seyfert",
                "gauss",
                rng.uniform(0.8, 1.5),
                peak * rng.uniform(0.3, 0.6),
                rng.uniform(250, 450),
                v_offset_kms=-rng.uniform(150, 400),
                ratios=draw_ratios("seyfert", rng),
            )
        )
    elif a == "misaligned_gas":
        for c in g.components:
            c.pa_offset_deg = float(rng.uniform(60, 180))  # one offset for the gas; 180: counter-rotating
            c.vmax_kms = max(abs(c.vmax_kms), 100.0 * np.sin(np.deg2rad(g.incl_deg)))
            break
    elif a == "ring":
        rad = rng.uniform(0.4, 0.6) * IFU_DIAMETER_ARCSEC[g.ifusize] / 2.0
        disc = g.components[0]
        g.components.append(
            Component(
                "star-forming",
                "ring",
                rng.uniform(0.6, 1.0),
                max(disc.hbeta_peak, 2.0) * rng.uniform(0.6, 1.2),
                35.0,
                disc.vmax_kms,
                ring_radius_arcsec=rad,
                ratios=draw_ratios("star-forming", rng),
            )
        )
        disc.hbeta_peak *= 0.3
    else:
        raise ValueError(f"unknown anomaly type {a!r}")


#: radius (spaxels) of the hole one dead 2" fibre leaves in a cube
DEAD_FIBRE_RADIUS = 2.0


def draw_dr17_effects(g: GalaxyParams, rng: np.random.Generator) -> None:
    """Give galaxy ``g`` (in place) what real DR17 cubes and the drpall carry that a
    clean simulation does not (docs/data.md): Galactic E(B-V) (SFD98-like, median
    ~0.035, 0.005-0.2), a catalogue redshift off by N(0, 30 km/s), the galaxy up to
    2 spaxels (1") off the IFU centre, dead fibres in 25 % of the cubes, a few per
    mille of flagged voxels (IVAR 0, DONOTUSE) holding zeros or spikes, and MaNGA's
    spatially correlated noise. Draws from ``rng`` only: the galaxy itself is unchanged."""
    g.ebvgal = float(np.clip(rng.lognormal(np.log(0.035), 0.6), 0.005, 0.2))
    g.z_cat_kms = float(rng.normal(0.0, 30.0))
    r, ang = 1.0 * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
    g.objra = float(g.ifura + r * np.cos(ang) / 3600.0 / np.cos(np.deg2rad(g.ifudec)))
    g.objdec = float(g.ifudec + r * np.sin(ang) / 3600.0)
    half = 0.7 * IFU_DIAMETER_ARCSEC[g.ifusize] / 2.0 / 0.5  # spaxels, inside the hexagon
    n_dead = int(rng.random() < 0.25) * int(rng.integers(1, 3))
    g.dead_fibres = tuple((float(rng.uniform(-half, half)), float(rng.uniform(-half, half))) for _ in range(n_dead))
    g.bad_voxel_fraction = float(rng.uniform(0.0, 0.004))
    g.correlated_noise = True


def sky_sigma(wave: np.ndarray, base: float) -> np.ndarray:
    """Sky noise per spaxel (flux units) at observed wavelengths: higher at the
    blue end, at the red end and on the bright sky lines."""
    s = 1.0 + 1.5 * np.exp(-(wave - 3600.0) / 300.0) + 0.8 * np.clip((wave - 8500.0) / 1800.0, 0, None)
    for lam, amp in ((5578.5, 4.0), (5891.6, 1.5), (5897.6, 1.5), (6301.7, 3.0), (6365.5, 1.5), (7246.0, 1.0), (7913.7, 1.0)):
        s = s + amp * np.exp(-0.5 * ((wave - lam) / 1.5) ** 2)
    return base * s
