"""The emission-line list and the ``cubes.h5`` contract (the layout every stage
after extraction reads: datasets, attributes, voxel flags, chunking).

Everything here is plain numpy/h5py: the data layer builds on it and never
imports TensorFlow, Keras or umap. MaNGA's own files (LOGCUBE, drpall, DRP
constants) are in :mod:`linecube.io.manga`; atomic writes in :mod:`linecube.io.atomic`.

Conventions used throughout linecube:

* Cubes are (wavelength, y, x), as astropy returns a MaNGA LOGCUBE, float32.
* Flux is in the cube's units, 1e-17 erg/s/cm^2/Angstrom/spaxel; IVAR is its
  inverse variance in the inverse square of those units.
* Wavelengths are vacuum Angstrom.
"""

from __future__ import annotations

import csv
import enum
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from linecube.io.manga import BUNIT

# --------------------------------------------------------------------------
# The MaNGA DRP LOGCUBE (sdss/datamodel: mangaCube, DR17)
# --------------------------------------------------------------------------


class VoxelFlag(enum.IntFlag):
    """Bits of ``/mask`` (uint8) in cubes.h5; any nonzero value means do not use."""

    DRP_UNUSABLE = 1 << 0  #: the DRP set NOCOV, DEADFIBER, FORESTAR or DONOTUSE
    OUTSIDE_CUBE = 1 << 1  #: the 32x32 crop reaches past the cube edge (zero padding)
    NONFINITE = 1 << 2  #: flux or ivar was NaN/inf in the file (set to 0)
    BAD_IVAR = 1 << 3  #: ivar <= 0 (negative values are set to 0)


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

    @property
    def halpha(self) -> int:
        """H-alpha's position in the list: the reference line of the flux scale, the
        summaries and the features (:func:`halpha_index`)."""
        return halpha_index(self.names)


#: the name H-alpha has in every line list linecube reads
HALPHA = "Halpha"


def halpha_index(names) -> int:
    """H-alpha's position among line ``names`` (the one place it is looked up)."""
    names = list(names)
    if HALPHA not in names:
        raise KeyError(f"the line list has no {HALPHA}; lines are {', '.join(names)}")
    return names.index(HALPHA)


def default_lines_path() -> Path:
    """The packaged copy of ``resources/emission_lines.csv``."""
    return Path(str(resources.files("linecube") / "io" / "emission_lines.csv"))


def load_lines(path: str | os.PathLike | None = None) -> LineList:
    """Read an emission-line CSV (columns ``name``, ``vacuum_wavelength_A``)."""
    path = Path(path) if path is not None else default_lines_path()
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or {"name", "vacuum_wavelength_A"} - set(rows[0]):
        raise ValueError(f"{path}: expected columns name, vacuum_wavelength_A")
    names = tuple((r["name"] or "").strip() for r in rows)
    try:
        rest = np.array([float(r["vacuum_wavelength_A"]) for r in rows])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: vacuum_wavelength_A must be numbers ({e})") from None
    bad = [f"row {i + 2} ({n or '?'}: {w})" for i, (n, w) in enumerate(zip(names, rest)) if not (np.isfinite(w) and w > 0)]
    if bad:
        raise ValueError(f"{path}: wavelengths must be finite and positive: {', '.join(bad)}")
    if "" in names or len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1 or not n})
        raise ValueError(f"{path}: line names must be unique and non-empty: {', '.join(map(repr, dup))}")
    if np.any(np.diff(rest) <= 0):
        raise ValueError(f"{path}: lines must be sorted by increasing wavelength (no duplicates)")
    return LineList(names, rest)


# --------------------------------------------------------------------------
# cubes.h5: the contract between the data layer and everything after it
# --------------------------------------------------------------------------

#: Datasets of cubes.h5 that hold one cube per row.
CUBE_DATASETS = ("flux", "ivar", "mask")
#: Per-galaxy 1-D datasets of cubes.h5: drpall values, then what extraction
#: measured or applied: ``ebvgal`` the Galactic E(B-V) the flux was corrected
#: for (mag; 0 when no correction was applied), ``correl_sigma`` the Gaussian
#: correlation length of the cube's noise (spaxels, :mod:`linecube.physics.noise`),
#: ``ifu_fibres`` the IFU bundle (19 ... 127 fibres; 0 unknown)
META_DATASETS = ("plateifu", "mangaid", "z", "objra", "objdec", "ebvgal", "correl_sigma", "ifu_fibres")
#: their values in a file written before they existed (read by :func:`read_meta`)
META_FALLBACK = {"ebvgal": 0.0, "correl_sigma": float("nan"), "ifu_fibres": 0}


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


def shown(path) -> str:
    """A path as text that prints and writes to UTF-8 files whatever bytes its name
    holds (a non-UTF-8 byte becomes ``\\xNN``); for messages and rejects files."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


#: root attribute by which linecube recognises the HDF5 files it wrote itself
#: ("cubes" for the cubes.h5 layout); ``linecube extract --out`` replaces only those
PRODUCT_ATTR = "linecube_product"
#: the header of every rejects file linecube writes
REJECTS_HEADER = "plateifu,path,reason"


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
    for name in ("z", "objra", "objdec", "ebvgal", "correl_sigma"):
        h5.create_dataset(name, shape=(n,), dtype="f8", **small, **grow((n,)))
    h5.create_dataset("ifu_fibres", shape=(n,), dtype="i4", **small, **grow((n,)))
    h5.attrs[PRODUCT_ATTR] = "cubes"
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
        h5[name][i] = cube.get(name, META_FALLBACK.get(name))


def read_meta(h5, name: str) -> np.ndarray:
    """A per-galaxy dataset of an open cubes.h5; for one a file written before
    it existed (:data:`META_FALLBACK`), its fallback value for every galaxy."""
    if name in h5:
        return h5[name][()]
    n = h5["flux"].shape[0]
    return np.full(n, META_FALLBACK[name])


def clean_masked(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray) -> None:
    """In place: flux and ivar 0 wherever ``mask`` is nonzero, so no value the DRP
    (or linecube) flagged, a zero, a spike or a NaN, reaches anything downstream.
    Arrays (..., wavelength, y, x) of one shape."""
    bad = mask != 0
    flux[bad] = 0.0
    ivar[bad] = 0.0


class BadCubesFile(ValueError):
    """A cubes.h5 that is truncated, unreadable or lacks what the contract requires."""


def check_cubes_file(path: str | os.PathLike) -> int:
    """Open a cubes.h5 and check the contract before any work: readable, every
    dataset of :data:`CUBE_DATASETS` and ``wave``/``plateifu`` present with one
    row per galaxy, the layout attributes there, and the last cube readable (a
    truncated file fails here). Returns the number of galaxies; raises
    :class:`BadCubesFile` naming the file and the problem."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            missing = [n for n in (*CUBE_DATASETS, "wave", "plateifu") if n not in h5]
            if missing:
                raise BadCubesFile(f"{path}: not a cubes.h5: no {', '.join(missing)} dataset (docs/data.md)")
            n = h5["flux"].shape[0]
            odd = [f"{k} {h5[k].shape[0]}" for k in (*CUBE_DATASETS, "wave", "plateifu") if h5[k].shape[0] != n]
            if odd:
                raise BadCubesFile(f"{path}: datasets disagree on the number of galaxies (flux {n}, {', '.join(odd)})")
            absent = [a for a in ("line_names", "line_rest_wavelengths", "window_bins", "crop") if a not in h5.attrs]
            if absent:
                raise BadCubesFile(f"{path}: not a cubes.h5: no {', '.join(absent)} attribute")
            if n:
                for k in CUBE_DATASETS:
                    h5[k][n - 1]
            return int(n)
    except BadCubesFile:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise BadCubesFile(f"{path}: cannot be read as a cubes.h5 ({e}); it may be truncated: rebuild it") from None


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


def sigma_from_ivar(iv: np.ndarray) -> np.ndarray:
    """1/sqrt(ivar), 0 where ivar <= 0 (float32)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sqrt(np.maximum(iv, 0), dtype=np.float32)
        np.divide(np.float32(1.0), s, out=s)
    s[~(iv > 0)] = 0.0
    return s


def line_windows(a: np.ndarray, n_lines: int, window_bins: int) -> np.ndarray:
    """The emission-line windows of cubes: (N, L*B, y, x) -> (N, L, B, y, x), a view
    (L lines of B wavelength bins each, the cubes.h5 layout)."""
    return a.reshape(a.shape[0], n_lines, window_bins, *a.shape[-2:])


#: the continuous parameters every representation probe reports (truth.csv columns: a simulated survey's truth table)
PROBE_PARAMETERS: tuple[str, ...] = (
    "log_n2ha",
    "log_o3hb",
    "log_s2ha",
    "gas_sigma_kms",
    "vsini_kms",
    "incl_deg",
    "disc_scale_arcsec",
    "nuclear_fraction",
    "log_halpha_sb",
    "d4000",
    "av",
    "z",
)
