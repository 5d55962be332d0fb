"""Windows, crops, WCS and masks of the emission-line extraction."""

import numpy as np
import pytest
from astropy.io import fits
from conftest import REAL_SPECTRA, make_galaxy
from helpers import write_cube

from linecube.extract import crop_bounds, extract_cube, window_centres, window_indices
from linecube.formats import VoxelFlag
from linecube.manga import CubeError, CubeRequest, header_wavelengths, log_wave_grid


def req_for(g, path, **kw):
    d = dict(plateifu=g.plateifu, path=str(path), mangaid=g.mangaid, z=g.z, objra=g.objra, objdec=g.objdec)
    d.update(kw)
    return CubeRequest(**d)


def test_window_centre_is_nearest_bin():
    w = log_wave_grid()
    rest = np.array([w[1000], 0.5 * (w[1000] + w[1001]) * (1 - 1e-9), 0.5 * (w[1000] + w[1001]) * (1 + 1e-9)])
    assert window_centres(w, rest, 0.0).tolist() == [1000, 1000, 1001]
    z = 0.05
    c = window_centres(w, rest / (1 + z), z)
    assert c.tolist() == [1000, 1000, 1001]


def test_window_indices_are_c_minus_5_to_c_plus_4():
    idx = window_indices(np.array([100, 200]), 10)
    assert idx.tolist() == list(range(95, 105)) + list(range(195, 205))


@pytest.mark.parametrize(
    "centre,size,crop,expected",
    [(17, 34, 32, (1, 33, 0, 32)), (37, 74, 32, (21, 53, 0, 32)), (2, 34, 32, (0, 18, 14, 18)), (30, 34, 32, (14, 34, 0, 20))],
)
def test_crop_bounds(centre, size, crop, expected):
    assert crop_bounds(centre, size, crop) == expected


def test_extraction_equals_astropy_slicing(tmp_path, lines):
    g = make_galaxy(ifusize=37, z=0.045)
    path = write_cube(tmp_path, g, lines)
    cube = extract_cube(req_for(g, path), lines)
    with fits.open(path) as hl:
        wave = header_wavelengths(hl["FLUX"].header)
        idx = window_indices(window_centres(wave, lines.rest, g.z))
        np.testing.assert_allclose(cube["wave"], wave[idx])
        np.testing.assert_allclose(wave, hl["WAVE"].data, rtol=1e-7)  # header WCS == WAVE HDU (CD3_3 is rounded)
        from linecube.manga import centre_pixel

        x, y = centre_pixel(hl["FLUX"].header, g.objra, g.objdec)
        cx, cy = int(round(x)), int(round(y))
        sl = (idx, slice(cy - 16, cy + 16), slice(cx - 16, cx + 16))
        np.testing.assert_array_equal(cube["flux"], hl["FLUX"].data[sl])
        np.testing.assert_array_equal(cube["ivar"], hl["IVAR"].data[sl])
        drp = hl["MASK"].data[sl]
    assert cube["flux"].shape == (190, 32, 32) and cube["flux"].dtype == np.float32
    assert cube["mask"].dtype == np.uint8
    unusable = (drp & (1 | 4 | 8 | 1024)) != 0
    np.testing.assert_array_equal(cube["mask"] != 0, unusable)


def test_off_centre_galaxy_is_cropped_on_its_centre(tmp_path, lines):
    g = make_galaxy(ifusize=19, z=0.03)
    # move the galaxy 6 spaxels towards +x (lower RA: CD1_1 < 0)
    g.objra = g.ifura - 6 * 0.5 / 3600 / np.cos(np.deg2rad(g.ifudec))
    path = write_cube(tmp_path, g, lines)
    cube = extract_cube(req_for(g, path), lines)
    ha = lines.index("Halpha")
    img = cube["flux"][ha * 10 + 3 : ha * 10 + 7].sum(axis=0)
    yx = np.unravel_index(np.argmax(img), img.shape)
    assert abs(yx[0] - 16) <= 1 and abs(yx[1] - 16) <= 1
    # crop x range [7, 39) on a 34-wide cube: columns 27..31 are padding
    pad = cube["mask"][:, :, 27:]
    assert np.all(pad & VoxelFlag.OUTSIDE_CUBE)
    assert np.all(cube["flux"][:, :, 27:] == 0) and np.all(cube["ivar"][:, :, 27:] == 0)
    assert not np.any(cube["mask"][:, :, :27] & VoxelFlag.OUTSIDE_CUBE)


def test_nonfinite_and_negative_ivar_are_masked(tmp_path, lines):
    g = make_galaxy()

    def edit(hl):
        hl["FLUX"].data[2000:3000, 17, 17] = np.nan
        hl["FLUX"].data[2000:3000, 16, 17] = np.inf
        hl["IVAR"].data[:, 18, 17] = -1.0

    path = write_cube(tmp_path, g, lines, edit=edit)
    c = extract_cube(req_for(g, path, objra=g.ifura, objdec=g.ifudec), lines)
    assert np.isfinite(c["flux"]).all() and np.isfinite(c["ivar"]).all()
    ha = slice(lines.index("Halpha") * 10, lines.index("Halpha") * 10 + 10)
    assert np.all(c["mask"][ha, 16, 16] & VoxelFlag.NONFINITE) and np.all(c["flux"][ha, 16, 16] == 0)
    assert np.all(c["mask"][ha, 15, 16] & VoxelFlag.NONFINITE)
    assert np.all(c["mask"][:, 17, 16] & VoxelFlag.BAD_IVAR) and np.all(c["ivar"][:, 17, 16] == 0)
    assert c["nonfinite_voxels"] > 0 and c["negative_ivar_voxels"] == 190


# ---------------------------------------------------------------- real MaNGA spectra


def line_sn(flux, ivar, mask, centres, k):
    """S/N of line k: the flux in bins [c-3, c+4) above the continuum, a 21-bin
    running median of the spectrum with every line's core (c +/- 4) left out; 0
    where any core bin is masked or has no ivar."""
    c = int(centres[k])
    core = np.arange(c - 3, c + 4)
    if np.any(mask[core] & 1024) or np.any(ivar[core] <= 0):
        return 0.0
    f = flux.astype(float).copy()
    for cc in centres:
        f[max(cc - 4, 0) : cc + 5] = np.nan
    lo, hi = c - 30, c + 31
    seg = np.pad(f[lo:hi], 10, mode="edge")
    cont = np.array([np.nanmedian(seg[j : j + 21]) for j in range(hi - lo)])[core - lo]
    return float(np.sum(flux[core] - cont) / np.sqrt(np.sum(1.0 / ivar[core])))


def _real_cube_arrays(flux1d, ivar1d, mask1d, n=34):
    flux = np.repeat(flux1d.astype(np.float32)[:, None], n * n, axis=1).reshape(4563, n, n)
    ivar = np.repeat(ivar1d.astype(np.float32)[:, None], n * n, axis=1).reshape(4563, n, n)
    mask = np.repeat(mask1d.astype(np.int32)[:, None], n * n, axis=1).reshape(4563, n, n)
    return flux, ivar, mask


@pytest.mark.skipif(not (REAL_SPECTRA / "MaNGA_test_spectra.fits.gz").exists(), reason="real MaNGA spectra not present")
def test_real_spectra_lines_peak_inside_their_windows(tmp_path, lines):
    with fits.open(REAL_SPECTRA / "MaNGA_test_spectra.fits.gz") as hl:
        wave = hl["WAVE"].data
        np.testing.assert_allclose(wave, log_wave_grid(), rtol=1e-6)
        flux, ivar, mask, zs = (hl[k].data for k in ("FLUX", "IVAR", "MASK", "Z"))
    checked = 0
    for i, z in enumerate(zs):
        g = make_galaxy(index=i, ifusize=19, plate=9000 + i, z=float(z))
        g.objra, g.objdec = g.ifura, g.ifudec
        path = write_cube(tmp_path, g, lines, arrays=_real_cube_arrays(flux[i], ivar[i], mask[i]))
        r = req_for(g, path)
        if np.all(mask[i] & 1024):
            with pytest.raises(CubeError, match="no usable voxel"):
                extract_cube(r, lines)
            continue
        cube = extract_cube(r, lines)
        spec = cube["flux"][:, 16, 16]
        idx = window_indices(window_centres(wave, lines.rest, float(z)))
        np.testing.assert_array_equal(spec, flux[i][idx].astype(np.float32))  # values equal the input spectrum
        np.testing.assert_array_equal(cube["ivar"][:, 16, 16], ivar[i][idx].astype(np.float32))
        centres = idx[5::10]
        for k, name in enumerate(lines.names):
            if np.any(np.abs(centres - centres[k])[np.arange(len(centres)) != k] < 5):
                continue  # the [OII] doublet: 3 bins apart, each window holds both peaks
            sn = line_sn(flux[i], ivar[i], mask[i], centres, k)
            if sn > 10:
                p = int(np.argmax(spec[k * 10 : k * 10 + 10]))
                assert 3 <= p <= 7, f"spectrum {i} z={z}: {name} (S/N {sn:.0f}) peaks at window bin {p}"
                checked += 1
    assert checked >= 6  # H-alpha and [NII] in spectra 2, 3, 4 at least


@pytest.mark.skipif(not (REAL_SPECTRA / "SHOC579_8626-12704_spaxel38-35.txt").exists(), reason="SHOC 579 spaxel not present")
def test_blueberry_spaxel_strong_lines_peak_at_window_centre(tmp_path, lines):
    d = np.loadtxt(REAL_SPECTRA / "SHOC579_8626-12704_spaxel38-35.txt")
    f, e = d[:, 1] / 1e-17, d[:, 2] / 1e-17
    ivar = np.where(e > 0, 1 / np.maximum(e, 1e-30) ** 2, 0)
    m = d[:, 3].astype(np.int32)
    g = make_galaxy(ifusize=19, plate=8626, ifudsgn=1901, z=0.0475)
    g.objra, g.objdec = g.ifura, g.ifudec
    path = write_cube(tmp_path, g, lines, arrays=_real_cube_arrays(f, ivar, m))
    cube = extract_cube(req_for(g, path), lines)
    for name in ("Hbeta", "[OIII]5008", "Halpha", "[OIII]4960"):
        k = lines.index(name)
        win = cube["flux"][k * 10 : k * 10 + 10, 16, 16]
        assert 3 <= int(np.argmax(win)) <= 7, name
    o3hb = (
        cube["flux"][lines.index("[OIII]5008") * 10 : lines.index("[OIII]5008") * 10 + 10, 16, 16].sum()
        / cube["flux"][lines.index("Hbeta") * 10 : lines.index("Hbeta") * 10 + 10, 16, 16].sum()
    )
    assert o3hb > 4  # a blueberry: log [OIII]/Hbeta > 0.6
