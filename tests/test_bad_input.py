"""Bad input: every broken file gives a reject row (or an error) that names the
file, the galaxy and the problem in words, and the other galaxies go on."""

import gzip

import numpy as np
import pandas as pd
import pytest
from conftest import make_galaxy
from helpers import write_cube

from linecube.extract import TooManyRejects, extract_cube, extract_to_h5
from linecube.manga import CubeError, CubeRequest, logcube_path


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
    from linecube.sample import apply_cuts

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


def test_scaled_integer_flux_is_read_in_physical_units(tmp_path, good, lines):
    """FLUX stored as 16-bit integers with BSCALE/BZERO: extraction applies the scaling."""
    g, path = good
    ref = extract_cube(req(g, path), lines)

    def to_int16(hl):
        from astropy.io import fits

        flux = hl["FLUX"].data.astype(np.float64)
        hdr = hl["FLUX"].header.copy()
        scaled = fits.ImageHDU(flux.astype(np.float32), header=hdr, name="FLUX")
        scaled.scale("int16", bscale=0.01, bzero=50.0)
        hl[hl.index_of("FLUX")] = scaled
        return hl

    p = write_cube(tmp_path, g, lines, edit=to_int16)
    from astropy.io import fits

    with fits.open(p) as hl:
        assert hl["FLUX"].header["BITPIX"] == 16 and hl["FLUX"].header["BSCALE"] == 0.01
    got = extract_cube(req(g, p), lines)
    use = ref["mask"] == 0
    np.testing.assert_allclose(got["flux"][use], ref["flux"][use], atol=0.006)  # quantised to 0.01


def test_scaled_mask_is_rejected_with_a_reason(tmp_path, good, lines):
    g, _ = good

    def scale_mask(hl):
        hl["MASK"].header["BZERO"] = 5
        return hl

    p = write_cube(tmp_path, g, lines, edit=scale_mask)
    check(req(g, p), lines, "MASK", "scaled")


def _h5_digest(p):
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_cli_extract_refuses_an_out_that_would_destroy_an_input(tmp_path, good, lines, capsys):
    from helpers import write_drpall_for

    from linecube.cli import main

    g, path = good
    drpall = write_drpall_for(tmp_path, [g])
    before = {p: _h5_digest(p) for p in (path, drpall)}
    notes = tmp_path / "notes.h5"
    notes.write_text("my notes")
    for out in (path, drpall, notes, tmp_path):  # a LOGCUBE, the drpall, a foreign file, a directory
        assert main(["extract", "--drpall", str(drpall), "--out", str(out), str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {out}"), err
    assert {p: _h5_digest(p) for p in (path, drpall)} == before and notes.read_text() == "my notes"
    assert main(["extract", "--drpall", str(drpall), "--out", str(tmp_path / "c.h5"), "--crop", "0", str(path)]) == 2
    assert "--crop" in capsys.readouterr().err


def test_cli_extract_never_replaces_a_good_output_with_nothing(tmp_path, good, lines, capsys):
    from helpers import write_drpall_for

    from linecube.cli import main

    g, path = good
    drpall = write_drpall_for(tmp_path, [g])
    out = tmp_path / "cubes.h5"
    assert main(["extract", "--drpall", str(drpall), "--out", str(out), str(path)]) == 0
    before = (_h5_digest(out), (tmp_path / "cubes.rejects.csv").read_text())
    typo = tmp_path / "manga-8001-1901-LOGCUBE.fits.gzz"
    assert main(["extract", "--drpall", str(drpall), "--out", str(out), str(typo)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {out}") and "not replaced" in err[-1]
    assert (_h5_digest(out), (tmp_path / "cubes.rejects.csv").read_text()) == before
    import h5py

    with h5py.File(out) as h5:  # the pair: the HDF5 knows its rejects file
        import hashlib

        assert h5.attrs["rejects_sha256"] == hashlib.sha256(before[1].encode()).hexdigest()


def test_rejects_found_before_extraction_count_and_are_kept(tmp_path, good, lines, capsys):
    from helpers import write_drpall_for

    from linecube.cli import main

    g, path = good
    drpall = write_drpall_for(tmp_path, [g])
    other = tmp_path / "manga-9999-1901-LOGCUBE.fits.gz"  # no drpall row
    other.write_bytes(path.read_bytes())
    out = tmp_path / "strict.h5"
    code = main(["extract", "--drpall", str(drpall), "--out", str(out), "--max-reject-fraction", "0.4", str(path), str(other)])
    assert code == 3
    err = capsys.readouterr().err
    assert "1 of 2 cubes rejected" in err.strip().splitlines()[-1] and "9999-1901" in err
    rej = pd.read_csv(tmp_path / "strict.rejects.csv")
    assert list(rej.plateifu) == ["9999-1901"] and "no row" in rej.reason[0]
    assert not out.exists()


def test_real_data_override_never_reads_the_simulated_catalogues():
    from pathlib import Path

    from linecube.config import load_config, resolve_catalogues

    repo = Path(__file__).resolve().parents[1]
    bundled = resolve_catalogues(load_config(repo / "config" / "config.yaml"))
    assert bundled["data"]["agn_catalog"] == "results/sample/redux/agn.csv"
    assert bundled["data"]["truth"] == "results/sample/redux/truth.csv"
    # a user's override that only points at real data and switches the simulator off
    real = resolve_catalogues(
        load_config(
            repo / "config" / "config.yaml", overrides={"data": {"redux_dir": "/data/redux"}, "simulate": {"enabled": False}}
        )
    )
    assert real["data"]["agn_catalog"] is None and real["data"]["truth"] is None
    asked = resolve_catalogues(
        load_config(
            repo / "config" / "config.yaml",
            overrides={"simulate": {"enabled": False}, "data": {"agn_catalog": "my/agn.fits", "truth": "sim/truth.csv"}},
        )
    )
    assert asked["data"]["agn_catalog"] == "my/agn.fits" and asked["data"]["truth"] == "sim/truth.csv"
    dr17 = resolve_catalogues(load_config(repo / "config" / "config.yaml", repo / "config" / "manga-dr17.yaml"))
    assert dr17["data"]["agn_catalog"] is None and dr17["model"]["flux_scaling"] == "halpha"


def test_config_numbers_from_the_command_line_and_start_up_checks():
    from linecube.config import ConfigError, validate_config

    # snakemake --config 'train={epochs: 5}' passes nested values as text
    c = validate_config({"data": {}, "train": {"epochs": "5", "clipnorm": "null"}, "model": {"filters": "[4, 8]"}})
    assert c["train"]["epochs"] == 5 and c["train"]["clipnorm"] is None and c["model"]["filters"] == [4, 8]
    with pytest.raises(ConfigError, match=r"model.strides: has 2 entries but model.filters has 3"):
        validate_config({"data": {}, "model": {"filters": [4, 8, 16]}})


def test_start_up_checks_name_the_file_and_problem(tmp_path):
    from linecube.config import check_inputs, resolve_catalogues, validate_config

    truth = tmp_path / "truth.csv"
    truth.write_text("plateifu,class\n8000-1901,seyfert\n")
    agn = tmp_path / "agn.csv"
    agn.write_text("plateifu,radio_agn,wise_agn\n8000-1901,true,N/A\n8000-1902,false,false\n")
    cfg = resolve_catalogues(
        validate_config(
            {
                "data": {"lines": str(tmp_path / "nolines.csv"), "truth": str(truth), "agn_catalog": str(agn)},
                "simulate": {"enabled": False},
            }
        )
    )
    errs = "\n".join(check_inputs(cfg))
    assert "nolines.csv" in errs
    assert f"{truth}: missing column(s) is_anomaly" in errs
    assert f"{agn}: column wise_agn must be true/false" in errs and "row 2 ('N/A')" in errs
    ok = resolve_catalogues(validate_config({"data": {}, "simulate": {"enabled": True}}))  # the simulator writes them
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    ok["data"]["lines"] = str(repo / "resources" / "emission_lines.csv")
    assert check_inputs(ok) == []


def test_explorer_without_class_column(tmp_path):
    pytest.importorskip("plotly")
    from analysis_fixtures import write_cubes_h5, write_results

    from linecube.explorer import build_explorer

    cubes = tmp_path / "cubes.h5"
    pifus = write_cubes_h5(cubes, n=6)
    write_results(tmp_path, "ae", pifus)
    emb = pd.read_csv(tmp_path / "ae" / "embedding.csv", dtype={"plateifu": str})
    sc = pd.read_csv(tmp_path / "ae" / "scores.csv", dtype={"plateifu": str})
    truth = tmp_path / "truth.csv"
    truth.write_text("plateifu,is_anomaly\n" + "".join(f"{p},{i == 0}\n" for i, p in enumerate(pifus)))
    build_explorer(tmp_path / "explorer.html", {"ae": emb}, {"ae": sc}, {}, cubes, truth=truth)
    assert "anomaly" in (tmp_path / "explorer.html").read_text()


def test_cli_simulate_checks_before_any_work(tmp_path, capsys):
    from linecube.cli import main

    f = tmp_path / "afile"
    f.write_text("keep")
    survey = tmp_path / "redux"
    (survey / "v3_1_1").mkdir(parents=True)
    (survey / "v3_1_1" / "drpall-v3_1_1.fits").write_text("old")
    cases = [
        (["--out", str(f), "--n-galaxies", "2"], f"error: {f}: --out is a file"),
        (["--out", str(survey), "--n-galaxies", "2"], "already holds a survey"),
        (["--out", str(tmp_path / "new"), "--n-galaxies", "0"], "error: --n-galaxies"),
        (["--out", str(tmp_path / "new"), "--n-galaxies", "2", "--seed", "-1"], "error: --seed"),
        (["--out", str(tmp_path / "new"), "--n-galaxies", "2", "--anomaly-fraction", "1.5"], "error: --anomaly-fraction"),
        (["--out", str(tmp_path / "new"), "--n-galaxies", "90000"], "needs about"),
    ]
    import shutil

    for argv, fragment in cases:
        if "90000" in argv and shutil.disk_usage(tmp_path).free > 90000 * 15e6:
            continue  # this machine has the room: nothing to refuse
        assert main(["simulate", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], (argv, err)
    assert f.read_text() == "keep" and (survey / "v3_1_1" / "drpall-v3_1_1.fits").read_text() == "old"
    assert not (tmp_path / "new").exists()


def test_truncated_header_is_reported_as_truncated(tmp_path, good, lines):
    g, path = good
    head = gzip.decompress(path.read_bytes())[:1500]  # inside the first header block
    p = tmp_path / "manga-8001-1901-LOGCUBE.fits.gz"
    p.write_bytes(gzip.compress(head))
    msg = check(req(g, p), lines, "truncated")
    assert "not a FITS" not in msg
    p.write_bytes(gzip.compress(b"hello, not a cube"))
    check(req(g, p), lines, "not a FITS file")


def test_cli_extract_a_logcube_given_as_the_drpall(tmp_path, good, lines, capsys):
    from linecube.cli import main

    g, path = good
    assert main(["extract", "--drpall", str(path), "--out", str(tmp_path / "o.h5"), str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a LOGCUBE, not the drpall" in err[0] and str(path) in err[0]
    txt = tmp_path / "drpall.txt"
    txt.write_text("plate,ifu\n")
    assert main(["extract", "--drpall", str(txt), "--out", str(tmp_path / "o.h5"), str(path)]) == 2
    assert "error: " in capsys.readouterr().err
