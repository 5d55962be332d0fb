"""linecube.data.fluxscale: the models' flux scales and their inverses."""

import numpy as np
import pytest

from linecube.data.fluxscale import FluxScaler


def galaxy(brightness, seed=0):
    """(190, 8, 8) cube: Gaussian lines of fixed ratios on a disc, times brightness."""
    rng = np.random.default_rng(seed)
    prof = np.exp(-0.5 * ((np.arange(10) - 5) / 1.2) ** 2)
    ratios = rng.uniform(0.2, 2.0, 19)
    yy, xx = np.mgrid[:8, :8]
    disc = np.exp(-((yy - 3.5) ** 2 + (xx - 3.5) ** 2) / 8.0)
    return (brightness * np.repeat(ratios, 10) * np.tile(prof, 19))[:, None, None] * disc[None]


@pytest.mark.parametrize("kind", ["none", "asinh", "per_galaxy", "halpha"])
def test_inverse_undoes_forward(kind):
    sc = FluxScaler(kind, 0.5, 15, 10)
    f = np.stack([galaxy(1.0), galaxy(30.0, 1)]).astype(np.float32)
    m = np.zeros(f.shape, np.uint8)
    s = sc.galaxy_scale(f, m)
    np.testing.assert_allclose(sc.inverse(sc.forward(f, s), s), f, rtol=1e-5, atol=1e-6)


def test_halpha_scale_divides_out_brightness_and_keeps_line_ratios():
    sc = FluxScaler("halpha", 1.0, ref_line=15, window_bins=10)
    f = np.stack([galaxy(1.0), galaxy(50.0)]).astype(np.float32)
    m = np.zeros(f.shape, np.uint8)
    y = sc.forward(f, sc.galaxy_scale(f, m))
    np.testing.assert_allclose(y[0], y[1], rtol=1e-4)  # one galaxy 50x brighter: same model input
    ratio = lambda c: c[20:30].sum() / c[150:160].sum()  # noqa: E731 - line 3 over Halpha
    assert ratio(y[0]) == pytest.approx(ratio(f[0]), rel=1e-5)


def test_from_config_takes_the_schema_defaults_and_needs_halpha():
    names = [f"L{i}" for i in range(15)] + ["Halpha"] + [f"M{i}" for i in range(3)]
    sc = FluxScaler.from_config({}, names, 10)
    assert sc.kind == "halpha" and sc.ref_line == 15  # the schema's default model.flux_scaling
    assert FluxScaler.from_config({"flux_scaling": "asinh", "asinh_softening": 2.0}).softening == 2.0
    with pytest.raises(ValueError, match="needs Halpha"):
        FluxScaler.from_config({"flux_scaling": "halpha"}, names[:15], 10)
    with pytest.raises(ValueError, match="flux_scaling must be one of"):
        FluxScaler("log", 1.0, 15, 10)
