"""GPU benchmark: training and scoring throughput of the default model and the paper's.

    KERAS_BACKEND=torch python benchmarks/gpu.py --out gpu.json     # or jax; a GPU node
    python benchmarks/gpu.py --cpu --out gpu-cpu.json               # a tiny smoke run (the test suite)

Measures, on the backend Keras runs on (``KERAS_BACKEND``):

* training samples per second of the default model (config/config.yaml) and of
  the paper's (config/paper.yaml: the ``stack`` architecture, 190 time steps) at
  batch 16, 64 and 256, mixed precision (``mixed_float16``) off and on, and the
  peak GPU memory of each;
* scoring (inference) cubes per second at batch 256;
* the wall time of one epoch at the paper's scale, ~27,000 training cubes
  (9,000 galaxies x 3 augmented copies), for each model at its best batch: run in
  full up to ``--epoch-cap`` seconds, extrapolated beyond (and said so).

Cubes are synthetic (made on the machine, a pool of distinct random batches
cycled through, so no data travels and the input never waits on a disk). It needs
only keras, numpy and PyYAML beside the backend: no TensorFlow, astropy or h5py
(docs/benchmarks.md says which wheels to carry to a node that lacks keras).
With h5py installed it also times real training's input alone: the HDF5 feed
(read, augment, scale; the default configuration, a synthetic cubes.h5) with 1, 2,
4, 8 threads (train_model uses the job's threads but one on a GPU), to set beside
the GPU's samples/s.
Targets: >= 2,000 training samples/s for the default model at its best batch; the
paper's 30 epochs of ~27,000 cubes in <= 1 hour (>= 225 samples/s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # common.py
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def model_config(name: str, crop: int) -> dict:
    """The ``model:`` keys of the default configuration or of config/paper.yaml over it."""
    import yaml

    from linecube.config import deep_merge, with_defaults

    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    if name == "paper":
        cfg = deep_merge(cfg, yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    return with_defaults("model", cfg.get("model")), {"crop": crop}


def build(name: str, crop: int, batch: int, mixed: bool, steps_total: int):
    import keras

    from linecube.model.autoencoder import build_model
    from linecube.model.spec import ModelConfig
    from linecube.model.train import one_cycle, optimizer

    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keys, shape = model_config(name, crop)
    mcfg = ModelConfig.from_config(keys, crop=shape["crop"])
    model = build_model(mcfg, "ae")
    opt = "adagrad" if name == "paper" else "adam"
    model.compile(optimizer=optimizer(opt, one_cycle(1e-3, steps_total), 1.0 if name != "paper" else None))
    return model, mcfg


def batches(mcfg, batch: int, pool: int, seed: int = 0):
    """``pool`` distinct random batches in the model layout (a smooth blob plus noise)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t, h, w, c = mcfg.input_shape
    yy, xx = np.mgrid[:h, :w]
    blob = np.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (0.1 * h * w)).astype(np.float32)
    out = []
    for _ in range(pool):
        x = rng.standard_normal((batch, t, h, w, c), dtype=np.float32) * 0.05
        x += blob[None, None, :, :, None] * rng.uniform(0.5, 2.0, (batch, t, 1, 1, c)).astype(np.float32)
        out.append({"x": x})
    return out


def dataset(pool: list):
    import keras

    class Synthetic(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()

        @property
        def num_batches(self):
            return None

        def __getitem__(self, i):
            return (pool[i % len(pool)],)

    return Synthetic()


def train_rate(name, crop, batch, mixed, steps, warmup, pool_n):
    """(samples/s, peak GPU bytes or None) of ``steps`` timed training steps."""
    import keras

    from linecube.model import backend as kb

    _reset_peak()
    model, mcfg = build(name, crop, batch, mixed, steps + warmup)
    data = dataset(batches(mcfg, batch, pool_n))
    model.fit(data, steps_per_epoch=warmup, epochs=1, verbose=0, shuffle=False)
    _sync()
    t0 = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False)
    _sync()
    dt = time.perf_counter() - t0
    peak = kb.peak_memory_bytes()
    keras.backend.clear_session()
    return steps * batch / dt, peak


def epoch_wall(name, crop, batch, mixed, n_cubes, cap_s, pool_n):
    """Wall time of one epoch of ``n_cubes`` at ``batch``: run in full, or for
    ``cap_s`` seconds and extrapolated; (seconds, extrapolated?)."""
    import keras

    steps_total = -(-n_cubes // batch)
    model, mcfg = build(name, crop, batch, mixed, steps_total)
    data = dataset(batches(mcfg, batch, pool_n, seed=1))
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0, shuffle=False)  # compile / trace
    _sync()
    done, t0 = 0, time.perf_counter()
    chunk = max(1, min(steps_total, 20))
    while done < steps_total and time.perf_counter() - t0 < cap_s:
        n = min(chunk, steps_total - done)
        model.fit(data, steps_per_epoch=n, epochs=1, verbose=0, shuffle=False)
        done += n
    _sync()
    dt = time.perf_counter() - t0
    keras.backend.clear_session()
    return dt * steps_total / done, done < steps_total


def score_rate(name, crop, batch, steps, pool_n):
    import keras

    model, mcfg = build(name, crop, batch, False, 10)
    inp = keras.Input(mcfg.input_shape)
    code = model.encoder(inp)
    infer = keras.Model(inp, [code[:, : model.latent_dim], model.decoder(code)])
    pool = batches(mcfg, batch, pool_n, seed=2)
    infer.predict_on_batch(pool[0]["x"])
    _sync()
    t0 = time.perf_counter()
    for i in range(steps):
        infer.predict_on_batch(pool[i % len(pool)]["x"])
    _sync()
    dt = time.perf_counter() - t0
    keras.backend.clear_session()
    return steps * batch / dt


def _sync():
    from linecube.model import backend as kb

    b = kb.name()
    if b == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    elif b == "jax":
        import jax

        (jax.device_put(0.0) + 0).block_until_ready()


def _reset_peak():
    from linecube.model import backend as kb

    if kb.name() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()


def feed_rate(batch: int, n_batches: int, max_workers: int, n_galaxies: int = 24) -> dict | None:
    """Samples/s that real training's input (the HDF5 feed, ``CubeBatches``: read,
    augment, scale, reorder, the default configuration) serves on its own, with 1,
    2, 4 ... threads up to ``max_workers``, from a synthetic cubes.h5 written here
    (uncompressed, as config/config.yaml's extraction writes it); None when h5py is
    not installed (then only the in-memory rates are measured)."""
    try:
        import h5py
    except ImportError:
        return None
    import tempfile

    import numpy as np
    from common import feed_samples_per_s

    from linecube.io.formats import CubeLayout, create_cube_file, load_lines

    layout, lines = CubeLayout(), load_lines()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as td:
        path = Path(td) / "cubes.h5"
        with h5py.File(path, "w") as h5:
            create_cube_file(h5, n_galaxies, layout, lines, drpver="v3_1_1", compression=None)
            for i in range(n_galaxies):
                h5["flux"][i] = 1.0 + rng.standard_normal(layout.cube_shape, dtype=np.float32)
                h5["ivar"][i] = np.full(layout.cube_shape, 100.0, np.float32)
        return feed_samples_per_s(path, batch, n_batches, max_workers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="tiny smoke run on the CPU (8x8 crop, batches 2 and 4, one timed step)")
    ap.add_argument("--batches", default=None, help="training batch sizes (default 16,64,256; --cpu 2,4)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default 20; --cpu 2)")
    ap.add_argument("--epoch-cubes", type=int, default=27000, help="cubes in one epoch at the paper's scale")
    ap.add_argument("--epoch-cap", type=float, default=None, help="seconds an epoch runs before it is extrapolated (default 90)")
    ap.add_argument("--models", default="default,paper")
    ap.add_argument("--no-mixed", action="store_true", help="skip mixed precision")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    from linecube.model import backend as kb

    if args.cpu:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    kb.select(None)
    kb.configure(0, deterministic=False)
    gpus = kb.gpus()
    crop = 8 if args.cpu else 32
    sizes = [int(b) for b in (args.batches or ("2,4" if args.cpu else "16,64,256")).split(",")]
    steps = args.steps or (1 if args.cpu else 20)
    warmup = 1 if args.cpu else 5
    pool_n = 2 if args.cpu else 4
    cap = args.epoch_cap if args.epoch_cap is not None else (5.0 if args.cpu else 90.0)
    n_epoch = min(args.epoch_cubes, 8) if args.cpu else args.epoch_cubes
    mixed_opts = [False] if (args.no_mixed or not gpus) else [False, True]
    res = {"backend": kb.name(), "gpus": gpus, "cpu_smoke": bool(args.cpu), "crop": crop, "train": [], "score": {}, "epoch": {}}
    t_all = time.perf_counter()
    for name in args.models.split(","):
        best = (0.0, None, False)
        for mixed in mixed_opts:
            for b in sizes:
                row = {"model": name, "batch": b, "mixed_precision": mixed}
                try:
                    sps, peak = train_rate(name, crop, b, mixed, steps, warmup, pool_n)
                    row.update(samples_per_s=sps, peak_gpu_bytes=peak)
                    if sps > best[0]:
                        best = (sps, b, mixed)
                except Exception as e:  # noqa: BLE001 - out of memory at a batch is a result, not a failure
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                res["train"].append(row)
                print(json.dumps(row), flush=True)
        res["score"][name] = {"batch": max(sizes), "cubes_per_s": score_rate(name, crop, max(sizes), steps, pool_n)}
        if best[1] is not None:
            wall, extra = epoch_wall(name, crop, best[1], best[2], n_epoch, cap, pool_n)
            res["epoch"][name] = {
                "cubes": n_epoch,
                "batch": best[1],
                "mixed_precision": best[2],
                "seconds": wall,
                "extrapolated": extra,
                "thirty_epochs_hours": 30 * wall / 3600,
            }
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    res["feed_batch"] = 16
    res["feed_samples_per_s"] = feed_rate(16, 4 if args.cpu else 60, 2 if args.cpu else min(8, cores))
    res["wall_seconds"] = time.perf_counter() - t_all
    print(f"\nbackend {res['backend']}, devices {gpus or ['CPU']}")
    print(f"{'model':>8} {'batch':>6} {'mixed':>6} {'samples/s':>10} {'peak GPU GB':>12}")
    for r in res["train"]:
        peak = f"{r['peak_gpu_bytes'] / 1e9:.2f}" if r.get("peak_gpu_bytes") else "-"
        rate = f"{r['samples_per_s']:.1f}" if "samples_per_s" in r else r.get("error", "")[:40]
        print(f"{r['model']:>8} {r['batch']:>6} {str(r['mixed_precision']):>6} {rate:>10} {peak:>12}")
    for name, s in res["score"].items():
        print(f"scoring {name}: {s['cubes_per_s']:.1f} cubes/s at batch {s['batch']}")
    for name, e in res["epoch"].items():
        print(f"one epoch of {e['cubes']} cubes, {name} at batch {e['batch']}: {e['seconds']:.0f} s"
              f"{' (extrapolated)' if e['extrapolated'] else ''}; 30 epochs {e['thirty_epochs_hours']:.2f} h")  # fmt: skip
    feed = res["feed_samples_per_s"]
    if feed:
        print(f"the HDF5 feed alone (batch 16, {cores} cores), samples/s by threads: "
              + ", ".join(f"{w}: {v:.0f}" for w, v in feed.items()))  # fmt: skip
    else:
        print("the HDF5 feed: not measured (no h5py here; carry its wheel to measure it)")
    if gpus:
        best_default = max((r.get("samples_per_s", 0) for r in res["train"] if r["model"] == "default"), default=0)
        print(f"target default >= 2,000 samples/s: {'met' if best_default >= 2000 else 'NOT met'} ({best_default:.0f})")
        if "paper" in res["epoch"]:
            h = res["epoch"]["paper"]["thirty_epochs_hours"]
            print(f"target paper's 30 epochs <= 1 h: {'met' if h <= 1 else 'NOT met'} ({h:.2f} h)")
    Path(args.out).write_text(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
