"""End-to-end: the Snakefile's data stages on a tiny simulated survey."""

import h5py
import pandas as pd
import pytest
from wf import make_workdir, run

TINY = {
    "simulate": {"enabled": True, "n_galaxies": 5, "seed": 11},
    "extract": {"max_reject_fraction": 0.5},
}


@pytest.mark.slow
def test_data_stages_end_to_end(tmp_path):
    wd = make_workdir(tmp_path / "wf", TINY)
    run(wd, "results/cubes.h5")
    sample = pd.read_csv(wd / "results" / "sample.csv", dtype={"plateifu": str})
    assert len(sample) == 5
    with h5py.File(wd / "results" / "cubes.h5") as h5:
        assert h5["flux"].shape == (5, 190, 32, 32)
        assert [s.decode() for s in h5["plateifu"][()]] == sorted(sample.plateifu)
    for plate in sample.plate.unique():
        assert (wd / "results" / "extract" / f"{plate}.h5").exists()
        assert (wd / "logs" / "extract_plate" / f"{plate}.log").read_text().count("extracted") >= 1
        assert (wd / "results" / "benchmarks" / "extract_plate" / f"{plate}.tsv").exists()
    rejects = pd.read_csv(wd / "results" / "rejects.csv")
    assert list(rejects.columns) == ["plateifu", "path", "reason", "stage"]
    # nothing left to do
    p = run(wd, "-n", "results/cubes.h5")
    assert "Nothing to be done" in p.stdout + p.stderr
