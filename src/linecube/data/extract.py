"""Cut a MaNGA LOGCUBE down to 19 emission-line windows and a 32x32 crop.

For each cube: the observed centre of each line is rest x (1 + z) with z from the
drpall; the centre bin ``c`` is the grid bin nearest to it (wavelengths from the
header WCS through astropy) and the window is bins ``[c - 5, c + 5)``. The crop is
32x32 spaxels centred on the pixel of (objra, objdec) through the cube's celestial
WCS; where it leaves the cube, flux and ivar are 0 and the mask flags the voxel.

Speed: a LOGCUBE.fits.gz is one gzip stream, FLUX then IVAR then MASK, each
(4563, NY, NX). :class:`LogcubeStream` decompresses it once, front to back, with
ISA-L, parses each header with astropy, copies only the ~190 needed slices of
each array (cropped) and stops after the last needed MASK slice: nothing else is
kept, and LSFPOST onwards is never decompressed.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linecube.io.atomic import atomic_paths, write_csv_atomic
from linecube.io.formats import CubeLayout, LineList, VoxelFlag, clean_masked, create_cube_file, shown, write_cube_row
from linecube.io.manga import (
    BITPIX_DTYPES,
    BUNIT,
    DRP_UNUSABLE,
    NWAVE,
    CubeError,
    CubeRequest,
    LogcubeStream,
    centre_pixel,
    check_scaling,
    check_wave_grid,
    data_nbytes,
    decompress_errors,
    header_wavelengths,
)

# --------------------------------------------------------------------------
# Geometry: windows and crops (pure functions)
# --------------------------------------------------------------------------


def window_centres(wave: np.ndarray, rest: np.ndarray, z: float) -> np.ndarray:
    """Index of the grid bin nearest to each observed line centre rest * (1 + z).

    wave: the cube's wavelength grid (A, increasing); rest: rest wavelengths (A).
    """
    obs = np.asarray(rest, dtype=float) * (1.0 + z)
    idx = np.searchsorted(wave, obs)
    idx = np.clip(idx, 1, len(wave) - 1)
    left_closer = (obs - wave[idx - 1]) <= (wave[idx] - obs)
    return np.where(left_closer, idx - 1, idx)


def window_indices(centres: np.ndarray, window_bins: int = CubeLayout.window_bins) -> np.ndarray:
    """Wavelength indices of all windows, (n_lines * window_bins,): for each centre
    c, bins c - window_bins//2 ... c + window_bins//2 - 1."""
    half = window_bins // 2
    return (np.asarray(centres)[:, None] + np.arange(-half, window_bins - half)[None, :]).ravel()


def crop_bounds(centre: int, size: int, crop: int) -> tuple[int, int, int, int]:
    """Source range [s0, s1) on an axis of length ``size`` and its offset d0 in a
    crop of length ``crop`` centred on pixel ``centre`` (crop//2 before it)."""
    start = centre - crop // 2
    s0, s1 = max(start, 0), min(start + crop, size)
    return s0, s1, s0 - start, s1 - s0


# --------------------------------------------------------------------------
# Streaming reader
# --------------------------------------------------------------------------


def _runs(sorted_idx: np.ndarray) -> list[tuple[int, int]]:
    """Split sorted unique indices into contiguous [start, stop) runs."""
    if sorted_idx.size == 0:
        return []
    breaks = np.nonzero(np.diff(sorted_idx) != 1)[0]
    starts = np.concatenate([[sorted_idx[0]], sorted_idx[breaks + 1]])
    stops = np.concatenate([sorted_idx[breaks] + 1, [sorted_idx[-1] + 1]])
    return list(zip(starts.tolist(), stops.tolist()))


def _read_slices(stream: LogcubeStream, header, plan: dict, fill, out_dtype) -> np.ndarray:
    """Read the needed wavelength slices of a 3-D image HDU, cropped.

    plan: 'unique' sorted wavelength indices, 'runs', (y0, y1, dy, ny) and
    (x0, x1, dx, nx) crop bounds. Returns (len(unique), crop, crop) in native order,
    ``fill`` outside the cube. The stream is left at the end of the data unit.
    """
    dtype = np.dtype(BITPIX_DTYPES[int(header["BITPIX"])])
    bscale, bzero = float(header.get("BSCALE", 1.0)), float(header.get("BZERO", 0.0))
    scaled = (bscale, bzero) != (1.0, 0.0)
    ny, nx = int(header["NAXIS2"]), int(header["NAXIS1"])
    slice_bytes = ny * nx * dtype.itemsize
    crop = plan["crop"]
    (y0, y1, dy, hy), (x0, x1, dx, hx) = plan["ybounds"], plan["xbounds"]
    out = np.full((len(plan["unique"]), crop, crop), fill, dtype=out_dtype)
    cur = 0  # slice the stream is at
    k = 0
    for start, stop in plan["runs"]:
        stream.skip((start - cur) * slice_bytes)
        buf = np.empty((stop - start) * slice_bytes, dtype=np.uint8)
        stream.readinto(buf)
        block = buf.view(dtype).reshape(stop - start, ny, nx)[:, y0:y1, x0:x1]
        if scaled:  # FITS: physical = BSCALE * stored + BZERO
            block = block.astype(np.float64) * bscale + bzero
        out[k : k + stop - start, dy : dy + hy, dx : dx + hx] = block
        k += stop - start
        cur = stop
    return out


def _plan(flux_header, req: CubeRequest, lines: LineList, layout: CubeLayout, where: str) -> dict:
    check_wave_grid(flux_header, where)
    wave = header_wavelengths(flux_header)
    if not np.isfinite(req.z):
        raise CubeError(f"{where}: redshift z is missing or not a number in the drpall")
    if req.z <= 0:
        raise CubeError(f"{where}: redshift z={req.z} is not positive (drpall z; -999 means unknown)")
    centres = window_centres(wave, lines.rest, req.z)
    idx = window_indices(centres, layout.window_bins)
    obs = lines.rest * (1 + req.z)
    half = layout.window_bins // 2
    off = (obs < wave[0]) | (obs > wave[-1]) | (centres - half < 0) | (centres + layout.window_bins - half > len(wave))
    if off.any():
        bad = ", ".join(f"{n} at {o:.0f} A" for n, o in zip(np.array(lines.names)[off], obs[off]))
        raise CubeError(f"{where}: at z={req.z:g} the window of {bad} leaves the {wave[0]:.0f}-{wave[-1]:.0f} A grid")
    ny, nx = int(flux_header["NAXIS2"]), int(flux_header["NAXIS1"])
    xc, yc = centre_pixel(flux_header, req.objra, req.objdec)
    if not (np.isfinite(xc) and np.isfinite(yc)):
        raise CubeError(f"{where}: galaxy centre (objra, objdec)=({req.objra}, {req.objdec}) has no pixel in the cube WCS")
    cx, cy = int(np.floor(xc + 0.5)), int(np.floor(yc + 0.5))
    if not (0 <= cx < nx and 0 <= cy < ny):
        raise CubeError(
            f"{where}: galaxy centre (objra, objdec)=({req.objra:.6f}, {req.objdec:.6f}) falls at pixel "
            f"(x={xc:.1f}, y={yc:.1f}), outside the {nx}x{ny} cube"
        )
    unique = np.unique(idx)
    return {
        "wave": wave[idx],
        "index": np.searchsorted(unique, idx),
        "unique": unique,
        "runs": _runs(unique),
        "crop": layout.crop,
        "ybounds": crop_bounds(cy, ny, layout.crop),
        "xbounds": crop_bounds(cx, nx, layout.crop),
        "shape": (ny, nx),
        "centre": (xc, yc),
    }


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


@dataclass(frozen=True)
class ExtractOptions:
    """What extraction does beyond cutting windows (the ``extract:`` config;
    :meth:`from_config` fills it from the schema).

    ``galactic_extinction``: ``none`` or a law of :data:`linecube.physics.extinction.LAWS`
    (R_V ``rv``), applied with E(B-V) from the LOGCUBE's EBVGAL, else the drpall's
    ``ebvgal``. ``full_read``: read the file to its end (the spatial correlation
    tables and the gzip CRC); False stops after MASK (faster, no CRC check)."""

    galactic_extinction: str
    rv: float
    full_read: bool

    @classmethod
    def from_config(cls, extract: dict | None = None) -> ExtractOptions:
        from linecube.config import with_defaults

        e = with_defaults("extract", extract)
        return cls(str(e["galactic_extinction"]), float(e["extinction_rv"]), bool(e["verify_full_file"]))


#: FLUX values beyond this magnitude (flux units) are no galaxy's: flagged unusable
MAX_ABS_FLUX = 1e8
#: the correlation table read for the noise model (r band, nearest H-alpha and [NII])
CORREL_HDUS = ("RCORREL", "ICORREL", "GCORREL", "ZCORREL")


def _same_unit(a: str, b: str) -> bool:
    """BUNIT strings equal up to case and spaces ('1E-17 erg/s/cm^2/Angstrom/spaxel')."""
    return "".join(str(a).split()).lower() == "".join(str(b).split()).lower()


def _correl_sigma(st: LogcubeStream, h, nbytes: int) -> float:
    """Read a DRP correlation table HDU from the stream and fit its Gaussian sigma."""
    from astropy.io import fits

    from linecube.physics.noise import fit_correlation_sigma

    buf = bytearray(nbytes)
    st.readinto(buf)
    t = fits.BinTableHDU.fromstring(h.tostring().encode("ascii") + bytes(buf)).data
    cols = {c.upper() for c in t.columns.names}
    if not {"INDXI_C1", "INDXI_C2", "INDXJ_C1", "INDXJ_C2", "RHOIJ"} <= cols:
        return float("nan")
    return fit_correlation_sigma(t["INDXI_C1"], t["INDXI_C2"], t["INDXJ_C1"], t["INDXJ_C2"], t["RHOIJ"])


def _read_ebv(primary, req: CubeRequest) -> float:
    """E(B-V) (mag): the primary header's EBVGAL, else the drpall's; NaN if neither."""
    for v in (primary.get("EBVGAL"), req.ebvgal):
        try:
            v = float(v)
        except (TypeError, ValueError):
            continue
        if np.isfinite(v) and 0 <= v < 10:
            return v
    return float("nan")


def ifu_fibres(plateifu: str) -> int:
    """The IFU bundle size (19, 37, 61, 91 or 127 fibres) from a plate-IFU: MaNGA's
    IFU design numbers are the bundle size x 100 plus a counter (``8485-1901``: 19);
    0 for anything else."""
    from linecube.io.manga import IFU_CUBE_SIZE, parse_plateifu

    try:
        fib = parse_plateifu(plateifu)[1] // 100
    except ValueError:
        return 0
    return fib if fib in IFU_CUBE_SIZE else 0


def extract_cube(
    req: CubeRequest, lines: LineList, layout: CubeLayout = CubeLayout(), options: ExtractOptions | None = None
) -> dict:
    """Extract one galaxy's emission-line cube from its LOGCUBE.

    Returns a dict with flux, ivar (float32, (n_lines*window_bins, crop, crop),
    (wavelength, y, x), flux units of the cube, corrected for Galactic extinction
    as ``options`` say; 0 wherever the mask is nonzero), mask (uint8, VoxelFlag
    bits), wave (observed wavelength of each channel, A), the drpall metadata,
    ``ebvgal`` (the E(B-V) corrected for), ``correl_sigma`` (the noise's
    correlation length, spaxels, NaN when the file has no correlation table) and
    ``ifu_fibres``. Raises :class:`CubeError` with a reason a person understands.
    """
    where = f"{req.plateifu} ({shown(req.path)})"
    options = options or ExtractOptions.from_config()
    path = Path(req.path)
    try:
        st_mode = os.stat(path)
    except FileNotFoundError:
        raise CubeError(f"{where}: file does not exist") from None
    except OSError as e:  # a symlink loop (ELOOP), a name too long, no permission on a folder
        raise CubeError(f"{where}: cannot open ({e.strerror or e})") from None
    if not stat.S_ISREG(st_mode.st_mode):
        kind = next((k for f, k in _KINDS if f(st_mode.st_mode)), "not a regular file")
        raise CubeError(f"{where}: is {kind}, not a LOGCUBE file")
    if st_mode.st_size == 0:
        raise CubeError(f"{where}: file is empty (0 bytes)")
    found: dict[str, np.ndarray] = {}
    plan = None
    primary = None
    correl = float("nan")
    try:
        with LogcubeStream(path) as st:
            primary = st.read_header()
            if primary is None or "SIMPLE" not in primary:
                raise CubeError(f"{where}: not a FITS file (no SIMPLE card)")
            st.skip(data_nbytes(primary))
            while True:
                if len(found) == 3 and not options.full_read:
                    break
                h = st.read_header()
                if h is None:
                    missing = [n for n in ("FLUX", "IVAR", "MASK") if n not in found]
                    if missing:
                        raise CubeError(f"{where}: no {', '.join(missing)} HDU in the file")
                    st.check_end()  # the gzip CRC and length, where the file is gzipped
                    break
                name = str(h.get("EXTNAME", "")).strip().upper()
                nbytes = data_nbytes(h)
                if name in ("FLUX", "IVAR", "MASK") and name not in found:
                    if int(h.get("NAXIS", 0)) != 3:
                        raise CubeError(f"{where}: HDU {name} has NAXIS={h.get('NAXIS')}, expected a 3-D cube")
                    if name == "FLUX":
                        unit = h.get("BUNIT")
                        if unit is None or not _same_unit(unit, BUNIT):
                            raise CubeError(
                                f"{where}: FLUX has BUNIT={unit!r}, not the DRP's {BUNIT!r}; "
                                "linecube needs flux in those units (convert the cube, or fix its header if the values are in them)"
                            )
                        plan = _plan(h, req, lines, layout, where)
                    elif plan is None:
                        raise CubeError(f"{where}: no FLUX HDU before {name}: not a LOGCUBE layout")
                    elif (int(h["NAXIS2"]), int(h["NAXIS1"])) != plan["shape"] or int(h["NAXIS3"]) != NWAVE:
                        raise CubeError(f"{where}: HDU {name} shape differs from FLUX")
                    check_scaling(h, name, where)
                    start = st.pos
                    fill = {"FLUX": 0.0, "IVAR": 0.0, "MASK": -1}[name]
                    out_dtype = np.int32 if name == "MASK" else np.float32
                    found[name] = _read_slices(st, h, plan, fill, out_dtype)
                    st.skip(nbytes - (st.pos - start))
                elif name in CORREL_HDUS and not np.isfinite(correl) and h.get("XTENSION", "").strip() == "BINTABLE":
                    correl = _correl_sigma(st, h, nbytes)
                else:
                    st.skip(nbytes)
    except CubeError as e:
        msg = str(e)
        if msg.startswith(where):
            raise
        raise CubeError(f"{where}: {msg}") from None
    except EOFError as e:
        raise CubeError(f"{where}: file is truncated ({e}); download it again") from None
    except decompress_errors() as e:
        raise CubeError(f"{where}: corrupt gzip data ({e}); download it again") from None
    except (OSError, ValueError, KeyError, TypeError, io.UnsupportedOperation) as e:
        msg = str(e) or type(e).__name__
        if "CRC" in msg or "gzip" in msg.lower() or "compressed" in msg.lower() or "invalid" in msg.lower():
            raise CubeError(f"{where}: corrupt gzip data ({msg}); download it again") from None
        raise CubeError(f"{where}: cannot read as a LOGCUBE ({type(e).__name__}: {msg})") from None
    cube = _finish(found, plan, req, where)
    ebv = _read_ebv(primary, req)
    if options.galactic_extinction != "none":
        from linecube.physics.extinction import deredden

        applied = ebv if np.isfinite(ebv) else 0.0
        cube["flux"], cube["ivar"] = deredden(
            cube["flux"], cube["ivar"], cube["wave"], applied, options.galactic_extinction, options.rv
        )
        cube["ebvgal"] = applied
    else:
        cube["ebvgal"] = 0.0
    cube["correl_sigma"] = correl
    cube["ifu_fibres"] = ifu_fibres(req.plateifu)
    return cube


def _finish(found: dict, plan: dict, req: CubeRequest, where: str) -> dict:
    """Gather windows from the unique slices, turn DRP bits into VoxelFlag, and
    zero flux and ivar of every flagged voxel (:func:`linecube.io.formats.clean_masked`)."""
    sel = plan["index"]
    flux = found["FLUX"][sel]
    ivar = found["IVAR"][sel]
    drp = found["MASK"][sel]
    mask = np.zeros(flux.shape, dtype=np.uint8)
    mask[drp == -1] |= np.uint8(VoxelFlag.OUTSIDE_CUBE)
    mask[(drp != -1) & ((drp & int(DRP_UNUSABLE)) != 0)] |= np.uint8(VoxelFlag.DRP_UNUSABLE)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(flux) | ~np.isfinite(ivar) | (np.abs(flux) > MAX_ABS_FLUX)
    if bad.any():
        mask[bad] |= np.uint8(VoxelFlag.NONFINITE)
    neg = ivar < 0
    mask[(ivar <= 0) & (mask == 0)] |= np.uint8(VoxelFlag.BAD_IVAR)
    clean_masked(flux, ivar, mask)
    if np.all(mask != 0):
        raise CubeError(
            f"{where}: no usable voxel in the extracted windows (every spaxel is DONOTUSE, outside the cube or has ivar <= 0)"
        )
    return {
        "flux": flux,
        "ivar": ivar,
        "mask": mask,
        "wave": plan["wave"],
        "plateifu": req.plateifu,
        "mangaid": req.mangaid,
        "z": req.z,
        "objra": req.objra,
        "objdec": req.objdec,
        "nonfinite_voxels": int(bad.sum()),
        "negative_ivar_voxels": int(neg.sum()),
    }


# --------------------------------------------------------------------------
# A plate (or any list of cubes) into one HDF5 file
# --------------------------------------------------------------------------


@dataclass
class ExtractSummary:
    extracted: int
    rejected: int
    seconds: float
    rejects: list[dict]


class TooManyRejects(RuntimeError):
    """More cubes were rejected than ``max_reject_fraction`` allows."""


class NothingExtracted(RuntimeError):
    """No cube could be extracted; an existing output was left as it was."""


def rejects_path(out: str | os.PathLike) -> Path:
    """``<out stem>.rejects.csv`` next to an extraction output."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".h5") + ".rejects.csv")


def extract_to_h5(
    requests: Sequence[CubeRequest],
    out: str | os.PathLike,
    lines: LineList,
    layout: CubeLayout = CubeLayout(),
    *,
    drpver: str,
    config: dict | None = None,
    compression: str | None = "lzf",
    threads: int = 1,
    max_reject_fraction: float = 1.0,
    label: str = "",
    progress: bool = True,
    pre_rejects: Sequence[dict] = (),
    allow_empty: bool = True,
    options: ExtractOptions | None = None,
) -> ExtractSummary:
    """Extract cubes into a cubes.h5-layout file ``out`` (rows sorted by plate-IFU)
    and write ``<out stem>.rejects.csv`` (plateifu, path, reason).

    Cubes are processed in parallel up to ``threads`` and each is written to a
    temporary file as soon as it is extracted (memory does not grow with the
    number of cubes). ``pre_rejects`` (rows found before extraction, e.g. a cube
    with no drpall row) count towards ``max_reject_fraction`` and go to the
    rejects file. The HDF5 and the rejects file are replaced together, the
    rejects' SHA-256 stored in the HDF5 (attribute ``rejects_sha256``), and only
    when something was extracted: with nothing extracted (:class:`NothingExtracted`)
    or too many rejects (:class:`TooManyRejects`) an existing output is left as it
    was, and the rejects go to ``<stem>.rejects.csv`` only when no output exists
    (else to ``<stem>.rejects.failed.csv``). ``options``: :class:`ExtractOptions`
    (default: the schema's). ``allow_empty`` (the workflow's
    per-plate files): with nothing extracted and no earlier output, write a 0-row
    file (else :class:`NothingExtracted`, and no file). A second process writing the
    same ``out`` is refused (:class:`linecube.io.atomic.Busy`).
    """
    from linecube.io.atomic import exclusive

    with exclusive(out), _disk_errors(out):
        return _extract_to_h5(requests, out, lines, layout, drpver, config, compression, threads,
                              max_reject_fraction, label, progress, pre_rejects, allow_empty, options)  # fmt: skip


class DiskFull(OSError):
    """The file system ran out of space (or a file-size limit) while writing."""


_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def _is_full(e: BaseException) -> bool:
    text = str(e).lower()
    return getattr(e, "errno", None) in _FULL or any(f"errno = {n}" in text for n in _FULL) or "no space left" in text


@contextlib.contextmanager
def _disk_errors(out: Path):
    """Turn a full disk during the write into one :class:`DiskFull` naming ``out``,
    and keep HDF5's follow-up errors (raised while h5py frees objects of a file
    it could not flush) off stderr."""
    seen: list = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(u) if _is_full(u.exc_value) else hook(u)
    try:
        yield
    except DiskFull:
        raise
    except (OSError, RuntimeError) as e:
        if not _is_full(e):
            raise
        import gc

        gc.collect()  # free h5py's objects of the failed file while the quiet hook is in place
        raise DiskFull(errno.ENOSPC, f"{Path(out).parent} is full (or over a file-size limit) while writing it; "
                       f"nothing was replaced and the temporary file was removed", str(out)) from None  # fmt: skip
    finally:
        sys.unraisablehook = hook


#: free space kept beyond the next cube (HDF5 metadata, the rejects file)
SPARE_BYTES = 16 << 20


def _check_room(tmp: Path, cube: dict, out: Path) -> None:
    """Stop with :class:`DiskFull` before a write that the file system has no room
    for (HDF5 recovers badly from a failed write: tracebacks at exit, a crash)."""
    import shutil

    need = sum(cube[k].nbytes for k in ("flux", "ivar", "mask")) + SPARE_BYTES
    free = shutil.disk_usage(tmp.parent).free
    if free < need:
        raise DiskFull(errno.ENOSPC, f"{tmp.parent} has {free >> 20} MB free, too little for the next cube; "
                       "nothing was replaced and the temporary file was removed", str(out))  # fmt: skip
    limit = _file_size_limit()
    if limit is not None and tmp.stat().st_size + need > limit:
        raise DiskFull(errno.EFBIG, f"the file-size limit ({limit >> 10} kB, ulimit -f) leaves no room for the next cube; "
                       "nothing was replaced and the temporary file was removed", str(out))  # fmt: skip


def _file_size_limit() -> int | None:
    """The process's file-size limit in bytes (``ulimit -f``), None when unlimited."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _reject_row(plateifu, path, reason) -> dict:
    """One rejects row whose every field prints and writes as UTF-8 whatever bytes a
    file name held (:func:`linecube.io.formats.shown`): one bad name never loses the good cubes."""
    return {"plateifu": shown(plateifu or ""), "path": shown(path or ""), "reason": shown(reason or "")}


def _extract_to_h5(requests, out, lines, layout, drpver, config, compression, threads, max_reject_fraction, label,
                   progress, pre_rejects, allow_empty, options) -> ExtractSummary:  # fmt: skip
    import hashlib

    import h5py
    import pandas as pd
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    out = Path(out)
    reqs = sorted(requests, key=lambda r: r.plateifu)
    rejects: list[dict] = [_reject_row(r.get("plateifu", ""), r.get("path", ""), r.get("reason", "")) for r in pre_rejects]
    seen: set[str] = set()
    todo = []
    for r in reqs:
        if r.plateifu in seen:
            rejects.append(_reject_row(r.plateifu, r.path, "duplicate plate-IFU in the request list"))
            continue
        seen.add(r.plateifu)
        todo.append(r)
    n_total = len(reqs) + len(pre_rejects)
    rej_path = rejects_path(out)

    def work(r: CubeRequest):
        try:
            return r, extract_cube(r, lines, layout, options), None
        except CubeError as e:
            return r, None, str(e)

    def outcomes() -> Iterable:
        if threads > 1 and len(todo) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=threads) as pool:
                yield from pool.map(work, todo)
        else:
            for r in todo:
                yield work(r)

    def fail(exc: Exception):
        target = (
            rej_path if not out.exists() else rej_path.with_name(rej_path.name.replace(".rejects.csv", ".rejects.failed.csv"))
        )
        write_csv_atomic(pd.DataFrame(rejects, columns=["plateifu", "path", "reason"]), target)
        if target != rej_path:
            first, _, rest = exc.args[0].partition("\n")
            exc.args = (
                f"{first.rstrip(':')}; {out} was left as it was, these rejects are in {target}" + (f"\n{rest}" if rest else ""),
            )
        raise exc

    n_ok = 0
    bar = tqdm(total=len(todo), desc=f"extract {label}".strip(), unit="cube", disable=not progress, file=sys.stderr)
    with bar, atomic_paths(out, rej_path) as (tmp, tmp_rej):  # the bar ends before any error line
        with h5py.File(tmp, "w") as h5:
            create_cube_file(h5, len(todo), layout, lines, drpver=drpver, config=config, compression=compression, resizable=True)
            for r, cube, err in outcomes():
                if err is not None:
                    rejects.append(_reject_row(r.plateifu, r.path, err))
                else:
                    _check_room(tmp, cube, out)
                    write_cube_row(h5, n_ok, cube)
                    n_ok += 1
                bar.update()
            bar.close()
            for name in h5:
                h5[name].resize(n_ok, axis=0)
            csv = pd.DataFrame(rejects, columns=["plateifu", "path", "reason"]).to_csv(index=False)
            h5.attrs["rejects_sha256"] = hashlib.sha256(csv.encode()).hexdigest()
            h5.attrs["n_rejects"] = len(rejects)
        if n_total and len(rejects) / n_total > max_reject_fraction:
            reasons = "\n".join(f"  {r['plateifu'] or r['path']}: {r['reason']}" for r in rejects)
            fail(TooManyRejects(
                f"{label or out}: {len(rejects)} of {n_total} cubes rejected, above max_reject_fraction="
                f"{max_reject_fraction}:\n{reasons}"
            ))  # fmt: skip
        if n_ok == 0 and (out.exists() or not allow_empty):
            fail(
                NothingExtracted(
                    f"{out}: no cube could be extracted ({len(rejects)} rejected); "
                    + ("the file was not replaced" if out.exists() else "no file was written")
                )
            )
        tmp_rej.write_text(csv)
    dt = time.perf_counter() - t0
    return ExtractSummary(n_ok, len(rejects), dt, rejects)
