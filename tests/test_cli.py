"""linecube.cli: the command line ends in one error line, naming the file, and never loses an output."""

import h5py
import pandas as pd


def _h5_digest(p):
    import hashlib

    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_cli_extract_reports_and_exits(tmp_path, good, lines, capsys):
    from fixtures import write_drpall_for

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


def test_cli_extract_refuses_an_out_that_would_destroy_an_input(tmp_path, good, lines, capsys):
    from fixtures import write_drpall_for

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
    from fixtures import write_drpall_for

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
    from fixtures import write_drpall_for

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


def test_cli_cubes_h5_mode(tmp_path):
    from linecube.cli import main

    out = tmp_path / "cubes.h5"
    assert main(["simulate", "--cubes-h5", "--out", str(out), "--n-galaxies", "30", "--seed", "3"]) == 0
    with h5py.File(out) as h5:
        assert h5["flux"].shape == (30, 190, 32, 32) and h5["flux"].chunks == (1, 190, 32, 32)
        p = [s.decode() for s in h5["plateifu"][()]]
        assert p == sorted(p)
    assert (tmp_path / "truth.csv").exists() and (tmp_path / "agn.csv").exists()
