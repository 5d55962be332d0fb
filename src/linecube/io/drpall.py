"""The drpall catalogue: read and checked (:func:`read_drpall`: the columns the
pipeline needs, text cells decoded), and turned into the cubes to extract
(:class:`CubeRequest`: plate-IFU, path, redshift, centre, Galactic E(B-V);
:func:`cube_requests`, :func:`requests_from_drpall`), a cube asked for twice refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from linecube.io.manga import plateifu_from_path


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
