"""Shared helpers of the benchmark scripts: a simulated cubes.h5 made through the
real path (LOGCUBE.fits.gz -> extraction), timing utilities (also the HDF5 feed's)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path


def simulated_cubes(tmp: Path, n: int, seed: int = 1) -> Path:
    """n galaxies: LOGCUBEs in the DR17 format, extracted into tmp/cubes.h5."""
    from linecube.data.extract_survey import extract_to_h5
    from linecube.data.sample import build_sample
    from linecube.io.drpall import cube_requests
    from linecube.io.formats import load_lines
    from linecube.simulate import simulate_survey

    redux = tmp / "redux"
    simulate_survey(redux, n, seed, threads=2, progress=False, extras=False)
    sample, _, _ = build_sample(redux / "v3_1_1" / "drpall-v3_1_1.fits", redux, "v3_1_1")
    reqs = [r for p in sample.plate.unique() for r in cube_requests(sample, p)]
    out = tmp / "cubes.h5"
    from linecube.config import validate_config

    comp = validate_config({"data": {}})["extract"]["hdf5_compression"]
    extract_to_h5(reqs, out, load_lines(), drpver="v3_1_1", threads=2, progress=False, compression=comp)
    return out


def median_time(fn, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def tensorflow_and_defaults() -> dict:
    """TensorFlow set up for timing (seeded, not deterministic: faster kernels) and
    the validated default configuration."""
    from linecube.config import validate_config
    from linecube.model.backend import configure

    configure(0, deterministic=False)
    return validate_config({"data": {}})


def feed_samples_per_s(cubes: Path, batch: int, n_batches: int, max_workers: int, rounds: int = 1) -> dict:
    """Samples/s that the training feed (``CubeBatches`` over every galaxy of
    ``cubes``: read, augment, scale, reorder; the default configuration) serves on
    its own, no model, with 1, 2, 4, 8 threads up to ``max_workers``: {"1": x, ...},
    best of ``rounds``, each count a fresh feed (its first batch, the start-up, untimed)."""
    import h5py
    import numpy as np
    import yaml

    from linecube.config import with_defaults
    from linecube.data.dataset import AugmentConfig, CubeSource
    from linecube.data.fluxscale import FluxScaler
    from linecube.io.formats import load_lines
    from linecube.model.batches import make_dataset
    from linecube.model.spec import ModelConfig

    cfg = yaml.safe_load((Path(__file__).resolve().parent.parent / "config" / "config.yaml").read_text())
    keys = with_defaults("model", cfg.get("model"))
    mcfg = ModelConfig.from_config(keys)
    scaler = FluxScaler.from_config(keys, list(load_lines().names), mcfg.window_bins)
    aug = AugmentConfig.from_config(cfg.get("train"))
    with h5py.File(cubes) as h5:
        n = h5["flux"].shape[0]
    workers = [w for w in (1, 2, 4, 8) if w <= max(1, max_workers)]
    best = {str(w): 0.0 for w in workers}
    for _ in range(rounds):
        for w in workers:
            src = CubeSource(cubes, np.arange(n), 0, aug, need_mask=scaler.per_galaxy, pairs=mcfg.pairs)
            ds = make_dataset(src, mcfg, scaler, batch, False, repeat=True, workers=w)
            ds[0]
            t = time.perf_counter()
            for b in range(1, n_batches + 1):
                ds[b]
            best[str(w)] = max(best[str(w)], n_batches * batch / (time.perf_counter() - t))
            ds.close()
            src.close()
    return best
