"""Split and augmentation properties (pure numpy)."""

import numpy as np
import pytest

from linecube.data.dataset import (
    AugmentConfig,
    CubeSource,
    apply_ops,
    augment,
    copy_ops,
    draw_ops,
    shift_zero_fill,
    split_galaxies,
)
from linecube.io.formats import VoxelFlag


def aug_cfg(**keys):
    """The schema's augmentation defaults, some keys changed (``train:`` names)."""
    return AugmentConfig.from_config(keys)


def cube(seed=0):
    rng = np.random.default_rng(seed)
    f = rng.normal(1, 0.1, (190, 32, 32)).astype(np.float32)
    iv = rng.uniform(50, 150, (190, 32, 32)).astype(np.float32)
    m = (rng.random((190, 32, 32)) < 0.05).astype(np.uint8)
    return f, iv, m


def test_split_is_by_galaxy_and_seeded():
    p = [f"8000-{1900 + i}" for i in range(60)]
    tr, te = split_galaxies(p, 1 / 6, seed=1)
    assert len(te) == 10 and len(tr) == 50
    assert not set(tr) & set(te) and sorted(np.r_[tr, te]) == list(range(60))
    tr2, te2 = split_galaxies(p, 1 / 6, seed=1)
    assert list(te) == list(te2)
    assert list(split_galaxies(p, 1 / 6, seed=2)[1]) != list(te)


def test_no_galaxy_on_both_sides_after_augmentation(tmp_path):
    """Every sample a CubeSource yields (originals and copies) comes from its own side."""
    aug = aug_cfg(augment_copies=3)
    tr, te = split_galaxies([str(i) for i in range(12)], 0.25, 0)
    a = CubeSource("unused.h5", tr, 0, aug)
    b = CubeSource("unused.h5", te, 1, aug, shuffle=False, augment_epochs=False)
    rows_a = {int(r) for r, _ in a.order(0)}
    rows_b = {int(r) for r, _ in b.order(0)}
    assert rows_a == set(tr) and rows_b == set(te) and not rows_a & rows_b
    assert len(a) == 4 * len(tr)


def test_pairs_put_two_views_of_one_galaxy_side_by_side():
    aug = aug_cfg(augment_copies=3)
    src = CubeSource("unused.h5", np.arange(10), 0, aug, pairs=True)
    assert len(src) == 10 * 4 and src.n_batches(8) == 5  # 2 pairs of each galaxy, 4 pairs per batch of 8
    seen = []
    for b in range(src.n_batches(8)):
        s = src.batch_samples(0, b, 8)
        assert len(s) == 8
        for (r1, c1), (r2, c2) in zip(s[0::2], s[1::2]):
            assert r1 == r2 and c1 != c2  # one galaxy, two different views
        seen += s
    assert sorted(seen) == sorted((g, c) for g in range(10) for c in range(4))  # every sample once per epoch
    odd = CubeSource("unused.h5", np.arange(3), 0, aug_cfg(augment_copies=2), pairs=True)
    assert {tuple(u[1:]) for u in odd.order(0)} == {(0, 1), (2, 0)}  # the odd one out pairs with the original


def test_flip_and_rotation_are_exact():
    f, iv, m = cube()
    rng = np.random.default_rng(0)
    cfg = aug_cfg()
    f2, iv2, m2 = apply_ops(f, iv, m, {"flip": True}, rng, cfg)
    np.testing.assert_array_equal(f2, f[:, :, ::-1])
    np.testing.assert_array_equal(m2, m[:, :, ::-1])
    f3, iv3, m3 = apply_ops(f, iv, m, {"rotate": 1}, rng, cfg)
    np.testing.assert_array_equal(f3, np.rot90(f, 1, axes=(1, 2)))
    np.testing.assert_array_equal(iv3, np.rot90(iv, 1, axes=(1, 2)))
    np.testing.assert_array_equal(m3, np.rot90(m, 1, axes=(1, 2)))
    f4, _, _ = apply_ops(f, iv, m, {"rotate": 2, "flip": True}, rng, cfg)
    np.testing.assert_array_equal(f4, np.rot90(f[:, :, ::-1], 2, axes=(1, 2)))


def test_shift_moves_mask_with_flux_and_zero_fills():
    f, iv, m = cube()
    f2, iv2, m2 = apply_ops(f, iv, m, {"shift": (3, -5)}, np.random.default_rng(0), aug_cfg())
    np.testing.assert_array_equal(f2[:, 3:, :27], f[:, :29, 5:])
    np.testing.assert_array_equal(m2[:, 3:, :27], m[:, :29, 5:])
    assert np.all(f2[:, :3] == 0) and np.all(iv2[:, :, 27:] == 0)
    assert np.all(m2[:, :3] & VoxelFlag.OUTSIDE_CUBE) and np.all(m2[:, :, 27:] & VoxelFlag.OUTSIDE_CUBE)
    np.testing.assert_array_equal(shift_zero_fill(np.arange(4.0).reshape(1, 2, 2), 0, 0, 0.0), np.arange(4.0).reshape(1, 2, 2))


def test_drawn_shifts_stay_within_five_spaxels_and_ops_nonempty():
    rng = np.random.default_rng(7)
    seen = set()
    for _ in range(2000):
        ops = draw_ops(rng, 5)
        assert ops
        seen |= set(ops)
        if "shift" in ops:
            dy, dx = ops["shift"]
            assert max(abs(dy), abs(dx)) <= 5 and (dy or dx)
    assert seen == {"flip", "rotate", "noise", "shift"}


def test_noise_level_follows_ivar():
    f = np.ones((190, 32, 32), np.float32)
    iv = np.full_like(f, 100.0)  # sigma = 0.1
    iv[:, :16] = 4.0  # sigma = 0.5
    m = np.zeros(f.shape, np.uint8)
    f2, iv2, _ = apply_ops(f, iv, m, {"noise": True}, np.random.default_rng(0), aug_cfg(noise_sigma=1.0))
    d = f2 - f
    assert np.std(d[:, 16:]) == pytest.approx(0.1, rel=0.02)
    assert np.std(d[:, :16]) == pytest.approx(0.5, rel=0.02)
    np.testing.assert_allclose(iv2, iv / 2)  # variance doubled where noise was added
    iv[:, 0, 0] = 0
    f3, _, _ = apply_ops(f, iv, m, {"noise": True}, np.random.default_rng(0), aug_cfg())
    assert np.all(f3[:, 0, 0] == 1)  # no ivar, no noise


def test_augmentation_is_seeded_by_epoch_galaxy_copy():
    f, iv, m = cube()
    cfg = aug_cfg()
    (a, _, _), ops_a = augment(f, iv, m, 1, 3, 10, 2, cfg)
    (b, _, _), ops_b = augment(f, iv, m, 1, 3, 10, 2, cfg)
    np.testing.assert_array_equal(a, b)
    assert ops_a == ops_b
    differ = [augment(f, iv, m, 1, e, 10, 2, cfg)[1] != ops_a for e in range(4, 12)]
    assert any(differ)


def test_noise_bank_draws_have_the_right_level_and_are_seeded():
    from linecube.data.dataset import NoiseBank

    f = np.zeros((190, 32, 32), np.float32)
    iv = np.full_like(f, 25.0)  # sigma = 0.2
    bank = NoiseBank(3, f.shape)
    outs = [apply_ops(f, iv, None, {"noise": True}, np.random.default_rng(k), aug_cfg(), bank)[0] for k in range(4)]
    for o in outs:
        assert np.std(o) == pytest.approx(0.2, rel=0.02) and abs(np.mean(o)) < 0.005
    assert not np.allclose(outs[0], outs[1])
    again = apply_ops(f, iv, None, {"noise": True}, np.random.default_rng(0), aug_cfg(), NoiseBank(3, f.shape))[0]
    np.testing.assert_array_equal(again, outs[0])


@pytest.mark.parametrize("scaling", ["halpha", "asinh", "none"])
@pytest.mark.parametrize("layout", ["lines", "wavelength"])
def test_assembled_batch_equals_scaled_cubes_in_the_model_layout(tmp_path, scaling, layout):
    """train.assemble_batch gives what FluxScaler.forward and to_model_layout
    give, bit for bit, for plain and augmented samples (flipped and rotated
    copies come to it as strided views: the batch buffer takes the one copy)."""
    from fixtures import write_cubes_h5

    from linecube.data.fluxscale import FluxScaler
    from linecube.io.formats import load_lines
    from linecube.model.batches import assemble_batch
    from linecube.model.spec import ModelConfig, to_model_layout

    path = tmp_path / "c.h5"
    write_cubes_h5(path, 4)
    mcfg = ModelConfig.from_config({"layout": layout, "flux_scaling": scaling})
    scaler = FluxScaler.from_config({"flux_scaling": scaling}, list(load_lines().names), 10)
    src = CubeSource(path, np.arange(4), 2, aug_cfg(), need_mask=True)
    samples = src.batch_samples(1, 0, len(src))  # every sample of the epoch
    ops = [copy_ops(2, 1, int(r), int(c), aug_cfg())[0] for r, c in samples if c]
    assert any("flip" in o or o.get("rotate") for o in ops)
    got = assemble_batch(src, mcfg, scaler, samples, 1, with_weights=False)["x"]
    for k, (row, copy) in enumerate(samples):
        f, _, m = src.sample(int(row), int(copy), 1)
        s = scaler.galaxy_scale(f[None], m[None]) if scaler.per_galaxy else None
        np.testing.assert_array_equal(got[k], to_model_layout(scaler.forward(f[None], s), mcfg)[0])
    src.close()


def test_feed_threads_give_the_same_batches_as_one(tmp_path):
    """make_dataset with 3 assembling threads (each beyond the first on a clone
    of the source, with its own HDF5 handle) yields bit for bit the batches of
    one thread, over two epochs and in the batch order asked for."""
    from fixtures import write_cubes_h5

    from linecube.data.fluxscale import FluxScaler
    from linecube.io.formats import load_lines
    from linecube.model.batches import make_dataset
    from linecube.model.spec import ModelConfig
    from linecube.model.train import feed_workers

    path = tmp_path / "c.h5"
    write_cubes_h5(path, 6)
    mcfg = ModelConfig.from_config({})
    scaler = FluxScaler.from_config({}, list(load_lines().names), 10)
    got = {}
    for workers in (1, 3):
        src = CubeSource(path, np.arange(6), 5, aug_cfg(), need_mask=True, pairs=True)
        ds = make_dataset(src, mcfg, scaler, 4, False, workers=workers)
        out = []
        for epoch in (0, 1):
            src.epoch = epoch
            out += [ds[b][0]["x"] for b in range(ds.num_batches)]
        ds.close()
        src.close()
        got[workers] = out
    assert len(got[1]) == 2 * ds.num_batches and len(got[1]) == len(got[3])
    for a, b in zip(got[1], got[3]):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(got[1][0], got[1][ds.num_batches])  # epochs differ
    assert feed_workers(8, on_gpu=False) == 1 and feed_workers(8, on_gpu=True) == 7 and feed_workers(1, on_gpu=True) == 1


def test_endless_batches_run_on_across_epochs_from_their_first_step(tmp_path):
    """``make_dataset(repeat=True)``: the i-th batch asked for is batch ``(step0 + i) % n``
    of epoch ``(step0 + i) // n`` (what the finite dataset gives in that epoch), with the
    next epoch's first batches assembled ahead; a resumed run (step0 = 2 epochs) picks up
    where it left off; the test set (no new copies per epoch) repeats its one epoch."""
    from fixtures import write_cubes_h5

    from linecube.data.fluxscale import FluxScaler
    from linecube.io.formats import load_lines
    from linecube.model.batches import make_dataset
    from linecube.model.spec import ModelConfig

    path = tmp_path / "c.h5"
    write_cubes_h5(path, 6)
    mcfg = ModelConfig.from_config({})
    scaler = FluxScaler.from_config({}, list(load_lines().names), 10)
    src = CubeSource(path, np.arange(6), 5, aug_cfg(), need_mask=True, pairs=True)
    finite = make_dataset(src, mcfg, scaler, 4, False)
    n = finite.num_batches
    want = []
    for epoch in range(4):
        src.epoch = epoch
        want += [finite[b][0]["x"] for b in range(n)]
    finite.close()
    for step0 in (0, 2 * n):
        s2 = CubeSource(path, np.arange(6), 5, aug_cfg(), need_mask=True, pairs=True)
        endless = make_dataset(s2, mcfg, scaler, 4, False, repeat=True)
        assert endless.num_batches is None
        endless.step0 = step0
        got = [endless[i][0]["x"] for i in range(4 * n - step0)]
        endless.close()
        s2.close()
        for i, g in enumerate(got):
            np.testing.assert_array_equal(g, want[step0 + i], err_msg=f"step0 {step0}, batch {i}")
    s3 = CubeSource(path, np.arange(6), 5, aug_cfg(), need_mask=True, pairs=True)
    run = make_dataset(s3, mcfg, scaler, 4, False, repeat=True, steps=4 * n)  # a run of 4 epochs
    assert run.num_batches == 4 * n + 1  # ends one batch after the last step: no prefetch past it
    run.step0 = 2 * n  # resumed after epoch 2
    assert run.num_batches == 2 * n + 1
    np.testing.assert_array_equal(run[0][0]["x"], want[2 * n])
    run.close()
    s3.close()
    test = CubeSource(path, np.arange(6), 6, aug_cfg(), need_mask=True, pairs=True, augment_epochs=False)
    endless = make_dataset(test, mcfg, scaler, 4, False, repeat=True)
    got = [endless[i][0]["x"] for i in range(2 * n)]
    endless.close()
    test.close()
    for b in range(n):
        np.testing.assert_array_equal(got[b], got[n + b])
    src.close()


def test_feed_threads_reuse_their_source(tmp_path):
    """Each assembling thread opens its source once and keeps it: over many batches
    the feed holds at most one source (HDF5 handle) per thread, not one per batch."""
    from fixtures import write_cubes_h5

    from linecube.data.fluxscale import FluxScaler
    from linecube.io.formats import load_lines
    from linecube.model.batches import make_dataset
    from linecube.model.spec import ModelConfig

    path = tmp_path / "c.h5"
    write_cubes_h5(path, 6)
    mcfg = ModelConfig.from_config({})
    scaler = FluxScaler.from_config({}, list(load_lines().names), 10)
    for workers in (1, 2):
        src = CubeSource(path, np.arange(6), 5, aug_cfg(), need_mask=True)
        ds = make_dataset(src, mcfg, scaler, 2, False, workers=workers)
        for epoch in range(3):
            src.epoch = epoch
            for b in range(ds.num_batches):
                ds[b]
        assert 1 <= len(ds._sources) <= workers, (workers, len(ds._sources))
        ds.close()
        src.close()
