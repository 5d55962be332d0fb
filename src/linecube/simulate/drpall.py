"""Writing the drpall catalogue: HDU 1 ``MANGA`` with the DR17 column names and
dtypes (and HDU 2 ``MASTAR``), one row per simulated galaxy.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from linecube.io.atomic import atomic_path
from linecube.io.manga import DR17_DRPVER
from linecube.simulate.galaxy import GalaxyParams

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
        "ebvgal": g.ebvgal,
        "nexp": 9,
        "exptime": 8100.9,
        "drp3qual": 0,
        "mngtarg1": 2336,
        "mngtarg2": 0,
        "mngtarg3": 0,
        "ifudesignsize": g.ifusize,
        "ifutargetsize": g.ifusize,
        "ifudesignwrongsize": 0,
        "z": g.z_cat,
        "nsa_z": g.z_cat,
        "nsa_version": "v1_0_1",
        "designid": g.plate + 500,
        "cartid": "3",
        "harname": "ma060",
        "catidnum": 1,
        "plttarg": "plateTargets-1.par",
    }
    row.update(overrides)
    return row
