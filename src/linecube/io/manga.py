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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

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


def logcube_path(redux_dir: str | os.PathLike, drpver: str, plate: int, ifudsgn: int) -> Path:
    """SAS path of a LOGCUBE: ``{redux_dir}/{drpver}/{plate}/stack/manga-...``."""
    return Path(redux_dir) / drpver / str(int(plate)) / "stack" / logcube_name(plate, ifudsgn)


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


def ensure_columns(columns: Sequence[str], required: Sequence[str], what: str) -> None:
    """Raise ``ValueError`` naming ``what`` if any required column is missing."""
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")


DRPALL_REQUIRED = (
    "plate",
    "ifudsgn",
    "plateifu",
    "mangaid",
    "objra",
    "objdec",
    "ifura",
    "ifudec",
    "z",
    "nsa_z",
    "mngtarg1",
    "mngtarg2",
    "mngtarg3",
    "drp3qual",
    "ifudesignsize",
    "nexp",
)
#: drpall columns read when present (a real DR17 drpall has them; older or
#: hand-made tables may not): ``ebvgal``, the SFD98 E(B-V) towards the object
DRPALL_OPTIONAL = ("ebvgal",)


def _as_text(arr: np.ndarray, path, column: str) -> np.ndarray:
    """A FITS string column as str; a byte that is not ASCII (FITS allows only
    ASCII text) is an error naming the file, the column and the row."""
    try:
        return arr.astype(str)
    except UnicodeDecodeError:
        for i, v in enumerate(arr):
            try:
                bytes(v).decode("ascii")
            except (UnicodeDecodeError, TypeError):
                raise ValueError(
                    f"{path}: column {column}, table row {i + 1} (1-based) holds non-ASCII bytes {bytes(v)!r}; "
                    "FITS table text is ASCII: fix or drop that row"
                ) from None
        raise


def read_drpall(path: str | os.PathLike, hdu: str = "MANGA"):
    """The drpall MANGA table as a DataFrame of the columns linecube uses.

    Strings are stripped; multi-dimensional columns are dropped.
    """
    import pandas as pd
    from astropy.io import fits

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"drpall catalogue {path} does not exist")
    try:
        with fits.open(path, memmap=False) as hl:
            names = [h.name for h in hl]
            if hdu not in names:
                ext = 1
                if len(hl) < 2:
                    raise ValueError(f"{path}: no table HDU (expected HDU 1 named {hdu})")
            else:
                ext = hdu
            if not isinstance(hl[ext], fits.BinTableHDU | fits.TableHDU):
                what = "a LOGCUBE" if "FLUX" in names else f"a {type(hl[ext]).__name__}"
                raise ValueError(f"{path}: HDU {ext} is {what}, not the drpall's MANGA table (is this the drpall?)")
            data = hl[ext].data
            cols = [c.name for c in hl[ext].columns]
            ensure_columns([c.lower() for c in cols], DRPALL_REQUIRED, f"drpall {path} HDU {ext}")
            out = {}
            for c in cols:
                lc = c.lower()
                if lc not in DRPALL_REQUIRED and lc not in DRPALL_OPTIONAL:
                    continue
                arr = np.asarray(data[c])
                if arr.ndim > 1:
                    continue
                if arr.dtype.kind in "SU":
                    out[lc] = np.char.strip(_as_text(arr, path, c))
                else:
                    out[lc] = arr.astype(arr.dtype.newbyteorder("="))
    except OSError as e:
        raise ValueError(f"{path}: cannot read as a drpall FITS table ({e})") from None
    df = pd.DataFrame(out)
    dup = df["plateifu"].duplicated(keep=False)
    if dup.any():  # DR17's drpall has one row per cube: two rows are an edited or merged file
        first = df.loc[dup, "plateifu"].iloc[0]
        rows = np.flatnonzero(df["plateifu"].to_numpy() == first)
        raise ValueError(
            f"{path}: {int(df.loc[dup, 'plateifu'].nunique())} plate-IFU(s) have more than one row, e.g. {first} in "
            f"table rows {', '.join(str(i + 1) for i in rows)} (1-based); keep one row per cube"
        )
    return df


BLOCK = 2880


_GZIP_MAGIC = b"\x1f\x8b"


def decompress_errors() -> tuple[type[BaseException], ...]:
    """Exception types a broken deflate stream raises (ISA-L's are not OSErrors)."""
    import zlib

    from isal.isal_zlib import IsalError

    return (IsalError, zlib.error)


class CubeError(Exception):
    """A cube that cannot be used; the message says why in words."""


@dataclass(frozen=True)
class CubeRequest:
    """One galaxy to extract: its LOGCUBE and drpall values."""

    plateifu: str
    path: str
    mangaid: str
    z: float
    objra: float
    objdec: float
    #: drpall ``ebvgal`` (mag): the Galactic E(B-V) used when the LOGCUBE's header has no EBVGAL
    ebvgal: float | None = None


_WCS_KEY = re.compile(
    r"^(NAXIS\d?|WCSAXES|CTYPE\d|CRPIX\d|CRVAL\d|CDELT\d|CD\d_\d|PC\d_\d|CUNIT\d|CROTA\d|RADESYS|EQUINOX|LONPOLE|LATPOLE)$"
)


def cube_wcs(header):
    """astropy WCS of a cube header, built from its WCS cards only (the DRP's
    PLATEID and DATE-OBS cards are not WCS and only make astropy warn)."""
    import warnings

    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    h = fits.Header([c for c in header.cards if _WCS_KEY.match(c.keyword)])
    with warnings.catch_warnings():  # astropy's notes on cards it normalised: not the user's concern
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(h)


def centre_pixel(header, objra: float, objdec: float) -> tuple[float, float]:
    """0-based (x, y) pixel of (objra, objdec) through the celestial WCS of a header."""
    x, y = cube_wcs(header).celestial.world_to_pixel_values(objra, objdec)
    return float(x), float(y)


def header_wavelengths(header) -> np.ndarray:
    """Vacuum wavelengths (A) of every bin, from the spectral WCS of a header."""
    w = cube_wcs(header).spectral
    n = int(header["NAXIS3"])
    return np.asarray(w.pixel_to_world_values(np.arange(n)), dtype=float) * 1e10  # m -> A


def check_wave_grid(header, where: str) -> None:
    """Reject a cube whose wavelength axis is not the DR17 LOGCUBE grid."""
    naxis3 = header.get("NAXIS3")
    if naxis3 != NWAVE:
        raise CubeError(f"{where}: wavelength axis has NAXIS3={naxis3}, expected {NWAVE} (the DR17 LOGCUBE grid)")
    if str(header.get("CTYPE3", "")).strip() != "WAVE-LOG":
        raise CubeError(f"{where}: CTYPE3={header.get('CTYPE3')!r}, expected 'WAVE-LOG' (is this a LINCUBE?)")
    try:
        wave = header_wavelengths(header)
    except Exception as e:  # astropy: unknown CUNIT3, missing CDELT/CD, ...
        raise CubeError(f"{where}: the spectral WCS cannot be read ({type(e).__name__}: {e})") from None
    # One definition, the reader's: the wavelengths astropy derives from CTYPE3,
    # CRVAL3, CRPIX3, CD3_3 (or CDELT3) and CUNIT3 must be DR17's grid to a tenth of
    # its first bin (0.08 A), whichever reference pixel the header uses.
    ref = log_wave_grid(NWAVE)
    dev = float(np.nanmax(np.abs(wave - ref))) if np.isfinite(wave).all() else np.inf
    if not dev < 0.1 * (ref[1] - ref[0]):
        i = int(np.nanargmax(np.abs(wave - ref))) if np.isfinite(dev) else 0
        raise CubeError(
            f"{where}: the spectral WCS (CRVAL3={header.get('CRVAL3')}, CRPIX3={header.get('CRPIX3', 1)}, "
            f"CD3_3={header.get('CD3_3', header.get('CDELT3'))}, CUNIT3={header.get('CUNIT3', 'Angstrom')!r}) puts bin {i} at "
            f"{wave[i]:.2f} A where the DR17 log-lambda grid ({CRVAL3} A at bin 0, CD3_3={CD3_3}) has {ref[i]:.2f} A"
        )


class LogcubeStream:
    """Forward-only reader of a (gzipped) FITS file: headers one by one, data by
    skipping or reading exact byte ranges. Nothing is decompressed twice."""

    def __init__(self, path: str | os.PathLike, chunk: int = 1 << 22):
        self.path = str(path)
        raw = open(self.path, "rb")
        head = raw.read(2)
        raw.seek(0)
        if head == _GZIP_MAGIC:
            from isal import igzip

            self._fh = igzip.IGzipFile(fileobj=raw, mode="rb")
        else:
            self._fh = raw
        self._raw = raw
        self._scratch = bytearray(chunk)
        self.pos = 0

    def close(self) -> None:
        self._fh.close()
        self._raw.close()

    def __enter__(self) -> LogcubeStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def readinto(self, buf) -> None:
        """Fill ``buf`` (a writable buffer) exactly, or raise EOFError."""
        mv = memoryview(buf).cast("B")
        got = 0
        while got < len(mv):
            n = self._fh.readinto(mv[got:])
            if not n:
                raise EOFError(f"file ends after {self.pos + got} bytes")
            got += n
        self.pos += got

    def skip(self, nbytes: int) -> None:
        """Decompress and discard ``nbytes``."""
        scratch = memoryview(self._scratch)
        while nbytes > 0:
            k = min(nbytes, len(scratch))
            self.readinto(scratch[:k])
            nbytes -= k

    def check_end(self) -> None:
        """At the end of the FITS data: read on to the end of the file, so a gzip
        stream's CRC-32 and length are verified (raises on a mismatch)."""
        scratch = memoryview(self._scratch)
        while self._fh.readinto(scratch):
            pass

    def read_header(self):
        """Read one FITS header (2880-byte blocks up to END) as an astropy Header,
        or ``None`` at a clean end of file."""
        from astropy.io import fits

        blocks = []
        start = self.pos
        while True:
            block = bytearray(BLOCK)
            try:
                self.readinto(block)
            except EOFError as e:
                if not blocks and not bytes(block).rstrip(b"\x00"):
                    return None  # a clean end of file
                if not blocks and start == 0 and not block.startswith(b"SIMPLE  ="):
                    raise CubeError(f"not a FITS file (it starts with {bytes(block[:20])!r})") from None
                raise CubeError(f"truncated FITS header at byte {start}: {e} (a header is a multiple of 2880 bytes)") from None
            if not blocks and start == 0 and not block.startswith(b"SIMPLE  ="):
                raise CubeError(f"not a FITS file (it starts with {bytes(block[:20])!r})")
            blocks.append(bytes(block))
            text = block.decode("ascii", errors="replace")
            if any(text[i : i + 8] == "END     " for i in range(0, BLOCK, 80)):
                break
            if len(blocks) > 200:
                raise CubeError(f"no END card in 200 header blocks from byte {start}: the data are corrupt")
        try:
            return fits.Header.fromstring(b"".join(blocks).decode("ascii", errors="replace"))
        except Exception as e:  # astropy raises several types for a garbled header
            raise CubeError(f"unreadable FITS header at byte {start} ({e}): the data are corrupt") from None


def data_nbytes(header) -> int:
    """Size in bytes of an HDU's data unit, padded to 2880."""
    naxis = int(header.get("NAXIS", 0))
    if naxis == 0:
        return 0
    n = 1
    for i in range(1, naxis + 1):
        n *= int(header[f"NAXIS{i}"])
    n = abs(int(header["BITPIX"])) // 8 * int(header.get("GCOUNT", 1)) * (n + int(header.get("PCOUNT", 0)))
    return (n + BLOCK - 1) // BLOCK * BLOCK


BITPIX_DTYPES = {-32: ">f4", -64: ">f8", 8: "u1", 16: ">i2", 32: ">i4", 64: ">i8"}


def check_scaling(header, name: str, where: str) -> None:
    """FLUX/IVAR may be stored scaled (BSCALE/BZERO, applied when read); MASK must be
    plain integers and no HDU may have a BSCALE of 0 or non-finite scaling."""
    bscale, bzero = header.get("BSCALE", 1.0), header.get("BZERO", 0.0)
    try:
        bscale, bzero = float(bscale), float(bzero)
    except (TypeError, ValueError):
        raise CubeError(f"{where}: HDU {name} has BSCALE={bscale!r}, BZERO={bzero!r}, not numbers") from None
    if not (np.isfinite(bscale) and np.isfinite(bzero)) or bscale == 0:
        raise CubeError(f"{where}: HDU {name} has unusable scaling BSCALE={bscale}, BZERO={bzero}")
    if name == "MASK" and int(header.get("BITPIX", 0)) < 0:
        raise CubeError(
            f"{where}: HDU MASK is floating point (BITPIX={header['BITPIX']}); MaNGA bit masks are integers "
            "(a float mask loses its DONOTUSE bits when cast)"
        )
    if name == "MASK" and (bscale, bzero) != (1.0, 0.0):
        raise CubeError(
            f"{where}: HDU MASK is stored scaled (BSCALE={bscale}, BZERO={bzero}); MaNGA bit masks are plain integers"
        )
    if int(header["BITPIX"]) not in BITPIX_DTYPES:
        raise CubeError(f"{where}: HDU {name} has BITPIX={header['BITPIX']}, not a FITS data type")


#: drpall / sample columns a :class:`CubeRequest` is made of
REQUEST_COLUMNS = ("plateifu", "path", "mangaid", "z", "objra", "objdec")


def cube_requests(table, plate: int | None = None) -> list[CubeRequest]:
    """The :class:`CubeRequest` of every row of ``table`` (a DataFrame with
    :data:`REQUEST_COLUMNS`, e.g. the sample table), or of one plate's rows: the one
    place requests are built (the workflow's extract_plate params, ``linecube
    extract`` and the tests use it)."""
    rows = table if plate is None else table[table["plate"].astype(int) == int(plate)]
    return [
        CubeRequest(
            str(r.plateifu),
            str(r.path),
            str(r.mangaid),
            float(r.z),
            float(r.objra),
            float(r.objdec),
            _finite_or_none(getattr(r, "ebvgal", None)),
        )  # fmt: skip
        for r in rows.itertuples()
    ]


def _finite_or_none(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def request_params(req: CubeRequest) -> dict:
    """A request as plain values (Snakemake params: a changed z reruns that plate)."""
    return asdict(req)


class DuplicateCubes(ValueError):
    """One plate-IFU given as two files (which one is meant is not for linecube to guess)."""


def cubes_given_twice(cubes: Sequence[str | os.PathLike]) -> str:
    """'' or a message naming a plate-IFU given as more than one file, and the files."""
    given: dict[str, list[str]] = {}
    for c in cubes:
        try:
            given.setdefault(plateifu_from_path(c), []).append(os.fsdecode(c))
        except ValueError:
            pass
    twice = {p: v for p, v in given.items() if len(v) > 1}
    if not twice:
        return ""
    p, v = next(iter(twice.items()))
    return f"{len(twice)} plate-IFU(s) given as more than one file, e.g. {p}: {', '.join(v)}; give each cube once"


def requests_from_drpall(drpall: str | os.PathLike, cubes: Sequence[str | os.PathLike]) -> tuple[list[CubeRequest], list[dict]]:
    """Match LOGCUBE paths to their drpall rows by plate-IFU.

    Returns the requests and reject rows for paths that are not LOGCUBE names
    or have no drpall row.
    """
    table = read_drpall(drpall)
    by_pifu = {str(p): i for i, p in enumerate(table["plateifu"])}
    rows, paths, rejects = [], [], []
    twice = cubes_given_twice(cubes)
    if twice:
        raise DuplicateCubes(twice)
    for c in cubes:
        try:
            pifu = plateifu_from_path(c)
        except ValueError as e:
            rejects.append({"plateifu": "", "path": str(c), "reason": str(e)})
            continue
        i = by_pifu.get(pifu)
        if i is None:
            rejects.append({"plateifu": pifu, "path": str(c), "reason": f"{pifu} has no row in {drpall}"})
            continue
        rows.append(i)
        paths.append(str(c))
    return cube_requests(table.iloc[rows].assign(path=paths)), rejects
