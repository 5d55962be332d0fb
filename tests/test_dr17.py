"""What real DR17 cubes carry: masks, Galactic extinction, spatial covariance,
integrity and units, honoured at extraction (and, through cubes.h5, everywhere after)."""

import gzip

import numpy as np
import pytest
from fixtures import RAW, make_galaxy, req, write_cube

from linecube.extinction import a_lambda_over_ebv, correction_factor
from linecube.extract import ExtractOptions, extract_cube, ifu_fibres
from linecube.manga import CubeError, DRP3PixMask
from linecube.noise import (
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
