"""Scoring throughput: batched inference fed by cubes.h5 (a reader thread one
batch ahead) vs the same model fed from arrays already in memory, both layouts,
measured side by side in one run.

    python benchmarks/score.py [--galaxies 96] [--batch 32]

Target (issue 7): the HDF5-fed rate >= 0.95 x the in-memory rate.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--galaxies", type=int, default=96)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--layouts", nargs="+", default=["lines", "wavelength"])
    args = ap.parse_args()

    import h5py
    from common import tensorflow_and_defaults

    from linecube.analysis.stats import Reconstructor, iter_batches
    from linecube.io.formats import read_layout
    from linecube.model.autoencoder import build_model
    from linecube.model.spec import ModelConfig
    from linecube.simulate import simulate_cubes_h5

    defaults = tensorflow_and_defaults()
    rows = []
    with tempfile.TemporaryDirectory() as td:
        cubes = Path(td) / "cubes.h5"
        simulate_cubes_h5(cubes, args.galaxies, 1, threads=2, progress=False, compression=defaults["extract"]["hdf5_compression"])
        with h5py.File(cubes) as h5:
            layout, _ = read_layout(h5)
            flux, mask = h5["flux"][()], h5["mask"][()]
        for lay in args.layouts:
            mcfg = {**defaults["model"], "layout": lay}
            m = build_model(ModelConfig.from_config(mcfg), "ae")
            m.save(Path(td) / f"{lay}.keras")
            rec = Reconstructor(Path(td) / f"{lay}.keras", mcfg, layout)
            rec(flux[: args.batch], mask[: args.batch])  # trace

            def from_h5(r=rec):
                for _, f, _iv, mk in iter_batches(cubes, args.batch):
                    r(f, mk)

            def from_memory(r=rec):
                for s in range(0, len(flux), args.batch):
                    r(flux[s : s + args.batch], mask[s : s + args.batch])

            t = {"hdf5": [], "memory": []}
            for _ in range(args.rounds):
                for name, fn in (("hdf5", from_h5), ("memory", from_memory)):
                    s = time.perf_counter()
                    fn()
                    t[name].append(time.perf_counter() - s)
            h5r, memr = args.galaxies / min(t["hdf5"]), args.galaxies / min(t["memory"])
            rows.append((lay, h5r, memr, h5r / memr))
            print(f"{lay}: done", flush=True)
    print(f"\nScoring throughput (encoder + decoder, batch {args.batch}, {os.cpu_count()} CPU cores, best of {args.rounds})")
    print(f"{'layout':>11} {'HDF5 cubes/s':>13} {'memory cubes/s':>15} {'ratio':>6}")
    for r in rows:
        print(f"{r[0]:>11} {r[1]:>13.1f} {r[2]:>15.1f} {r[3]:>6.3f}")
    print("target (HDF5 / in-memory >= 0.95):", "met" if all(r[3] >= 0.95 for r in rows) else "NOT met")


if __name__ == "__main__":
    main()
