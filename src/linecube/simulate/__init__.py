"""A synthetic MaNGA survey written in the real DR17 formats.

``simulate_survey`` writes, under ``out`` (a ``redux_dir``):

* ``{drpver}/drpall-{drpver}.fits``: the drpall catalogue (HDU 1 ``MANGA`` with the
  DR17 column names and dtypes, HDU 2 ``MASTAR``);
* ``{drpver}/{plate}/stack/manga-{plate}-{ifudsgn}-LOGCUBE.fits.gz``: LOGCUBEs with
  all 24 HDUs in DR17 order and the DRP header keys;
* ``agn.csv``: mangaid, plateifu and boolean wise_agn, bat_agn, radio_agn,
  broad_agn, like the DR17 MaNGA AGN catalogue (AGN rows only);
* ``truth.csv``: plateifu, class, is_anomaly, anomaly_type and every physical
  parameter the simulator draws (:mod:`linecube.simulate.truth`).

Storage: FLUX is rounded to a power-of-two step <= sigma_min/16 and IVAR to 8
significant bits (as lossy FITS tile compression would); both add noise far below
the simulated noise and halve the files: the bundled sample's 100 LOGCUBEs take 1.4 GB.

Galaxy model (defaults from ``docs/astro-facts.md``): an exponential disc of
ionised gas on a tanh rotation curve, optionally a nuclear component with AGN /
LINER line ratios, Case-B Balmer ratios with dust, fixed atomic doublet ratios, a
stellar continuum with a 4000 A break and Balmer and metal absorption whose stars
rotate with the disc (``STELLAR_ROTATION`` of the gas's amplitude), all convolved with a
2.5" FWHM PSF, observed on the DRP log-lambda grid at redshift z. Noise: sky
(blue end and sky lines noisier) plus a Poisson-like term, IVAR = 1/sigma^2.

The same model renders on any wavelength grid (``render_model``), so the scale mode
can evaluate only the 190 channels that extraction keeps.
"""

from linecube.io.manga import NWAVE
from linecube.simulate.cubes import emission_line_cube, simulate_cubes_h5
from linecube.simulate.drpall import DRPALL_COLUMNS, drpall_row, write_drpall
from linecube.simulate.galaxy import (
    ANOMALY_TYPES,
    CLASS_PROBS,
    CLASSES,
    HELD_OUT_TYPES,
    IFU_PROBS,
    IFU_SIZES,
    PSF_FWHM_ARCSEC,
    SIGMA_INST_KMS,
    SURVEY_STYLES,
    Component,
    GalaxyParams,
    SurveyStyle,
    draw_galaxy,
    sky_sigma,
    with_anomaly,
)
from linecube.simulate.logcube import build_logcube, galaxy_pixel_offsets, spectral_resolution, write_fits_gz
from linecube.simulate.ratios import CASE_B, Ratios, draw_ratios, line_strengths
from linecube.simulate.render import continuum_shape, hexagon_mask, quantize_mantissa, quantize_step, realise_noise, render_model
from linecube.simulate.survey import plan_survey, simulate_survey

__all__ = [
    "NWAVE",
    "ANOMALY_TYPES",
    "HELD_OUT_TYPES",
    "CASE_B",
    "CLASSES",
    "CLASS_PROBS",
    "Component",
    "DRPALL_COLUMNS",
    "GalaxyParams",
    "IFU_PROBS",
    "IFU_SIZES",
    "PSF_FWHM_ARCSEC",
    "Ratios",
    "SIGMA_INST_KMS",
    "SURVEY_STYLES",
    "SurveyStyle",
    "build_logcube",
    "continuum_shape",
    "draw_galaxy",
    "draw_ratios",
    "drpall_row",
    "emission_line_cube",
    "galaxy_pixel_offsets",
    "hexagon_mask",
    "line_strengths",
    "plan_survey",
    "quantize_mantissa",
    "quantize_step",
    "realise_noise",
    "render_model",
    "simulate_cubes_h5",
    "simulate_survey",
    "sky_sigma",
    "spectral_resolution",
    "with_anomaly",
    "write_drpall",
    "write_fits_gz",
]
