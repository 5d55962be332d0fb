"""Reading a MaNGA DRP LOGCUBE FITS file: the gzip stream read HDU by HDU
(:class:`LogcubeStream`, with the CRC check), the WCS of the cube and its centre
pixel, the wavelength grid checked against DR17's, BITPIX and scaling checks;
every failure a :class:`CubeError` naming the file and the problem.
"""

from __future__ import annotations

import os
import re

import numpy as np

from linecube.io.manga import CD3_3, CRVAL3, NWAVE, log_wave_grid

BLOCK = 2880

_GZIP_MAGIC = b"\x1f\x8b"


def decompress_errors() -> tuple[type[BaseException], ...]:
    """Exception types a broken deflate stream raises (ISA-L's are not OSErrors)."""
    import zlib

    from isal.isal_zlib import IsalError

    return (IsalError, zlib.error)


class CubeError(Exception):
    """A cube that cannot be used; the message says why in words."""


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
