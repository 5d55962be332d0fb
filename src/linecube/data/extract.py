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

import io
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------
# Geometry: windows and crops (pure functions)
# --------------------------------------------------------------------------
from linecube.data.windows import crop_bounds, window_centres, window_indices
from linecube.io.drpall import CubeRequest
from linecube.io.formats import CubeLayout, LineList, VoxelFlag, clean_masked, shown
from linecube.io.logcube import (
    BITPIX_DTYPES,
    CubeError,
    LogcubeStream,
    centre_pixel,
    check_scaling,
    check_wave_grid,
    data_nbytes,
    decompress_errors,
    header_wavelengths,
)
from linecube.io.manga import BUNIT, DRP_UNUSABLE, NWAVE


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
