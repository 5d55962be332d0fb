"""Emission-line ratios of each ionisation class (star-forming, composite, Seyfert,
LINER, blueberry), Case-B Balmer ratios and dust: the line strengths a
component emits (facts and sources in docs/astro-facts.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from linecube.io.formats import (
    LineList,
)
from linecube.physics.bpt import kauffmann03, kewley01, kewley06_seyfert_liner

CASE_B = {"Halpha": 2.86, "Hgamma": 0.47, "Hdelta": 0.26}


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
