"""linecube.data.assemble: per-plate files into results/cubes.h5."""

import h5py
import numpy as np
import pytest

from linecube.data.sample import build_sample


def test_extract_and_assemble_layout(tiny_survey, tmp_path, lines):
    from linecube.data.assemble import assemble
    from linecube.data.extract_survey import extract_to_h5
    from linecube.io.drpall import cube_requests

    out, gals = tiny_survey
    sample, _, _ = build_sample(out / "v3_1_1" / "drpall-v3_1_1.fits", out, "v3_1_1")
    # split into two "plates" to exercise the merge and the global sort
    reqs = cube_requests(sample)
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
            assert h5["z"][i] == pytest.approx(by[p].z_cat)
            assert h5["mangaid"][i].decode() == by[p].mangaid
            # observed wavelength of each window's centre bin is within half a bin of rest*(1+z)
            c = h5["wave"][i][5::10]
            np.testing.assert_allclose(c, lines.rest * (1 + by[p].z_cat), rtol=1.2e-4)
