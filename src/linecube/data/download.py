"""Fetch missing LOGCUBEs from a SAS mirror (rule ``download_cube``).

``{base_url}/{drpver}/{plate}/stack/manga-{plate}-{ifudsgn}-LOGCUBE.fits.gz``
(DR17: base_url = https://data.sdss.org/sas/dr17/manga/spectro/redux). Each
attempt streams to a fresh temporary file next to the destination (created exclusively: a link planted there is never followed), checks the byte
count against Content-Length, then checks the whole gzip stream (its CRC and
length trailer) and the FITS structure (PRIMARY, then FLUX, IVAR and MASK of
4563 wavelengths) in one pass, and only then renames it into place. Dropped
connections, timeouts, truncated bodies, HTTP 429 and 5xx are retried with
exponential backoff (429/503 honour Retry-After); other HTTP errors are final.
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from http.client import HTTPException
from pathlib import Path

from linecube.io.logcube import CubeError, LogcubeStream, data_nbytes, decompress_errors
from linecube.io.manga import NWAVE, logcube_name

log = logging.getLogger("linecube")
RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class DownloadError(RuntimeError):
    """A cube that could not be fetched; the message names the URL and why."""


def cube_url(base_url: str, drpver: str, plate: int, ifudsgn: int) -> str:
    return f"{base_url.rstrip('/')}/{drpver}/{int(plate)}/stack/{logcube_name(plate, ifudsgn)}"


def verify_logcube(path: str | os.PathLike) -> None:
    """Read the whole file once: gzip CRC and length (checked at the end of the
    stream) and the FITS layout. Raises CubeError saying what is wrong."""
    names = []
    try:
        with LogcubeStream(path) as st:
            h = st.read_header()
            if h is None or "SIMPLE" not in h:
                raise CubeError("not a FITS file")
            st.skip(data_nbytes(h))
            while True:
                h = st.read_header()
                if h is None:
                    break
                name = str(h.get("EXTNAME", "")).strip().upper()
                names.append(name)
                if name in ("FLUX", "IVAR", "MASK") and h.get("NAXIS3") != NWAVE:
                    raise CubeError(f"HDU {name} has NAXIS3={h.get('NAXIS3')}, expected {NWAVE}")
                st.skip(data_nbytes(h))
    except EOFError as e:
        raise CubeError(f"truncated ({e})") from None
    except (OSError, *decompress_errors()) as e:
        raise CubeError(f"corrupt gzip data ({e})") from None
    missing = [n for n in ("FLUX", "IVAR", "MASK") if n not in names]
    if missing:
        raise CubeError(f"no {', '.join(missing)} HDU")


def download_cube(
    url: str,
    dest: str | os.PathLike,
    *,
    retries: int = 5,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    chunk: int = 1 << 20,
) -> Path:
    """Fetch ``url`` to ``dest`` (atomically, verified); retry transient failures."""
    from linecube.io.atomic import atomic_path

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    last = "no attempt"
    for attempt in range(retries + 1):
        wait = backoff_s * (2**attempt)
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "linecube"})
            # a fresh, exclusively created temporary (never a name a link could be planted at),
            # renamed onto dest only once verified
            with atomic_path(dest) as part:
                with urllib.request.urlopen(req, timeout=timeout_s) as resp, open(part, "r+b") as fh:
                    expected = resp.headers.get("Content-Length")
                    got = 0
                    while True:
                        buf = resp.read(chunk)
                        if not buf:
                            break
                        fh.write(buf)
                        got += len(buf)
                if expected is not None and got != int(expected):
                    raise CubeError(f"body ended after {got} of {expected} bytes")
                verify_logcube(part)
            log.info("downloaded %s (%.1f MB, attempt %d)", url, got / 1e6, attempt + 1)
            return dest
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code} {e.reason}"
            if e.code not in RETRY_STATUS:
                raise DownloadError(f"{url}: {last} (not retried)") from None
            ra = e.headers.get("Retry-After") if e.headers else None
            if ra and ra.isdigit():
                wait = max(wait, min(float(ra), 300.0))
        except (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError, OSError, CubeError) as e:
            last = f"{type(e).__name__}: {e}"
        if attempt < retries:
            log.warning("%s: attempt %d failed (%s); retrying in %.1f s", url, attempt + 1, last, wait)
            sleep(wait)
    raise DownloadError(f"{url}: failed after {retries + 1} attempts; last error: {last}")
