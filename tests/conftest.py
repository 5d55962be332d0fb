"""Shared fixtures: tiny simulated surveys in the real MaNGA formats."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

REPO = Path(__file__).resolve().parents[1]
REAL_SPECTRA = REPO.parent / "shared" / "data" / "manga-real-spectra"


@pytest.fixture(scope="session")
def lines():
    from linecube.formats import load_lines

    return load_lines(REPO / "resources" / "emission_lines.csv")


@pytest.fixture(scope="session")
def tiny_survey(tmp_path_factory):
    """Six galaxies (LOGCUBEs, drpall, agn.csv, truth.csv) under a redux_dir."""
    from linecube.simulate import simulate_survey

    out = tmp_path_factory.mktemp("survey")
    gals = simulate_survey(out, 6, seed=7, threads=2, progress=False)
    return out, gals


def make_galaxy(index=0, ifusize=19, plate=8485, ifudsgn=None, z=0.03, seed=1, **kw):
    """Draw one star-forming galaxy with controllable IFU, plate and redshift."""
    from linecube.simulate import draw_galaxy

    g = draw_galaxy(index, plate, ifudsgn or int(f"{ifusize}01"), ifusize, "star-forming", "", np.random.default_rng(seed), seed)
    g.z = z
    for k, v in kw.items():
        setattr(g, k, v)
    return g
