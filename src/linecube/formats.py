"""MaNGA DR17 file formats, the emission-line list and the ``cubes.h5`` contract.

Everything here is plain numpy/astropy/h5py: the data layer (simulate, sample,
extract, assemble) builds on it and never imports TensorFlow, Keras or umap.

Conventions used throughout linecube:

* Cubes are (wavelength, y, x), as astropy returns a MaNGA LOGCUBE, float32.
* Flux is in the cube's units, 1e-17 erg/s/cm^2/Angstrom/spaxel; IVAR is its
  inverse variance in the inverse square of those units.
* Wavelengths are vacuum Angstrom.
"""

from __future__ import annotations

import contextlib
import csv
import enum
import json
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------
# The MaNGA DRP LOGCUBE (sdss/datamodel: mangaCube, DR17)
# --------------------------------------------------------------------------

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


class VoxelFlag(enum.IntFlag):
    """Bits of ``/mask`` (uint8) in cubes.h5; any nonzero value means do not use."""

    DRP_UNUSABLE = 1 << 0  #: the DRP set NOCOV, DEADFIBER, FORESTAR or DONOTUSE
    OUTSIDE_CUBE = 1 << 1  #: the 32x32 crop reaches past the cube edge (zero padding)
    NONFINITE = 1 << 2  #: flux or ivar was NaN/inf in the file (set to 0)
    BAD_IVAR = 1 << 3  #: ivar <= 0 (negative values are set to 0)


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


def log_wave_grid(n: int = NWAVE) -> np.ndarray:
    """The DRP log-lambda grid (vacuum Angstrom, float64, shape (n,))."""
    return CRVAL3 * 10.0 ** (DLOG10 * np.arange(n))


# --------------------------------------------------------------------------
# Emission lines
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class LineList:
    """Emission lines: names and rest vacuum wavelengths (Angstrom)."""

    names: tuple[str, ...]
    rest: np.ndarray  # float64 (n_lines,)

    def __len__(self) -> int:
        return len(self.names)

    def index(self, name: str) -> int:
        """Position of a line by name, with a clear error naming the choices."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"unknown emission line {name!r}; lines are {', '.join(self.names)}") from None


def default_lines_path() -> Path:
    """The packaged copy of ``resources/emission_lines.csv``."""
    return Path(str(resources.files("linecube") / "data" / "emission_lines.csv"))


def load_lines(path: str | os.PathLike | None = None) -> LineList:
    """Read an emission-line CSV (columns ``name``, ``vacuum_wavelength_A``)."""
    path = Path(path) if path is not None else default_lines_path()
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or {"name", "vacuum_wavelength_A"} - set(rows[0]):
        raise ValueError(f"{path}: expected columns name, vacuum_wavelength_A")
    names = tuple(r["name"] for r in rows)
    rest = np.array([float(r["vacuum_wavelength_A"]) for r in rows])
    if np.any(np.diff(rest) <= 0):
        raise ValueError(f"{path}: lines must be sorted by increasing wavelength")
    return LineList(names, rest)


# --------------------------------------------------------------------------
# cubes.h5: the contract between the data layer and everything after it
# --------------------------------------------------------------------------

#: Datasets of cubes.h5 that hold one cube per row.
CUBE_DATASETS = ("flux", "ivar", "mask")
#: Per-galaxy 1-D datasets of cubes.h5.
META_DATASETS = ("plateifu", "mangaid", "z", "objra", "objdec")


@dataclass(frozen=True)
class CubeLayout:
    """Shape of the emission-line cubes: (n_lines * window_bins, crop, crop)."""

    n_lines: int = 19
    window_bins: int = 10
    crop: int = 32

    @property
    def n_channels(self) -> int:
        return self.n_lines * self.window_bins

    @property
    def cube_shape(self) -> tuple[int, int, int]:
        return (self.n_channels, self.crop, self.crop)


def h5_compression_kwargs(compression: str | None) -> dict:
    """h5py dataset keyword arguments for ``none``, ``lzf`` or ``gzip``."""
    if compression in (None, "none"):
        return {}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": True}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    raise ValueError(f"unknown HDF5 compression {compression!r} (none, lzf, gzip)")


def create_cube_file(
    h5,
    n: int,
    layout: CubeLayout,
    lines: LineList,
    *,
    drpver: str,
    config: dict | None = None,
    compression: str | None = "lzf",
    resizable: bool = False,
) -> None:
    """Create the cubes.h5 datasets for ``n`` galaxies in an open ``h5py.File``.

    The file is filled row by row afterwards (see :func:`write_cube_row`), one
    cube per chunk, so nothing needs the whole sample in memory. ``resizable``:
    every dataset can be shrunk or grown along the galaxy axis (``resize``).
    """
    import h5py

    shape = (n, *layout.cube_shape)
    chunked = n > 0 or resizable
    chunks = (1, *layout.cube_shape) if chunked else None
    comp = h5_compression_kwargs(compression) if chunked else {}

    def grow(s):
        return {"maxshape": (None, *s[1:])} if resizable else {}

    h5.create_dataset("flux", shape=shape, dtype="f4", chunks=chunks, **comp, **grow(shape))
    h5.create_dataset("ivar", shape=shape, dtype="f4", chunks=chunks, **comp, **grow(shape))
    h5.create_dataset("mask", shape=shape, dtype="u1", chunks=chunks, **comp, **grow(shape))
    small = {"chunks": True} if resizable else {}
    h5.create_dataset("wave", shape=(n, layout.n_channels), dtype="f8", **small, **grow((n, layout.n_channels)))
    str_t = h5py.string_dtype("utf-8")
    h5.create_dataset("plateifu", shape=(n,), dtype=str_t, **small, **grow((n,)))
    h5.create_dataset("mangaid", shape=(n,), dtype=str_t, **small, **grow((n,)))
    for name in ("z", "objra", "objdec"):
        h5.create_dataset(name, shape=(n,), dtype="f8", **small, **grow((n,)))
    h5.attrs["line_names"] = np.array(lines.names, dtype=h5py.string_dtype("utf-8"))
    h5.attrs["line_rest_wavelengths"] = lines.rest
    h5.attrs["window_bins"] = layout.window_bins
    h5.attrs["crop"] = layout.crop
    h5.attrs["drpver"] = drpver
    h5.attrs["flux_unit"] = BUNIT
    h5.attrs["axis_order"] = "(galaxy, wavelength, y, x)"
    h5.attrs["mask_bits"] = json.dumps({f.name: int(f.value) for f in VoxelFlag})
    h5.attrs["config"] = json.dumps(config or {}, sort_keys=True, default=str)


def write_cube_row(h5, i: int, cube: dict) -> None:
    """Write one galaxy (a dict with flux, ivar, mask, wave and metadata) at row ``i``."""
    for name in CUBE_DATASETS:
        h5[name][i] = cube[name]
    h5["wave"][i] = cube["wave"]
    for name in META_DATASETS:
        h5[name][i] = cube[name]


def read_layout(h5) -> tuple[CubeLayout, LineList]:
    """Layout and line list stored in the attributes of a cubes.h5 file."""
    names = tuple(str(s.decode() if isinstance(s, bytes) else s) for s in h5.attrs["line_names"])
    lines = LineList(names, np.asarray(h5.attrs["line_rest_wavelengths"], dtype=float))
    layout = CubeLayout(len(names), int(h5.attrs["window_bins"]), int(h5.attrs["crop"]))
    return layout, lines


def read_strings(ds) -> list[str]:
    """A UTF-8 string dataset as a list of ``str``."""
    return [s.decode() if isinstance(s, bytes) else str(s) for s in ds[()]]


# --------------------------------------------------------------------------
# Atomic output
# --------------------------------------------------------------------------


def _new_temporary(path: Path) -> Path:
    """A fresh ``.{name}.XXXXXXXX.tmp`` next to ``path`` (its folder made, the
    temporaries of an earlier killed write removed), with ordinary file permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    A job killed half-way leaves only a ``.tmp`` file that no rule takes as
    input, never a truncated file under the final name; the next write of the
    same file removes it.
    """
    path = Path(path)
    tmp_path = _new_temporary(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """:func:`atomic_path` for files that belong together: yields one temporary
    path per file and renames them all, in order and back to back, only when the
    block succeeds (on an error none is replaced and the temporaries go)."""
    with contextlib.ExitStack() as stack:
        tmps = []
        for p in paths:
            tmp = _new_temporary(Path(p))
            tmps.append(tmp)
            stack.callback(lambda t=tmp: t.unlink(missing_ok=True))
        yield tmps
        for tmp, p in zip(tmps, paths):
            os.replace(tmp, p)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an earlier, killed write of ``path`` left behind
    (``.{name}.XXXXXXXX.tmp`` from :func:`atomic_path`); returns what was removed.
    Safe under Snakemake, which never runs two jobs writing the same output."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp$")
    removed = []
    if path.parent.is_dir():
        for f in path.parent.iterdir():
            if pattern.match(f.name):
                f.unlink(missing_ok=True)
                removed.append(f)
    return removed


def write_csv_atomic(df, path: str | os.PathLike, **kwargs) -> None:
    """Write a pandas DataFrame to CSV atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, **kwargs)


def ensure_columns(columns: Sequence[str], required: Sequence[str], what: str) -> None:
    """Raise ``ValueError`` naming ``what`` if any required column is missing."""
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")
