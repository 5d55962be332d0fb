"""linecube.io.agn: the AGN catalogue joined by plate-IFU or mangaid."""

import pandas as pd

from linecube.io.agn import match_agn


def test_agn_join_by_plateifu_and_by_mangaid(tmp_path):
    pifus = ["8000-1901", "8000-1902", "8001-3701"]
    mids = ["1-1", "1-2", "1-3"]
    by_p = tmp_path / "agn_p.csv"
    pd.DataFrame(
        {
            "plateifu": ["8000-1902"],
            "mangaid": ["1-2"],
            "wise_agn": [True],
            "bat_agn": [False],
            "radio_agn": [True],
            "broad_agn": [False],
        }
    ).to_csv(by_p, index=False)
    f = match_agn(by_p, pifus, mids)
    assert list(f["agn"]) == [False, True, False] and list(f["radio_agn"]) == [False, True, False]
    by_m = tmp_path / "agn_m.csv"
    pd.DataFrame({"mangaid": ["1-3", "1-99"], "radio_agn": ["True", "False"], "broad_agn": [0, 1]}).to_csv(by_m, index=False)
    f = match_agn(by_m, pifus, mids)
    assert list(f["agn"]) == [False, False, True] and list(f["broad_agn"]) == [False, False, False]
    from astropy.table import Table

    fits_path = tmp_path / "agn.fits"
    Table({"MANGAID": ["1-1"], "RADIO_AGN": [True]}).write(fits_path)
    f = match_agn(fits_path, pifus, mids)
    assert list(f["agn"]) == [True, False, False]
