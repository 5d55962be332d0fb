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


def _one_line_error(capsys, starts):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"error: {starts}"), err
    return err[-1]


def test_paths_linecube_chooses_are_checked_like_out(tmp_path, good, lines, capsys):
    """The rejects file beside --out never overwrites an input or a file linecube did
    not write; another stage's HDF5 (no linecube_product='cubes') is not replaced."""
    from fixtures import write_drpall_for

    from linecube.cli import main

    g, path = good
    drpall = write_drpall_for(tmp_path, [g])
    # an input named like the rejects file of --out
    lines_csv = tmp_path / "x.rejects.csv"
    lines_csv.write_text("name,rest\n")
    assert main(["extract", "--drpall", str(drpall), "--out", str(tmp_path / "x.h5"), str(path), str(lines_csv)]) == 2
    assert "would overwrite the input" in _one_line_error(capsys, tmp_path / "x.rejects.csv")
    assert lines_csv.read_text() == "name,rest\n" and not (tmp_path / "x.h5").exists()
    # a file the user wrote where the rejects would go
    (tmp_path / "y.rejects.csv").write_text("my table\n")
    assert main(["extract", "--drpall", str(drpall), "--out", str(tmp_path / "y.h5"), str(path)]) == 2
    assert "not written by linecube" in _one_line_error(capsys, tmp_path / "y.rejects.csv")
    assert (tmp_path / "y.rejects.csv").read_text() == "my table\n"
    # another stage's output with flux, plateifu and line_names
    lat = tmp_path / "latents.h5"
    with h5py.File(lat, "w") as h5:
        h5["flux"], h5["plateifu"] = [1.0], ["a"]
        h5.attrs["line_names"] = ["Halpha"]
    before = _h5_digest(lat)
    assert main(["extract", "--drpall", str(drpall), "--out", str(lat), str(path)]) == 2
    assert "not a cubes.h5 file written by linecube" in _one_line_error(capsys, lat)
    assert _h5_digest(lat) == before
    # linecube's own pair is replaced as before
    out = tmp_path / "z.h5"
    assert main(["extract", "--drpall", str(drpall), "--out", str(out), str(path)]) == 0
    assert main(["extract", "--drpall", str(drpall), "--out", str(out), str(path)]) == 0


def test_output_pair_is_replaced_whole_or_not_at_all(tmp_path, good, lines, monkeypatch):
    """When the second rename fails, the first file is put back and the error names
    the user's path, not a temporary file."""
    import os

    from linecube.io import atomic

    a, b = tmp_path / "a.h5", tmp_path / "a.rejects.csv"
    a.write_text("old a")
    b.write_text("old b")
    real = os.replace

    def flaky(src, dst):
        if str(dst) == str(b):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", flaky)
    import pytest

    with pytest.raises(OSError) as e:
        with atomic.atomic_paths(a, b) as (ta, tb):
            ta.write_text("new a")
            tb.write_text("new b")
    assert e.value.filename == str(b) and "No space left" in str(e.value)
    monkeypatch.setattr(atomic.os, "replace", real)
    assert a.read_text() == "old a" and b.read_text() == "old b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "a.rejects.csv"]


def test_a_second_writer_of_one_out_is_refused(tmp_path, good, lines, capsys):
    from fixtures import write_drpall_for

    from linecube.cli import main
    from linecube.io.atomic import exclusive

    g, path = good
    drpall = write_drpall_for(tmp_path, [g])
    out = tmp_path / "cubes.h5"
    with exclusive(out):  # what a first `extract` holds while it runs
        assert main(["extract", "--drpall", str(drpall), "--out", str(out), str(path)]) == 2
        assert "another linecube process is writing it" in _one_line_error(capsys, out)
    assert main(["extract", "--drpall", str(drpall), "--out", str(out), str(path)]) == 0


def test_all_rejected_leaves_no_file_that_looks_finished(tmp_path, good, lines, capsys):
    from fixtures import write_drpall_for

    from linecube.cli import main

    g, path = good
    drpall = write_drpall_for(tmp_path, [g])
    empty = tmp_path / "manga-8001-1901-LOGCUBE.fits.gz"
    empty.write_bytes(b"")
    out = tmp_path / "sub" / "cubes.h5"
    out.parent.mkdir()
    assert main(["extract", "--drpall", str(drpall), "--out", str(out), str(empty)]) == 2
    assert "no cube could be extracted" in _one_line_error(capsys, out)
    assert not out.exists() and (out.parent / "cubes.rejects.csv").exists()


def test_cli_paths_limits_and_the_last_line(tmp_path, good, lines, capsys, monkeypatch):
    """--drpver is a version, never a path; the schema's bounds hold at the CLI;
    LINECUBE_DEBUG=0 means off; an interrupt inside a progress bar ends in the error line."""
    import pytest
    from fixtures import write_drpall_for

    from linecube.cli import main
    from linecube.data import extract_survey as extract

    for bad in ("../../x", "/tmp/x", "v3_1_1/.."):
        assert main(["simulate", "--out", str(tmp_path / "s"), "--n-galaxies", "2", "--drpver", bad]) == 2
        assert "--drpver" in _one_line_error(capsys, "--drpver")
    assert not (tmp_path / "x").exists() and not (tmp_path / "s").exists()
    g, path = good
    drpall = write_drpall_for(tmp_path, [g])
    for opt, v in (("--crop", "100000"), ("--window-bins", "1000")):
        assert main(["extract", "--drpall", str(drpall), "--out", str(tmp_path / "c.h5"), opt, v, str(path)]) == 2
        assert "the configuration schema's bounds" in _one_line_error(capsys, opt)

    def boom(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(extract, "write_cube_row", boom)
    monkeypatch.setenv("LINECUBE_DEBUG", "0")
    assert main(["extract", "--drpall", str(drpall), "--out", str(tmp_path / "d.h5"), str(path)]) == 1
    assert "disk on fire" in _one_line_error(capsys, "disk on fire")
    monkeypatch.setenv("LINECUBE_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["extract", "--drpall", str(drpall), "--out", str(tmp_path / "d.h5"), str(path)])
    capsys.readouterr()

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(extract, "write_cube_row", interrupt)
    assert main(["extract", "--drpall", str(drpall), "--out", str(tmp_path / "d.h5"), str(path)]) == 130
    assert _one_line_error(capsys, "interrupted")
    assert not (tmp_path / "d.h5").exists() and not list(tmp_path.glob(".d.h5.*.tmp"))


def test_duplicates_are_an_error_naming_the_rows_or_files(tmp_path, good, lines, capsys):
    """Two drpall rows for one plate-IFU, or one plate-IFU given as two files: one
    error line naming them (extract and the sample selection read the drpall alike)."""
    import pytest
    from fixtures import drpall_row

    from linecube.cli import main
    from linecube.io.drpall import read_drpall
    from linecube.simulate.drpall import write_drpall

    g, path = good
    drpall = tmp_path / "drpall.fits"
    write_drpall([drpall_row(g), drpall_row(g, z=0.05)], drpall)
    out = tmp_path / "c.h5"
    assert main(["extract", "--drpall", str(drpall), "--out", str(out), str(path)]) == 2
    assert "8001-1901 in table rows 1, 2" in _one_line_error(capsys, drpall)
    with pytest.raises(ValueError, match="more than one row"):
        read_drpall(drpall)  # what select_sample reads too
    write_drpall([drpall_row(g)], drpall)
    copy = tmp_path / "copy" / path.name
    copy.parent.mkdir()
    copy.write_bytes(b"broken")
    assert main(["extract", "--drpall", str(drpall), "--out", str(out), str(copy), str(path)]) == 2
    msg = _one_line_error(capsys, "1 plate-IFU(s) given as more than one file")
    assert str(copy) in msg and str(path) in msg and not out.exists()


def test_one_odd_file_is_one_reject(tmp_path, good, lines, capsys):
    """A FIFO, a device, a symlink loop, a directory and a folder whose name is not
    UTF-8 are rejects with their reason; the good cube is extracted."""
    import os

    from fixtures import drpall_row

    from linecube.cli import main
    from linecube.simulate.drpall import write_drpall

    g, path = good
    pifus = {"fifo": "8001-1902", "loop": "8001-3701", "dir": "8001-3702", "utf8": "8001-6101"}
    rows = [drpall_row(g)] + [drpall_row(g, plateifu=p, ifudsgn=int(p.split("-")[1])) for p in pifus.values()]
    drpall = tmp_path / "drpall.fits"
    write_drpall(rows, drpall)
    fifo = tmp_path / f"manga-{pifus['fifo']}-LOGCUBE.fits.gz"
    os.mkfifo(fifo)
    loop = tmp_path / f"manga-{pifus['loop']}-LOGCUBE.fits.gz"
    os.symlink(loop, loop)
    d = tmp_path / f"manga-{pifus['dir']}-LOGCUBE.fits.gz"
    d.mkdir()
    odd = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(odd)
    bad_name = odd + f"/manga-{pifus['utf8']}-LOGCUBE.fits.gz".encode()
    with open(bad_name, "wb") as f:
        f.write(b"not fits")
    out = tmp_path / "c.h5"
    args = ["extract", "--drpall", str(drpall), "--out", str(out), str(path), str(fifo), str(loop), str(d), os.fsdecode(bad_name)]
    assert main(args) == 0
    o = capsys.readouterr()
    assert "1 extracted, 4 rejected" in o.out, (o.out, o.err)
    rej = pd.read_csv(tmp_path / "c.rejects.csv", dtype=str).set_index("plateifu")["reason"]
    assert "FIFO" in rej[pifus["fifo"]] and "cannot open" in rej[pifus["loop"]] and "a directory" in rej[pifus["dir"]]
    assert "caf\\xe9" in rej[pifus["utf8"]] and "not a FITS file" in rej[pifus["utf8"]]
    zero = tmp_path / "z" / f"manga-{pifus['fifo']}-LOGCUBE.fits.gz"  # /dev/zero under a LOGCUBE name
    zero.parent.mkdir()
    os.symlink("/dev/zero", zero)
    assert main(["extract", "--drpall", str(drpall), "--out", str(tmp_path / "z.h5"), str(path), str(zero)]) == 0
    assert "is a character device" in capsys.readouterr().err


def test_disk_full_is_one_error_and_keeps_the_previous_output(tmp_path, good, lines, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    from fixtures import write_drpall_for

    from linecube.cli import main

    g, path = good
    drpall = write_drpall_for(tmp_path, [g])
    out = tmp_path / "cubes.h5"
    assert main(["extract", "--drpall", str(drpall), "--out", str(out), str(path)]) == 0
    before = _h5_digest(out)
    capsys.readouterr()
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 1000, 1000))
    assert main(["extract", "--drpall", str(drpall), "--out", str(out), str(path)]) == 1
    msg = _one_line_error(capsys, out)
    assert "too little for the next cube" in msg and "nothing was replaced" in msg
    assert _h5_digest(out) == before and not list(tmp_path.glob(".cubes.h5.*.tmp"))
