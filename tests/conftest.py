"""pytest fixtures: the line list, a tiny simulated survey, one good LOGCUBE
(helpers live in fixtures.py)."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pandas as pd
import pytest
from fixtures import REPO, TINY, make_galaxy, make_workdir, run, write_cube, write_cubes_h5, write_results

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture(scope="session")
def lines():
    from linecube.io.formats import load_lines

    return load_lines(REPO / "resources" / "emission_lines.csv")


@pytest.fixture(scope="session")
def tiny_survey(tmp_path_factory):
    """14 galaxies, the smallest sample a run accepts (LOGCUBEs, drpall, agn.csv, truth.csv) under a redux_dir."""
    from linecube.simulate import simulate_survey

    out = tmp_path_factory.mktemp("survey")
    gals = simulate_survey(out, 14, seed=7, threads=2, progress=False)
    return out, gals


@pytest.fixture(scope="module")
def good(tmp_path_factory, lines):
    d = tmp_path_factory.mktemp("good")
    g = make_galaxy(ifusize=19, plate=8001, z=0.03)
    return g, write_cube(d, g, lines)


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    pifus = write_cubes_h5(d / "cubes.h5", n=12)
    for m in ("ae", "vae"):
        write_results(d, m, pifus, seed=1 if m == "ae" else 2)
        with h5py.File(d / "cubes.h5") as src, h5py.File(d / m / "reconstructions.h5", "w") as h5:
            keep = list(pd.read_csv(d / m / "scores.csv")["plateifu"].iloc[:6])
            rows = [pifus.index(p) for p in keep]
            for a in ("line_names", "line_rest_wavelengths", "window_bins", "crop"):
                h5.attrs[a] = src.attrs[a]
            h5["plateifu"] = np.array(keep, dtype=object)
            h5["flux"] = np.stack([src["flux"][r] for r in rows])
            h5["recon"] = h5["flux"][()] * 0.9
            h5["mask"] = np.stack([src["mask"][r] for r in rows])
            h5["wave"] = np.stack([src["wave"][r] for r in rows])
            h5["residual"] = np.abs(h5["flux"][()] - h5["recon"][()]).mean(axis=1)
        nb = pd.DataFrame(
            [
                {"query": pifus[q], "rank": r + 1, "neighbor": pifus[(q + r + 1) % 12], "distance": 0.1 * (r + 1)}
                for q in (0, 5)
                for r in range(3)
            ]
        )
        nb.to_csv(d / m / "neighbors.csv", index=False)
    return d, pifus


#: the test modules that read the session's workflow run (:func:`tiny_run`)
SHARED_RUN_MODULES = ("tests/test_workflow.py", "tests/test_slurm.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist (pyproject's addopts run the suite on 2 workers): every test is
    its own unit except those of :data:`SHARED_RUN_MODULES`, which go as one unit
    to one worker, so :func:`tiny_run` is made once; xdist sends the largest unit
    first. (xdist's own ``--dist loadgroup`` cannot group here: it renames the
    tests' node ids, which pytest 9 no longer lets it do.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SharedRunTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "tiny_run" if nodeid.split("::")[0] in SHARED_RUN_MODULES else nodeid

    return SharedRunTogether(config, log)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The whole workflow run locally on the TINY configuration (both models), once
    per session: the end-to-end tests read it, the SLURM test compares with it."""
    wd = make_workdir(tmp_path_factory.mktemp("wf") / "run", TINY)
    run(wd)
    return wd
