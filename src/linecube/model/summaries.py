"""Summary head (``summary_weight`` > 0): a Dense layer on the physical latent
predicts summaries of the input cube itself (:func:`cube_summaries`: line ratios
over the image and within the nucleus, H-alpha's velocity spread, widths and
shape), batch-standardised; their mean
squared error (:func:`summary_loss`) times the weight and Eq. 1 joins the loss.
The head is trained and saved with the model and read by nothing downstream.
"""

from __future__ import annotations

import numpy as np
from keras import ops


def _windows(x, n_lines: int, bins: int):
    """(B, L, bins, H, W) view of a (B, T, H, W, C) tensor of either layout."""
    x = ops.cast(x, "float32")
    h, w = ops.shape(x)[2], ops.shape(x)[3]
    if ops.shape(x)[-1] == bins and ops.shape(x)[1] == n_lines:  # lines layout: (B, L, H, W, bins)
        return ops.transpose(x, (0, 1, 4, 2, 3))
    return ops.reshape(x, (-1, n_lines, bins, h, w))  # wavelength layout: (B, L * bins, H, W, 1)


def _edge_continuum(f, bins: int):
    """Each window's continuum, (B, L, H, W), of windows (B, L, bins, H, W): the mean of
    its two outermost bins per side."""
    return (f[:, :, 0] + f[:, :, 1] + f[:, :, bins - 2] + f[:, :, bins - 1]) / 4.0


def _weighted_mean(v, wgt, axes):
    return ops.sum(v * wgt, axis=axes) / ops.maximum(ops.sum(wgt, axis=axes), 1e-12)


#: names of the columns of :func:`cube_summaries` after the line ratios
SUMMARY_TAIL = (
    "ref_centroid_spread",
    "ref_width_integrated",
    "ref_width_spaxel",
    "ref_rms_radius",
    "ref_concentration",
    "ref_ellipticity",
)


def n_summaries(n_lines: int, nucleus_radius: float = 0.0) -> int:
    """Columns of :func:`cube_summaries`: the line ratios, the nuclear ones when
    ``nucleus_radius`` > 0, and :data:`SUMMARY_TAIL`."""
    return (n_lines - 1) * (2 if nucleus_radius > 0 else 1) + len(SUMMARY_TAIL)


def cube_summaries(x, n_lines: int, bins: int, ref_line: int, nucleus_radius: float = 0.0):
    """Summary statistics of each galaxy, (B, :func:`n_summaries`), from the model's input
    itself (either layout, model units; nothing from a truth table): the targets of the
    summary head (``model.summary_weight``). Windows are continuum-subtracted (the mean
    of their two outermost bins per side). Columns: asinh(10 F_line / F_ref) for every
    line but the reference (H-alpha), F the window flux summed over the image; with
    ``nucleus_radius`` > 0 (spaxels) the same ratios of the nucleus, F summed within
    that radius of H-alpha's flux-weighted centre (3 spaxels = 1.5 arcsec at MaNGA's
    0.5-arcsec spaxels: the 3-arcsec aperture of the SDSS fibre spectra that BPT
    classes are conventionally assigned from); then, of the reference line (see
    :data:`SUMMARY_TAIL`): the flux-weighted spread over
    spaxels of the per-spaxel centroid (bins; the velocity field's amplitude), the
    second-moment width of the galaxy's summed spectrum and the flux-weighted mean of
    the per-spaxel widths (bins; rotation broadens the first, not the second), the
    flux-weighted rms radius (spaxels), the share of the flux within 3 spaxels of the
    image centre and the ellipticity of the flux's second moments (inclination). All
    are unchanged by the training augmentation's flips and rotations; all but the
    concentration also by its shifts (up to the crop's edge)."""
    f = _windows(x, n_lines, bins)  # (B, L, K, H, W)
    f = f - _edge_continuum(f, bins)[:, :, None]
    keep = [i for i in range(n_lines) if i != ref_line]

    def line_ratios(flux):  # (B, L) -> (B, L - 1): asinh(10 F_line / F_ref)
        ref = ops.maximum(flux[:, ref_line : ref_line + 1], 1e-3)
        return ops.arcsinh(10.0 * ops.take(flux, keep, axis=1) / ref)

    ratios = line_ratios(ops.sum(f, axis=(2, 3, 4)))
    fr = ops.relu(f[:, ref_line])  # (B, K, H, W)
    k = ops.convert_to_tensor(np.arange(bins, dtype=np.float32).reshape(1, bins, 1, 1))
    sflux = ops.sum(fr, axis=1)  # (B, H, W)
    c = ops.sum(fr * k, axis=1) / ops.maximum(sflux, 1e-6)
    sw = ops.sqrt(ops.maximum(ops.sum(fr * ops.square(k - c[:, None]), axis=1) / ops.maximum(sflux, 1e-6), 0.0))
    wgt = sflux
    cm = _weighted_mean(c, wgt, (1, 2))
    spread = ops.sqrt(ops.maximum(_weighted_mean(ops.square(c - cm[:, None, None]), wgt, (1, 2)), 0.0))
    spec = ops.sum(fr, axis=(2, 3))  # (B, K)
    kk = k[:, :, 0, 0]
    mu = ops.sum(spec * kk, axis=1) / ops.maximum(ops.sum(spec, axis=1), 1e-6)
    width = ops.sqrt(
        ops.maximum(ops.sum(spec * ops.square(kk - mu[:, None]), axis=1) / ops.maximum(ops.sum(spec, axis=1), 1e-6), 0.0)
    )
    width_sp = _weighted_mean(sw, wgt, (1, 2))
    h, w = int(ops.shape(x)[2]), int(ops.shape(x)[3])
    gy, gx = np.meshgrid(
        np.arange(h, dtype=np.float32) - (h - 1) / 2.0, np.arange(w, dtype=np.float32) - (w - 1) / 2.0, indexing="ij"
    )
    yy, xx = ops.convert_to_tensor(gy[None]), ops.convert_to_tensor(gx[None])
    my, mx = _weighted_mean(yy, wgt, (1, 2)), _weighted_mean(xx, wgt, (1, 2))
    dy, dx = yy - my[:, None, None], xx - mx[:, None, None]
    iyy, ixx, ixy = (_weighted_mean(v, wgt, (1, 2)) for v in (dy * dy, dx * dx, dy * dx))
    rms = ops.sqrt(ops.maximum(iyy + ixx, 0.0))
    ell = ops.sqrt(ops.square(ixx - iyy) + 4.0 * ops.square(ixy)) / ops.maximum(ixx + iyy, 1e-6)
    core = ops.convert_to_tensor((np.hypot(gy, gx) < 3.0).astype(np.float32)[None])
    conc = _weighted_mean(core, wgt, (1, 2))
    tail = ops.stack([spread, width, width_sp, rms, conc, ell], axis=1)
    if nucleus_radius <= 0:
        return ops.concatenate([ratios, tail], axis=1)
    r2 = ops.square(yy - my[:, None, None]) + ops.square(xx - mx[:, None, None])  # (B, H, W)
    aperture = ops.cast(r2 < float(nucleus_radius) ** 2, "float32")[:, None]  # (B, 1, H, W)
    nuc_ratios = line_ratios(ops.sum(ops.sum(f, axis=2) * aperture, axis=(2, 3)))
    return ops.concatenate([ratios, nuc_ratios, tail], axis=1)


#: the kinematic columns of :data:`SUMMARY_TAIL`: the velocity field's amplitude and the line widths
KINEMATIC_SUMMARIES = ("ref_centroid_spread", "ref_width_integrated", "ref_width_spaxel")


def line_dominance(x, n_lines: int, bins: int, ref_line: int):
    """How much of the reference line's window is line, (B,) in [0, 1]: its
    continuum-subtracted flux (signed, so that the noise cancels; 0 when negative)
    over its total |flux|, summed over the image (either layout, model units). Near
    0 for a quiet galaxy, whose centroids are the noise's; the weight of each galaxy
    in the summary head's kinematic term."""
    w = _windows(x, n_lines, bins)
    f, cont = w[:, ref_line], _edge_continuum(w, bins)[:, ref_line]  # (B, K, H, W), (B, H, W)
    line = ops.sum(f - cont[:, None], axis=(1, 2, 3))
    return ops.clip(line / ops.maximum(ops.sum(ops.abs(f), axis=(1, 2, 3)), 1e-6), 0.0, 1.0)


def summary_loss(pred, target, kinematic_weight: float = 0.0, galaxy_weight=None):
    """Mean squared error of the summary head's prediction (B, F) against the
    batch-standardised summaries (B, F) (no gradient through the targets), plus
    ``kinematic_weight`` times that of the :data:`KINEMATIC_SUMMARIES` columns alone
    (3 of F ~ 42: without it the velocity field is a small share of the term),
    averaged over galaxies with ``galaxy_weight`` (B,) (:func:`line_dominance`: a
    quiet galaxy's velocity field is noise); 0 for batches of fewer than four galaxies."""
    t = ops.stop_gradient(ops.cast(target, "float32"))
    t = (t - ops.mean(t, axis=0, keepdims=True)) / (ops.std(t, axis=0, keepdims=True) + 1e-3)
    n = ops.cast(ops.shape(t)[0], "float32")
    se = ops.square(ops.cast(pred, "float32") - t)
    loss = ops.mean(se)
    if kinematic_weight > 0:
        f = int(ops.shape(se)[1])
        cols = [f - len(SUMMARY_TAIL) + SUMMARY_TAIL.index(c) for c in KINEMATIC_SUMMARIES]
        kin = ops.mean(ops.take(se, cols, axis=1), axis=1)  # (B,)
        if galaxy_weight is None:
            loss = loss + float(kinematic_weight) * ops.mean(kin)
        else:
            gw = ops.stop_gradient(ops.cast(galaxy_weight, "float32"))
            loss = loss + float(kinematic_weight) * ops.sum(gw * kin) / ops.maximum(ops.sum(gw), 1e-6)
    return ops.where(n >= 4.0, loss, 0.0)
