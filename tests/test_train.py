"""Training: a two-epoch run on a tiny simulated sample, determinism, resume after SIGKILL."""

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("keras")

TINY_MODEL = {"filters": [4, 8], "latent_dim": 8}


@pytest.fixture(scope="module")
def tiny_cubes(tiny_survey, tmp_path_factory, lines):
    from linecube.extract import extract_to_h5
    from linecube.manga import cube_requests
    from linecube.sample import build_sample

    out, gals = tiny_survey
    sample, _, _ = build_sample(out / "v3_1_1" / "drpall-v3_1_1.fits", out, "v3_1_1")
    reqs = [r for p in sample.plate.unique() for r in cube_requests(sample, p)]
    path = tmp_path_factory.mktemp("cubes") / "cubes.h5"
    extract_to_h5(reqs, path, lines, drpver="v3_1_1", progress=False)
    return path


@pytest.mark.slow
def test_two_epochs_on_simulated_sample_and_deterministic(tiny_cubes, tmp_path):
    from linecube.train import train

    for name in ("a", "b"):
        s = train(
            tiny_cubes, tmp_path / name / "vae", "vae", TINY_MODEL, {"epochs": 2, "seed": 5, "test_fraction": 0.34}, verbose=0
        )
        assert s["epochs"] == 2
    a, b = tmp_path / "a" / "vae", tmp_path / "b" / "vae"
    assert not (a / "checkpoint.keras").exists()  # BackupAndRestore resumes; no unread checkpoint
    for f in ("model.keras", "history.csv", "loss.png", "split.csv"):
        assert (a / f).exists(), f
    h = pd.read_csv(a / "history.csv")
    assert list(h["epoch"]) == [1, 2] and {"loss", "test_loss", "kl", "reconstruction"} <= set(h.columns)
    split = pd.read_csv(a / "split.csv")
    assert set(split["split"]) == {"train", "test"} and split["plateifu"].is_unique
    with h5py.File(tiny_cubes) as f:
        assert sorted(split["plateifu"]) == sorted(s.decode() for s in f["plateifu"][()])
    pd.testing.assert_frame_equal(split, pd.read_csv(b / "split.csv"))
    from linecube.models import load_model

    wa, wb = load_model(a / "model.keras").get_weights(), load_model(b / "model.keras").get_weights()
    for x, y in zip(wa, wb):
        np.testing.assert_array_equal(x, y)  # same config and seed -> same weights on CPU
    np.testing.assert_array_equal(h["loss"], pd.read_csv(b / "history.csv")["loss"])
    # no leftovers of the backup machinery after a clean finish
    assert not list(tmp_path.glob("a/.backup-*")) and not list(tmp_path.glob("a/.history-*"))


@pytest.mark.slow
def test_ivar_weighted_loss_trains(tiny_cubes, tmp_path):
    """loss_weighting: ivar trains (finite losses), differs from the unweighted run, and
    keeps Eq. 1's scale (the weights have mean 1 per galaxy)."""
    from linecube.train import train

    hist = {}
    for name, weighting in (("plain", "none"), ("ivar", "ivar")):
        model = {**TINY_MODEL, "loss_weighting": weighting}
        tcfg = {"epochs": 1, "seed": 5, "test_fraction": 0.34, "augment_copies": 1}
        train(tiny_cubes, tmp_path / name / "ae", "ae", model, tcfg, verbose=0)
        hist[name] = pd.read_csv(tmp_path / name / "ae" / "history.csv")
    h = hist["ivar"]
    assert np.isfinite(h[["loss", "test_loss"]].to_numpy()).all()
    assert not np.allclose(h["loss"], hist["plain"]["loss"])
    assert 0.5 < h["loss"].iloc[0] / hist["plain"]["loss"].iloc[0] < 2.0


DRIVER = """
import logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
from linecube.train import train
train(sys.argv[1], sys.argv[2], "ae", {"filters": [4, 8], "latent_dim": 8}, {"epochs": 5, "seed": 1, "augment_copies": 12}, verbose=2)
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tiny_cubes, tmp_path):
    out = tmp_path / "models" / "ae"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    p = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tiny_cubes), str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    killed_after = None
    while time.time() < deadline and p.poll() is None:
        hist = list((tmp_path / "models").glob(".history-ae-*.csv"))
        if hist and hist[0].stat().st_size > 10:
            rows = pd.read_csv(hist[0])
            if len(rows) >= 2:
                time.sleep(0.3)  # into the next epoch
                os.kill(p.pid, signal.SIGKILL)
                killed_after = len(rows)
                break
        time.sleep(0.05)
    p.wait()
    assert killed_after is not None, "training finished before it could be killed"
    assert not (out / "model.keras").exists()
    backups = list((tmp_path / "models").glob(".backup-ae-*"))
    assert backups, "no BackupAndRestore state was left to resume from"
    r = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tiny_cubes), str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resuming after epoch" in r.stdout + r.stderr
    first_epoch_run = int([ln for ln in r.stdout.splitlines() if ln.startswith("Epoch ")][0].split()[1].split("/")[0])
    assert 2 <= first_epoch_run <= killed_after + 1  # resumed after the last finished epoch
    h = pd.read_csv(out / "history.csv")
    assert list(h["epoch"]) == [1, 2, 3, 4, 5]
    assert (out / "model.keras").exists() and not list((tmp_path / "models").glob(".backup-ae-*"))
