"""Shared helpers of the benchmark scripts: a simulated cubes.h5 made through the
real path (LOGCUBE.fits.gz -> extraction), timing utilities."""

from __future__ import annotations

import statistics
import time
from pathlib import Path


def simulated_cubes(tmp: Path, n: int, seed: int = 1) -> Path:
    """n galaxies: LOGCUBEs in the DR17 format, extracted into tmp/cubes.h5."""
    from linecube.extract import extract_to_h5
    from linecube.formats import load_lines
    from linecube.manga import cube_requests
    from linecube.sample import build_sample
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
    from linecube.backend import configure
    from linecube.config import validate_config

    configure(0, deterministic=False)
    return validate_config({"data": {}})
