"""The truth table: every parameter the simulator draws for a galaxy, one row each.

``truth.csv`` (bundled sample and scale mode alike) has, per plate-IFU:

* ``class``, ``is_anomaly``, ``anomaly_type``: the labels of the science benchmark;
* galaxy-integrated, intrinsic (dust-free) log line ratios of the narrow-line gas,
  ``log_n2ha`` ([NII]6585/Halpha), ``log_o3hb`` ([OIII]5008/Hbeta), ``log_s2ha``
  (([SII]6718+6733)/Halpha), ``log_o1ha`` ([OI]6302/Halpha): each component's line
  flux (its Hbeta peak x its profile's integral) summed over the components, then
  the ratio (a broad-line region, Balmer only, is left out);
* kinematics: ``gas_sigma_kms`` (flux-weighted intrinsic velocity dispersion of the
  narrow components, km/s, before the instrumental 70 km/s), ``vsini_kms`` (the
  disc's projected rotation amplitude v_max sin i, km/s), ``r_turn_arcsec``;
* geometry: ``incl_deg``, ``pa_deg`` (the disc's position angle, degrees in [0, 180),
  an orientation: augmentation changes it), ``disc_scale_arcsec`` (the gas disc's
  exponential scale length), ``nuclear_fraction`` (the share of the narrow Hbeta
  flux in a nuclear component);
* brightness: ``log_halpha_sb`` (log10 of the central intrinsic Halpha surface
  brightness, 1e-17 erg/s/cm^2/spaxel, summed over components);
* stars and dust: ``cont_peak``, ``cont_scale_arcsec``, ``cont_slope``, ``d4000``,
  ``balmer_abs_ew``, ``av``;
* observation: ``z``, ``ifusize``, ``sky_sigma``, ``gain``.
"""

from __future__ import annotations

import numpy as np

from linecube.simulate.galaxy import GalaxyParams
from linecube.simulate.ratios import CASE_B

#: orientation parameters: reported, but a representation is meant to ignore them
NUISANCE_PARAMETERS: tuple[str, ...] = ("pa_deg",)

TRUTH_COLUMNS: tuple[str, ...] = (
    "plateifu",
    "class",
    "is_anomaly",
    "anomaly_type",
    "log_n2ha",
    "log_o3hb",
    "log_s2ha",
    "log_o1ha",
    "gas_sigma_kms",
    "vsini_kms",
    "r_turn_arcsec",
    "incl_deg",
    "pa_deg",
    "disc_scale_arcsec",
    "nuclear_fraction",
    "log_halpha_sb",
    "cont_peak",
    "cont_scale_arcsec",
    "cont_slope",
    "d4000",
    "balmer_abs_ew",
    "av",
    "z",
    "ifusize",
    "sky_sigma",
    "gain",
    "ebvgal",
    "z_cat_offset_kms",
    "centre_offset_arcsec",
    "n_dead_fibres",
)


def _component_hbeta(c, cos_i: float) -> float:
    """Total Hbeta flux of one component (flux units x arcsec^2 / spaxel area, any
    consistent unit): its peak times the integral of its profile on the sky."""
    if c.profile == "disc":
        return c.hbeta_peak * 2.0 * np.pi * c.scale_arcsec**2 * cos_i
    if c.profile == "ring":  # a Gaussian annulus: 2 pi R x sqrt(2 pi) width (thin-ring limit)
        return c.hbeta_peak * 2.0 * np.pi * c.ring_radius_arcsec * np.sqrt(2 * np.pi) * c.scale_arcsec * cos_i
    return c.hbeta_peak * 2.0 * np.pi * c.scale_arcsec**2


def truth_row(g: GalaxyParams) -> dict:
    """One galaxy's row of the truth table (:data:`TRUTH_COLUMNS`)."""
    cos_i = max(float(np.cos(np.deg2rad(g.incl_deg))), 0.15)
    narrow = [c for c in g.components if not c.broad_balmer_only and c.ratios is not None]
    hb = np.array([_component_hbeta(c, cos_i) for c in narrow])
    ha = CASE_B["Halpha"] * hb

    def log_ratio(num, den):
        return float(np.log10(max(float(np.sum(num)), 1e-30) / max(float(np.sum(den)), 1e-30)))

    n2 = ha * np.array([10**c.ratios.n2 for c in narrow])
    s2 = ha * np.array([10**c.ratios.s2 for c in narrow])
    o1 = ha * np.array([10**c.ratios.o1 for c in narrow])
    o3 = hb * np.array([10**c.ratios.o3 for c in narrow])
    sig = np.array([c.sigma_kms for c in narrow])
    nuc = np.array([c.profile == "gauss" and c.x0_arcsec == 0 and c.y0_arcsec == 0 for c in narrow])
    disc = g.components[0]
    peak_ha = CASE_B["Halpha"] * sum(c.hbeta_peak for c in g.components if not c.broad_balmer_only)
    return {
        "plateifu": g.plateifu,
        "class": g.cls,
        "is_anomaly": bool(g.anomaly),
        "anomaly_type": g.anomaly,
        "log_n2ha": log_ratio(n2, ha),
        "log_o3hb": log_ratio(o3, hb),
        "log_s2ha": log_ratio(s2, ha),
        "log_o1ha": log_ratio(o1, ha),
        "gas_sigma_kms": float(np.sum(sig * hb) / max(np.sum(hb), 1e-30)),
        "vsini_kms": float(abs(disc.vmax_kms)),
        "r_turn_arcsec": float(g.r_turn_arcsec),
        "incl_deg": float(g.incl_deg),
        "pa_deg": float(g.pa_deg % 180.0),
        "disc_scale_arcsec": float(disc.scale_arcsec),
        "nuclear_fraction": float(np.sum(hb[nuc]) / max(np.sum(hb), 1e-30)) if len(narrow) > 1 else 0.0,
        "log_halpha_sb": float(np.log10(max(peak_ha, 1e-30))),
        "cont_peak": float(g.cont_peak),
        "cont_scale_arcsec": float(g.cont_scale_arcsec),
        "cont_slope": float(g.cont_slope),
        "d4000": float(g.d4000),
        "balmer_abs_ew": float(g.balmer_abs_ew),
        "av": float(g.av),
        "z": float(g.z),
        "ifusize": int(g.ifusize),
        "sky_sigma": float(g.sky_sigma),
        "gain": float(g.gain),
        "ebvgal": float(g.ebvgal),
        "z_cat_offset_kms": float(g.z_cat_kms),
        "centre_offset_arcsec": float(np.hypot((g.objra - g.ifura) * np.cos(np.deg2rad(g.ifudec)), g.objdec - g.ifudec) * 3600.0),
        "n_dead_fibres": len(g.dead_fibres),
    }


def truth_table(galaxies):
    """The truth table of a list of galaxies, a DataFrame with :data:`TRUTH_COLUMNS`."""
    import pandas as pd

    return pd.DataFrame([truth_row(g) for g in galaxies], columns=list(TRUTH_COLUMNS))
