"""linecube.physics.bpt: demarcation lines, classification and window-integrated flux."""

import numpy as np
import pytest

from linecube.physics.bpt import classify_n2, kauffmann03, kewley01, window_flux


def test_demarcations_and_classes():
    # Kauffmann et al. 2003: 0.61 / (N2 - 0.05) + 1.30; Kewley et al. 2001: 0.61 / (N2 - 0.47) + 1.19
    assert kauffmann03(-0.5) == pytest.approx(0.61 / -0.55 + 1.30)
    assert kewley01(-0.5) == pytest.approx(0.61 / -0.97 + 1.19)
    got = classify_n2([-0.6, -0.2, 0.2, -0.4], [-0.3, 0.2, 0.8, 1.0])
    assert list(got) == ["star-forming", "composite", "AGN/LINER", "AGN/LINER"]


def test_window_flux_integrates_a_line_above_its_continuum():
    bins = 10
    wave = 6563.0 * 10 ** (1e-4 * (np.arange(bins) - 5))
    dlam = wave * np.log(10.0) * 1e-4
    prof = np.exp(-0.5 * ((np.arange(bins) - 5) / 1.0) ** 2)
    flux = (2.0 + 3.0 * prof)[:, None, None] * np.ones((bins, 2, 2))
    ivar = np.full_like(flux, 4.0)
    mask = np.zeros(flux.shape, np.uint8)
    mask[3, 1, 1] = 1
    f, e = window_flux(flux, ivar, mask, wave, 0, bins)
    cont_edges = np.median((2.0 + 3.0 * prof)[[0, 1, 8, 9]])
    want = np.sum((2.0 + 3.0 * prof - cont_edges) * dlam)
    assert f[0, 0] == pytest.approx(want, rel=1e-6)
    assert e[0, 0] == pytest.approx(np.sqrt(np.sum(dlam**2 / 4.0)))
    assert np.isnan(f[1, 1])  # a masked bin makes the spaxel unusable
