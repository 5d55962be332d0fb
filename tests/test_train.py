"""Training: a two-epoch run on a tiny simulated sample, determinism, the
divergence guard, and train -> SIGKILL -> resume -> score on every Keras backend
installed (TensorFlow and PyTorch in the suite, JAX where present)."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("keras")

TINY_MODEL = {"filters": [4], "stem_filters": 4, "latent_dim": 8, "pose_dim": 2}


def _backends():
    out = ["tensorflow"]
    if importlib.util.find_spec("torch"):
        out.append("torch")
    if importlib.util.find_spec("jax"):
        out.append("jax")
    return out


@pytest.fixture(scope="module")
def tiny_cubes(tiny_survey, tmp_path_factory, lines):
    from linecube.data.extract_survey import extract_to_h5
    from linecube.data.sample import build_sample
    from linecube.io.drpall import cube_requests

    out, gals = tiny_survey
    sample, _, _ = build_sample(out / "v3_1_1" / "drpall-v3_1_1.fits", out, "v3_1_1")
    reqs = [r for p in sample.plate.unique() for r in cube_requests(sample, p)]
    path = tmp_path_factory.mktemp("cubes") / "cubes.h5"
    extract_to_h5(reqs, path, lines, drpver="v3_1_1", progress=False)
    return path


BITWISE = """
import sys
import numpy as np
from linecube.model.train import train
cubes, out = sys.argv[1], sys.argv[2]
for name in ("a", "b"):
    train(cubes, f"{out}/{name}", "ae", MODEL, {"epochs": 1, "min_steps": 0, "seed": 5, "test_fraction": 0.34}, verbose=0, bitwise=True)
import os
from linecube.model.autoencoder import load_model
assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"
wa, wb = load_model(f"{out}/a/model.keras").get_weights(), load_model(f"{out}/b/model.keras").get_weights()
assert all(np.array_equal(x, y) for x, y in zip(wa, wb)), "weights differ"
print("BITWISE OK")
"""


@pytest.mark.slow
def test_bitwise_reproducible_gives_identical_weights(tiny_cubes, tmp_path):
    """``bitwise=True`` (config ``bitwise_reproducible``) turns TensorFlow's oneDNN
    kernels off before TensorFlow is imported: two trainings are bit-identical.
    (A fresh process: this one imported TensorFlow with them on.)"""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["KERAS_BACKEND"] = "tensorflow"
    code = BITWISE.replace("MODEL", repr(TINY_MODEL))
    p = subprocess.run(
        [sys.executable, "-c", code, str(tiny_cubes), str(tmp_path)], capture_output=True, text=True, env=env, timeout=600
    )
    assert p.returncode == 0 and "BITWISE OK" in p.stdout, p.stderr[-3000:]


def test_bitwise_refused_once_tensorflow_runs_with_onednn(monkeypatch):
    import tensorflow  # noqa: F401  (this process: imported with oneDNN on)

    from linecube.model import backend as kb

    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    with pytest.raises(RuntimeError, match="TF_ENABLE_ONEDNN_OPTS=0 before Python starts"):
        kb.select("tensorflow", bitwise=True)


@pytest.mark.slow
def test_two_epochs_on_simulated_sample_and_deterministic(tiny_cubes, tmp_path):
    from linecube.model.train import train

    for name in ("a", "b"):
        s = train(
            tiny_cubes,
            tmp_path / name / "vae",
            "vae",
            TINY_MODEL,
            {"epochs": 2, "min_steps": 0, "seed": 5, "test_fraction": 0.34},
            verbose=0,
        )
        assert s["epochs"] == 2 and s["backend"] == "tensorflow" and s["divergence_events"] == 0
    a, b = tmp_path / "a" / "vae", tmp_path / "b" / "vae"
    assert not (a / "checkpoint.keras").exists()  # BackupAndRestore resumes; no unread checkpoint
    for f in ("model.keras", "history.csv", "split.csv", "divergence.csv"):
        assert (a / f).exists(), f
    h = pd.read_csv(a / "history.csv")
    assert list(h["epoch"]) == [1, 2]
    assert {"loss", "test_loss", "kl", "reconstruction", "consistency", "discarded_batches", "lr_factor"} <= set(h.columns)
    assert list(pd.read_csv(a / "divergence.csv").columns) == ["epoch", "batch", "loss", "reason", "lr_factor"]
    split = pd.read_csv(a / "split.csv")
    assert set(split["split"]) == {"train", "test"} and split["plateifu"].is_unique
    with h5py.File(tiny_cubes) as f:
        assert sorted(split["plateifu"]) == sorted(s.decode() for s in f["plateifu"][()])
    pd.testing.assert_frame_equal(split, pd.read_csv(b / "split.csv"))
    from linecube.model.autoencoder import load_model

    wa, wb = load_model(a / "model.keras").get_weights(), load_model(b / "model.keras").get_weights()
    # same config and seed -> the same weights, to float rounding: oneDNN's kernels
    # (on, the default) sum in a varying order on some CPUs (bitwise: the test below).
    # Rounding moves a weight by ~1e-7 after two epochs (4e-4 of a 5e-4 weight, seen on
    # CI), so the floor is 1e-3 of each tensor's scale; another seed moves them by ~all of it
    for x, y in zip(wa, wb):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-3 * float(np.abs(y).max()) + 1e-7)
    np.testing.assert_allclose(h["loss"], pd.read_csv(b / "history.csv")["loss"], rtol=1e-4)
    # no leftovers of the backup machinery after a clean finish
    assert not list(tmp_path.glob("a/.backup-*")) and not list(tmp_path.glob("a/.history-*"))
    assert not list(tmp_path.glob("a/.divergence-*"))


def test_validation_logs_are_keras_evaluate_and_no_epoch_waits(tiny_cubes, tmp_path):
    """The test losses in history.csv (the ``Validate`` callback: test_on_batch with
    the metrics kept over the test set) equal Keras's ``evaluate`` of the trained
    model on the same test batches; training runs on one endless iterator
    (steps per epoch given), so the history has every epoch once."""
    from fixtures import evaluate_test_split

    from linecube.model.train import train

    tcfg = {"epochs": 2, "min_steps": 0, "seed": 5, "test_fraction": 0.34, "batch_size": 4}
    train(tiny_cubes, tmp_path / "ae", "ae", TINY_MODEL, tcfg, verbose=0)
    h = pd.read_csv(tmp_path / "ae" / "history.csv")
    assert list(h["epoch"]) == [1, 2]
    got = evaluate_test_split(tiny_cubes, tmp_path / "ae" / "model.keras", TINY_MODEL, tcfg)
    assert got["n_batches"] >= 2  # the means run over several batches
    for k in ("loss", "reconstruction", "consistency"):
        np.testing.assert_allclose(h[f"test_{k}"].iloc[-1], got[k], rtol=1e-5, err_msg=k)


VALIDATE = """
import sys, json
import pandas as pd
from linecube.model.train import train
cubes, out, backend, tests = sys.argv[1:5]
sys.path.insert(0, tests)
from fixtures import evaluate_test_split
tcfg = {"epochs": 2, "min_steps": 0, "seed": 5, "test_fraction": 0.34, "batch_size": 4}
train(cubes, out, "vae", MODEL, tcfg, verbose=0, backend=backend)
h = pd.read_csv(f"{out}/history.csv")
got = evaluate_test_split(cubes, f"{out}/model.keras", MODEL, tcfg)
print("VALIDATE", json.dumps({k: [float(h[f"test_{k}"].iloc[-1]), float(got[k])] for k in ("loss", "reconstruction", "kl")}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", [b for b in _backends() if b != "tensorflow"])
def test_validation_logs_are_keras_evaluate_on_other_backends(tiny_cubes, tmp_path, backend):
    """The ``Validate`` callback's test losses (a VAE: KL too) equal Keras's
    ``evaluate`` on PyTorch and JAX as on TensorFlow (their ``test_on_batch``
    resets the metrics through the same method)."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    code = VALIDATE.replace("MODEL", repr(TINY_MODEL))
    p = subprocess.run(
        [sys.executable, "-c", code, str(tiny_cubes), str(tmp_path / "vae"), backend, str(Path(__file__).parent)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert p.returncode == 0 and "VALIDATE" in p.stdout, p.stderr[-3000:]
    got = json.loads(p.stdout.split("VALIDATE", 1)[1])
    for k, (logged, evaluated) in got.items():
        np.testing.assert_allclose(logged, evaluated, rtol=1e-5, err_msg=k)


@pytest.mark.slow
def test_ivar_weighted_loss_trains(tiny_cubes, tmp_path):
    """loss_weighting: ivar trains (finite losses), differs from the unweighted run, and
    keeps Eq. 1's scale (the weights have mean 1 per galaxy)."""
    from linecube.model.train import train

    hist = {}
    for name, weighting in (("plain", "none"), ("ivar", "ivar")):
        model = {**TINY_MODEL, "loss_weighting": weighting, "consistency_weight": 0.0}
        tcfg = {"epochs": 1, "min_steps": 0, "seed": 5, "test_fraction": 0.34, "augment_copies": 1}
        train(tiny_cubes, tmp_path / name / "ae", "ae", model, tcfg, verbose=0)
        hist[name] = pd.read_csv(tmp_path / name / "ae" / "history.csv")
    h = hist["ivar"]
    assert np.isfinite(h[["loss", "test_loss"]].to_numpy()).all()
    assert not np.allclose(h["loss"], hist["plain"]["loss"])
    assert 0.5 < h["loss"].iloc[0] / hist["plain"]["loss"].iloc[0] < 2.0


def test_divergence_guard_throws_away_a_spike_restores_and_lowers_the_rate(tmp_path):
    """A batch whose loss explodes (here: one batch of cubes 10^6 times brighter)
    leaves the weights as they were before it, halves the learning rate, and is
    written to the events file; the epoch's training loss counts only kept batches."""
    import keras

    from linecube.model.autoencoder import build_model
    from linecube.model.callbacks import DivergenceGuard
    from linecube.model.layers import OneCycle
    from linecube.model.spec import ModelConfig

    cfg = ModelConfig.from_config({**TINY_MODEL, "consistency_weight": 0.0}, crop=8)
    keras.utils.set_random_seed(1)
    model = build_model(cfg, "ae")
    schedule = OneCycle(1e-3, 16)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    rng = np.random.default_rng(0)
    batches = [rng.random((2, *cfg.input_shape), dtype=np.float32) for _ in range(16)]
    batches[12] = batches[12] * 1e6

    class Data(keras.utils.PyDataset):
        def __len__(self):
            return len(batches)

        def __getitem__(self, i):
            return ({"x": batches[i]},)

    seen = {}

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch in (11, 12):
                seen[batch] = [np.array(w) for w in self.model.weights]

    guard = DivergenceGuard(schedule, tmp_path / "events.csv", snapshot_every=1)
    model.fit(Data(), epochs=1, verbose=0, shuffle=False, callbacks=[guard, Spy()])
    events = pd.read_csv(tmp_path / "events.csv")
    assert list(events["batch"]) == [13] and events["reason"].iloc[0].endswith("the median of the last 12")
    assert schedule.factor == 0.5 and guard.discarded_this_epoch == 1
    for before, after in zip(seen[11], seen[12]):
        np.testing.assert_array_equal(before, after)  # the bad batch's update was undone
    assert len(guard.kept) == 15 and max(guard.kept) < 1e3 and all(np.isfinite(w).all() for w in model.get_weights())


DRIVER = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stdout)
from linecube.model.train import train
s = train(sys.argv[1], sys.argv[2], "ae", {"filters": [4], "stem_filters": 4, "latent_dim": 8, "pose_dim": 2},
          {"epochs": 4, "min_steps": 0, "seed": 1, "augment_copies": 8}, verbose=2, backend=sys.argv[3])
print("SUMMARY", json.dumps(s))
"""

SCORER = """
import json, sys
import h5py, numpy as np
from linecube.model import backend
backend.select(sys.argv[3])
from linecube.io.formats import read_layout
from linecube.analysis.stats import Reconstructor
from linecube.data.dataset import read_rows
with h5py.File(sys.argv[1]) as h5:
    layout, lines = read_layout(h5)
rec = Reconstructor(sys.argv[2], {"filters": [4], "stem_filters": 4, "latent_dim": 8, "pose_dim": 2}, layout, lines.names)
flux, _, mask = read_rows(sys.argv[1], [0, 1])
z, recon = rec(flux, mask)
print("SCORED", json.dumps({"z": z.tolist(), "recon_mean": float(np.abs(recon).mean()), "backend": backend.name(),
                            "trained_backend": rec.model.trained_backend}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", _backends())
def test_train_kill_resume_and_score_on_each_backend(tiny_cubes, tmp_path, backend):
    """On each backend: SIGKILL mid-training, rerun resumes after the last finished
    epoch, the model scores on its own backend and on TensorFlow (a model trained
    on one backend loads on another) with the same latents."""
    out = tmp_path / "models" / "ae"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1", KERAS_BACKEND=backend)
    p = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tiny_cubes), str(out), backend],
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
    assert killed_after is not None, "training finished before it could be killed:\n" + p.stdout.read()[-3000:]
    assert not (out / "model.keras").exists()
    assert list((tmp_path / "models").glob(".backup-ae-*")), "no BackupAndRestore state was left to resume from"
    r = subprocess.run(
        [sys.executable, "-c", DRIVER, str(tiny_cubes), str(out), backend], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resuming after epoch" in r.stdout + r.stderr
    first_epoch_run = int([ln for ln in r.stdout.splitlines() if ln.startswith("Epoch ")][0].split()[1].split("/")[0])
    assert 2 <= first_epoch_run <= killed_after + 1  # resumed after the last finished epoch
    summary = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("SUMMARY")][0][8:])
    assert summary["backend"] == backend
    h = pd.read_csv(out / "history.csv")
    assert list(h["epoch"]) == [1, 2, 3, 4] and np.isfinite(h["loss"]).all()
    assert (out / "model.keras").exists() and not list((tmp_path / "models").glob(".backup-ae-*"))
    scored = {}
    for b in dict.fromkeys([backend, "tensorflow"]):
        s = subprocess.run(
            [sys.executable, "-c", SCORER, str(tiny_cubes), str(out / "model.keras"), b],
            env={**env, "KERAS_BACKEND": b},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert s.returncode == 0, s.stderr[-3000:]
        scored[b] = json.loads([ln for ln in s.stdout.splitlines() if ln.startswith("SCORED")][0][7:])
        assert scored[b]["backend"] == b and np.isfinite(scored[b]["recon_mean"])
        assert scored[b]["trained_backend"] == backend  # the model file says which backend trained it
    np.testing.assert_allclose(scored[backend]["z"], scored["tensorflow"]["z"], rtol=1e-4, atol=1e-5)
