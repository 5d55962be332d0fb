"""Sample selection from the drpall and assembly into cubes.h5."""

import h5py
import numpy as np
import pandas as pd
import pytest

from linecube.manga import read_drpall
from linecube.sample import apply_cuts, build_sample


def test_selection_drops_nongalaxies_critical_noz_and_repeats(tiny_survey):
    out, gals = tiny_survey
    table = read_drpall(out / "v3_1_1" / "drpall-v3_1_1.fits")
    assert len(table) == len(gals) + 4  # the simulator adds a star, a CRITICAL cube, no-z and a repeat
    sel, dropped = apply_cuts(table)
    assert sorted(sel.plateifu) == sorted(g.plateifu for g in gals)
    assert list(sel.plateifu) == sorted(sel.plateifu)
    reasons = " | ".join(dropped.reason)
    for needle in ("not a galaxy target", "CRITICAL", "no redshift", "repeat observation"):
        assert needle in reasons


def test_repeat_keeps_largest_ifu_then_most_exposures():
    df = pd.DataFrame(
        {
            "plateifu": ["8000-1901", "8001-12701", "8002-12702", "8003-3701"],
            "mangaid": ["1-1", "1-1", "1-1", "1-2"],
            "ifudesignsize": [19, 127, 127, 37],
            "nexp": [9, 6, 12, 9],
            "mngtarg1": [1, 1, 1, 0],
            "mngtarg3": [0, 0, 0, 4],
            "drp3qual": [0, 0, 0, 0],
            "z": [0.03, 0.03, 0.03, 0.02],
        }
    )
    sel, dropped = apply_cuts(df)
    assert list(sel.plateifu) == ["8002-12702", "8003-3701"]  # ancillary target (mngtarg3) kept
    sel, _ = apply_cuts(df, plateifus=["8001-12701"])
    assert list(sel.plateifu) == ["8001-12701"]
    sel, _ = apply_cuts(df, max_galaxies=1)
    assert len(sel) == 1
    with pytest.raises(ValueError, match="not in the drpall"):
        apply_cuts(df, plateifus=["9999-1901"])
    with pytest.raises(ValueError, match="malformed"):
        apply_cuts(df, plateifus=["../etc-1901"])


def test_missing_file_becomes_a_reject(tiny_survey, tmp_path):
    out, gals = tiny_survey
    sample, rejects, _ = build_sample(out / "v3_1_1" / "drpall-v3_1_1.fits", out, "v3_1_1")
    assert len(sample) == len(gals) and len(rejects) == 0
    sample, rejects, _ = build_sample(out / "v3_1_1" / "drpall-v3_1_1.fits", tmp_path, "v3_1_1")
    assert len(sample) == 0 and len(rejects) == len(gals)
    assert rejects.reason.str.contains("no LOGCUBE file").all()


def test_extract_and_assemble_layout(tiny_survey, tmp_path, lines):
    from linecube.assemble import assemble
    from linecube.extract import extract_to_h5
    from linecube.manga import cube_requests

    out, gals = tiny_survey
    sample, _, _ = build_sample(out / "v3_1_1" / "drpall-v3_1_1.fits", out, "v3_1_1")
    # split into two "plates" to exercise the merge and the global sort
    reqs = cube_requests(sample, sample.plate.iloc[0])
    half = len(reqs) // 2
    files = []
    for i, part in enumerate((reqs[half:], reqs[:half])):
        f = tmp_path / f"{8000 + i}.h5"
        s = extract_to_h5(part, f, lines, drpver="v3_1_1", progress=False)
        assert s.extracted == len(part) and (tmp_path / f"{8000 + i}.rejects.csv").exists()
        files.append(f)
    n = assemble(files, tmp_path / "cubes.h5", drpver="v3_1_1", config={"x": 1}, progress=False)
    assert n == len(gals)
    with h5py.File(tmp_path / "cubes.h5") as h5:
        pifu = [s.decode() for s in h5["plateifu"][()]]
        assert pifu == sorted(g.plateifu for g in gals)
        assert h5["flux"].shape == (n, 190, 32, 32) and h5["flux"].dtype == np.float32
        assert h5["ivar"].dtype == np.float32 and h5["mask"].dtype == np.uint8
        assert h5["flux"].chunks == (1, 190, 32, 32)
        assert h5["wave"].shape == (n, 190) and h5["wave"].dtype == np.float64
        assert list(h5.attrs["line_names"]) == list(lines.names)
        np.testing.assert_allclose(h5.attrs["line_rest_wavelengths"], lines.rest)
        assert h5.attrs["window_bins"] == 10 and h5.attrs["crop"] == 32 and h5.attrs["drpver"] == "v3_1_1"
        assert "config" in h5.attrs
        by = {g.plateifu: g for g in gals}
        for i, p in enumerate(pifu):
            assert h5["z"][i] == pytest.approx(by[p].z)
            assert h5["mangaid"][i].decode() == by[p].mangaid
            # observed wavelength of each window's centre bin is within half a bin of rest*(1+z)
            c = h5["wave"][i][5::10]
            np.testing.assert_allclose(c, lines.rest * (1 + by[p].z), rtol=1.2e-4)
