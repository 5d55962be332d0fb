"""Sample selection from the drpall and assembly into cubes.h5."""

import numpy as np
import pandas as pd
import pytest

from linecube.data.sample import apply_cuts, build_sample
from linecube.io.drpall import read_drpall


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


def test_drpall_duplicates_and_malformed_plateifus(tmp_path):
    from linecube.data.sample import apply_cuts

    df = pd.DataFrame(
        {
            "plateifu": ["8000-1901", "8000-1901", "../../etc/passwd", "8000 1902", "8001-3701"],
            "mangaid": ["1-1", "1-1", "1-2", "1-3", "1-4"],
            "ifudesignsize": [19, 19, 19, 19, 37],
            "nexp": [9] * 5,
            "mngtarg1": [1] * 5,
            "mngtarg3": [0] * 5,
            "drp3qual": [0] * 5,
            "z": [0.03, 0.03, 0.03, 0.03, np.nan],
        }
    )
    sel, dropped = apply_cuts(df)
    assert list(sel.plateifu) == ["8000-1901"]
    reasons = dict(zip(dropped.plateifu, dropped.reason))
    assert "duplicate plate-IFU" in " ".join(dropped.reason)
    assert "malformed" in reasons["../../etc/passwd"] and "malformed" in reasons["8000 1902"]
    assert "no redshift" in reasons["8001-3701"]
