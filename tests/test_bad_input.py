"""Bad input: every broken file gives a reject row (or an error) that names the
file, the galaxy and the problem in words, and the other galaxies go on."""

import gzip

import numpy as np
import pandas as pd
import pytest
from conftest import make_galaxy
from helpers import write_cube

from linecube.extract import CubeError, CubeRequest, TooManyRejects, extract_cube, extract_to_h5
from linecube.formats import logcube_path


def req(g, path, **kw):
    d = dict(plateifu=g.plateifu, path=str(path), mangaid=g.mangaid, z=g.z, objra=g.objra, objdec=g.objdec)
    d.update(kw)
    return CubeRequest(**d)


@pytest.fixture(scope="module")
def good(tmp_path_factory, lines):
    d = tmp_path_factory.mktemp("good")
    g = make_galaxy(ifusize=19, plate=8001, z=0.03)
    return g, write_cube(d, g, lines)


def check(r, lines, *needles):
    with pytest.raises(CubeError) as e:
        extract_cube(r, lines)
    msg = str(e.value)
    assert r.plateifu in msg and r.path in msg, msg
    for n in needles:
        assert n.lower() in msg.lower(), msg
    return msg


def test_zero_byte_file(tmp_path, good, lines):
    g, _ = good
    p = tmp_path / "manga-8001-1901-LOGCUBE.fits.gz"
    p.write_bytes(b"")
    check(req(g, p), lines, "empty")


def test_missing_file(tmp_path, good, lines):
    g, _ = good
    check(req(g, tmp_path / "nope.fits.gz"), lines, "does not exist")


def test_truncated_gzip(tmp_path, good, lines):
    g, path = good
    data = path.read_bytes()
    for frac in (0.05, 0.5):
        p = tmp_path / f"trunc{frac}.fits.gz"
        p.write_bytes(data[: int(len(data) * frac)])
        check(req(g, p), lines, "truncated")


@pytest.mark.parametrize("where", [0.001, 0.1, 0.3])
def test_corrupt_gzip_bytes(tmp_path, good, lines, where):
    g, path = good
    data = bytearray(path.read_bytes())
    at = int(len(data) * where) + 20
    data[at : at + 4000] = bytes(b ^ 0x5A for b in data[at : at + 4000])
    p = tmp_path / "corrupt.fits.gz"
    p.write_bytes(bytes(data))
    check(req(g, p), lines, "corrupt")


@pytest.mark.parametrize("content", [b"this is not a FITS file\n" * 200, b"\x1f\x8b" + b"nonsense" * 10])
def test_not_fits(tmp_path, good, lines, content):
    g, _ = good
    p = tmp_path / "notfits.fits.gz"
    if content.startswith(b"\x1f\x8b"):
        p.write_bytes(content)  # gzip magic, garbage after
        check(req(g, p), lines, "gzip")
    else:
        p.write_bytes(gzip.compress(content))
        check(req(g, p), lines, "not a FITS file")


@pytest.mark.parametrize("drop", ["FLUX", "IVAR", "MASK"])
def test_missing_hdu(tmp_path, lines, drop):
    g = make_galaxy(ifusize=19, plate=8002, z=0.03)

    def edit(hl):
        del hl[drop]

    p = write_cube(tmp_path, g, lines, edit=edit)
    check(req(g, p), lines, f"no {drop} HDU")


@pytest.mark.parametrize(
    "key,value,needle", [("NAXIS3", None, "NAXIS3"), ("CRVAL3", 3600.0, "CRVAL3"), ("CTYPE3", "WAVE", "CTYPE3")]
)
def test_wrong_wavelength_grid(tmp_path, lines, key, value, needle):
    g = make_galaxy(ifusize=19, plate=8003, z=0.03)

    def edit(hl):
        if key == "NAXIS3":
            for name in ("FLUX", "IVAR", "MASK"):
                hl[name].data = hl[name].data[:4000]
        else:
            hl["FLUX"].header[key] = value

    p = write_cube(tmp_path, g, lines, edit=edit)
    check(req(g, p), lines, needle)


def test_all_donotuse(tmp_path, lines):
    g = make_galaxy(ifusize=19, plate=8004, z=0.03)

    def edit(hl):
        hl["MASK"].data[:] = 1024

    p = write_cube(tmp_path, g, lines, edit=edit)
    check(req(g, p), lines, "no usable voxel")


def test_centre_outside_cube(good, lines):
    g, path = good
    check(req(g, path, objra=g.ifura + 0.01, objdec=g.ifudec), lines, "outside the 34x34 cube")


@pytest.mark.parametrize(
    "z,needle", [(float("nan"), "missing or not a number"), (-0.01, "not positive"), (0.0, "not positive"), (0.8, "leaves the")]
)
def test_bad_redshift(good, lines, z, needle):
    g, path = good
    check(req(g, path, z=z), lines, needle)


def test_nan_and_negative_ivar_are_masked_not_rejected(tmp_path, lines):
    g = make_galaxy(ifusize=19, plate=8005, z=0.03)

    def edit(hl):
        hl["FLUX"].data[:, 17, 17] = np.nan
        hl["IVAR"].data[:, 16, 17] = -5

    p = write_cube(tmp_path, g, lines, edit=edit)
    c = extract_cube(req(g, p, objra=g.ifura, objdec=g.ifudec), lines)
    assert np.isfinite(c["flux"]).all() and (c["ivar"] >= 0).all()


def test_plate_goes_on_and_max_reject_fraction(tmp_path, lines):
    good = [make_galaxy(index=i, ifusize=19, plate=8010, ifudsgn=1901 + i, z=0.03, seed=i) for i in range(3)]
    reqs = [req(g, write_cube(tmp_path, g, lines)) for g in good]
    bad = make_galaxy(index=9, ifusize=19, plate=8010, ifudsgn=1909, z=0.03)
    bad_path = logcube_path(tmp_path, "v3_1_1", 8010, 1909)
    bad_path.write_bytes(b"")
    reqs.append(req(bad, bad_path))
    reqs.append(reqs[0])  # a duplicate plate-IFU
    out = tmp_path / "8010.h5"
    s = extract_to_h5(reqs, out, lines, drpver="v3_1_1", max_reject_fraction=0.5, progress=False)
    assert s.extracted == 3 and s.rejected == 2
    rej = pd.read_csv(tmp_path / "8010.rejects.csv")
    assert list(rej.columns) == ["plateifu", "path", "reason"]
    assert "empty" in rej.set_index("plateifu").loc["8010-1909", "reason"]
    assert rej["reason"].str.contains("duplicate plate-IFU").any()
    with pytest.raises(TooManyRejects) as e:
        extract_to_h5(reqs, tmp_path / "strict.h5", lines, drpver="v3_1_1", max_reject_fraction=0.2, progress=False)
    assert "8010-1909" in str(e.value) and "empty" in str(e.value) and "max_reject_fraction=0.2" in str(e.value)
    assert (tmp_path / "strict.rejects.csv").exists() and not (tmp_path / "strict.h5").exists()


def test_drpall_duplicates_and_malformed_plateifus(tmp_path):
    from linecube.sample import select_sample

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
    sel, dropped = select_sample(df)
    assert list(sel.plateifu) == ["8000-1901"]
    reasons = dict(zip(dropped.plateifu, dropped.reason))
    assert "duplicate plate-IFU" in " ".join(dropped.reason)
    assert "malformed" in reasons["../../etc/passwd"] and "malformed" in reasons["8000 1902"]
    assert "no redshift" in reasons["8001-3701"]


def test_cli_extract_reports_and_exits(tmp_path, good, lines, capsys):
    from helpers import write_drpall_for

    from linecube.cli import main

    g, path = good
    drpall = write_drpall_for(tmp_path, [g])
    junk = tmp_path / "notes.txt"
    junk.write_text("x")
    out = tmp_path / "one.h5"
    assert main(["extract", "--drpall", str(drpall), "--out", str(out), str(path), str(junk)]) == 0
    err = capsys.readouterr()
    assert "1 extracted, 1 rejected" in err.out and "notes.txt" in err.err
    rej = pd.read_csv(tmp_path / "one.rejects.csv")
    assert len(rej) == 1 and "not a LOGCUBE file name" in rej.reason[0]
    assert main(["extract", "--drpall", str(drpall), "--out", str(tmp_path / "none.h5"), str(junk)]) == 2


def test_config_wrong_type_and_unknown_key():
    from linecube.config import ConfigError, validate_config

    with pytest.raises(ConfigError, match=r"train.epochs: 'ten' is not of type 'integer'"):
        validate_config({"data": {}, "train": {"epochs": "ten"}})
    with pytest.raises(ConfigError, match=r"extract.*'windowbins' was unexpected"):
        validate_config({"data": {}, "extract": {"windowbins": 10}})
    with pytest.raises(ConfigError, match=r"sample.plateifus.0"):
        validate_config({"data": {}, "sample": {"plateifus": ["../etc-1901"]}})
