"""Models: shapes, Eq. 1 and KL against numpy, save/load, determinism."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from linecube.model.autoencoder import build_model, load_model  # noqa: E402
from linecube.model.losses import eq1_loss, kl_divergence  # noqa: E402
from linecube.model.spec import ModelConfig, from_model_layout, to_model_layout  # noqa: E402

TINY = {"filters": [4], "stem_filters": 4, "latent_dim": 16, "pose_dim": 2}
TINY_STACK = {"architecture": "stack", "filters": [4, 8], "latent_dim": 16, "pose_dim": 0, "mean_cube": False}


def cfg_of(**keys):
    return ModelConfig.from_config(keys)


def numpy_eq1(x, xr, w=None):
    """Plain numpy reference of the paper's Eq. 1 for (B, T, H, W, C) arrays."""
    d = np.abs(x.astype(np.float64) - xr)
    out = []
    for b in range(x.shape[0]):
        db = d[b]  # (T, H, W, C)
        if w is None:
            spax = sum(db[:, i, j, :].mean() for i in range(db.shape[1]) for j in range(db.shape[2]))
            chan = sum(db[t, :, :, c].mean() for t in range(db.shape[0]) for c in range(db.shape[3]))
        else:
            wb = w[b]
            spax = sum(
                (db[:, i, j, :] * wb[:, i, j, :]).sum() / max((wb[:, i, j, :] > 0).sum(), 1)
                for i in range(db.shape[1])
                for j in range(db.shape[2])
            )
            chan = sum(
                (db[t, :, :, c] * wb[t, :, :, c]).sum() / max((wb[t, :, :, c] > 0).sum(), 1)
                for t in range(db.shape[0])
                for c in range(db.shape[3])
            )
        out.append(spax + chan)
    return float(np.mean(out))


@pytest.mark.parametrize("arch", [TINY, TINY_STACK], ids=["bottleneck", "stack"])
@pytest.mark.parametrize("layout,crop,shape", [("lines", 32, (19, 32, 32, 10)), ("wavelength", 8, (190, 8, 8, 1))])
def test_shapes_both_layouts(layout, crop, shape, arch):
    # the paper's 190-step layout on an 8x8 crop: the same graph, a fifth of the time
    cfg = ModelConfig.from_config({"layout": layout, **arch}, crop=crop)
    assert cfg.input_shape == shape
    for kind in ("ae", "vae"):
        m = build_model(cfg, kind)
        x = np.random.default_rng(0).random((2, *shape), dtype=np.float32)
        # eager calls: predict() would first trace a 190-step graph (~2x the time);
        # on the 190-step layout one call (each eager call walks the 190 steps in Python)
        out = m(x, training=False)
        assert np.asarray(out["recon"]).shape == (2, *shape)
        assert np.asarray(out["code"]).shape == (2, 16 + arch["pose_dim"])
        if layout == "lines":
            assert np.asarray(m.reconstruct(x)).shape == (2, *shape)
            assert np.asarray(m.encode(x)).shape == (2, 16)  # the physical part only


def test_odd_crop_is_padded_and_cropped_back():
    cfg = ModelConfig.from_config(TINY, crop=30)
    m = build_model(cfg, "ae")
    x = np.random.default_rng(0).random((1, *cfg.input_shape), dtype=np.float32)
    assert np.asarray(m.reconstruct(x)).shape == (1, 19, 30, 30, 10)


def test_mean_cube_starts_the_model_at_the_median():
    cfg = cfg_of(**TINY)
    mean = np.random.default_rng(1).random(cfg.input_shape, dtype=np.float32)
    m = build_model(cfg, "ae", mean_cube=mean)
    x = np.random.default_rng(2).random((2, *cfg.input_shape), dtype=np.float32)
    # the output convolution starts at zero: every galaxy's reconstruction is the mean cube
    np.testing.assert_allclose(np.asarray(m.reconstruct(x)), np.broadcast_to(mean, x.shape), atol=1e-6)


def test_encoder_layernorm_option():
    def norms(m):
        return [ly for ly in m.layers if isinstance(ly, keras.layers.LayerNormalization)]

    assert len(norms(build_model(cfg_of(**TINY_STACK, encoder_layernorm=True), "ae").encoder)) == 2  # the paper's
    m = build_model(cfg_of(**TINY_STACK, encoder_layernorm=False), "ae")
    assert norms(m.encoder) == [] and len(norms(m.decoder)) == 2
    # without it a faint cube's latent (minus the zero cube's) grows with its brightness
    x = np.random.default_rng(6).random((1, *m.encoder.input_shape[1:]), dtype=np.float32) * 1e-3
    z0 = np.asarray(m.encode(np.zeros_like(x)))
    a, b = np.asarray(m.encode(x)) - z0, np.asarray(m.encode(5 * x)) - z0
    assert 4.0 < np.linalg.norm(b) / np.linalg.norm(a) < 6.0
    assert np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.95


def test_spatial_moments_read_a_velocity_fields_amplitude_at_any_position_angle(tmp_path):
    from linecube.model.layers import SpatialMoments

    yy, xx = np.mgrid[-7.5:8, -7.5:8]
    inside = np.hypot(yy, xx) < 7

    def field(v, pa):  # a channel that reads the local line-of-sight velocity of a rotating disc
        m = np.zeros((1, 1, 16, 16, 2), np.float32)
        m[0, 0, ..., 0] = v * np.tanh((xx * np.cos(pa) + yy * np.sin(pa)) / 3.0) * inside
        m[0, 0, ..., 1] = inside
        return m

    lay = SpatialMoments()
    a = np.asarray(lay(field(100.0, 0.3)))
    assert a.shape == (1, 4)  # per step and channel: mean, then std
    for pa in (1.1, 2.0, 4.0):  # the standard deviation is the amplitude's, not the angle's
        assert np.allclose(np.asarray(lay(field(100.0, pa))), a, rtol=0.05, atol=1.0)
    assert np.asarray(lay(field(200.0, 0.3)))[0, 2] == pytest.approx(2 * a[0, 2], rel=1e-3)
    x = field(100.0, 0.3)
    for turned in (np.rot90(x, 1, axes=(2, 3)), x[:, :, ::-1]):  # the augmentation's turns and flips
        assert np.allclose(np.asarray(lay(np.ascontiguousarray(turned))), a, rtol=1e-5, atol=1e-4)
    # the encoder reads them with ``encoder_moments``; the option survives save / load
    m = build_model(cfg_of(**TINY, encoder_moments=True), "ae")
    assert "stem_moments" in [ly.name for ly in m.encoder.layers]
    assert "stem_moments" not in [ly.name for ly in build_model(cfg_of(**TINY, encoder_moments=False), "ae").encoder.layers]
    assert cfg_of(**TINY).encoder_moments and not cfg_of(**TINY_STACK).encoder_moments  # stack ignores the default
    cube = np.random.default_rng(2).random((2, *m.encoder.input_shape[1:]), dtype=np.float32)
    m.save(tmp_path / "m.keras")
    assert np.allclose(np.asarray(load_model(tmp_path / "m.keras").encode(cube)), np.asarray(m.encode(cube)), atol=1e-6)
    with pytest.raises(ValueError, match="encoder_moments needs model.architecture: bottleneck"):
        cfg_of(**TINY_STACK, encoder_moments=True)


def test_consistency_term():
    from linecube.model.losses import consistency

    rng = np.random.default_rng(3)
    z = rng.normal(size=(400, 5)).astype(np.float32)
    same = np.repeat(z, 2, axis=0)  # rows 2i, 2i + 1: one galaxy's two views
    assert float(consistency(same)) < 0.1  # views agree, unit spread, decorrelated
    # views that ignore the galaxy: twice the per-dimension variance apart
    assert 1.7 < float(consistency(rng.normal(size=(800, 5)).astype(np.float32))) < 2.3
    # a latent that shrinks to agree is penalised by the variance part
    assert float(consistency(1e-3 * same)) > 0.9
    # correlated dimensions are penalised by the decorrelation part
    corr = np.repeat(np.concatenate([z[:, :1]] * 5, axis=1), 2, axis=0)
    assert float(consistency(corr)) > 3.0
    assert float(consistency(same[:2])) == 0.0  # one galaxy: nothing to compare


def test_layout_roundtrip():
    cubes = np.random.default_rng(1).random((3, 190, 32, 32), dtype=np.float32)
    for layout in ("lines", "wavelength"):
        cfg = cfg_of(layout=layout)
        x = to_model_layout(cubes, cfg)
        np.testing.assert_array_equal(from_model_layout(x, cfg), cubes)
    x = to_model_layout(cubes, cfg_of(layout="lines"))
    # time step t = line t, channel c = window bin c
    np.testing.assert_array_equal(x[0, 2, 5, 7, :], cubes[0, 20:30, 5, 7])


def test_eq1_matches_numpy_reference():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 5, 4, 6, 2)).astype(np.float32)
    xr = rng.normal(size=x.shape).astype(np.float32)
    assert float(eq1_loss(x, xr)) == pytest.approx(numpy_eq1(x, xr), rel=1e-5)
    w = (rng.random(x.shape) > 0.3).astype(np.float32)
    w[0, :, 1, 1, :] = 0  # a fully masked spaxel contributes 0
    assert float(eq1_loss(x, xr, w)) == pytest.approx(numpy_eq1(x, xr, w), rel=1e-5)
    # noise weights (loss_weighting: ivar): each voxel's error times its weight, a mean over the weighted voxels
    wv = w * rng.uniform(0.2, 3.0, size=x.shape).astype(np.float32)
    assert float(eq1_loss(x, xr, wv)) == pytest.approx(numpy_eq1(x, xr, wv), rel=1e-5)
    assert float(eq1_loss(x, xr, 2 * w)) == pytest.approx(2 * float(eq1_loss(x, xr, w)), rel=1e-5)


def test_ivar_weights():
    """loss_weighting: ivar: 1 / sqrt(sigma^2 + (floor |flux|)^2), mean 1 over usable voxels, 0 where masked."""
    from linecube.model.batches import ivar_weights

    rng = np.random.default_rng(4)
    flux = rng.normal(0, 1, size=(190, 8, 8)).astype(np.float32)
    ivar = rng.uniform(0.5, 4.0, size=flux.shape).astype(np.float32)
    mask = np.zeros(flux.shape, np.uint8)
    mask[:, 0, 0] = 1
    ivar[5, 3, 3] = 0.0
    w = ivar_weights(flux, ivar, mask, 0.0)
    usable = (mask == 0) & (ivar > 0)
    assert w.dtype == np.float32 and w[~usable].max() == 0 and w[usable].mean() == pytest.approx(1.0, rel=1e-5)
    # without a floor: proportional to 1 / sigma
    np.testing.assert_allclose(w[usable] / np.sqrt(ivar[usable]), (w[usable] / np.sqrt(ivar[usable]))[0], rtol=1e-4)
    # the floor caps a bright voxel with a tiny formal error
    flux[7, 4, 4], ivar[7, 4, 4] = 1000.0, 1e6
    assert ivar_weights(flux, ivar, mask, 0.0)[7, 4, 4] > 50 * ivar_weights(flux, ivar, mask, 0.05)[7, 4, 4]
    # invariant to the flux unit (a galaxy's scale)
    np.testing.assert_allclose(ivar_weights(3 * flux, ivar / 9, mask, 0.05), ivar_weights(flux, ivar, mask, 0.05), rtol=1e-5)


def test_kl_matches_closed_form():
    rng = np.random.default_rng(3)
    mu = rng.normal(size=(4, 7)).astype(np.float32)
    logvar = rng.normal(size=(4, 7)).astype(np.float32)
    # KL(N(mu, s^2) || N(0,1)) = 0.5 * sum(s^2 + mu^2 - 1 - ln s^2), per sample, then mean
    ref = np.mean(0.5 * np.sum(np.exp(logvar) + mu**2 - 1 - logvar, axis=1))
    assert float(kl_divergence(mu, logvar)) == pytest.approx(ref, rel=1e-5)
    assert float(kl_divergence(np.zeros((2, 3)), np.zeros((2, 3)))) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("kind", ["ae", "vae"])
def test_save_load_identical_predictions(tmp_path, kind):
    cfg = cfg_of(**TINY, consistency_weight=0.5)
    m = build_model(cfg, kind, seed=3)
    m.compile(optimizer=keras.optimizers.Adagrad(0.01))
    x = np.random.default_rng(4).random((4, *cfg.input_shape), dtype=np.float32)
    m.fit({"x": x}, epochs=1, batch_size=4, verbose=0)
    m.save(tmp_path / "m.keras")
    m2 = load_model(tmp_path / "m.keras")  # safe mode, no custom_objects
    np.testing.assert_array_equal(m2.predict(x, verbose=0)["recon"], m.predict(x, verbose=0)["recon"])
    np.testing.assert_array_equal(np.asarray(m2.encode(x)), np.asarray(m.encode(x)))
    assert m2.variational == (kind == "vae")


def test_same_seed_same_initial_weights():
    cfg = cfg_of(**TINY)
    keras.utils.set_random_seed(5)
    a = build_model(cfg, "vae", seed=5).get_weights()
    keras.utils.set_random_seed(5)
    b = build_model(cfg, "vae", seed=5).get_weights()
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_line_weights_favour_faint_lines():
    from linecube.model.losses import line_weights

    med = np.ones((3 * 10, 4, 4), np.float32)
    med[10:20] *= 4.0  # line 1 four times brighter
    med[20:30] *= 1e-9  # line 2 at the noise level: capped
    assert line_weights(med, 3, 0.0) == pytest.approx([1.0, 1.0, 1.0])
    w = line_weights(med, 3, 1.0, cap=10.0)
    assert np.mean(w) == pytest.approx(1.0)
    assert w[0] / w[1] == pytest.approx(4.0)  # (S_max / S_l) ** 1
    assert w[2] / w[1] == pytest.approx(10.0)  # the cap


@pytest.mark.parametrize("layout,crop", [("lines", 8), ("wavelength", 8)])
def test_line_weights_weigh_eq1_and_survive_save_load(tmp_path, layout, crop):
    cfg = ModelConfig.from_config({"layout": layout, **TINY}, crop=crop)
    lw = list(np.linspace(0.5, 1.5, 19))
    m = build_model(cfg, "ae", line_weights=lw)
    x = np.random.default_rng(0).random((2, *cfg.input_shape), dtype=np.float32)
    out = m(x, training=False)
    per_step = np.repeat(np.asarray(lw, np.float32), cfg.steps // 19)
    w = np.broadcast_to(per_step.reshape(1, -1, 1, 1, 1), x.shape)
    got = float(m.compute_loss(x, None, out, training=False))
    assert got == pytest.approx(numpy_eq1(x, np.asarray(out["recon"]), w), rel=1e-4)
    assert got != pytest.approx(numpy_eq1(x, np.asarray(out["recon"])), rel=1e-3)
    m.save(tmp_path / "m.keras")
    assert load_model(tmp_path / "m.keras").loss_settings.line_weights == pytest.approx(lw)


def numpy_moment(x, xr, n_lines, bins, layout):
    """Plain numpy reference of the kinematic term (models.moment_per_galaxy)."""
    d = x.astype(np.float64) - xr
    if layout == "lines":  # (B, L, H, W, bins) -> (B, L, bins, H, W)
        d = d.transpose(0, 1, 4, 2, 3)
    else:
        d = d[..., 0].reshape(d.shape[0], n_lines, bins, d.shape[2], d.shape[3])
    k = np.arange(bins) - (bins - 1) / 2
    m1 = np.einsum("blkhw,k->blhw", d, k) / np.abs(k).sum()
    return float(np.abs(m1).mean(axis=1).sum(axis=(1, 2)).mean())


@pytest.mark.parametrize("layout", ["lines", "wavelength"])
def test_moment_term_matches_numpy_and_sees_a_one_bin_shift(layout):
    from linecube.model.losses import moment_per_galaxy

    cfg = ModelConfig.from_config({"layout": layout, **TINY}, crop=4)
    rng = np.random.default_rng(0)
    x, xr = (rng.random((2, *cfg.input_shape), dtype=np.float32) for _ in range(2))
    got = float(np.mean(np.asarray(moment_per_galaxy(x, xr, 19, 10))))
    assert got == pytest.approx(numpy_moment(x, xr, 19, 10, layout), rel=1e-5)
    # one line moved by one bin (69 km/s) in all 16 spaxels: |first moment| = 1/25 each
    cube = np.zeros((1, 190, 4, 4), np.float32)
    cube[:, 4] = 1.0
    a, b = to_model_layout(cube, cfg), to_model_layout(np.roll(cube, 1, axis=1), cfg)
    assert float(np.asarray(moment_per_galaxy(a, b, 19, 10))[0]) == pytest.approx(16 * (1 / 25) / 19)
    assert float(np.asarray(moment_per_galaxy(a, a, 19, 10))[0]) == 0.0


def test_moment_term_in_the_loss_and_survives_save_load(tmp_path):
    cfg = ModelConfig.from_config({**TINY, "moment_weight": 0.5}, crop=8)
    m = build_model(cfg, "ae")
    x = np.random.default_rng(0).random((2, *cfg.input_shape), dtype=np.float32)
    out = m(x, training=False)
    xr = np.asarray(out["recon"])
    got = float(m.compute_loss(x, None, out, training=False))
    assert got == pytest.approx(numpy_eq1(x, xr) + 0.5 * numpy_moment(x, xr, 19, 10, "lines"), rel=1e-4)
    m.save(tmp_path / "m.keras")
    back = load_model(tmp_path / "m.keras")
    assert back.loss_settings.moment_weight == 0.5 and back.loss_settings.moment_shape == (19, 10)


def _disc(vrot: float, q: float = 1.0, n: int = 19, bins: int = 10, size: int = 16) -> np.ndarray:
    """(1, n * bins, size, size): a disc of Gaussian lines (H-alpha, index 15, at 1,
    the others at 0.3) whose centroid shifts by up to ``vrot`` bins across it, with
    axis ratio ``q``, on a flat continuum of 0.01."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    img = np.exp(-np.hypot(yy / q, xx) / 3.0)
    k = np.arange(bins)[:, None, None] - (bins - 1) / 2.0 - vrot * np.tanh(xx / 2.0)[None]
    prof = img[None] * np.exp(-0.5 * k**2)
    amp = np.where(np.arange(n) == 15, 1.0, 0.3)
    return (amp[:, None, None, None] * prof[None] + 0.01).reshape(1, n * bins, size, size).astype(np.float32)


@pytest.mark.parametrize("layout", ["lines", "wavelength"])
def test_cube_summaries_see_ratios_rotation_and_shape_and_ignore_the_augmentation(layout):
    from linecube.model.summaries import SUMMARY_TAIL, cube_summaries

    cfg = ModelConfig.from_config({**TINY, "layout": layout}, crop=16)

    def summ(c):
        return np.asarray(cube_summaries(to_model_layout(c, cfg), 19, 10, 15))[0]

    still, spun, flat = summ(_disc(0.0)), summ(_disc(2.0)), summ(_disc(0.0, q=0.5))
    assert still.shape == (18 + len(SUMMARY_TAIL),)
    np.testing.assert_allclose(still[:18], np.arcsinh(10 * 0.3), rtol=1e-4)  # the continuum is subtracted
    tail = dict(zip(SUMMARY_TAIL, range(18, 24), strict=True))
    assert still[tail["ref_centroid_spread"]] == pytest.approx(0.0, abs=1e-4)
    assert spun[tail["ref_centroid_spread"]] > 1.0
    assert spun[tail["ref_width_integrated"]] > spun[tail["ref_width_spaxel"]] + 0.5  # rotation broadens the sum
    assert still[tail["ref_ellipticity"]] == pytest.approx(0.0, abs=1e-4)
    assert flat[tail["ref_ellipticity"]] > 0.3 and flat[tail["ref_rms_radius"]] < still[tail["ref_rms_radius"]]
    c = _disc(2.0, q=0.5)
    for view in (np.rot90(c, 1, axes=(2, 3)), c[..., ::-1], c[:, :, ::-1]):
        np.testing.assert_allclose(summ(np.ascontiguousarray(view)), summ(c), atol=1e-4)


def test_cube_summaries_nuclear_ratios_follow_the_nucleus_and_ignore_the_augmentation():
    """With a nucleus radius the summaries add the 18 line ratios within it around
    H-alpha's centre: the disc's ratios where the nucleus has no line of its own, the
    nucleus's where it does (an AGN-like [OIII] core), whatever the flips, rotations and shifts."""
    from linecube.data.dataset import shift_zero_fill
    from linecube.model.summaries import SUMMARY_TAIL, cube_summaries, n_summaries

    cfg = ModelConfig.from_config({**TINY, "layout": "lines"}, crop=16)

    def summ(c, radius=3.0):
        return np.asarray(cube_summaries(to_model_layout(c, cfg), 19, 10, 15, radius))[0]

    disc = _disc(1.0)
    plain = summ(disc)
    assert plain.shape == (n_summaries(19, 3.0),) == (36 + len(SUMMARY_TAIL),)
    assert n_summaries(19, 0.0) == 18 + len(SUMMARY_TAIL)
    np.testing.assert_allclose(plain[18:36], np.arcsinh(10 * 0.3), rtol=1e-4)  # same ratios everywhere
    np.testing.assert_allclose(summ(disc, 0.0), np.r_[plain[:18], plain[36:]], rtol=1e-6)
    yy, xx = np.mgrid[:16, :16] - 7.5
    core = np.exp(-0.5 * (yy**2 + xx**2) / 0.8**2)  # a compact nucleus bright in line 11 only
    prof = np.exp(-0.5 * (np.arange(10) - 4.5) ** 2)[:, None, None] * core[None]
    agn = disc.copy()
    agn[0, 110:120] += 2.0 * prof.astype(np.float32)
    s = summ(agn)
    whole, nuclear = s[11], s[18 + 11]
    assert nuclear > whole + 0.3 > np.arcsinh(10 * 0.3) + 0.3  # the nucleus shows it most
    for view in (np.rot90(agn, 1, axes=(2, 3)), agn[..., ::-1]):
        np.testing.assert_allclose(summ(np.ascontiguousarray(view)), s, atol=1e-4)
    moved = shift_zero_fill(agn[0], 1, -2, 0.0)[None]
    assert summ(moved)[18 + 11] == pytest.approx(nuclear, rel=0.05)


def test_a_model_file_from_before_the_nuclear_ratios_loads_as_it_was_trained():
    """A .keras file whose config lacks ``summary_nucleus_radius`` (written before it
    existed) keeps its 24-column head and whole-image summaries."""
    cfg = ModelConfig.from_config({**TINY, "summary_weight": 0.5, "summary_nucleus_radius": 0.0}, crop=8)
    m = build_model(cfg, "ae", ref_line=15)
    conf = m.get_config()
    conf.pop("summary_nucleus_radius")
    back = type(m).from_config(conf)
    back.build()
    assert back.loss_settings.summary_nucleus_radius == 0.0 and back.summary_head.kernel.shape[-1] == 24


def test_summary_head_in_the_loss_and_survives_save_load(tmp_path):
    from linecube.model.summaries import cube_summaries, summary_loss

    cfg = ModelConfig.from_config(  # the kinematic columns' extra weight: its own test, below
        {**TINY, "summary_weight": 0.5, "consistency_weight": 0.0, "summary_kinematic_weight": 0.0}, crop=8
    )
    m = build_model(cfg, "ae", ref_line=15)
    x = np.random.default_rng(0).random((6, *cfg.input_shape), dtype=np.float32)
    out = m(x, training=False)
    xr = np.asarray(out["recon"])
    pred = np.asarray(m.summary_head(out["code"][:, : cfg.latent_dim]))
    t = np.asarray(cube_summaries(x, 19, 10, 15, cfg.summary_nucleus_radius), np.float64)
    t = (t - t.mean(0)) / (t.std(0) + 1e-3)
    want = numpy_eq1(x, xr) * (1 + 0.5 * np.mean((pred - t) ** 2))
    assert float(np.asarray(summary_loss(pred, t))) != 0.0
    assert float(m.compute_loss(x, None, out, training=False)) == pytest.approx(want, rel=1e-4)
    m.save(tmp_path / "m.keras")
    back = load_model(tmp_path / "m.keras")
    assert back.loss_settings.summary_weight == 0.5 and back.loss_settings.summary_shape == (19, 10, 15)
    assert back.loss_settings.summary_nucleus_radius == cfg.summary_nucleus_radius == 3.0
    np.testing.assert_allclose(np.asarray(back.summary_head.kernel), np.asarray(m.summary_head.kernel))
    assert float(back.compute_loss(x, None, back(x, training=False), training=False)) == pytest.approx(want, rel=1e-4)


def test_summary_kinematic_weight_counts_the_velocity_columns_more(tmp_path):
    """``summary_kinematic_weight`` k adds k x the kinematic columns' mean squared error:
    an error in the centroid spread costs (1/F + k/3) of its square, one in a line
    ratio 1/F as before; the setting is stored with the model."""
    from linecube.model.summaries import KINEMATIC_SUMMARIES, SUMMARY_TAIL, n_summaries, summary_loss

    f = n_summaries(19, 3.0)
    t = np.random.default_rng(1).standard_normal((8, f)).astype(np.float32)
    t = (t - t.mean(0)) / (t.std(0) + 1e-3)
    spread = f - len(SUMMARY_TAIL) + SUMMARY_TAIL.index(KINEMATIC_SUMMARIES[0])
    for col, kin in ((spread, True), (0, False)):
        pred = t.copy()
        pred[:, col] += 2.0
        base = 4.0 / f
        assert float(np.asarray(summary_loss(pred, t))) == pytest.approx(base, rel=1e-4)
        want = base + (5.0 * 4.0 / len(KINEMATIC_SUMMARIES) if kin else 0.0)
        assert float(np.asarray(summary_loss(pred, t, 5.0))) == pytest.approx(want, rel=1e-4)
    # weighted by galaxy: a galaxy of weight 0 adds nothing to the kinematic term
    pred = t.copy()
    pred[:4, spread] += 2.0
    gw = np.r_[np.zeros(4), np.ones(4)].astype(np.float32)
    assert float(np.asarray(summary_loss(pred, t, 5.0, gw))) == pytest.approx(2.0 / f, rel=1e-4)
    cfg = ModelConfig.from_config({**TINY, "summary_weight": 0.5, "summary_kinematic_weight": 5.0}, crop=8)
    m = build_model(cfg, "ae", ref_line=15)
    m.save(tmp_path / "m.keras")
    assert load_model(tmp_path / "m.keras").loss_settings.summary_kinematic_weight == 5.0


def test_line_dominance_is_zero_for_a_quiet_galaxy_and_grows_with_the_line():
    """The kinematic term's galaxy weight: 0 for a continuum with noise or absorption,
    near 1 for a line that dominates its window (lines layout, 3 lines x 10 bins)."""
    from linecube.model.summaries import line_dominance

    rng = np.random.default_rng(0)
    k = np.arange(10)
    line = np.exp(-0.5 * ((k - 4.5) / 1.0) ** 2)

    def cube(amp, absorb=0.0):
        spec = 1.0 + amp * line - absorb * np.exp(-0.5 * ((k - 4.5) / 3.0) ** 2)
        x = np.ones((1, 3, 8, 8, 10), np.float32)
        x[0, 1] = spec[None, None] + 0.05 * rng.standard_normal((8, 8, 10))
        return x

    w = [float(np.asarray(line_dominance(cube(a, b), 3, 10, 1))[0]) for a, b in ((0, 0), (0, 0.3), (1, 0), (20, 0))]
    assert w[0] < 0.02 and w[1] == 0.0 and 0.1 < w[2] < w[3] <= 1.0


def test_the_summary_heads_line_ratios_agree_with_the_features(tmp_path):
    """The summary head's targets (Keras, :func:`cube_summaries`) and the feature
    baseline (numpy, :func:`galaxy_features`) compute the same whole-image line ratios,
    asinh(10 F_line / F_Halpha) of continuum-subtracted window fluxes, in two
    languages: on the same cubes they agree (the continua differ only in mean vs
    median of the four edge bins)."""
    import h5py
    from fixtures import write_cubes_h5

    from linecube.analysis.features import FEATURE_NAMES, RATIO_FEATURES, galaxy_features
    from linecube.io.formats import load_lines
    from linecube.model.summaries import cube_summaries

    lines = load_lines()
    write_cubes_h5(tmp_path / "c.h5", n=6)
    with h5py.File(tmp_path / "c.h5", "r") as h5:
        flux, ivar = h5["flux"][:], h5["ivar"][:]
    mask = np.zeros(flux.shape, np.uint8)
    feats = galaxy_features(flux, ivar, mask, lines.names, 10)
    summ = np.asarray(cube_summaries(flux[..., None], len(lines), 10, lines.halpha), np.float64)
    keep = [n for i, n in enumerate(lines.names) if i != lines.halpha]
    for name, num in RATIO_FEATURES:
        if len(num) != 1:
            continue
        got = summ[:, keep.index(num[0])]
        want = feats[:, FEATURE_NAMES.index(name)]
        np.testing.assert_allclose(got, want, atol=0.05, err_msg=name)  # measured: <= 0.03
