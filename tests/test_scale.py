"""Survey scale: the scale-mode simulator matches the LOGCUBE path, and memory of
assembly and scoring does not grow with N (peak RSS measured in subprocesses)."""

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from linecube.formats import CubeLayout, VoxelFlag
from linecube.manga import log_wave_grid


def test_scale_mode_renders_what_extraction_gets(tmp_path, lines):
    from helpers import write_cube

    from linecube.extract import extract_cube
    from linecube.manga import CubeRequest
    from linecube.simulate import emission_line_cube, plan_survey

    g = next(g for g in plan_survey(40, seed=2) if g.ifusize == 37 and not g.anomaly)
    path = write_cube(tmp_path, g, lines)
    ext = extract_cube(CubeRequest(g.plateifu, str(path), g.mangaid, g.z, g.objra, g.objdec), lines)
    sc = emission_line_cube(g, lines, CubeLayout(), log_wave_grid(), np.random.default_rng(0))
    np.testing.assert_allclose(sc["wave"], ext["wave"])
    # same footprint, padding and flags
    np.testing.assert_array_equal(sc["mask"] & VoxelFlag.OUTSIDE_CUBE, ext["mask"] & VoxelFlag.OUTSIDE_CUBE)
    np.testing.assert_array_equal(sc["mask"] != 0, ext["mask"] != 0)
    # same galaxy model: window-by-window mean spectra agree up to the noise
    a, b = sc["flux"].mean(axis=(1, 2)), ext["flux"].mean(axis=(1, 2))
    assert np.corrcoef(a, b)[0, 1] > 0.97
    assert np.median(np.abs(a - b)) < 0.05 * np.abs(b).max()
    np.testing.assert_allclose(np.median(sc["ivar"][sc["mask"] == 0]), np.median(ext["ivar"][ext["mask"] == 0]), rtol=0.2)


def test_cli_cubes_h5_mode(tmp_path):
    from linecube.cli import main

    out = tmp_path / "cubes.h5"
    assert main(["simulate", "--cubes-h5", "--out", str(out), "--n-galaxies", "30", "--seed", "3"]) == 0
    with h5py.File(out) as h5:
        assert h5["flux"].shape == (30, 190, 32, 32) and h5["flux"].chunks == (1, 190, 32, 32)
        p = [s.decode() for s in h5["plateifu"][()]]
        assert p == sorted(p)
    assert (tmp_path / "truth.csv").exists() and (tmp_path / "agn.csv").exists()


def _stage(name, **args):
    """One stage in its own process, through the benchmarks' stage runner."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from scale import stage

    return stage(name, **args)


@pytest.mark.slow
def test_memory_flat_in_n_for_assembly_and_scoring(tmp_path):
    """Peak RSS at 5x the galaxies stays within 15 % for assembly and scoring
    (streaming, one cube or one batch at a time); a fixed bound, not a time."""
    peaks = {}
    for n in (60, 300):
        d = tmp_path / f"n{n}"
        _stage("simulate", out=str(d / "plates"), n=n, seed=1, per_plate=True, threads=2)
        a = _stage("assemble", plates=str(d / "plates"), out=str(d / "cubes.h5"))
        if n == 60:
            _stage(
                "train",
                cubes=str(d / "cubes.h5"),
                out=str(tmp_path / "models" / "ae"),
                steps=2,
                model={"filters": [4, 8], "latent_dim": 8},
            )
        s = _stage(
            "score",
            cubes=str(d / "cubes.h5"),
            model=str(tmp_path / "models" / "ae" / "model.keras"),
            model_cfg={"filters": [4, 8], "latent_dim": 8},
            out=str(d / "ae"),
            top_k=5,
        )
        peaks[n] = (a["peak_rss_mb"], s["peak_rss_mb"])
    assert peaks[300][0] <= 1.15 * peaks[60][0], peaks
    assert peaks[300][1] <= 1.15 * peaks[60][1], peaks
