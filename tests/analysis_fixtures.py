"""Small, real-format inputs for the analysis tests (cubes.h5 written by our own writer)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from linecube.formats import CubeLayout, create_cube_file, load_lines


def write_cubes_h5(path: Path, n: int = 12, seed: int = 0) -> list[str]:
    """A cubes.h5 with n galaxies of Gaussian 'lines' on noise, in the contract layout."""
    lines = load_lines()
    layout = CubeLayout()
    rng = np.random.default_rng(seed)
    pifus = [f"{8000 + i // 6}-{1901 + i}" for i in range(n)]
    with h5py.File(path, "w") as h5:
        create_cube_file(h5, n, layout, lines, drpver="v3_1_1")
        yy, xx = np.mgrid[:32, :32]
        prof = np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 40.0)
        spec = np.tile(np.exp(-0.5 * ((np.arange(10) - 5) / 1.2) ** 2), 19)
        for i, p in enumerate(pifus):
            amp = rng.uniform(0.5, 5, 19).repeat(10)
            f = (amp * spec)[:, None, None] * prof[None] + rng.normal(0, 0.05, (190, 32, 32))
            h5["flux"][i] = f.astype(np.float32)
            h5["ivar"][i] = np.full((190, 32, 32), 400.0, np.float32)
            m = np.zeros((190, 32, 32), np.uint8)
            m[:, :2, :] = 1
            h5["mask"][i] = m
            z = 0.02 + 0.001 * i
            h5["wave"][i] = np.repeat(lines.rest * (1 + z), 10) + np.tile(np.arange(-5, 5), 19)
            h5["plateifu"][i] = p
            h5["mangaid"][i] = f"1-{300000 + i}"
            h5["z"][i] = z
            h5["objra"][i] = 150.0 + i
            h5["objdec"][i] = 20.0
    return pifus


def write_results(res: Path, model: str, pifus: list[str], seed: int = 0) -> None:
    """embedding.csv and scores.csv of a fake run (for the neighbours CLI and figures)."""
    rng = np.random.default_rng(seed)
    n = len(pifus)
    d = res / model
    d.mkdir(parents=True, exist_ok=True)
    emb = pd.DataFrame({"plateifu": pifus})
    for i in range(5):
        emb[f"pc{i + 1}"] = rng.normal(size=n)
    for i in range(3):
        emb[f"umap{i + 1}"] = rng.normal(size=n)
    emb.to_csv(d / "embedding.csv", index=False)
    sc = pd.DataFrame({"plateifu": pifus, "mangaid": [f"1-{300000 + i}" for i in range(n)], "score": rng.lognormal(0, 1, n)})
    sc["rank"] = sc["score"].rank(ascending=False, method="first").astype(int)
    sc["percentile"] = 100 * sc["score"].rank(pct=True)
    sc["mean_abs_flux"] = sc["score"] * rng.uniform(1.1, 2.0, n)
    lines = load_lines()
    sh = rng.dirichlet(np.ones(19), n)
    for k, name in enumerate(lines.names):
        sc[f"share_{name}"] = sh[:, k]
    sc["wise_agn"] = [i % 5 == 0 for i in range(n)]
    sc["bat_agn"] = False
    sc["radio_agn"] = [i % 3 == 0 for i in range(n)]
    sc["broad_agn"] = False
    sc["agn"] = sc[["wise_agn", "radio_agn"]].any(axis=1)
    sc.sort_values("rank").to_csv(d / "scores.csv", index=False)
