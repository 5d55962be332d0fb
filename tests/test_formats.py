import numpy as np
import pytest

from linecube import formats as F


def test_line_list_matches_paper_notes(lines):
    assert len(lines) == 19
    expected = [3727.092, 3729.875, 3889.0, 4072.3, 4102.89, 4341.68, 4364.436, 4862.68, 4932.603, 4960.295,
                5008.240, 6302.046, 6365.536, 6529.03, 6549.86, 6564.61, 6585.27, 6718.29, 6732.67]  # fmt: skip
    np.testing.assert_allclose(lines.rest, expected)
    assert lines.names[lines.index("Halpha")] == "Halpha"
    with pytest.raises(KeyError, match="unknown emission line"):
        lines.index("Lyalpha")


def test_packaged_line_list_is_the_resource(lines):
    packaged = F.load_lines()
    assert packaged.names == lines.names
    np.testing.assert_array_equal(packaged.rest, lines.rest)


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


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with F.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []
    with F.atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"


def test_atomic_path_removes_what_a_killed_write_left(tmp_path):
    # SIGKILL skips the clean-up: the temporary stays until the next write of the same file
    stale = tmp_path / ".8116.h5.ab_cd123.tmp"
    stale.write_text("half")
    other = tmp_path / ".8116.h5.rejects.csv.ab_cd123.tmp"  # another target's: kept
    other.write_text("x")
    with F.atomic_path(tmp_path / "8116.h5") as tmp:
        tmp.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["8116.h5", other.name])
