"""Windows, crops, WCS and masks of the emission-line extraction."""

import gzip

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from fixtures import RAW, REAL_SPECTRA, check, make_galaxy, req, write_cube

from linecube.data.extract import extract_cube
from linecube.data.extract_survey import TooManyRejects, extract_to_h5
from linecube.data.windows import crop_bounds, window_centres, window_indices
from linecube.io.drpall import CubeRequest
from linecube.io.formats import VoxelFlag
from linecube.io.logcube import CubeError, header_wavelengths
from linecube.io.manga import log_wave_grid, logcube_path


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
    cube = extract_cube(req_for(g, path), lines, options=RAW)
    with fits.open(path) as hl:
        wave = header_wavelengths(hl["FLUX"].header)
        idx = window_indices(window_centres(wave, lines.rest, g.z))
        np.testing.assert_allclose(cube["wave"], wave[idx])
        np.testing.assert_allclose(wave, hl["WAVE"].data, rtol=1e-7)  # header WCS == WAVE HDU (CD3_3 is rounded)
        from linecube.io.logcube import centre_pixel

        x, y = centre_pixel(hl["FLUX"].header, g.objra, g.objdec)
        cx, cy = int(round(x)), int(round(y))
        sl = (idx, slice(cy - 16, cy + 16), slice(cx - 16, cx + 16))
        drp = hl["MASK"].data[sl]
        unusable = ((drp & (1 | 4 | 8 | 1024)) != 0) | (hl["IVAR"].data[sl] <= 0)
        np.testing.assert_array_equal(cube["flux"], np.where(unusable, 0, hl["FLUX"].data[sl]))
        np.testing.assert_array_equal(cube["ivar"], np.where(unusable, 0, hl["IVAR"].data[sl]))
    assert cube["flux"].shape == (190, 32, 32) and cube["flux"].dtype == np.float32
    assert cube["mask"].dtype == np.uint8
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
        cube = extract_cube(r, lines, options=RAW)
        spec = cube["flux"][:, 16, 16]
        idx = window_indices(window_centres(wave, lines.rest, float(z)))
        ok = cube["mask"][:, 16, 16] == 0
        # values equal the input spectrum where usable; 0 where the DRP flagged them
        np.testing.assert_array_equal(spec, np.where(ok, flux[i][idx].astype(np.float32), 0))
        np.testing.assert_array_equal(cube["ivar"][:, 16, 16], np.where(ok, ivar[i][idx].astype(np.float32), 0))
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


def test_zero_byte_file(tmp_path, good, lines):
    g, _ = good
    p = tmp_path / "manga-8001-1901-LOGCUBE.fits.gz"
    p.write_bytes(b"")
    check(req(g, p), lines, "empty")


def test_missing_file(tmp_path, good, lines):
    g, _ = good
    check(req(g, tmp_path / "nope.fits.gz"), lines, "does not exist")


def test_truncated_gzip(tmp_path, good, lines):
    g, path = good
    data = path.read_bytes()
    for frac in (0.05, 0.5):
        p = tmp_path / f"trunc{frac}.fits.gz"
        p.write_bytes(data[: int(len(data) * frac)])
        check(req(g, p), lines, "truncated")


@pytest.mark.parametrize("where", [0.001, 0.1, 0.3])
def test_corrupt_gzip_bytes(tmp_path, good, lines, where):
    g, path = good
    data = bytearray(path.read_bytes())
    at = int(len(data) * where) + 20
    data[at : at + 4000] = bytes(b ^ 0x5A for b in data[at : at + 4000])
    p = tmp_path / "corrupt.fits.gz"
    p.write_bytes(bytes(data))
    check(req(g, p), lines, "corrupt")


@pytest.mark.parametrize("content", [b"this is not a FITS file\n" * 200, b"\x1f\x8b" + b"nonsense" * 10])
def test_not_fits(tmp_path, good, lines, content):
    g, _ = good
    p = tmp_path / "notfits.fits.gz"
    if content.startswith(b"\x1f\x8b"):
        p.write_bytes(content)  # gzip magic, garbage after
        check(req(g, p), lines, "gzip")
    else:
        p.write_bytes(gzip.compress(content))
        check(req(g, p), lines, "not a FITS file")


@pytest.mark.parametrize("drop", ["FLUX", "IVAR", "MASK"])
def test_missing_hdu(tmp_path, lines, drop):
    g = make_galaxy(ifusize=19, plate=8002, z=0.03)

    def edit(hl):
        del hl[drop]

    p = write_cube(tmp_path, g, lines, edit=edit)
    check(req(g, p), lines, f"no {drop} HDU")


@pytest.mark.parametrize(
    "key,value,needle", [("NAXIS3", None, "NAXIS3"), ("CRVAL3", 3600.0, "CRVAL3"), ("CTYPE3", "WAVE", "CTYPE3")]
)
def test_wrong_wavelength_grid(tmp_path, lines, key, value, needle):
    g = make_galaxy(ifusize=19, plate=8003, z=0.03)

    def edit(hl):
        if key == "NAXIS3":
            for name in ("FLUX", "IVAR", "MASK"):
                hl[name].data = hl[name].data[:4000]
        else:
            hl["FLUX"].header[key] = value

    p = write_cube(tmp_path, g, lines, edit=edit)
    check(req(g, p), lines, needle)


def test_all_donotuse(tmp_path, lines):
    g = make_galaxy(ifusize=19, plate=8004, z=0.03)

    def edit(hl):
        hl["MASK"].data[:] = 1024

    p = write_cube(tmp_path, g, lines, edit=edit)
    check(req(g, p), lines, "no usable voxel")


def test_centre_outside_cube(good, lines):
    g, path = good
    check(req(g, path, objra=g.ifura + 0.01, objdec=g.ifudec), lines, "outside the 34x34 cube")


@pytest.mark.parametrize(
    "z,needle", [(float("nan"), "missing or not a number"), (-0.01, "not positive"), (0.0, "not positive"), (0.8, "leaves the")]
)
def test_bad_redshift(good, lines, z, needle):
    g, path = good
    check(req(g, path, z=z), lines, needle)


def test_nan_and_negative_ivar_are_masked_not_rejected(tmp_path, lines):
    g = make_galaxy(ifusize=19, plate=8005, z=0.03)

    def edit(hl):
        hl["FLUX"].data[:, 17, 17] = np.nan
        hl["IVAR"].data[:, 16, 17] = -5

    p = write_cube(tmp_path, g, lines, edit=edit)
    c = extract_cube(req(g, p, objra=g.ifura, objdec=g.ifudec), lines)
    assert np.isfinite(c["flux"]).all() and (c["ivar"] >= 0).all()


def test_plate_goes_on_and_max_reject_fraction(tmp_path, lines):
    good = [make_galaxy(index=i, ifusize=19, plate=8010, ifudsgn=1901 + i, z=0.03, seed=i) for i in range(3)]
    reqs = [req(g, write_cube(tmp_path, g, lines)) for g in good]
    bad = make_galaxy(index=9, ifusize=19, plate=8010, ifudsgn=1909, z=0.03)
    bad_path = logcube_path(tmp_path, "v3_1_1", 8010, 1909)
    bad_path.write_bytes(b"")
    reqs.append(req(bad, bad_path))
    reqs.append(reqs[0])  # a duplicate plate-IFU
    out = tmp_path / "8010.h5"
    s = extract_to_h5(reqs, out, lines, drpver="v3_1_1", max_reject_fraction=0.5, progress=False)
    assert s.extracted == 3 and s.rejected == 2
    rej = pd.read_csv(tmp_path / "8010.rejects.csv")
    assert list(rej.columns) == ["plateifu", "path", "reason"]
    assert "empty" in rej.set_index("plateifu").loc["8010-1909", "reason"]
    assert rej["reason"].str.contains("duplicate plate-IFU").any()
    with pytest.raises(TooManyRejects) as e:
        extract_to_h5(reqs, tmp_path / "strict.h5", lines, drpver="v3_1_1", max_reject_fraction=0.2, progress=False)
    assert "8010-1909" in str(e.value) and "empty" in str(e.value) and "max_reject_fraction=0.2" in str(e.value)
    assert (tmp_path / "strict.rejects.csv").exists() and not (tmp_path / "strict.h5").exists()


def test_scaled_integer_flux_is_read_in_physical_units(tmp_path, good, lines):
    """FLUX stored as 16-bit integers with BSCALE/BZERO: extraction applies the scaling."""
    g, path = good
    ref = extract_cube(req(g, path), lines)

    def to_int16(hl):
        from astropy.io import fits

        flux = hl["FLUX"].data.astype(np.float64)
        hdr = hl["FLUX"].header.copy()
        scaled = fits.ImageHDU(flux.astype(np.float32), header=hdr, name="FLUX")
        scaled.scale("int16", bscale=0.01, bzero=50.0)
        hl[hl.index_of("FLUX")] = scaled
        return hl

    p = write_cube(tmp_path, g, lines, edit=to_int16)
    from astropy.io import fits

    with fits.open(p) as hl:
        assert hl["FLUX"].header["BITPIX"] == 16 and hl["FLUX"].header["BSCALE"] == 0.01
    got = extract_cube(req(g, p), lines)
    use = ref["mask"] == 0
    np.testing.assert_allclose(got["flux"][use], ref["flux"][use], atol=0.006)  # quantised to 0.01


def test_scaled_mask_is_rejected_with_a_reason(tmp_path, good, lines):
    g, _ = good

    def scale_mask(hl):
        hl["MASK"].header["BZERO"] = 5
        return hl

    p = write_cube(tmp_path, g, lines, edit=scale_mask)
    check(req(g, p), lines, "MASK", "scaled")


def test_truncated_header_is_reported_as_truncated(tmp_path, good, lines):
    g, path = good
    head = gzip.decompress(path.read_bytes())[:1500]  # inside the first header block
    p = tmp_path / "manga-8001-1901-LOGCUBE.fits.gz"
    p.write_bytes(gzip.compress(head))
    msg = check(req(g, p), lines, "truncated")
    assert "not a FITS" not in msg
    p.write_bytes(gzip.compress(b"hello, not a cube"))
    check(req(g, p), lines, "not a FITS file")


def test_float_mask_is_rejected_naming_the_hdu(tmp_path, lines):
    """A float MASK would lose its DONOTUSE bits (NaN -> INT_MIN) when cast: refused."""
    g = make_galaxy(ifusize=19, plate=8021, z=0.03)

    def float_mask(hl):
        m = hl["MASK"].data.astype(np.float32)
        m[0, 0, 0] = np.nan
        hl["MASK"].data = m

    p = write_cube(tmp_path, g, lines, edit=float_mask)
    check(req(g, p), lines, "HDU MASK is floating point")


def test_spectral_wcs_is_checked_as_the_reader_reads_it(tmp_path, lines):
    """The grid check and the reader agree (astropy's spectral WCS): a header that
    describes DR17's grid from another reference pixel is accepted and read at the
    same wavelengths; one whose CRPIX3 moves the grid by a bin is rejected."""
    g = make_galaxy(ifusize=19, plate=8022, z=0.03)
    ref = extract_cube(req(g, write_cube(tmp_path / "a", g, lines)), lines)
    w = log_wave_grid()

    def same_grid(hl):
        # pixel 11 (1-based) is bin 10; CD3_3 is the step at the reference pixel
        hl["FLUX"].header["CRPIX3"] = 11
        hl["FLUX"].header["CRVAL3"] = w[10]
        hl["FLUX"].header["CD3_3"] = hl["FLUX"].header["CD3_3"] * w[10] / w[0]

    got = extract_cube(req(g, write_cube(tmp_path / "b", g, lines, edit=same_grid)), lines)
    np.testing.assert_allclose(got["wave"], ref["wave"], rtol=1e-7)
    np.testing.assert_array_equal(got["flux"], ref["flux"])

    def shifted(hl):
        hl["FLUX"].header["CRPIX3"] = 2

    check(req(g, write_cube(tmp_path / "c", g, lines, edit=shifted)), lines, "CRPIX3=2")

    def microns(hl):
        hl["FLUX"].header["CUNIT3"] = "um"

    check(req(g, write_cube(tmp_path / "d", g, lines, edit=microns)), lines, "CUNIT3='um'")
