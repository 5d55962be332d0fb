"""linecube.io.manga: the DRP wavelength grid, plate-IFU parsing, SAS paths, mask bits."""

import numpy as np
import pytest

from linecube.io import manga as F


def test_log_wave_grid_matches_drp_header():
    w = F.log_wave_grid()
    assert w.shape == (4563,)
    assert w[0] == pytest.approx(3621.59598486)
    assert w[-1] == pytest.approx(10353.805, abs=1e-3)
    # CD3_3 is the first bin's width in the WAVE-LOG convention
    assert w[0] * np.log(10) * 1e-4 == pytest.approx(F.CD3_3, rel=1e-7)


@pytest.mark.parametrize("good", ["8485-1901", "10001-12705", "7443-3702"])
def test_parse_plateifu_good(good):
    plate, ifu = F.parse_plateifu(good)
    assert f"{plate}-{ifu}" == good


@pytest.mark.parametrize("bad", ["8485_1901", "../8485-1901", "8485-1901/../../etc", "abc-def", "", "8485-19", None, 8485])
def test_parse_plateifu_rejects_malformed_and_traversal(bad):
    with pytest.raises(ValueError, match="malformed plate-IFU"):
        F.parse_plateifu(bad)


def test_sas_paths():
    p = F.logcube_path("/sas/redux", "v3_1_1", 8485, 1901)
    assert str(p) == "/sas/redux/v3_1_1/8485/stack/manga-8485-1901-LOGCUBE.fits.gz"
    assert F.plateifu_from_path(p) == "8485-1901"
    assert str(F.drpall_path("/sas/redux", "v3_1_1")) == "/sas/redux/v3_1_1/drpall-v3_1_1.fits"
    with pytest.raises(ValueError):
        F.plateifu_from_path("manga-8485-1901-LINCUBE.fits.gz")


def test_mask_bits_by_name():
    assert F.DRP3PixMask.NOCOV == 1 and F.DRP3PixMask.DONOTUSE == 1024 and F.DRP3PixMask.FORESTAR == 8
    assert F.DRP3QUAL_CRITICAL == 2**30
