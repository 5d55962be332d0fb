"""Writing a LOGCUBE: the 24 HDUs of a DR17 ``manga-*-LOGCUBE.fits.gz`` in DRP
order, with the DRP header keys, WCS and the OBSINFO/correlation tables.
"""

from __future__ import annotations

import os

import numpy as np

from linecube.io.atomic import atomic_path
from linecube.io.formats import LineList
from linecube.io.manga import (
    BUNIT,
    CD3_3,
    CRVAL3,
    DR17_DRPVER,
    IFU_CUBE_SIZE,
    IFU_DIAMETER_ARCSEC,
    NWAVE,
    SPAXEL_ARCSEC,
    DRP3PixMask,
    log_wave_grid,
)
from linecube.simulate.galaxy import GalaxyParams, sky_sigma
from linecube.simulate.render import (
    hexagon_mask,
    instrument_defects,
    observed_model,
    quantize_step,
    realise_noise,
    render_model,
    spike_values,
)


def _obs_keys(g: GalaxyParams, rng: np.random.Generator) -> list[tuple[str, object, str]]:
    """DRP header keys common to PRIMARY and FLUX (sdss/datamodel mangaCube DR17)."""
    nexp = int(rng.integers(6, 13))
    see = float(rng.uniform(1.1, 1.8))
    mjd = int(57000 + (g.plate % 2000))
    return [
        ("AUTHOR", "Brian Cherinka & David Law <bcherinka@stsci.edu, dlaw@stsci.edu>", ""),
        ("VERSDRP2", DR17_DRPVER, "MaNGA DRP version (2d processing)"),
        ("VERSDRP3", DR17_DRPVER, "MaNGA DRP Version (3d processing)"),
        ("VERSPLDS", "v5_1", "Platedesign Version"),
        ("VERSFLAT", "v1_33", "Specflat Version"),
        ("VERSCORE", "v1_9_1", "MaNGAcore Version"),
        ("VERSPRIM", "v2_9", "MaNGA Preimaging Version"),
        ("VERSUTIL", "v5_5_36", "Version of idlutils"),
        ("VERSIDL", "x86_64 linux unix linux 7.1.1 Aug 21 2009 64 64", "Version of IDL"),
        ("BSCALE", 1.0, "Intensity unit scaling"),
        ("BZERO", 0.0, "Intensity zeropoint"),
        ("BUNIT", BUNIT, "Specific intensity (per spaxel)"),
        ("MASKNAME", "MANGA_DRP3PIXMASK", "Bits in sdssMaskbits.par used by mask extension"),
        ("TELESCOP", "SDSS 2.5-M", "Sloan Digital Sky Survey"),
        ("INSTRUME", "MaNGA", "SDSS-IV MaNGA IFU"),
        ("SRVYMODE", "MaNGA dither", "Survey leading this observation and its mode"),
        ("PLATETYP", "APOGEE-2&MaNGA", "Type of plate (e.g. MaNGA, APOGEE-2&MANGA)"),
        ("OBJSYS", "ICRS", "The TCC objSys"),
        ("EQUINOX", 2000.0, ""),
        ("RADESYS", "FK5", ""),
        ("LAMPLIST", "lamphgcdne.dat", ""),
        ("TPLDATA", "BOSZ_3000-11000A.fits", ""),
        ("NEXP", nexp, "Total number of exposures"),
        ("EXPTIME", round(900.1 * nexp, 2), "Total exposure time (seconds)"),
        ("BLUESN2", round(float(rng.uniform(10, 30)), 4), "Total SN2 in blue channel"),
        ("REDSN2", round(float(rng.uniform(20, 50)), 4), "Total SN2 in red channel"),
        ("AIRMSMIN", 1.04, "Minimum airmass"),
        ("AIRMSMED", 1.05, "Median airmass"),
        ("AIRMSMAX", 1.08, "Maximum airmass"),
        ("SEEMIN", round(see - 0.1, 5), "Best guider seeing"),
        ("SEEMED", round(see, 5), "Median guider seeing"),
        ("SEEMAX", round(see + 0.15, 5), "Worst guider seeing"),
        ("TRANSMIN", 0.80, "Worst guider transparency"),
        ("TRANSMED", 0.83, "Median guider transparency"),
        ("TRANSMAX", 0.84, "Best guider transparency"),
        ("MJDMIN", mjd, "MJD of first exposure"),
        ("MJDMED", mjd, "MJD of median exposure"),
        ("MJDMAX", mjd, "MJD of last exposure"),
        ("DATE-OBS", "2016-01-01", "Date of median exposure"),
        ("MJDRED", 59186, "MJD of the reduction"),
        ("DATERED", "2020-12-03", "Date of the reduction"),
        ("MNGTARG1", 2336, "manga_target1 maskbit"),
        ("MNGTARG2", 0, "manga_target2 maskbit"),
        ("MNGTARG3", 0, "manga_target3 maskbit"),
        ("IFURA", g.ifura, "IFU R.A. (J2000 deg.)"),
        ("IFUDEC", g.ifudec, "IFU Dec. (J2000 deg.)"),
        ("OBJRA", g.objra, "Object R.A. (J2000 deg.)"),
        ("OBJDEC", g.objdec, "Object Dec. (J2000 deg.)"),
        ("CENRA", round(g.ifura + 0.8, 5), "Plate center R.A. (J2000 deg.)"),
        ("CENDEC", round(g.ifudec - 0.1, 6), "Plate center Dec. (J2000 deg.)"),
        ("PLATEID", g.plate, "Current plate"),
        ("DESIGNID", g.plate + 500, "Current design"),
        ("IFUDSGN", str(g.ifudsgn), "ifuDesign"),
        ("FRLPLUG", int(rng.integers(1, 30)), "Plugged ferrule"),
        ("PLATEIFU", g.plateifu, "PLATEID-ifuDesign"),
        ("CARTID", "3", "Cart(s) used"),
        ("HARNAME", "ma060", "Harness name(s)"),
        ("METFILE", "ma060-56887-3.par", "IFU metrology file(s)"),
        ("MANGAID", g.mangaid, "MaNGA ID number"),
        ("CATIDNUM", 1, "Primary target input catalog"),
        ("PLTTARG", "plateTargets-1.par", "plateTarget reference file"),
        ("DRP3QUAL", 0, "DRP-3d quality bitmask"),
        ("IFUGLON", 78.9550411299, "IFU Galactic longitude (deg)"),
        ("IFUGLAT", 52.6212190954, "IFU Galactic latitude (deg)"),
        ("EBVGAL", round(float(g.ebvgal), 7), "Galactic reddening E(B-V)"),
        ("GFWHM", round(see * 1.9, 4), "Reconstructed FWHM in g-band (arcsec)"),
        ("RFWHM", round(see * 1.88, 4), "Reconstructed FWHM in r-band (arcsec)"),
        ("IFWHM", round(see * 1.86, 4), "Reconstructed FWHM in i-band (arcsec)"),
        ("ZFWHM", round(see * 1.84, 4), "Reconstructed FWHM in z-band (arcsec)"),
    ]


def _spatial_wcs_keys(g: GalaxyParams, n: int) -> list[tuple[str, object, str]]:
    crpix = n / 2.0 + 1.0
    return [
        ("CRPIX1", crpix, "Reference pixel (1-indexed)"),
        ("CRPIX2", crpix, "Reference pixel (1-indexed)"),
        ("CRVAL1", g.ifura, ""),
        ("CRVAL2", g.ifudec, ""),
        ("CD1_1", -0.000138889, ""),
        ("CD2_2", 0.000138889, ""),
        ("CTYPE1", "RA---TAN", ""),
        ("CTYPE2", "DEC--TAN", ""),
        ("CUNIT1", "deg", ""),
        ("CUNIT2", "deg", ""),
    ]


_OBSINFO_COLUMNS: tuple[tuple[str, str], ...] = (
    ("SLITFILE", "25A"), ("METFILE", "17A"), ("HARNAME", "5A"), ("IFUDESIGN", "J"), ("FRLPLUG", "I"),
    ("MANGAID", "8A"), ("AIRTEMP", "E"), ("HUMIDITY", "E"), ("PRESSURE", "E"), ("SEEING", "E"), ("PSFFAC", "E"),
    ("TRANSPAR", "E"), ("PLATEID", "J"), ("DESIGNID", "J"), ("CARTID", "I"), ("MJD", "J"), ("EXPTIME", "E"),
    ("EXPNUM", "12A"), ("SET", "J"), ("MGDPOS", "8A"), ("MGDRA", "E"), ("MGDDEC", "E"), ("OMEGASET_U", "E"),
    ("OMEGASET_G", "E"), ("OMEGASET_R", "E"), ("OMEGASET_I", "E"), ("OMEGASET_Z", "E"), ("EAMFIT_RA", "E"),
    ("EAMFIT_DEC", "E"), ("EAMFIT_THETA", "E"), ("EAMFIT_THETA0", "E"), ("EAMFIT_A", "E"), ("EAMFIT_B", "E"),
    ("EAMFIT_RAERR", "E"), ("EAMFIT_DECERR", "E"), ("EAMFIT_THETAERR", "E"), ("EAMFIT_THETA0ERR", "E"),
    ("EAMFIT_AERR", "E"), ("EAMFIT_BERR", "E"), ("TAIBEG", "13A"), ("HADRILL", "E"), ("LSTMID", "E"),
    ("HAMID", "E"), ("AIRMASS", "E"), ("IFURA", "D"), ("IFUDEC", "D"), ("CENRA", "D"), ("CENDEC", "D"),
    ("XFOCAL", "E"), ("YFOCAL", "E"), ("MNGTARG1", "J"), ("MNGTARG2", "J"), ("MNGTARG3", "J"), ("BLUESN2", "E"),
    ("REDSN2", "E"), ("BLUETHRUPT", "E"), ("REDTHRUPT", "E"), ("BLUEPSTAT", "E"), ("REDPSTAT", "E"),
    ("DRP2QUAL", "J"), ("THISBADIFU", "J"), ("PF_FWHM_G", "E"), ("PF_FWHM_R", "E"), ("PF_FWHM_I", "E"),
    ("PF_FWHM_Z", "E"),
)  # fmt: skip


def _obsinfo_hdu(g: GalaxyParams, nexp: int):
    from astropy.io import fits

    cols = []
    for name, fmt in _OBSINFO_COLUMNS:
        if fmt.endswith("A"):
            val = {
                "SLITFILE": f"slitmap-{g.plate}-57000-01.par",
                "METFILE": "ma060-56887-3.par",
                "HARNAME": "ma060",
                "MANGAID": g.mangaid[:8],
                "EXPNUM": "",
                "MGDPOS": "N",
                "TAIBEG": "2016-01-01T03",
            }[name]
            arr = np.array([val] * nexp)
            if name == "EXPNUM":
                arr = np.array([f"{200000 + i:08d}" for i in range(nexp)])
            if name == "MGDPOS":
                arr = np.array(["NSE"[i % 3] for i in range(nexp)])
        else:
            dtype = {"J": "i4", "I": "i2", "E": "f4", "D": "f8"}[fmt]
            val = {
                "IFUDESIGN": g.ifudsgn, "PLATEID": g.plate, "DESIGNID": g.plate + 500, "CARTID": 3, "MJD": 57000,
                "EXPTIME": 900.0, "IFURA": g.ifura, "IFUDEC": g.ifudec, "CENRA": g.ifura + 0.8, "CENDEC": g.ifudec - 0.1,
                "MNGTARG1": 2336, "SEEING": 1.4, "TRANSPAR": 0.83, "AIRMASS": 1.05, "PSFFAC": 1.0, "EAMFIT_A": 1.0,
            }.get(name, 0)  # fmt: skip
            arr = np.full(nexp, val, dtype=dtype)
            if name == "SET":
                arr = (np.arange(nexp) // 3).astype(dtype)
        cols.append(fits.Column(name=name, format=fmt, array=arr))
    hdu = fits.BinTableHDU.from_columns(cols, name="OBSINFO")
    return hdu


def _correl_hdu(name: str, inside: np.ndarray, bbwave: float, bbindex: int):
    """Sparse spaxel correlation matrix at a broad-band wavelength, as the DRP
    stores it: (INDXI_C1, INDXI_C2, INDXJ_C1, INDXJ_C2, RHOIJ) for pairs within
    2.5 spaxels, with a Gaussian fall-off (Law et al. 2016: rho ~ exp(-d^2/2/1.9^2))."""
    from astropy.io import fits

    ys, xs = np.nonzero(inside)
    rows = []
    for dy in range(-2, 3):
        for dx in range(0, 3):
            if dx == 0 and dy <= 0:
                continue
            d2 = dx * dx + dy * dy
            if d2 > 6.25:
                continue
            x2, y2 = xs + dx, ys + dy
            ok = (x2 < inside.shape[1]) & (y2 >= 0) & (y2 < inside.shape[0])
            ok[ok] = inside[y2[ok], x2[ok]]
            rows.append((xs[ok], ys[ok], x2[ok], y2[ok], np.full(ok.sum(), np.exp(-d2 / (2 * 1.9**2)))))
    c = [np.concatenate([r[k] for r in rows]) for k in range(5)]
    n = inside.size
    hdu = fits.BinTableHDU.from_columns(
        [
            fits.Column(name="INDXI_C1", format="J", array=c[0].astype("i4")),
            fits.Column(name="INDXI_C2", format="J", array=c[1].astype("i4")),
            fits.Column(name="INDXJ_C1", format="J", array=c[2].astype("i4")),
            fits.Column(name="INDXJ_C2", format="J", array=c[3].astype("i4")),
            fits.Column(name="RHOIJ", format="D", array=c[4]),
        ],
        name=name,
    )
    hdu.header["BBWAVE"] = (bbwave, "Wavelength (Angstroms)")
    hdu.header["BBINDEX"] = (bbindex, "Slice number")
    hdu.header["COVTYPE"] = "Correlation"
    hdu.header["COVSHAPE"] = f"({n},{n})"
    return hdu


def spectral_resolution(wave: np.ndarray) -> np.ndarray:
    """MaNGA-like resolving power R(lambda): ~1400 at 3600 A to ~2600 at 10300 A."""
    return 1400.0 + 1200.0 * (wave - 3600.0) / 6700.0


def galaxy_pixel_offsets(g: GalaxyParams, n: int) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Sky offsets (arcsec) of every spaxel centre from the galaxy centre on an
    n x n cube, through the cube's TAN WCS; also the centre's (x, y) pixel."""
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.crpix = [n / 2.0 + 1.0, n / 2.0 + 1.0]
    w.wcs.crval = [g.ifura, g.ifudec]
    w.wcs.cd = [[-0.000138889, 0.0], [0.0, 0.000138889]]
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    xc, yc = (float(v) for v in w.world_to_pixel_values(g.objra, g.objdec))
    yy, xx = np.mgrid[:n, :n].astype(float)
    # +x on the sky is west (CD1_1 < 0); the model geometry only needs offsets
    return (xx - xc) * SPAXEL_ARCSEC, (yy - yc) * SPAXEL_ARCSEC, xc, yc


def build_logcube(
    g: GalaxyParams,
    lines: LineList,
    rng: np.random.Generator,
    *,
    drp3qual: int = 0,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
):
    """Render galaxy ``g`` into an ``astropy.io.fits.HDUList`` laid out exactly as a
    DR17 LOGCUBE (24 HDUs in order, DRP header keys, (4563, NY, NX) arrays).

    ``arrays`` = (flux, ivar, mask) replaces the rendered FLUX/IVAR/MASK (e.g. to
    put real MaNGA spectra into a cube with the real headers); each must be
    (4563, n, n) for the IFU size of ``g``.
    """
    from astropy.io import fits

    n = IFU_CUBE_SIZE[g.ifusize]
    wave = log_wave_grid()
    inside = hexagon_mask(n, n, IFU_DIAMETER_ARCSEC[g.ifusize])
    if arrays is None:
        dx, dy, _, _ = galaxy_pixel_offsets(g, n)
        model, star_map = render_model(g, wave, dx, dy, lines)
        model = observed_model(model, wave, g)
        # coverage: fewer fibre-exposures on the rim of the footprint (LOWCOV there)
        from scipy.ndimage import binary_erosion

        core = binary_erosion(inside, iterations=2)
        coverage = np.where(core, 1.0, np.where(inside, 0.5, 0.0)).astype(np.float32)
        flux, ivar = realise_noise(model, sky_sigma(wave, g.sky_sigma), coverage, g.gain, rng, g.correlated_noise)
        peak = float(model[:, inside].max()) if inside.any() else 1.0
        del model
        flux = quantize_step(flux, float(1.0 / np.sqrt(ivar[:, inside].max())))
        outside = ~inside
        flux[:, outside] = 0.0
        ivar[:, outside] = 0.0
        mask2d = np.zeros((n, n), dtype=np.int32)
        mask2d[outside] = DRP3PixMask.NOCOV | DRP3PixMask.DONOTUSE
        mask2d[inside & ~core] |= DRP3PixMask.LOWCOV
        mask2d[star_map & inside] |= DRP3PixMask.FORESTAR | DRP3PixMask.DONOTUSE
        yy, xx = np.mgrid[:n, :n].astype(float)
        dead, bad, drng = instrument_defects(g, xx, yy, n, inside, NWAVE)
        mask2d[dead] |= DRP3PixMask.DEADFIBER | DRP3PixMask.DONOTUSE
        flux[:, dead] = 0.0
        ivar[:, dead] = 0.0
        mask = np.broadcast_to(mask2d, flux.shape).copy()
        if bad.any():
            mask[bad] |= DRP3PixMask.DONOTUSE
            ivar[bad] = 0.0
            flux[bad] = spike_values(drng, int(bad.sum()), peak)
    else:
        flux, ivar, mask = arrays
        if flux.shape != (NWAVE, n, n):
            raise ValueError(f"arrays must be ({NWAVE}, {n}, {n}) for a {g.ifusize}-fibre IFU, got {flux.shape}")

    keys = _obs_keys(g, rng)
    nexp = int(dict((k, v) for k, v, _ in keys)["NEXP"])
    if drp3qual:
        keys = [(k, drp3qual if k == "DRP3QUAL" else v, c) for k, v, c in keys]
    primary = fits.PrimaryHDU()
    for k, v, c in keys:
        primary.header[k] = (v, c)

    def cube_header(extname: str, cls2: str, extra: list[tuple[str, object, str]]) -> fits.Header:
        h = fits.Header()
        for k, v, c in extra:
            h[k] = (v, c)
        h["HDUCLASS"] = ("SDSS", "SDSS format class")
        h["HDUCLAS1"] = "CUBE"
        h["HDUCLAS2"] = cls2
        return h

    spectral = [
        ("CTYPE3", "WAVE-LOG", ""),
        ("CRPIX3", 1, "Starting pixel (1-indexed)"),
        ("CRVAL3", CRVAL3, "Central wavelength of first pixel"),
        ("CD3_3", CD3_3, "Initial dispersion per pixel"),
        ("CUNIT3", "Angstrom", ""),
    ]
    hflux = cube_header("FLUX", "DATA", keys + spectral + _spatial_wcs_keys(g, n))
    hflux["ERRDATA"] = ("IVAR", "Error extension name")
    hflux["QUALDATA"] = ("MASK", "Mask extension name")
    hivar = cube_header("IVAR", "ERROR", [])
    hivar["HDUCLAS3"] = ("INVMSE", "Inverse variance")
    hivar["SCIDATA"] = ("FLUX", "Science extension name")
    hivar["QUALDATA"] = ("MASK", "Mask extension name")
    hmask = cube_header("MASK", "QUALITY", [])
    hmask["HDUCLAS3"] = "FLAG64BIT"
    hmask["SCIDATA"] = ("FLUX", "Science extension name")
    hmask["ERRDATA"] = ("IVAR", "Error extension name")

    res = spectral_resolution(wave)
    lsf_post = (wave / res / 2.3548).astype(np.float32)
    lsf_pre = (lsf_post * 0.95).astype(np.float32)
    lsf_post_cube = np.where(inside[None], lsf_post[:, None, None], np.float32(0)).astype(np.float32)
    lsf_pre_cube = np.where(inside[None], lsf_pre[:, None, None], np.float32(0)).astype(np.float32)

    hdus = [
        primary,
        fits.ImageHDU(flux, header=hflux, name="FLUX"),
        fits.ImageHDU(ivar, header=hivar, name="IVAR"),
        fits.ImageHDU(mask, header=hmask, name="MASK"),
        fits.ImageHDU(lsf_post_cube, name="LSFPOST"),
        fits.ImageHDU(lsf_pre_cube, name="LSFPRE"),
        fits.ImageHDU(wave, name="WAVE"),
        fits.ImageHDU(res, name="SPECRES"),
        fits.ImageHDU(np.full_like(res, 50.0), name="SPECRESD"),
        fits.ImageHDU(res * 1.05, name="PRESPECRES"),
        fits.ImageHDU(np.full_like(res, 52.0), name="PRESPECRESD"),
        _obsinfo_hdu(g, nexp),
    ]
    bands = {"G": (4702.5, 4000, 5500), "R": (6176.58, 5500, 6900), "I": (7496.12, 6900, 8200), "Z": (8946.71, 8200, 9800)}
    img_keys = _spatial_wcs_keys(g, n) + [
        ("IFURA", g.ifura, "IFU R.A. (J2000 deg.)"),
        ("IFUDEC", g.ifudec, "IFU Dec. (J2000 deg.)"),
        ("OBJRA", g.objra, "Object R.A. (J2000 deg.)"),
        ("OBJDEC", g.objdec, "Object Dec. (J2000 deg.)"),
        ("BSCALE", 1.0, "Flux unit scaling"),
        ("BZERO", 0.0, "Flux zeropoint"),
        ("BUNIT", "nanomaggies/pixel", ""),
    ]
    fwhm = {k: v for k, v, _ in keys if k.endswith("FWHM")}
    for b, (_, lo, hi) in bands.items():
        sel = (wave >= lo) & (wave < hi)
        img = (flux[sel].mean(axis=0) * 0.3).astype(np.float32)  # ~nanomaggies per spaxel for 1e-17 flux density
        h = fits.Header()
        for k, v, c in img_keys:
            h[k] = (v, c)
        h[f"{b}FWHM"] = (fwhm[f"{b}FWHM"], f"Reconstructed FWHM in {b.lower()}-band (arcsec)")
        hdus.append(fits.ImageHDU(img, header=h, name=f"{b}IMG"))
    yy, xx = np.mgrid[:n, :n].astype(float)
    for b in bands:
        sig = fwhm[f"{b}FWHM"] / 2.3548 / SPAXEL_ARCSEC
        psf = np.exp(-0.5 * (((xx - n / 2.0) ** 2 + (yy - n / 2.0) ** 2) / sig**2))
        h = fits.Header()
        for k, v, c in img_keys:
            h[k] = (v, c)
        h[f"{b}FWHM"] = (fwhm[f"{b}FWHM"], f"Reconstructed FWHM in {b.lower()}-band (arcsec)")
        hdus.append(fits.ImageHDU((psf / psf.sum()).astype(np.float32), header=h, name=f"{b}PSF"))
    for b, (bbwave, _, _) in bands.items():
        bbindex = int(np.argmin(np.abs(wave - bbwave)))
        hdus.append(_correl_hdu(f"{b}CORREL", inside, bbwave, bbindex))
    return fits.HDUList(hdus)


def write_fits_gz(hdul, path: str | os.PathLike, level: int = 1) -> None:
    """Write an HDUList as ``.fits.gz`` (single-member gzip, like the DRP's files)
    with ISA-L's fast deflate, atomically (temporary name, then rename). The gzip
    header's mtime is 0, so the same galaxy gives the same bytes."""
    from isal import igzip

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as raw, igzip.IGzipFile(filename="", fileobj=raw, mode="wb", compresslevel=level, mtime=0) as fh:
            hdul.writeto(fh)
