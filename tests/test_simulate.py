"""The simulator writes exactly the real DR17 formats (read back with astropy)."""

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from linecube.io.formats import CubeLayout, VoxelFlag
from linecube.io.manga import BUNIT, LOGCUBE_HDUS, DRP3PixMask, drpall_path, log_wave_grid, logcube_path
from linecube.simulate import ANOMALY_TYPES, CLASSES, DRPALL_COLUMNS, plan_survey

PRIMARY_KEYS = ["PLATEIFU", "MANGAID", "OBJRA", "OBJDEC", "IFURA", "IFUDEC", "DRP3QUAL", "MNGTARG1", "MNGTARG2",
                "MNGTARG3", "BUNIT", "MASKNAME", "VERSDRP3", "NEXP", "EXPTIME", "IFUDSGN", "PLATEID", "EBVGAL"]  # fmt: skip
FLUX_WCS = {"CTYPE3": "WAVE-LOG", "CRPIX3": 1, "CRVAL3": 3621.59598486, "CD3_3": 0.833903304339, "CUNIT3": "Angstrom",
            "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CD1_1": -0.000138889, "CD2_2": 0.000138889}  # fmt: skip


def test_logcube_hdus_headers_and_arrays(tiny_survey):
    out, gals = tiny_survey
    g = gals[0]
    path = logcube_path(out, "v3_1_1", g.plate, g.ifudsgn)
    assert path.name == f"manga-{g.plate}-{g.ifudsgn}-LOGCUBE.fits.gz"
    with fits.open(path) as hl:
        assert [h.name for h in hl] == list(LOGCUBE_HDUS)
        p = hl["PRIMARY"].header
        for k in PRIMARY_KEYS:
            assert k in p, k
        assert p["PLATEIFU"] == g.plateifu and p["MANGAID"] == g.mangaid
        assert p["BUNIT"] == BUNIT and p["MASKNAME"] == "MANGA_DRP3PIXMASK"
        f = hl["FLUX"].header
        for k, v in FLUX_WCS.items():
            assert f[k] == v, k
        n = {19: 34, 37: 44, 61: 54, 91: 64, 127: 74}[g.ifusize]
        assert f["CRPIX1"] == n / 2 + 1
        for name, dt in (("FLUX", ">f4"), ("IVAR", ">f4"), ("MASK", ">i4"), ("LSFPOST", ">f4"), ("LSFPRE", ">f4")):
            d = hl[name].data
            assert d.shape == (4563, n, n), name
            assert d.dtype == np.dtype(dt), name
        assert hl["WAVE"].data.shape == (4563,)
        np.testing.assert_allclose(hl["WAVE"].data[[0, -1]], [3621.59598486, 10353.805], rtol=1e-7)
        assert isinstance(hl["OBSINFO"], fits.BinTableHDU) and len(hl["OBSINFO"].columns) == 65
        for b in "GRIZ":
            assert hl[f"{b}IMG"].data.shape == (n, n)
            assert hl[f"{b}PSF"].header["BUNIT"] == "nanomaggies/pixel"
            assert hl[f"{b}CORREL"].columns.names == ["INDXI_C1", "INDXI_C2", "INDXJ_C1", "INDXJ_C2", "RHOIJ"]
        mask, ivar, flux = hl["MASK"].data, hl["IVAR"].data, hl["FLUX"].data
        nocov = (mask[0] & DRP3PixMask.NOCOV) != 0
        # hexagonal footprint: corners uncovered, centre covered, DONOTUSE with NOCOV, ivar 0 there
        assert nocov[0, 0] and nocov[-1, -1] and not nocov[n // 2, n // 2]
        assert np.all(mask[:, nocov] & DRP3PixMask.DONOTUSE)
        assert np.all(ivar[:, nocov] == 0) and np.all(flux[:, nocov] == 0)
        usable = (mask & DRP3PixMask.DONOTUSE) == 0
        assert np.all(ivar[usable] > 0) and usable[:, ~nocov].mean() > 0.9


def test_drpall_columns_and_dtypes(tiny_survey):
    out, gals = tiny_survey
    with fits.open(drpall_path(out, "v3_1_1")) as hl:
        assert [h.name for h in hl] == ["PRIMARY", "MANGA", "MASTAR"]
        cols = hl["MANGA"].columns
        assert cols.names == [c for c, _ in DRPALL_COLUMNS]
        assert len(cols.names) == 99
        fmt = {c.name: c.format for c in cols}
        assert fmt["plate"] == "K" and fmt["ifudsgn"] == "21A" and fmt["plateifu"] == "11A" and fmt["z"] == "D"
        assert fmt["nsa_elpetro_absmag"] == "7D"
        data = hl["MANGA"].data
        for g in gals:
            row = data[list(data["plateifu"]).index(g.plateifu)]
            assert row["mangaid"] == g.mangaid
            assert row["z"] == pytest.approx(g.z_cat)  # the catalogue's redshift, off the true one by ~30 km/s
            assert row["objra"] == pytest.approx(g.objra)


def test_catalogues(tiny_survey):
    out, gals = tiny_survey
    agn = pd.read_csv(out / "agn.csv")
    assert list(agn.columns) == ["mangaid", "plateifu", "wise_agn", "bat_agn", "radio_agn", "broad_agn"]
    assert agn[["wise_agn", "bat_agn", "radio_agn", "broad_agn"]].any(axis=1).all()
    truth = pd.read_csv(out / "truth.csv", keep_default_na=False)
    from linecube.io.formats import PROBE_PARAMETERS
    from linecube.simulate.truth import TRUTH_COLUMNS

    assert list(truth.columns) == list(TRUTH_COLUMNS) and set(PROBE_PARAMETERS) <= set(TRUTH_COLUMNS)
    assert sorted(truth.plateifu) == sorted(g.plateifu for g in gals)
    assert set(truth["class"]) <= set(CLASSES)
    # every parameter the simulator drew, as it drew it
    t = truth.set_index("plateifu")
    for g in gals:
        row = t.loc[g.plateifu]
        assert row["z"] == pytest.approx(g.z) and row["incl_deg"] == pytest.approx(g.incl_deg)
        assert row["vsini_kms"] == pytest.approx(abs(g.components[0].vmax_kms))
        assert row["disc_scale_arcsec"] == pytest.approx(g.components[0].scale_arcsec)
        if len(g.components) == 1 and not g.anomaly:  # one gas component: its own ratios
            assert row["log_n2ha"] == pytest.approx(g.components[0].ratios.n2)
            assert row["log_o3hb"] == pytest.approx(g.components[0].ratios.o3)
            assert row["nuclear_fraction"] == 0.0


def test_truth_ratios_are_flux_weighted_over_components():
    """Two components of equal Hbeta flux: the integrated [NII]/Halpha is the mean of their linear ratios."""
    import copy

    from linecube.simulate.truth import truth_row

    g = next(g for g in plan_survey(40, seed=3, anomaly_fraction=0.0) if g.cls == "seyfert")
    g = copy.deepcopy(g)
    disc, nuc = g.components
    cos_i = max(np.cos(np.deg2rad(g.incl_deg)), 0.15)
    nuc.hbeta_peak = disc.hbeta_peak * disc.scale_arcsec**2 * cos_i / nuc.scale_arcsec**2  # equal Hbeta fluxes
    row = truth_row(g)
    assert row["log_n2ha"] == pytest.approx(np.log10((10**disc.ratios.n2 + 10**nuc.ratios.n2) / 2))
    assert row["nuclear_fraction"] == pytest.approx(0.5)
    assert row["gas_sigma_kms"] == pytest.approx((disc.sigma_kms + nuc.sigma_kms) / 2)


def test_plan_is_deterministic_and_injects_every_anomaly_type():
    a = plan_survey(100, seed=42)
    b = plan_survey(100, seed=42)
    assert [(g.plateifu, g.z, g.cls, g.anomaly) for g in a] == [(g.plateifu, g.z, g.cls, g.anomaly) for g in b]
    assert {g.anomaly for g in a if g.anomaly} == set(ANOMALY_TYPES)
    assert len({g.plateifu for g in a}) == 100 and len({g.mangaid for g in a}) == 100
    c = plan_survey(100, seed=43)
    assert [g.z for g in a] != [g.z for g in c]
    zs = np.array([g.z for g in a])
    assert 0.01 <= zs.min() and zs.max() <= 0.15 and 0.02 < np.median(zs) < 0.05


def test_same_seed_same_cube_bytes(tmp_path, lines):
    from linecube.simulate import build_logcube, write_fits_gz

    g = plan_survey(3, seed=5)[0]
    for name in ("a", "b"):
        write_fits_gz(build_logcube(g, lines, np.random.default_rng([g.seed, 1])), tmp_path / f"{name}.fits.gz")
    assert (tmp_path / "a.fits.gz").read_bytes() == (tmp_path / "b.fits.gz").read_bytes()


def test_scale_mode_renders_what_extraction_gets(tmp_path, lines):
    from fixtures import write_cube

    from linecube.data.extract import extract_cube
    from linecube.io.drpall import CubeRequest
    from linecube.simulate import emission_line_cube, plan_survey

    g = next(g for g in plan_survey(40, seed=2) if g.ifusize == 37 and not g.anomaly)
    path = write_cube(tmp_path, g, lines)
    ext = extract_cube(CubeRequest(g.plateifu, str(path), g.mangaid, g.z_cat, g.objra, g.objdec), lines)
    sc = emission_line_cube(g, lines, CubeLayout(), log_wave_grid(), np.random.default_rng(0))
    np.testing.assert_allclose(sc["wave"], ext["wave"])
    # same footprint, padding and flags
    np.testing.assert_array_equal(sc["mask"] & VoxelFlag.OUTSIDE_CUBE, ext["mask"] & VoxelFlag.OUTSIDE_CUBE)
    # footprint, dead fibres and the star alike (scattered flagged voxels are drawn on each grid apart)
    np.testing.assert_array_equal((sc["mask"] != 0).mean(axis=0) > 0.5, (ext["mask"] != 0).mean(axis=0) > 0.5)
    # same galaxy model: window-by-window mean spectra agree up to the noise
    a, b = sc["flux"].mean(axis=(1, 2)), ext["flux"].mean(axis=(1, 2))
    from linecube.io.formats import sigma_from_ivar
    from linecube.physics.noise import sum_variance

    # the two noise realisations differ; the crop means' difference is within 5 sigma of their (correlated) noise
    sd = np.sqrt(sum_variance(sigma_from_ivar(sc["ivar"])) + sum_variance(sigma_from_ivar(ext["ivar"]))) / 32**2
    assert np.mean(np.abs(a - b) < 5 * sd) > 0.95
    assert np.median(np.abs(a - b)) < 0.05 * np.abs(b).max()
    np.testing.assert_allclose(np.median(sc["ivar"][sc["mask"] == 0]), np.median(ext["ivar"][ext["mask"] == 0]), rtol=0.2)


def test_noise_free_cube_is_the_noisy_cube_without_its_noise(lines):
    """``noise_free`` returns the model the noise was drawn around: the noisy cube
    minus it is Gaussian with the ivar's sigma (same masks and ivar)."""
    from linecube.simulate import emission_line_cube, plan_survey

    g = plan_survey(3, seed=5, anomaly_fraction=0.0)[0]
    args = (g, lines, CubeLayout(), log_wave_grid())
    noisy = emission_line_cube(*args, np.random.default_rng([g.seed, 1]))
    clean = emission_line_cube(*args, np.random.default_rng([g.seed, 1]), noise_free=True)
    np.testing.assert_array_equal(noisy["mask"], clean["mask"])
    np.testing.assert_array_equal(noisy["ivar"], clean["ivar"])
    good = noisy["ivar"] > 0
    pull = ((noisy["flux"] - clean["flux"]) * np.sqrt(noisy["ivar"]))[good]
    assert abs(pull.mean()) < 0.02 and 0.97 < pull.std() < 1.03
    assert np.all(clean["flux"][~good.any(axis=0)[None].repeat(len(good), 0)] == 0)


def test_stars_rotate_with_the_disc(lines):
    """The stellar absorption moves with the stars: with no gas, H-alpha's absorption
    minimum on either side of the major axis lies at +-v_star (the rotation curve
    at that radius, ``STELLAR_ROTATION`` of the gas disc's), and at rest when the
    stars do not rotate; every wavelength grid gets the same values."""
    import copy

    from linecube.io.manga import C_KMS
    from linecube.simulate.galaxy import STELLAR_ROTATION
    from linecube.simulate.render import render_model, stellar_velocity

    g = copy.deepcopy(next(g for g in plan_survey(20, seed=4, anomaly_fraction=0.0) if g.incl_deg > 45))
    assert g.star_vmax_kms == pytest.approx(STELLAR_ROTATION * g.components[0].vmax_kms)
    for c in g.components:
        c.hbeta_peak = 0.0
    g.balmer_abs_ew = 5.0
    lam0 = 6564.61 * (1 + g.z)
    wave = np.linspace(lam0 - 40, lam0 + 40, 1601)
    pa = np.deg2rad(g.pa_deg)
    r = 3.0  # arcsec along the major axis, both sides
    dx = np.array([[r * np.cos(pa), -r * np.cos(pa)]])
    dy = np.array([[r * np.sin(pa), -r * np.sin(pa)]])
    v = stellar_velocity(g, dx, dy)[0]
    assert v[0] == pytest.approx(-v[1]) and abs(v[0]) > 20

    def minimum(flux):  # wavelength of the absorption's minimum, each spaxel
        return wave[np.argmin(flux[:, 0], axis=0)]

    flux, _ = render_model(g, wave, dx, dy, lines)
    got = (minimum(flux) / lam0 - 1) * C_KMS  # 0.05 A steps: 2.3 km/s; the continuum's slope moves both alike
    assert got[0] - got[1] == pytest.approx(v[0] - v[1], abs=5.0)
    still = copy.deepcopy(g)
    still.star_vmax_kms = 0.0
    rest = (minimum(render_model(still, wave, dx, dy, lines)[0]) / lam0 - 1) * C_KMS
    assert rest[0] == rest[1] and abs(rest[0]) < 10 and got.mean() == pytest.approx(rest[0], abs=5.0)
    part = slice(500, 900)  # a window of the grid renders the same values
    np.testing.assert_array_equal(render_model(g, wave[part], dx, dy, lines)[0], flux[part])


def test_worker_pool_not_forked_from_tensorflow(tmp_path):
    """A process that has run TensorFlow starts the simulator's workers from a
    forkserver (a child forked from TF's thread pools can die: BrokenProcessPool in
    CI, 2026-12-06), and the cubes they render are those of one process."""
    import importlib.util
    import subprocess
    import sys
    import textwrap

    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow not installed")
    code = textwrap.dedent(
        f"""
        import h5py, numpy as np
        from linecube.simulate import plan_survey
        from linecube.simulate.cubes import simulate_cubes_h5
        from linecube.simulate.survey import worker_context

        assert worker_context().get_start_method() == "fork"
        gals = plan_survey(4, seed=3)
        simulate_cubes_h5({str(tmp_path / "one.h5")!r}, 0, 0, galaxies=gals, threads=1, progress=False)
        import tensorflow as tf

        tf.reduce_sum(tf.random.normal((256, 256)) @ tf.random.normal((256, 256))).numpy()
        assert worker_context().get_start_method() == "forkserver"
        simulate_cubes_h5({str(tmp_path / "two.h5")!r}, 0, 0, galaxies=gals, threads=2, progress=False)
        with h5py.File({str(tmp_path / "one.h5")!r}) as a, h5py.File({str(tmp_path / "two.h5")!r}) as b:
            np.testing.assert_array_equal(a["flux"][:], b["flux"][:])
            np.testing.assert_array_equal(a["ivar"][:], b["ivar"][:])
        """
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]


def test_quantize_mantissa_bit_pattern_equals_frexp_rounding():
    """The bit-pattern rounding gives exactly frexp/round/ldexp's float32 values (ties
    to even, zeros, subnormals, infinities, overflow to inf) for every bit count."""
    from linecube.simulate.render import quantize_mantissa

    rng = np.random.default_rng(3)
    a = (10.0 ** rng.uniform(-44, 38, 200_000)).astype(np.float32)
    ties = ((np.arange(1, 2000, dtype=np.uint32) << 16) | np.uint32(0x3F800000)).view(np.float32)
    edge = np.array([0.0, -0.0, np.inf, -np.inf, np.finfo(np.float32).max, 1e-45, 3e-39, -2.5], np.float32)
    x = np.concatenate([a, -a[:500], ties, edge])
    for bits in (1, 7, 12, 23):
        m, e = np.frexp(x)
        with np.errstate(over="ignore"):
            want = np.ldexp(np.round(m * 2.0**bits) / 2.0**bits, e).astype(np.float32)
        np.testing.assert_array_equal(quantize_mantissa(x, bits).view(np.uint32), want.view(np.uint32))
