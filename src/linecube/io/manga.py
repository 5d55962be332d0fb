"""MaNGA DR17 files: DRP constants and mask bits, the drpall catalogue, the
streaming LOGCUBE reader with its WCS and wavelength-grid checks, and the cube
requests (one galaxy's LOGCUBE path and drpall values) built in one place.

Formats as the SAS serves them (DR17, DRP v3_1_1):

* ``{redux_dir}/{drpver}/drpall-{drpver}.fits``: HDU 1 ``MANGA`` (plate, ifudsgn,
  plateifu, mangaid, objra, objdec, z, mngtarg1-3, drp3qual, ...);
* ``{redux_dir}/{drpver}/{plate}/stack/manga-{plate}-{ifudsgn}-LOGCUBE.fits.gz``:
  FLUX, IVAR, MASK (4563, NY, NX) on the log-lambda grid from 3621.596 A
  (dlog10 = 1e-4, vacuum), flux in 1e-17 erg/s/cm^2/A/spaxel.

Plain numpy/astropy: no TensorFlow, Keras or umap.
"""

from __future__ import annotations

import enum
import os
import re
from pathlib import Path

import numpy as np

#: DRP version of DR17.


#: DRP version of DR17.
DR17_DRPVER = "v3_1_1"


#: Number of log-spaced wavelength bins of a LOGCUBE.
NWAVE = 4563


#: Central vacuum wavelength of the first bin (Angstrom); CRVAL3.
CRVAL3 = 3621.59598486


#: Bin width in log10(lambda).
DLOG10 = 1e-4


#: CD3_3 as written by the DRP (Angstrom per pixel at the first bin).
CD3_3 = 0.833903304339


#: Spaxel size (arcsec).
SPAXEL_ARCSEC = 0.5


#: Flux unit string of the FLUX HDU (BUNIT).
BUNIT = "1E-17 erg/s/cm^2/Angstrom/spaxel"


#: Velocity width of one log-lambda bin (km/s): c * ln(10) * 1e-4.
KMS_PER_BIN = 299792.458 * np.log(10.0) * DLOG10


#: Speed of light (km/s).
C_KMS = 299792.458


#: HDU names of a DR17 LOGCUBE, in file order.
LOGCUBE_HDUS: tuple[str, ...] = (
    "PRIMARY",
    "FLUX",
    "IVAR",
    "MASK",
    "LSFPOST",
    "LSFPRE",
    "WAVE",
    "SPECRES",
    "SPECRESD",
    "PRESPECRES",
    "PRESPECRESD",
    "OBSINFO",
    "GIMG",
    "RIMG",
    "IIMG",
    "ZIMG",
    "GPSF",
    "RPSF",
    "IPSF",
    "ZPSF",
    "GCORREL",
    "RCORREL",
    "ICORREL",
    "ZCORREL",
)


#: IFU bundle size (fibres) -> cube side (spaxels) used by the DRP.
IFU_CUBE_SIZE: dict[int, int] = {19: 34, 37: 44, 61: 54, 91: 64, 127: 74}


#: IFU bundle size -> hexagon diameter (arcsec, corner to corner).
IFU_DIAMETER_ARCSEC: dict[int, float] = {19: 12.5, 37: 17.5, 61: 22.5, 91: 27.5, 127: 32.5}


class DRP3PixMask(enum.IntFlag):
    """Bits of MANGA_DRP3PIXMASK (the LOGCUBE MASK HDU), by name."""

    NOCOV = 1 << 0
    LOWCOV = 1 << 1
    DEADFIBER = 1 << 2
    FORESTAR = 1 << 3
    DONOTUSE = 1 << 10


#: DRP3QUAL bit 30: the whole cube is unusable.
DRP3QUAL_CRITICAL = 1 << 30


#: DRP mask bits that make a voxel unusable for linecube.
DRP_UNUSABLE = DRP3PixMask.NOCOV | DRP3PixMask.DEADFIBER | DRP3PixMask.FORESTAR | DRP3PixMask.DONOTUSE


PLATEIFU_RE = re.compile(r"^(\d{4,5})-(\d{3,5})$")


MANGAID_RE = re.compile(r"^\d{1,2}-\d{1,9}$")


def parse_plateifu(plateifu: str) -> tuple[int, int]:
    """Split a plate-IFU string such as ``'8485-1901'`` into (plate, ifudsgn).

    Raises ``ValueError`` naming the string for anything else, including
    strings that try to escape a directory (``'../8485-1901'``).
    """
    m = PLATEIFU_RE.match(str(plateifu).strip()) if isinstance(plateifu, str) else None
    if m is None:
        raise ValueError(f"malformed plate-IFU {plateifu!r}: expected PLATE-IFUDESIGN such as '8485-1901'")
    return int(m.group(1)), int(m.group(2))


def logcube_name(plate: int, ifudsgn: int) -> str:
    """File name of a LOGCUBE: ``manga-{plate}-{ifudsgn}-LOGCUBE.fits.gz``."""
    return f"manga-{int(plate)}-{int(ifudsgn)}-LOGCUBE.fits.gz"


#: where a LOGCUBE sits below the redux root in the SAS layout (also the workflow's pattern)
LOGCUBE_LAYOUT = "{drpver}/{plate}/stack/manga-{plate}-{ifudsgn}-LOGCUBE.fits.gz"


def logcube_path(redux_dir: str | os.PathLike, drpver: str, plate: int, ifudsgn: int) -> Path:
    """SAS path of a LOGCUBE: ``{redux_dir}/{drpver}/{plate}/stack/manga-...``."""
    return Path(redux_dir) / LOGCUBE_LAYOUT.format(drpver=drpver, plate=int(plate), ifudsgn=int(ifudsgn))


def drpall_path(redux_dir: str | os.PathLike, drpver: str) -> Path:
    """SAS path of the drpall catalogue: ``{redux_dir}/{drpver}/drpall-{drpver}.fits``."""
    return Path(redux_dir) / drpver / f"drpall-{drpver}.fits"


def plateifu_from_path(path: str | os.PathLike) -> str:
    """Plate-IFU from a LOGCUBE file name (``manga-8485-1901-LOGCUBE.fits.gz``)."""
    m = re.match(r"^manga-(\d{4,5})-(\d{3,5})-LOGCUBE\.fits(\.gz)?$", Path(path).name)
    if m is None:
        raise ValueError(f"{path}: not a LOGCUBE file name (manga-PLATE-IFU-LOGCUBE.fits.gz)")
    return f"{m.group(1)}-{m.group(2)}"


#: a galaxy's page in Marvin (DR17) and SkyServer's navigate view (DR17)
MARVIN_GALAXY = "https://dr17.sdss.org/marvin/galaxy/{plateifu}/"


SKYSERVER_NAVI = "https://skyserver.sdss.org/dr17/VisualTools/navi?ra={ra:.6f}&dec={dec:.6f}&scale=0.2"


def marvin_url(plateifu: str) -> str:
    """The galaxy's page in Marvin (DR17), from its plate-IFU."""
    return MARVIN_GALAXY.format(plateifu=str(plateifu).strip())


def skyserver_url(ra: float, dec: float) -> str:
    """SkyServer's navigate view (DR17) centred on (ra, dec) in degrees ('' if not finite)."""
    ra, dec = float(ra), float(dec)
    return SKYSERVER_NAVI.format(ra=ra, dec=dec) if np.isfinite(ra) and np.isfinite(dec) else ""


#: the file linecube's simulator writes at the top of every survey it makes
SIMULATION_MARKER = "simulation.json"


def foreign_survey(redux_dir: str | os.PathLike, drpver: str) -> str:
    """Why linecube's simulator must not write under ``redux_dir``, or '' if it may:
    the folder holds MaNGA files (a drpall, a ``{drpver}`` folder with content)
    that linecube did not simulate (no :data:`SIMULATION_MARKER` beside them) -
    a user's data mirror, which a simulated survey would overwrite."""
    root = Path(redux_dir)
    if (root / SIMULATION_MARKER).is_file():
        return ""
    found = []
    ver = root / drpver
    try:
        if ver.is_dir() and any(ver.iterdir()):
            found.append(str(ver))
        found += [str(p) for p in root.glob("drpall-*.fits")][:1]
    except OSError as e:
        return f"{root}: cannot be inspected ({e.strerror or e}); the simulator writes only where it can see no survey"
    if not found:
        return ""
    return (
        f"{root}: holds MaNGA data that linecube did not simulate ({found[0]}); the simulator never writes into "
        f"a survey it did not make. Set simulate.enabled: false to use this data, or point data.redux_dir elsewhere"
    )


def log_wave_grid(n: int = NWAVE) -> np.ndarray:
    """The DRP log-lambda grid (vacuum Angstrom, float64, shape (n,))."""
    return CRVAL3 * 10.0 ** (DLOG10 * np.arange(n))
