"""Training throughput: the HDF5 streaming pipeline vs the same model fed from
in-memory tensors, for both layouts, measured side by side in one run.

    python benchmarks/train.py [--galaxies 24] [--steps-lines 12] [--steps-wavelength 3]

Target (issue 3): HDF5 samples/s >= 0.95 x in-memory samples/s. The in-memory
run gets the very same samples (originals + augmented copies), materialised
beforehand. The default model (config defaults), batch 16, float32, CPU.
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
    ap.add_argument("--galaxies", type=int, default=24)
    ap.add_argument("--steps-lines", type=int, default=12)
    ap.add_argument("--steps-wavelength", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--batch-wavelength", type=int, default=8, help="batch of the 190-step layout (16 needs ~20 GB of RAM on CPU)"
    )
    ap.add_argument("--layouts", nargs="+", default=["lines", "wavelength"])
    args = ap.parse_args()

    import numpy as np
    import tensorflow as tf
    from common import simulated_cubes, tensorflow_and_defaults

    from linecube.dataset import AugmentConfig, CubeSource
    from linecube.fluxscale import FluxScaler
    from linecube.models import ModelConfig, build_model, to_model_layout
    from linecube.train import _optimizer, make_dataset

    defaults = tensorflow_and_defaults()
    results = []
    with tempfile.TemporaryDirectory() as td:
        cubes = simulated_cubes(Path(td), args.galaxies)
        for layout in args.layouts:
            steps = args.steps_lines if layout == "lines" else args.steps_wavelength
            bs = defaults["train"]["batch_size"] if layout == "lines" else args.batch_wavelength
            mcfg = ModelConfig.from_config({**defaults["model"], "layout": layout})
            model = build_model(mcfg, "ae")
            model.compile(optimizer=_optimizer("adagrad", 0.01))
            src = CubeSource(cubes, np.arange(args.galaxies), 0, AugmentConfig(copies=3))
            ds_h5 = make_dataset(src, mcfg, FluxScaler("none"), bs, False).repeat()
            # the same samples in memory
            xs = np.stack([to_model_layout(f[None], mcfg)[0] for f, _, _ in src])
            ds_mem = tf.data.Dataset.from_tensor_slices({"x": xs}).batch(bs).repeat().prefetch(tf.data.AUTOTUNE)
            model.fit(ds_mem, steps_per_epoch=2, epochs=1, verbose=0)  # trace
            model.fit(ds_h5, steps_per_epoch=2, epochs=1, verbose=0)
            t = {"hdf5": [], "memory": []}
            for _ in range(args.rounds):
                for name, ds in (("hdf5", ds_h5), ("memory", ds_mem)):
                    s = time.perf_counter()
                    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
                    t[name].append(time.perf_counter() - s)
            sps = {k: steps * bs / min(v) for k, v in t.items()}
            results.append(
                (
                    layout,
                    mcfg.steps,
                    bs,
                    model.count_params(),
                    sps["hdf5"],
                    sps["memory"],
                    sps["hdf5"] / sps["memory"],
                    min(t["memory"]) / steps,
                )
            )
            print(f"{layout}: done", flush=True)
    print(f"\nTraining throughput, default model, {os.cpu_count()} CPU cores (best of {args.rounds} interleaved rounds)")
    print(
        f"{'layout':>11} {'steps':>5} {'batch':>5} {'params':>9} {'HDF5 samples/s':>15} {'memory samples/s':>17} {'ratio':>6} {'s/batch':>8}"
    )
    for r in results:
        print(f"{r[0]:>11} {r[1]:>5} {r[2]:>5} {r[3]:>9,} {r[4]:>15.2f} {r[5]:>17.2f} {r[6]:>6.3f} {r[7]:>8.2f}")
    ok = all(r[6] >= 0.95 for r in results)
    print("target (HDF5 / in-memory >= 0.95):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
