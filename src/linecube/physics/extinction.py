"""Milky Way (foreground) extinction of MaNGA cubes.

DRP cubes are **not** corrected for Galactic extinction: the primary header of a
LOGCUBE carries ``EBVGAL`` (the SFD98 E(B-V) towards the object) and the drpall
the same value as ``ebvgal``. The MaNGA DAP corrects with a CCM89 / O'Donnell
(1994) law with R_V = 3.1 before anything else (Westfall et al. 2019); linecube
does the same at extraction, in the observed frame, through the astropy-affiliated
``dust-extinction`` package (Gordon 2024): ``CCM89`` (Cardelli, Clayton & Mathis
1989), ``O94`` (O'Donnell 1994) or ``F99`` (Fitzpatrick 1999).

At E(B-V) = 0.15 the correction changes [OII]3727/Halpha by ~37 % and
Hbeta/Halpha by ~13 %.
"""

from __future__ import annotations

import numpy as np

#: extinction laws linecube offers (names of ``dust_extinction.parameter_averages``)
LAWS: tuple[str, ...] = ("CCM89", "O94", "F99")
#: R_V of the Milky Way's diffuse interstellar medium
RV_MILKY_WAY = 3.1


def a_lambda_over_ebv(wave: np.ndarray, law: str = "CCM89", rv: float = RV_MILKY_WAY) -> np.ndarray:
    """A(lambda) / E(B-V) (magnitudes per magnitude) at vacuum wavelengths ``wave``
    (Angstrom, any shape), float64: R_V x A(lambda)/A(V) of the law."""
    import astropy.units as u
    from dust_extinction import parameter_averages

    if law not in LAWS:
        raise ValueError(f"unknown Galactic extinction law {law!r}; choose one of {', '.join(LAWS)}")
    w = np.asarray(wave, dtype=np.float64)
    model = getattr(parameter_averages, law)(Rv=float(rv))
    return float(rv) * np.asarray(model(w.ravel() * u.AA), dtype=np.float64).reshape(w.shape)


def correction_factor(wave: np.ndarray, ebv: float, law: str = "CCM89", rv: float = RV_MILKY_WAY) -> np.ndarray:
    """The factor 10^(0.4 A_lambda) (>= 1, float64, shape of ``wave``) that multiplies
    observed flux to undo foreground extinction E(B-V) = ``ebv`` (mag); 1 for
    ebv <= 0 or not finite. IVAR is divided by its square."""
    w = np.asarray(wave, dtype=np.float64)
    if not (np.isfinite(ebv) and ebv > 0):
        return np.ones(w.shape)
    return 10.0 ** (0.4 * float(ebv) * a_lambda_over_ebv(w, law, rv))


def deredden(
    flux: np.ndarray, ivar: np.ndarray, wave: np.ndarray, ebv: float, law: str = "CCM89", rv: float = RV_MILKY_WAY
) -> tuple[np.ndarray, np.ndarray]:
    """Correct a cube (wavelength, y, x) for foreground extinction: flux x f,
    ivar / f^2 with f = :func:`correction_factor` of each channel's observed
    wavelength ``wave`` (Angstrom, (wavelength,)). Returns new float32 arrays."""
    f = correction_factor(wave, ebv, law, rv).astype(np.float32)[:, None, None]
    return (flux * f).astype(np.float32), (ivar / (f * f)).astype(np.float32)


def redden(flux: np.ndarray, wave: np.ndarray, ebv: float, law: str = "CCM89", rv: float = RV_MILKY_WAY) -> np.ndarray:
    """Apply foreground extinction to a model cube (wavelength, y, x) (the
    simulator): flux / :func:`correction_factor`, float32."""
    f = correction_factor(wave, ebv, law, rv).astype(np.float32)[:, None, None]
    return (flux / f).astype(np.float32)


__all__ = ["LAWS", "RV_MILKY_WAY", "a_lambda_over_ebv", "correction_factor", "deredden", "redden"]
