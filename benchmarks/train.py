"""Training throughput on each Keras backend: the HDF5 input pipeline (``CubeBatches``,
a keras.utils.PyDataset) against the same batches fed from memory, and the default
model's step against the previous default's, measured side by side in one run.

    python benchmarks/train.py [--backends tensorflow,torch,jax] [--galaxies 24] [--steps 12]

Each backend runs in a process of its own (Keras fixes its backend at import).
Targets: HDF5 / in-memory samples per second >= 0.95 on every backend (the feed
keeps up with the step); the default model's TensorFlow step no slower than the
previous default's (the ``stack`` architecture, filters [8, 16], latent 32: what
config/config.yaml held before the bottleneck architecture). CPU, float32,
batch 16 (train.batch_size).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

#: the model keys config/config.yaml had before this round (stop 19)
PREVIOUS_DEFAULT = {
    "architecture": "stack",
    "filters": [8, 16],
    "strides": [2, 2],
    "latent_dim": 32,
    "pose_dim": 0,
    "consistency_weight": 0.0,
    "mean_cube": False,
    "encoder_layernorm": False,
}


def measure(args) -> dict:
    """One backend (this process's): samples/s of the HDF5 pipeline and of memory."""
    from common import simulated_cubes

    from linecube.model import backend as kb

    kb.select(args.backend)
    kb.configure(0, deterministic=False, threads=args.threads)
    import keras
    import numpy as np

    from linecube.config import validate_config
    from linecube.data.dataset import AugmentConfig, CubeSource
    from linecube.data.fluxscale import FluxScaler
    from linecube.io.formats import load_lines
    from linecube.model.autoencoder import build_model
    from linecube.model.batches import assemble_batch, make_dataset
    from linecube.model.spec import ModelConfig
    from linecube.model.train import optimizer

    defaults = validate_config({"data": {}})
    bs = int(defaults["train"]["batch_size"])
    out = {"backend": kb.name(), "models": {}}
    with tempfile.TemporaryDirectory() as td:
        cubes = simulated_cubes(Path(td), args.galaxies)
        names = list(load_lines().names)
        for label, keys in (("default", {}), ("previous default", PREVIOUS_DEFAULT)):
            if label != "default" and not args.compare_previous:
                continue
            mcfg = ModelConfig.from_config({**defaults["model"], **keys})
            model = build_model(mcfg, "ae")
            model.compile(optimizer=optimizer("adam", 1e-3, 1.0))
            scaler = FluxScaler.from_config({**defaults["model"], **keys}, names, 10)
            src = CubeSource(
                cubes, np.arange(args.galaxies), 0, AugmentConfig.from_config(defaults["train"]),
                need_mask=scaler.per_galaxy, pairs=mcfg.pairs,
            )  # fmt: skip
            # both feeds end one batch after a timed call's steps (as train() does): TensorFlow's
            # prefetch on an endless feed can hold fit's return for seconds (docs/benchmarks.md)
            ds_h5 = make_dataset(src, mcfg, scaler, bs, False, repeat=True, steps=args.steps)
            n = src.n_batches(bs)
            batches = [assemble_batch(src, mcfg, scaler, src.batch_samples(0, b, bs), 0, False) for b in range(n)]

            class Memory(keras.utils.PyDataset):
                def __init__(self, batches, n):
                    super().__init__()
                    self.batches, self.n = batches, n

                @property
                def num_batches(self):
                    return args.steps + 1

                def __getitem__(self, i):
                    return (self.batches[i % self.n],)

            ds_mem = Memory(batches, n)
            for ds in (ds_mem, ds_h5):  # trace
                model.fit(ds, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
            t = {"hdf5": [], "memory": []}
            for _ in range(args.rounds):
                for name, ds in (("hdf5", ds_h5), ("memory", ds_mem)):
                    s = time.perf_counter()
                    model.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0, shuffle=False)
                    t[name].append(time.perf_counter() - s)
            ds_h5.close()
            src.close()
            sps = {k: args.steps * bs / min(v) for k, v in t.items()}
            out["models"][label] = {
                "parameters": int(model.count_params()),
                "hdf5_samples_per_s": sps["hdf5"],
                "memory_samples_per_s": sps["memory"],
                "feed_ratio": sps["hdf5"] / sps["memory"],
                "ms_per_step": 1000 * min(t["memory"]) / args.steps,
            }
            print(f"{out['backend']} {label}: done", file=sys.stderr, flush=True)
    return out


def feed_capacity(galaxies: int, batches: int, rounds: int, max_workers: int) -> dict:
    """Samples/s the HDF5 feed alone serves (no model, default configuration) with
    1, 2, 4, ... assembling threads, from simulated cubes: what a GPU step may draw
    at most."""
    from common import feed_samples_per_s, simulated_cubes

    from linecube.config import validate_config

    batch = int(validate_config({"data": {}})["train"]["batch_size"])
    with tempfile.TemporaryDirectory() as td:
        cubes = simulated_cubes(Path(td), galaxies)
        return feed_samples_per_s(cubes, batch, batches, max_workers, rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default=None, help="comma-separated (default: every one installed)")
    ap.add_argument("--backend", default=None, help=argparse.SUPPRESS)  # one backend, in this process
    ap.add_argument("--galaxies", type=int, default=24)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-previous", dest="compare_previous", action="store_false", help="skip the previous default model")
    ap.add_argument(
        "--feed-workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="also time the feed alone with 1, 2, 4, ... threads up to this (0: skip)",
    )
    ap.add_argument("--out", default=None, help="JSON file to write")
    args = ap.parse_args()
    if args.backend:
        print("RESULT " + json.dumps(measure(args)))
        return
    wanted = args.backends.split(",") if args.backends else [
        b for b, mod in (("tensorflow", "tensorflow"), ("torch", "torch"), ("jax", "jax")) if importlib.util.find_spec(mod)
    ]  # fmt: skip
    results = []
    for b in wanted:
        cmd = [sys.executable, __file__, "--backend", b, "--galaxies", str(args.galaxies), "--steps", str(args.steps),
               "--rounds", str(args.rounds), "--threads", str(args.threads)]  # fmt: skip
        if not args.compare_previous or b != "tensorflow":
            cmd.append("--no-previous")
        p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": b})
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
        if p.returncode or not line:
            print(f"{b}: failed\n{p.stderr[-2000:]}")
            continue
        results.append(json.loads(line[0][7:]))
    print(f"\nTraining throughput, {os.cpu_count()} CPU cores, batch 16 (best of {args.rounds} interleaved rounds)")
    print(
        f"{'backend':>11} {'model':>17} {'params':>9} {'HDF5 samples/s':>15} {'memory samples/s':>17} {'ratio':>6} {'ms/step':>8}"
    )
    for r in results:
        for label, m in r["models"].items():
            print(f"{r['backend']:>11} {label:>17} {m['parameters']:>9,} {m['hdf5_samples_per_s']:>15.2f} "
                  f"{m['memory_samples_per_s']:>17.2f} {m['feed_ratio']:>6.3f} {m['ms_per_step']:>8.0f}")  # fmt: skip
    ok = all(m["feed_ratio"] >= 0.95 for r in results for m in r["models"].values())
    print("target (HDF5 / in-memory >= 0.95 on every backend):", "met" if ok else "NOT met")
    tf = next((r for r in results if r["backend"] == "tensorflow" and "previous default" in r["models"]), None)
    if tf:
        ratio = tf["models"]["default"]["ms_per_step"] / tf["models"]["previous default"]["ms_per_step"]
        print(f"TensorFlow step, default / previous default: {ratio:.2f} (target <= 1: no slower)")
    feed = {}
    if args.feed_workers > 0:
        feed = feed_capacity(args.galaxies, 3 * args.steps, args.rounds, args.feed_workers)
        one = feed["1"]
        print(f"\nThe HDF5 feed alone (no step), samples/s by assembling threads ({os.cpu_count()} cores): "
              + ", ".join(f"{w}: {v:.0f} ({v / one:.2f}x)" for w, v in feed.items()))  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps({"backends": results, "feed_alone_samples_per_s": feed}, indent=1))


if __name__ == "__main__":
    main()
