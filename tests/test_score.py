"""linecube.analysis.score: the paper's MAE, per-line shares, the brightness check."""

import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from fixtures import write_cubes_h5

from linecube.analysis.diagnostics import brightness_check
from linecube.analysis.score import SCORE_COLUMNS
from linecube.analysis.stats import line_shares


def test_line_shares_sum_to_one():
    err = np.abs(np.random.default_rng(0).normal(size=(4, 190, 8, 8)))
    err[1, 20:30] *= 100  # line 2 dominates galaxy 1
    s = line_shares(err, 19, 10)
    np.testing.assert_allclose(s.sum(axis=1), 1.0)
    assert np.argmax(s[1]) == 2
    np.testing.assert_allclose(line_shares(np.zeros((1, 190, 2, 2)), 19, 10), 1 / 19)


@pytest.mark.slow
def test_score_is_mae_in_flux_units(tmp_path):
    pytest.importorskip("keras")
    from linecube.analysis.score import score_galaxies
    from linecube.model.autoencoder import build_model
    from linecube.model.spec import ModelConfig, from_model_layout, to_model_layout

    cubes = tmp_path / "cubes.h5"
    pifus = write_cubes_h5(cubes, n=6)
    for scaling in ("none", "asinh"):
        mcfg = {"filters": [4], "stem_filters": 4, "latent_dim": 8, "flux_scaling": scaling, "asinh_softening": 0.5}
        cfg = ModelConfig.from_config(mcfg)
        m = build_model(cfg, "vae", seed=1)
        m.save(tmp_path / "m.keras")
        out = tmp_path / scaling
        score_galaxies(cubes, tmp_path / "m.keras", mcfg, out, batch_size=4, top_k=2, progress=False)
        sc = pd.read_csv(out / "scores.csv").set_index("plateifu")
        with h5py.File(cubes) as h5:
            flux, use = h5["flux"][()], h5["mask"][()] == 0
        flux = np.where(use, flux, 0).astype(np.float32)  # flagged voxels reach nothing: 0 in the model's input
        x = to_model_layout(np.arcsinh(flux / 0.5) if scaling == "asinh" else flux, cfg)
        xr = from_model_layout(np.asarray(m.reconstruct(x)), cfg)  # VAE: through mu
        if scaling == "asinh":
            xr = 0.5 * np.sinh(xr)
        err = (np.abs(flux.astype(np.float64) - xr) * use).reshape(6, -1)
        ref = err.sum(axis=1) / use.reshape(6, -1).sum(axis=1)  # over the usable voxels only
        np.testing.assert_allclose(sc.loc[pifus, "score_paper"].to_numpy(), ref, rtol=1e-4)  # the paper's score
        assert set(SCORE_COLUMNS) <= set(sc.columns) and sc["explain_line"].notna().all()
        np.testing.assert_allclose(sc["score"], sc["score_hybrid"])  # the default ranking
        assert (sc["score_hybrid"] >= sc["score_deep"] - 1e-12).all()  # max(features' peer rank, deep)
        assert (sc["score_max"] >= sc["score_deep"] - 1e-12).all()  # the largest rank >= the mean of two of them
        maf = np.abs(flux.astype(np.float64)).reshape(6, -1).sum(axis=1) / use.reshape(6, -1).sum(axis=1)  # all-zero recon MAE
        np.testing.assert_allclose(sc.loc[pifus, "mean_abs_flux"].to_numpy(), maf, rtol=1e-9)
        shares = sc[[c for c in sc.columns if c.startswith("share_")]]
        assert shares.shape[1] == 19
        np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-9)
        assert sorted(sc["rank"]) == list(range(1, 7)) and sc["rank"].idxmin() == sc["score"].idxmax()
        with h5py.File(out / "latents.h5") as h5:
            assert h5["latent"].shape == (6, 8)
        with h5py.File(out / "reconstructions.h5") as h5:
            assert h5["residual"].shape == (2, 32, 32) and h5["recon"].shape == (2, 190, 32, 32)


def test_brightness_check():
    maf = np.array([1.0, 2.0, 3.0, 4.0])
    # a model that reconstructs nothing scores each galaxy's mean |flux|
    assert brightness_check(maf, maf) == pytest.approx(
        {"median_score_over_mean_abs_flux": 1.0, "spearman_score_vs_mean_abs_flux": 1.0}
    )
    chk = brightness_check(np.array([0.4, 0.1, 0.3, 0.2]), maf)  # beats zeros; ranking not by brightness
    assert chk["median_score_over_mean_abs_flux"] == pytest.approx(np.median([0.4, 0.05, 0.1, 0.05]))
    assert chk["spearman_score_vs_mean_abs_flux"] == pytest.approx(-0.4)


def _stage(name, **args):
    """One stage in its own process, through the benchmarks' stage runner."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from scale import stage

    return stage(name, **args)


def test_noise_ratio_is_what_a_perfect_reconstruction_scores(tmp_path):
    """loss_ratios' second value, estimated from the ivar alone, equals the Eq. 1
    ratio of each galaxy's own noise-free cube (the simulator's truth), and a
    reconstruction that returns the noise-free cube scores exactly that."""
    from linecube.analysis.score import loss_ratios
    from linecube.data.dataset import median_cubes
    from linecube.data.fluxscale import FluxScaler
    from linecube.io.formats import load_lines
    from linecube.simulate import plan_survey, simulate_cubes_h5

    gals = plan_survey(24, 8, anomaly_fraction=0.0)
    noisy, truth = tmp_path / "noisy" / "cubes.h5", tmp_path / "truth" / "cubes.h5"
    simulate_cubes_h5(noisy, 0, 0, galaxies=gals, threads=2, progress=False)
    simulate_cubes_h5(truth, 0, 0, galaxies=gals, threads=2, progress=False, noise_free=True)
    with h5py.File(truth) as h5:
        true_flux = h5["flux"][()]

    class Perfect:
        scaler = FluxScaler.from_config({"flux_scaling": "halpha"}, list(load_lines().names), 10)

        def __call__(self, flux, mask):
            return None, true_flux[12:]

    _, med = median_cubes(noisy, np.arange(12), Perfect.scaler)
    model, noise = loss_ratios(noisy, Perfect(), np.arange(12, 24), med, batch_size=12)
    assert 0.3 < noise < 1.0
    assert model == pytest.approx(noise, rel=0.02)
