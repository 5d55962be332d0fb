"""Extraction speed: linecube's streaming reader vs naive astropy vs the
decompression limit, measured side by side in one run (ratios, not absolute
times, are the result: this machine is shared and noisy).

    python benchmarks/extract.py [--repeats 5] [--sizes 19 127]

(a) naive: fits.open(path), then the full FLUX, IVAR and MASK .data, then slicing;
(b) limit: only decompressing (ISA-L) the gzip bytes up to the last needed byte
    (the last needed MASK slice), discarding them;
(c) linecube: extract_cube (headers, WCS, windows, crop, masks, all included).
Targets (issue 2): naive / linecube >= 5 and linecube / limit <= 1.3.
Also: a plate of 12 cubes with threads=1 vs threads=2.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import median_time


def make_cube(tmp: Path, ifusize: int, lines):
    from linecube.simulate import build_logcube, plan_survey, write_fits_gz

    g = next(g for g in plan_survey(60, seed=3) if g.ifusize == ifusize)
    path = tmp / f"manga-{g.plate}-{g.ifudsgn}-LOGCUBE.fits.gz"
    write_fits_gz(build_logcube(g, lines, np.random.default_rng(1)), path)
    return g, path


def naive(path, idx, cx, cy):
    from astropy.io import fits

    with fits.open(path) as hl:
        f = hl["FLUX"].data
        i = hl["IVAR"].data
        m = hl["MASK"].data
        sl = (idx, slice(cy - 16, cy + 16), slice(cx - 16, cx + 16))
        return f[sl].copy(), i[sl].copy(), m[sl].copy()


def last_needed_byte(path, idx) -> int:
    from astropy.io import fits

    with fits.open(path) as hl:
        loc = hl.fileinfo(hl.index_of("MASK"))["datLoc"]
        ny, nx = hl["MASK"].header["NAXIS2"], hl["MASK"].header["NAXIS1"]
    return loc + (int(np.max(idx)) + 1) * ny * nx * 4


def limit(path, nbytes: int) -> None:
    from isal import igzip

    buf = bytearray(1 << 22)
    mv = memoryview(buf)
    with igzip.open(path, "rb") as fh:
        left = nbytes
        while left > 0:
            n = fh.readinto(mv[: min(len(mv), left)])
            if not n:
                raise EOFError
            left -= n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[19, 127])
    args = ap.parse_args()

    from astropy.io import fits

    from linecube.data.extract import extract_cube
    from linecube.data.extract_survey import extract_to_h5
    from linecube.data.windows import window_centres, window_indices
    from linecube.io.drpall import CubeRequest
    from linecube.io.formats import load_lines
    from linecube.io.logcube import centre_pixel, header_wavelengths

    lines = load_lines()
    rows = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        for size in args.sizes:
            g, path = make_cube(tmp, size, lines)
            req = CubeRequest(g.plateifu, str(path), g.mangaid, g.z, g.objra, g.objdec)
            hdr = fits.getheader(path, "FLUX")
            idx = window_indices(window_centres(header_wavelengths(hdr), lines.rest, g.z))
            x, y = centre_pixel(hdr, g.objra, g.objdec)
            cx, cy = int(round(x)), int(round(y))
            nb = last_needed_byte(path, idx)
            extract_cube(req, lines)  # warm imports and page cache
            naive(path, idx, cx, cy)
            t_ours, t_naive, t_limit = [], [], []
            for _ in range(args.repeats):  # interleaved so drifts in machine load hit all three
                t_ours.append(median_time(lambda r=req: extract_cube(r, lines), 1))
                t_naive.append(median_time(lambda p=path, i=idx, x=cx, y=cy: naive(p, i, x, y), 1))
                t_limit.append(median_time(lambda p=path, b=nb: limit(p, b), 1))
            o, n, lim = (statistics.median(t) for t in (t_ours, t_naive, t_limit))
            n_side = hdr["NAXIS1"]
            rows.append((f"{n_side}x{n_side}", path.stat().st_size / 1e6, nb / 1e6, n, lim, o, n / o, o / lim))

        print(f"\nExtraction of one LOGCUBE (median of {args.repeats} interleaved runs)")
        print(
            f"{'cube':>8} {'gz MB':>7} {'prefix MB':>9} {'naive s':>8} {'limit s':>8} {'linecube s':>10} {'naive/linecube':>14} {'linecube/limit':>14}"
        )
        for r in rows:
            print(f"{r[0]:>8} {r[1]:7.1f} {r[2]:9.1f} {r[3]:8.3f} {r[4]:8.3f} {r[5]:10.3f} {r[6]:14.1f} {r[7]:14.2f}")
        ok = all(r[6] >= 5 and r[7] <= 1.3 for r in rows)
        print("targets (naive/linecube >= 5, linecube/limit <= 1.3):", "met" if ok else "NOT met")

        # a plate: 12 small cubes, threads 1 vs 2
        from linecube.simulate import build_logcube, plan_survey, write_fits_gz

        gals = [g for g in plan_survey(60, seed=4) if g.ifusize in (19, 37)][:12]
        reqs = []
        for g in gals:
            p = tmp / f"manga-{g.plate}-{g.ifudsgn}-LOGCUBE.fits.gz"
            write_fits_gz(build_logcube(g, lines, np.random.default_rng(2)), p)
            reqs.append(CubeRequest(g.plateifu, str(p), g.mangaid, g.z, g.objra, g.objdec))
        t = {}
        for th in (1, 2, 1, 2):
            s = time.perf_counter()
            extract_to_h5(reqs, tmp / f"plate{th}.h5", lines, drpver="v3_1_1", threads=th, progress=False)
            t.setdefault(th, []).append(time.perf_counter() - s)
        t1, t2 = min(t[1]), min(t[2])
        print(f"\nplate of {len(reqs)} cubes (19/37-fibre): threads=1 {t1:.2f} s, threads=2 {t2:.2f} s, speed-up {t1 / t2:.2f}x")


if __name__ == "__main__":
    main()
