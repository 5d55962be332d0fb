"""Nothing lost, round 3: each class of failure found at the CLI, workflow and
file-system edges, with a test that failed before its fix (docs/reliability.md)."""

import os

import numpy as np
import pandas as pd
import pytest
from fixtures import make_galaxy, write_cube, write_drpall_for


def test_latex_like_names_do_not_stop_a_figure(tmp_path):
    from linecube.report.figures import plot_line_heatmap

    scores = pd.DataFrame(
        {
            "plateifu": ["8485-1901", "8485-1902"],
            "score": [2.0, 1.0],
            "rank": [1, 2],
            "share_$\\frac{a": [0.5, 0.2],
            "share_x_$^": [0.5, 0.8],
        }  # fmt: skip
    )
    plot_line_heatmap(scores, tmp_path / "h", formats=("png",), model="ae")
    assert (tmp_path / "h.png").stat().st_size > 0


def test_one_non_utf8_cube_name_loses_no_good_cube(tmp_path, lines):
    """A LOGCUBE name that is not valid UTF-8 is a reject; the good cubes are extracted."""
    from linecube.cli import main

    gs = [make_galaxy(index=i, ifusize=19, plate=8485, ifudsgn=1901 + i) for i in range(2)]
    paths = [write_cube(tmp_path, g, lines) for g in gs]
    drpall = write_drpall_for(tmp_path, gs)
    bad = os.fsencode(str(paths[1].parent)) + b"/manga-8485-1902-LOGCUBE\xff.fits.gz"
    os.rename(paths[1], bad)
    out = tmp_path / "c.h5"
    rc = main(["extract", "--drpall", str(drpall), "--out", str(out), str(paths[0]), os.fsdecode(bad)])
    assert rc == 0 and out.exists()
    rej = pd.read_csv(tmp_path / "c.rejects.csv")
    assert len(rej) == 1 and "\\xff" in rej["path"].iloc[0]


def test_extract_out_names_cannot_share_a_rejects_file(tmp_path):
    from linecube.cli import UsageError, check_extract_out

    with pytest.raises(UsageError, match=".h5"):
        check_extract_out(str(tmp_path / "c"), [])


def test_small_folds_never_ask_for_more_neighbours_than_they_hold():
    """The representation probe on 9 galaxies of a rare class (2 folds) runs."""
    from linecube.analysis.probes import knn_probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(11, 4))
    y = np.array(["a"] * 9 + ["b"] * 2)
    assert np.isfinite(knn_probe(x, y, classify=True))


def test_a_second_training_of_the_same_run_is_refused(tmp_path):
    from linecube.io.atomic import Busy, exclusive
    from linecube.model.train import train

    out = tmp_path / "model"
    with exclusive(out / "model.keras"):  # an orphan of a killed Snakemake still training
        with pytest.raises(Busy):
            train(tmp_path / "cubes.h5", out, "ae", {}, {})


def test_line_list_without_what_the_scores_read_is_named():
    from linecube.analysis.features import missing_lines, required_lines

    assert "[OIII]5008" in required_lines() and "Halpha" in required_lines()
    names = [n for n in required_lines() if n != "[OIII]5008"]
    assert missing_lines(names) == ["[OIII]5008"]


@pytest.mark.parametrize("damage", ["truncate", "no_ivar"])
def test_a_damaged_cubes_file_is_named_before_training(tmp_path, damage):
    import h5py
    from fixtures import write_cubes_h5

    from linecube.io.formats import BadCubesFile
    from linecube.model.train import train

    cubes = tmp_path / "cubes.h5"
    write_cubes_h5(cubes, n=6)
    if damage == "truncate":
        data = cubes.read_bytes()
        cubes.write_bytes(data[: len(data) // 2])
    else:
        with h5py.File(cubes, "r+") as h5:
            del h5["ivar"]
    with pytest.raises(BadCubesFile, match=str(cubes)):
        train(cubes, tmp_path / "m", "ae", {}, {})


def test_the_reject_threshold_is_the_surveys_not_a_plates(tmp_path):
    """One bad cube on a plate of two is 1 of 14 in the survey: below 0.25, no stop."""
    import h5py
    from fixtures import write_cubes_h5

    from linecube.data.assemble import check_reject_fraction
    from linecube.data.extract_survey import TooManyRejects

    plates = []
    for k, n in enumerate((1, 12)):
        p = tmp_path / f"{8000 + k}.h5"
        write_cubes_h5(p, n=n)
        plates.append(p)
    rej = tmp_path / "8000.rejects.csv"
    rej.write_text("plateifu,path,reason\n8000-1902,x.fits.gz,corrupt gzip data\n")
    assert check_reject_fraction(plates, [rej], 0.25) == (13, 1)
    with pytest.raises(TooManyRejects, match="8000-1902"):
        check_reject_fraction(plates, [rej], 0.05)
    with h5py.File(plates[0]) as h5:
        assert h5["flux"].shape[0] == 1


def test_non_ascii_drpall_text_names_file_column_and_row(tmp_path):
    from linecube.io.drpall import read_drpall

    p = write_drpall_for(tmp_path, [make_galaxy()])
    b = p.read_bytes()
    i = b.find(b"1-200000")
    p.write_bytes(b[:i] + b"1-20000\xe9" + b[i + 8 :])
    with pytest.raises(ValueError, match=r"column mangaid, table row 1"):
        read_drpall(p)


def test_a_fifo_input_is_refused_not_waited_on(tmp_path):
    from linecube.cli import main

    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)
    assert main(["rerank", "--labels", str(fifo), "--results", str(tmp_path)]) == 2


def test_drpver_with_a_trailing_newline_and_duplicate_yaml_keys_are_refused(tmp_path):
    from linecube.config import ConfigError, duplicate_keys, load_config, validate_config

    cfg = load_config()
    cfg["data"]["drpver"] = "v3_1_1\n"
    with pytest.raises(ConfigError, match="drpver"):
        validate_config(cfg)
    y = tmp_path / "c.yaml"
    y.write_text("train:\n  epochs: 3\n  epochs: 30\n")
    assert "given twice" in duplicate_keys(y)
    with pytest.raises(Exception, match="given twice"):
        load_config(y)


def test_a_file_size_limit_is_one_error_line_not_h5py_tracebacks(tmp_path, lines):
    import resource
    import subprocess
    import sys

    g = make_galaxy(ifusize=19)
    path = write_cube(tmp_path, g, lines)
    drpall = write_drpall_for(tmp_path, [g])

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200 * 1024, resource.RLIM_INFINITY))

    p = subprocess.run(
        [sys.executable, "-m", "linecube.cli", "extract", "--drpall", str(drpall), "--out", str(tmp_path / "c.h5"), str(path)],
        capture_output=True, text=True, preexec_fn=limit, timeout=120,
    )  # fmt: skip
    assert p.returncode != 0 and "file-size limit" in p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "c.h5").exists()
