"""Brightness-free anomaly scores (linecube.analysis: features, residual, latent, ranks) and the twin simulator."""

from __future__ import annotations

import numpy as np
import pytest

from linecube.analysis.features import FEATURE_NAMES, FeatureScorer, galaxy_features
from linecube.analysis.latent import LatentDensity
from linecube.analysis.ranks import gauss_rank, gauss_ranks
from linecube.analysis.residual import RobustZ, line_residual_stats, residual_score
from linecube.data.fluxscale import NORM_PER, halpha_scale
from linecube.io.formats import load_lines

L, B, S = 19, 10, 32
HA = 15


def _galaxy(rng, amp=1.0, n=1, offset=(0, 0)):
    """n toy cubes (N, 190, 32, 32): Gaussian lines on a round disc, flux x amp."""
    yy, xx = np.mgrid[:S, :S]
    disc = np.exp(-np.hypot(yy - 15.5 - offset[0], xx - 15.5 - offset[1]) / 4.0)
    prof = np.exp(-0.5 * ((np.arange(B) - 4.5) / 1.2) ** 2)
    strengths = np.full(L, 0.2)
    strengths[HA] = 3.0
    strengths[7] = 1.0  # Hbeta
    cube = (strengths[:, None, None, None] * prof[None, :, None, None] * disc[None, None]).reshape(L * B, S, S)
    cube = cube + 0.05 * disc[None]
    flux = np.repeat((amp * cube)[None], n, axis=0).astype(np.float32)
    flux += rng.normal(0, 0.01 * amp, flux.shape).astype(np.float32)
    ivar = np.full(flux.shape, 1.0 / (0.01 * amp) ** 2, np.float32)
    mask = np.zeros(flux.shape, np.uint8)
    return flux, ivar, mask


def test_halpha_scale_is_the_halpha_window_total_and_floored():
    rng = np.random.default_rng(0)
    flux, ivar, mask = _galaxy(rng)
    s = halpha_scale(flux, ivar, mask, HA, B)
    assert s[0] == pytest.approx(flux[0, HA * B : (HA + 1) * B].sum(dtype=np.float64), rel=1e-6)
    mask[:, HA * B : (HA + 1) * B, :, :16] = 1  # masked voxels do not count
    assert halpha_scale(flux, ivar, mask, HA, B)[0] < s[0]
    zero = np.zeros_like(flux)  # no flux at all: a positive floor, never 0
    assert halpha_scale(zero, ivar, np.zeros_like(mask), HA, B)[0] > 0


def test_residual_stats_are_brightness_free_and_localised():
    rng = np.random.default_rng(1)
    flux, ivar, mask = _galaxy(rng)
    recon = flux.copy()
    recon[0, 100:110, 12:20, 12:20] -= 0.5  # line 10 ([OIII]5008) misses flux in the centre
    s = halpha_scale(flux, ivar, mask, HA, B)
    st, emap = line_residual_stats(flux, recon, ivar, mask, s, L, B, q=95, noise_k=2.0)
    assert st.shape == (1, L) and emap.shape == (1, S, S)
    assert np.argmax(st[0]) == 10
    assert st[0, np.arange(L) != 10].max() == 0.0  # nothing else beyond 2 sigma
    # the same galaxy 30x brighter (noise scaled with it) gives the same statistics
    k = np.float32(30.0)
    st2, _ = line_residual_stats(flux * k, recon * k, ivar / k**2, mask, s * k, L, B, q=95, noise_k=2.0)
    np.testing.assert_allclose(st2, st, rtol=1e-4)
    assert NORM_PER == 1000.0


def test_residual_stats_noise_subtraction_ignores_pure_noise():
    rng = np.random.default_rng(2)
    flux, ivar, mask = _galaxy(rng)
    noisy = flux + rng.normal(0, 0.01, flux.shape).astype(np.float32)  # 1 sigma of noise
    s = halpha_scale(flux, ivar, mask, HA, B)
    st_k, _ = line_residual_stats(flux, noisy, ivar, mask, s, L, B, q=95, noise_k=3.0)
    st_0, _ = line_residual_stats(flux, noisy, ivar, mask, s, L, B, q=95, noise_k=0.0)
    assert st_k.max() < 0.05 * st_0.max()


def test_robust_z_and_residual_score_name_the_line():
    rng = np.random.default_rng(3)
    ref = rng.normal(5.0, 2.0, size=(500, 3))
    z = RobustZ.fit(ref)
    assert np.allclose(z.center, 5.0, atol=0.3) and np.allclose(z.spread, 2.0, atol=0.3)
    stats = np.vstack([ref[:20], [[5.0, 5.0, 40.0]]])
    sc, names = residual_score(stats, np.arange(20), ["a", "b", "c"])
    assert np.argmax(sc) == 20 and names[20] == "c"
    assert RobustZ.fit(np.ones((10, 1)))(np.array([1.0, 2.0]))[1] > 0  # constant reference: finite


def test_latent_density_flags_the_outlier_and_skips_self():
    rng = np.random.default_rng(4)
    z = rng.normal(size=(200, 8))
    z[-1] = 8.0
    dens = LatentDensity(n_components=4, k=5, seed=0).fit(z[:150])
    is_ref = np.arange(200) < 150
    knn = dens.knn(z, is_ref)
    assert np.argmax(knn) == 199
    assert knn[:150].min() > 0  # a reference galaxy is not its own neighbour
    assert np.argmax(dens.iforest(z)) == 199


def test_gauss_rank_orders_beyond_the_reference_and_combines():
    ref = np.arange(100, dtype=float)
    g = gauss_rank(ref, np.array([-10.0, 50.0, 99.0, 150.0, 300.0]))
    assert np.all(np.diff(g) > 0)
    assert abs(g[1]) < 0.05
    comb = gauss_ranks({"a": np.r_[ref, 500.0], "b": np.r_[ref, 50.0]}, np.arange(100)).mean(axis=0)
    assert np.argmax(comb) == 100


def test_features_are_brightness_free_and_see_an_offset():
    rng = np.random.default_rng(5)
    names = list(load_lines().names)
    f1, i1, m1 = _galaxy(rng, amp=1.0)
    f2, i2, m2 = _galaxy(rng, amp=40.0)
    fo, io, mo = _galaxy(rng, amp=1.0, offset=(6, 0))
    cat = np.concatenate
    x = galaxy_features(cat([f1, f2, fo]), cat([i1, i2, io]), cat([m1, m2, mo]), names, B)
    assert x.shape == (3, len(FEATURE_NAMES))
    ratios = [FEATURE_NAMES.index(n) for n in ("hb_ha", "oiii_ha", "nii_ha")]
    np.testing.assert_allclose(x[0, ratios], x[1, ratios], atol=0.02)
    # the nuclear pedestal is a signal-to-noise: the same for the galaxy 40x brighter with 40x the noise
    nuc = FEATURE_NAMES.index("nuclear_pedestal_Halpha")
    x40 = galaxy_features(40 * f1, i1 / 1600, m1, names, B)
    assert abs(x40[0, nuc] - x[0, nuc]) < 1e-3 and abs(x[0, nuc]) < 5
    off = FEATURE_NAMES.index("halpha_centroid_offset")
    assert x[2, off] > 3.0 > x[0, off]
    scorer = FeatureScorer(seed=0).fit(np.repeat(x[:2], 20, axis=0) + rng.normal(0, 0.01, (40, x.shape[1])))
    s = scorer(x)
    assert s[2] > max(s[0], s[1])


def test_twin_is_the_same_galaxy_with_the_anomaly():
    from linecube.io.formats import CubeLayout
    from linecube.io.manga import log_wave_grid
    from linecube.simulate import ANOMALY_TYPES, emission_line_cube, plan_survey, with_anomaly

    g = next(x for x in plan_survey(30, seed=9, anomaly_fraction=0.0) if x.ifusize == 19)
    before = repr(g)
    twins = {t: with_anomaly(g, t) for t in ANOMALY_TYPES}
    assert repr(g) == before  # the clean galaxy is untouched
    for t, tw in twins.items():
        assert tw.anomaly == t and tw.seed == g.seed and tw.z == g.z and tw.plateifu == g.plateifu
    with pytest.raises(ValueError, match="already carries"):
        with_anomaly(twins["shock"], "blueberry")
    lines = load_lines()
    c0 = emission_line_cube(g, lines, CubeLayout(), log_wave_grid(), np.random.default_rng([g.seed, 1]))
    c1 = emission_line_cube(twins["off_centre"], lines, CubeLayout(), log_wave_grid(), np.random.default_rng([g.seed, 1]))
    assert (c0["mask"] == c1["mask"]).all()
    assert not np.array_equal(c0["flux"], c1["flux"])
    # same noise realisation: where neither model has flux (outside the footprint) the cubes agree
    assert np.array_equal(c0["flux"][c0["mask"] > 0], c1["flux"][c0["mask"] > 0])


def test_survey_styles_differ_and_default_is_unchanged():
    from linecube.simulate import SURVEY_STYLES, plan_survey

    a = plan_survey(40, seed=3)
    b = plan_survey(40, seed=3, style="default")
    c = plan_survey(40, seed=3, style="alt")
    assert [repr(x) for x in a] == [repr(x) for x in b]
    assert np.median([x.sky_sigma for x in c]) > 1.5 * np.median([x.sky_sigma for x in a])
    assert set(SURVEY_STYLES) >= {"default", "alt"}
    with pytest.raises(KeyError):
        plan_survey(5, seed=1, style="nope")


def test_benchmark_metrics():
    from sklearn.metrics import roc_auc_score

    from linecube.analysis.validate import auc_fast, bootstrap_auc_ci, paired_win_rate, recall_at_prevalence, spearman

    rng = np.random.default_rng(6)
    lab = rng.random(200) < 0.3
    s = rng.normal(size=200) + lab
    assert auc_fast(lab, s) == pytest.approx(roc_auc_score(lab, s))
    assert auc_fast(np.ones(3, bool), [1, 2, 3]) is None
    groups = np.arange(200) // 2
    lo, hi = bootstrap_auc_ci(s, groups, lab, 200, 0)
    assert lo < auc_fast(lab, s) < hi
    base = np.array(["g1", "g1", "g2", "g2"])
    kinds = np.array(["", "shock", "", "shock"])
    assert paired_win_rate(np.array([1.0, 2.0, 3.0, 3.0]), base, kinds, kinds == "", ("shock",)) == 0.75
    assert recall_at_prevalence(np.zeros(50), np.ones(10), 0.05, 0.05, 20, 0) == 1.0
    assert spearman([1, 2, 3, 4], [2, 4, 6, 9]) == pytest.approx(1.0)


@pytest.mark.slow
def test_science_benchmark_interface(tmp_path):
    """benchmarks/science.py writes the JSON others script against (a tiny run)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    (tmp_path / "tiny.yaml").write_text(
        "model: {filters: [2], stem_filters: 2, latent_dim: 4, pose_dim: 1}\ntrain: {min_steps: 0}\n"
    )
    out = tmp_path / "science.json"
    cmd = [sys.executable, str(repo / "benchmarks" / "science.py"), "--train", "18", "--eval", "4", "--epochs", "1",
           "--seeds", "1", "--boot", "10", "--config", str(tmp_path / "tiny.yaml"), "--out", str(out)]  # fmt: skip
    p = subprocess.run([*cmd, "--save-stats", str(tmp_path / "stats")], capture_output=True, text=True, timeout=600, cwd=repo)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(out.read_text())
    keys = {"auc", "auc_ci", "per_type", "paired_win", "recall_top5", "rho_brightness"}
    assert res["default_score"] in res["scores"] and "score_paper" in res["scores"]
    assert set(res["baselines"]) == {"brightness", "median_cube", "features"}
    for m in [*res["scores"].values(), *res["baselines"].values()]:
        assert keys <= set(m) and len(m["auc_ci"]) == 2
        assert set(m["per_type"]) == {"blueberry", "broad_balmer", "double_peaked", "off_centre", "shock"}
    assert set(res["surveys"]) == {"default", "alt"} and len(res["surveys"]["alt"]["seeds"]) == 1
    assert res["test_loss_ratio"] > 0 and 0 < res["test_loss_floor"] < 1.2
    assert "score_max" in p.stdout and "baseline:features" in p.stdout  # the printed table
    # re-scoring the kept statistics (no simulation, no training) gives the same metrics
    again = tmp_path / "again.json"
    cmd[cmd.index(str(out))] = str(again)
    p = subprocess.run([*cmd, "--from-stats", str(tmp_path / "stats")], capture_output=True, text=True, timeout=600, cwd=repo)
    assert p.returncode == 0, p.stderr[-3000:]
    res2 = json.loads(again.read_text())
    assert res2["scores"] == res["scores"] and res2["test_loss_floor"] == res["test_loss_floor"]


def test_balmer_pedestal_sees_a_broad_line_its_reference_does_not_cancel(tmp_path):
    """A broad Balmer component raises the Halpha window's continuum in the centre;
    its reference windows lie outside the broad profile (a reference at [NII]6585,
    ~950 km/s away, rose with it: twins won only 76 % of pairs)."""
    import h5py

    from linecube.analysis.features import FEATURE_NAMES, PEDESTAL_REFERENCES, galaxy_features
    from linecube.io.formats import load_lines
    from linecube.simulate import plan_survey, simulate_cubes_h5, with_anomaly

    lines = load_lines()
    assert all(abs(lines.rest[list(lines.names).index(r)] - 6564.61) > 150 for r in PEDESTAL_REFERENCES["Halpha"])
    gals = []
    for g in plan_survey(12, 77, anomaly_fraction=0.0):
        t = with_anomaly(g, "broad_balmer")
        t.plate = g.plate + 10000
        gals += [g, t]
    h = tmp_path / "cubes.h5"
    simulate_cubes_h5(h, 0, 0, galaxies=gals, threads=2, progress=False)
    with h5py.File(h) as f:
        flux, ivar, mask = f["flux"][()], f["ivar"][()], f["mask"][()]
        pifu = [s.decode() for s in f["plateifu"][()]]
    feats = galaxy_features(flux, ivar, mask, lines.names, 10)[:, FEATURE_NAMES.index("nuclear_pedestal_Halpha")]
    row = {p: i for i, p in enumerate(pifu)}
    wins = [feats[row[f"{g.plate + 10000}-{g.ifudsgn}"]] > feats[row[g.plateifu]] for g in gals[::2]]
    assert sum(wins) >= 11, wins


def test_feature_scorer_leaves_a_reference_galaxy_out_of_its_own_lof():
    """A reference galaxy's LOF is computed without itself among its neighbours
    (counting itself, it would sit lower than a new galaxy's from the same
    population); an outlier tops the mean Gaussianised rank of IF and LOF."""
    from sklearn.neighbors import LocalOutlierFactor

    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 6))
    ref = np.arange(300)
    sc = FeatureScorer(seed=0).fit(x[ref])
    fair, counting_itself = sc.detectors(x, ref)[1], sc.detectors(x)[1]
    loo = -LocalOutlierFactor(n_neighbors=20).fit(sc._t(x[ref])).negative_outlier_factor_
    np.testing.assert_allclose(fair[ref], loo)
    np.testing.assert_array_equal(fair[300:], counting_itself[300:])
    assert fair[ref].mean() > counting_itself[ref].mean()
    out = np.r_[x, [[8.0, 0, 0, 0, 0, 0]]]
    s = sc(out, ref)
    assert np.argmax(s) == 600 and s.shape == (601,)


def test_line_significance_finds_a_local_departure_in_noise_units():
    """A reconstruction that misses a compact excess in one line's window: that line's
    chi^2 excess stands out; residuals that are only the noise give ~0 everywhere."""
    from linecube.analysis.residual import line_significance_stats

    rng = np.random.default_rng(0)
    n_lines, bins = 19, 10
    ivar = np.full((1, n_lines * bins, 32, 32), 4.0, np.float32)  # sigma 0.5
    mask = np.zeros(ivar.shape, np.uint8)
    truth = np.zeros(ivar.shape, np.float32)
    flux = truth + rng.normal(0, 0.5, ivar.shape).astype(np.float32)
    quiet = line_significance_stats(flux, truth, ivar, mask, n_lines, bins)
    assert np.abs(quiet).max() < 5
    bumped = flux.copy()
    bumped[0, 7 * bins + 3 : 7 * bins + 7, 14:18, 14:18] += 3.0
    got = line_significance_stats(bumped, truth, ivar, mask, n_lines, bins)[0]
    assert np.argmax(got) == 7 and got[7] > 10 * max(np.delete(got, 7).max(), 1)
