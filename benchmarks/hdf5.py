"""cubes.h5 compression: file size and random-access read time per cube for
none / lzf / gzip, same data, one cube per chunk, measured side by side.

    python benchmarks/hdf5.py [--galaxies 200]

The training pipeline reads cubes in a random order, one chunk each: this
is the access pattern measured (page cache warm, so decompression dominates).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--galaxies", type=int, default=200)
    args = ap.parse_args()
    import h5py

    from linecube.io.formats import h5_compression_kwargs
    from linecube.simulate import simulate_cubes_h5

    with tempfile.TemporaryDirectory() as td:
        src = Path(td) / "src.h5"
        simulate_cubes_h5(src, args.galaxies, 1, threads=2, progress=False, compression="none")
        with h5py.File(src) as s:
            arrays = {k: s[k][()] for k in ("flux", "ivar", "mask")}
        rows = []
        order = np.random.default_rng(0).permutation(args.galaxies)
        for comp in ("none", "lzf", "gzip"):
            p = Path(td) / f"{comp}.h5"
            t = time.perf_counter()
            with h5py.File(p, "w") as h5:
                for k, a in arrays.items():
                    h5.create_dataset(k, data=a, chunks=(1, *a.shape[1:]), **h5_compression_kwargs(comp))
            tw = time.perf_counter() - t
            with h5py.File(p) as h5:
                for _ in range(2):  # warm, then measure
                    t = time.perf_counter()
                    for r in order:
                        h5["flux"][r], h5["ivar"][r], h5["mask"][r]
                    tr = (time.perf_counter() - t) / len(order)
            rows.append((comp, p.stat().st_size / 1e6, tw, tr * 1e3))
    base = rows[0]
    print(f"\ncubes.h5 with {args.galaxies} galaxies (flux + ivar + mask per read)")
    print(f"{'compression':>11} {'size MB':>8} {'size ratio':>10} {'write s':>8} {'read ms/cube':>13} {'read ratio':>10}")
    for r in rows:
        print(f"{r[0]:>11} {r[1]:8.1f} {r[1] / base[1]:10.2f} {r[2]:8.2f} {r[3]:13.3f} {r[3] / base[3]:10.1f}")


if __name__ == "__main__":
    main()
