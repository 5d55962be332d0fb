"""What real DR17 cubes carry: masks, Galactic extinction, spatial covariance,
integrity and units, honoured at extraction (and, through cubes.h5, everywhere after)."""

import gzip

import numpy as np
import pytest
from fixtures import RAW, make_galaxy, req, write_cube

from linecube.data.extract import ExtractOptions, extract_cube, ifu_fibres
from linecube.io.logcube import CubeError
from linecube.io.manga import DRP3PixMask
from linecube.physics.extinction import a_lambda_over_ebv, correction_factor
from linecube.physics.noise import (
    CORREL_SIGMA_SPAXELS,
    correlated_normal,
    fit_correlation_sigma,
    independence_overstatement,
    sum_variance,
)


def _with_bad_voxels(value):
    """An edit that flags a block of voxels inside the footprint (DONOTUSE, IVAR 0)
    and fills their FLUX with ``value``: what the DRP may leave there."""

    def edit(hl):
        m = hl["MASK"].data
        n = m.shape[1]
        c = n // 2
        sl = (slice(6400 - 6400, None), slice(c - 2, c + 3), slice(c - 5, c - 1))
        m[sl] |= DRP3PixMask.DEADFIBER | DRP3PixMask.DONOTUSE
        hl["IVAR"].data[sl] = 0.0
        hl["FLUX"].data[sl] = value
        # and some single voxels anywhere inside the footprint: spikes with IVAR 0 only
        rng = np.random.default_rng(5)
        k = rng.integers(0, 4563, 3000), rng.integers(c - 8, c + 8, 3000), rng.integers(c - 8, c + 8, 3000)
        hl["IVAR"].data[k] = 0.0
        hl["FLUX"].data[k] = value
        return hl

    return edit


@pytest.mark.parametrize("value", [0.0, 5e4, np.nan, -3e38])
def test_masked_voxels_never_leave_extraction_whatever_they_hold(tmp_path, lines, value):
    """The same cube with its flagged voxels holding zeros, spikes or NaN extracts to
    the same arrays: flagged voxels are 0 in flux and ivar and set in the mask."""
    g = make_galaxy(ifusize=37, z=0.04)
    ref = extract_cube(req(g, write_cube(tmp_path / "ref", g, lines, edit=_with_bad_voxels(0.0))), lines)
    got = extract_cube(req(g, write_cube(tmp_path / "bad", g, lines, edit=_with_bad_voxels(value))), lines)
    assert (ref["mask"] != 0).sum() > 1000
    for k in ("flux", "ivar"):
        np.testing.assert_array_equal(got[k], ref[k])
    np.testing.assert_array_equal(got["mask"] != 0, ref["mask"] != 0)  # NaN or out-of-range adds its own bit
    bad = got["mask"] != 0
    assert not got["flux"][bad].any() and not got["ivar"][bad].any()


def test_galactic_extinction_is_corrected_from_the_header_ebvgal(tmp_path, lines):
    g = make_galaxy(ifusize=19, z=0.03)
    ebv = 0.123

    def edit(hl):
        hl[0].header["EBVGAL"] = ebv
        return hl

    path = write_cube(tmp_path, g, lines, edit=edit)
    raw = extract_cube(req(g, path), lines, options=RAW)
    cor = extract_cube(req(g, path), lines, options=ExtractOptions("CCM89", 3.1, True))
    assert raw["ebvgal"] == 0.0 and abs(cor["ebvgal"] - ebv) < 0.005
    f = correction_factor(cor["wave"], ebv)
    use = raw["mask"] == 0
    ratio = (cor["flux"][use] / np.where(raw["flux"][use] != 0, raw["flux"][use], 1))[raw["flux"][use] != 0]
    expect = np.broadcast_to(f[:, None, None], raw["flux"].shape)[use][raw["flux"][use] != 0]
    np.testing.assert_allclose(ratio, expect, rtol=1e-5)
    # [OII]3727 / H-alpha changes by ~37 % at E(B-V) = 0.15 (CCM89, R_V 3.1)
    k = a_lambda_over_ebv(np.array([3727.0, 6564.6]))
    assert 1.30 < 10 ** (0.4 * 0.15 * (k[0] - k[1])) < 1.42


def test_drpall_ebvgal_is_used_when_the_header_has_none(tmp_path, lines):
    g = make_galaxy(ifusize=19, z=0.03)

    def edit(hl):
        del hl[0].header["EBVGAL"]
        return hl

    path = write_cube(tmp_path, g, lines, edit=edit)
    r = req(g, path)
    from dataclasses import replace

    got = extract_cube(replace(r, ebvgal=0.07), lines, options=ExtractOptions("CCM89", 3.1, True))
    assert got["ebvgal"] == pytest.approx(0.07)


def test_a_gzip_crc_error_is_a_reject_not_wrong_flux(tmp_path, lines):
    g = make_galaxy(ifusize=19, z=0.03)
    path = write_cube(tmp_path, g, lines)
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # the CRC-32 of the gzip trailer
    path.write_bytes(bytes(data))
    with pytest.raises(OSError):
        with gzip.open(path) as fh:
            while fh.read(1 << 20):
                pass
    with pytest.raises(CubeError, match="corrupt gzip"):
        extract_cube(req(g, path), lines)


def test_flux_in_other_units_is_refused(tmp_path, lines):
    g = make_galaxy(ifusize=19, z=0.03)

    def edit(hl):
        hl["FLUX"].header["BUNIT"] = "W/m^2/um"
        hl["FLUX"].data *= 1000
        return hl

    with pytest.raises(CubeError, match="BUNIT"):
        extract_cube(req(g, write_cube(tmp_path, g, lines, edit=edit)), lines)


def test_huge_finite_flux_is_flagged_not_used(tmp_path, lines):
    g = make_galaxy(ifusize=19, z=0.03)

    def edit(hl):
        hl["FLUX"].data[:, 17, 17] = 3e38
        return hl

    got = extract_cube(req(g, write_cube(tmp_path, g, lines, edit=edit)), lines)
    assert np.isfinite(got["flux"]).all() and np.abs(got["flux"]).max() < 1e6


def test_correlation_table_is_fitted_and_bundle_read(tmp_path, lines):
    g = make_galaxy(ifusize=37, z=0.03)
    got = extract_cube(req(g, write_cube(tmp_path, g, lines)), lines)
    assert 1.5 < got["correl_sigma"] < 2.4  # the simulator writes MaNGA's Gaussian (sigma 1.9)
    assert got["ifu_fibres"] == 37 and ifu_fibres("8485-12701") == 127 and ifu_fibres("8485-101") == 0


def test_correlated_noise_has_mangas_correlation_and_sum_variance():
    rng = np.random.default_rng(0)
    f = correlated_normal(rng, (3000, 24, 24))
    assert abs(f.var() - 1) < 0.03
    for d in (1, 2, 3):
        rho = float(np.mean(f[:, :, d:] * f[:, :, :-d]))
        assert abs(rho - np.exp(-(d**2) / (2 * CORREL_SIGMA_SPAXELS**2))) < 0.03
    box = np.zeros((24, 24))
    box[8:13, 8:13] = 1
    emp = f[:, 8:13, 8:13].sum(axis=(1, 2)).var()
    assert sum_variance(box) == pytest.approx(emp, rel=0.1)
    # summing 25 spaxels as if independent overstates the S/N by the DAP's factor, within 10 %
    assert np.sqrt(sum_variance(box) / 25) == pytest.approx(independence_overstatement(25), rel=0.1)
    assert sum_variance(box, sigma_c=0) == pytest.approx(25)


def test_fit_correlation_sigma_recovers_a_gaussian():
    i1, i2 = np.meshgrid(np.arange(10), np.arange(10))
    i1, i2 = i1.ravel(), i2.ravel()
    j1, j2 = i1 + 1, i2 + 2
    rho = np.exp(-5 / (2 * 1.7**2)) * np.ones(len(i1))
    assert fit_correlation_sigma(i1, i2, j1, j2, rho) == pytest.approx(1.7)
    assert np.isnan(fit_correlation_sigma([0], [0], [0], [0], [1.0]))


@pytest.mark.parametrize("value", [5e4, np.nan])
def test_scores_and_latents_ignore_what_flagged_voxels_hold(tmp_path, value):
    """A cubes.h5 whose flagged voxels hold spikes or NaN (a file not written by
    extraction) scores exactly as the same file with zeros there: no flagged
    voxel reaches the model's input, a loss, a feature or a score."""
    pytest.importorskip("keras")
    import h5py
    import pandas as pd
    from fixtures import write_cubes_h5

    from linecube.analysis.score import score_galaxies
    from linecube.model.autoencoder import build_model
    from linecube.model.spec import ModelConfig

    mcfg = {"filters": [4], "stem_filters": 4, "latent_dim": 8, "flux_scaling": "halpha"}
    build_model(ModelConfig.from_config(mcfg), "ae", seed=1).save(tmp_path / "m.keras")
    got = {}
    for name, v in (("zeros", 0.0), ("bad", value)):
        cubes = tmp_path / f"{name}.h5"
        write_cubes_h5(cubes, n=12)
        with h5py.File(cubes, "r+") as h5:
            rng = np.random.default_rng(0)
            for i in range(12):
                m = h5["mask"][i]
                m[rng.random(m.shape) < 0.02] = 1  # scattered flagged voxels inside the galaxy too
                f, iv = h5["flux"][i], h5["ivar"][i]
                f[m != 0], iv[m != 0] = v, (0.0 if v == 0 else v)
                h5["mask"][i], h5["flux"][i], h5["ivar"][i] = m, f, iv
        out = tmp_path / name
        score_galaxies(cubes, tmp_path / "m.keras", mcfg, out, batch_size=4, top_k=2, progress=False)
        with h5py.File(out / "latents.h5") as h5:
            lat = h5["latent"][()]
        got[name] = (pd.read_csv(out / "scores.csv").set_index("plateifu").sort_index(), lat)
    a, b = got["zeros"][0], got["bad"][0]
    cols = [
        c for c in a.columns if (c.startswith("score_") and c != "score_name") or c in ("score", "mean_abs_flux", "halpha_flux")
    ]
    np.testing.assert_allclose(b[cols].to_numpy(float), a[cols].to_numpy(float), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(got["bad"][1], got["zeros"][1], rtol=1e-5, atol=1e-6)


def test_training_batches_never_see_flagged_voxels(tmp_path):
    """The model's input (every augmented copy too) is 0 wherever the mask flags a
    voxel, whatever the file holds there; augmentation noise goes only where valid."""
    import h5py
    from fixtures import write_cubes_h5

    from linecube.data.dataset import AugmentConfig, CubeSource

    cubes = tmp_path / "c.h5"
    write_cubes_h5(cubes, n=4)
    with h5py.File(cubes, "r+") as h5:
        f = h5["flux"][0]
        f[h5["mask"][0] != 0] = 1e5  # the fixture flags two rows of spaxels
        h5["flux"][0] = f
        mask = h5["mask"][0]
    src = CubeSource(cubes, [0], 0, AugmentConfig(3, 1.0, True, 0, True), need_mask=True, need_ivar=True)
    for copy in range(4):
        fl, iv, m = src.sample(0, copy, 0)
        assert not fl[m != 0].any() and not iv[m != 0].any()
    np.testing.assert_array_equal(src.sample(0, 0, 0)[2], mask)


def test_peer_ranks_do_not_sort_galaxies_by_bundle_or_by_quietness():
    """A component that reads the footprint (small bundles higher) or a quiet
    galaxy's noise ranks every peer group alike once each galaxy is ranked against
    the reference galaxies observed alike; an outlier within its group stays on top."""
    from linecube.analysis.ranks import gauss_ranks, peer_gauss_ranks, peer_groups

    rng = np.random.default_rng(1)
    n = 600
    fib = rng.choice([19, 37, 61, 127], n)
    snr = np.where(rng.random(n) < 0.3, rng.uniform(0, 3, n), rng.uniform(8, 50, n))
    v = rng.normal(size=n) + 2.0 * (fib == 19) + 1.5 * (snr < 5)  # instrument and noise, not anomalies
    v[0], fib[0], snr[0] = 8.0, 61, 20.0  # a real outlier among its peers
    ref = np.arange(1, 500)
    groups = peer_groups(fib, snr)
    plain = gauss_ranks({"c": v}, ref)[0]
    peer = peer_gauss_ranks({"c": v}, ref, groups)[0]

    def mean_pct(r, m):
        return float((100 * (np.argsort(np.argsort(r)) + 0.5) / n)[m].mean())

    assert mean_pct(plain, fib == 19) - mean_pct(plain, fib == 61) > 30  # the footprint sorts them
    assert abs(mean_pct(peer, fib == 19) - mean_pct(peer, fib == 61)) < 8
    assert abs(mean_pct(peer, snr < 5) - mean_pct(peer, snr >= 5)) < 8
    assert np.argmax(peer) == 0


def test_the_simulator_never_writes_into_a_survey_it_did_not_make(tmp_path):
    """A user's mirror (a drpall and LOGCUBEs, no simulation.json) is refused by the
    library, so by the workflow's rule and the start-up check too; linecube's own
    survey may be written again."""
    from linecube.config import check_inputs, load_config
    from linecube.simulate import simulate_survey

    mirror = tmp_path / "sas"
    cube = mirror / "v3_1_1" / "8485" / "stack" / "manga-8485-1901-LOGCUBE.fits.gz"
    cube.parent.mkdir(parents=True)
    cube.write_bytes(b"the user's real cube")
    with pytest.raises(FileExistsError, match="did not simulate"):
        simulate_survey(mirror, 2, 0, progress=False)
    assert cube.read_bytes() == b"the user's real cube" and not (mirror / "agn.csv").exists()
    cfg = load_config()
    cfg["data"]["redux_dir"] = str(mirror)
    cfg["simulate"]["enabled"] = True
    assert any("did not simulate" in p for p in check_inputs(cfg))
    own = tmp_path / "own"
    simulate_survey(own, 2, 0, progress=False)
    simulate_survey(own, 2, 1, progress=False)  # its own survey: rewritten


def test_no_planted_link_is_followed_by_download_or_lock(tmp_path):
    """A symlink planted at the names linecube creates (the download's temporary,
    the extract lock) never makes it write outside the folder."""
    import os

    from linecube.data.download import DownloadError, download_cube
    from linecube.io.atomic import Busy, exclusive

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "manga-8485-1901-LOGCUBE.fits.gz"
    os.symlink(victim, out / f".{dest.name}.part")  # the old fixed name
    with pytest.raises(DownloadError):
        download_cube("http://127.0.0.1:9/none", dest, retries=0, timeout_s=1)
    assert victim.read_text() == "keep me" and not dest.exists()
    target = tmp_path / "elsewhere"
    os.symlink(target, out / ".c.h5.lock")  # dangling: O_CREAT would create it
    with pytest.raises(Busy, match="symbolic link"):
        with exclusive(out / "c.h5"):
            pass
    assert not target.exists()
