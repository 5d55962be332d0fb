"""Scores combined by rank: :func:`gauss_ranks` turns each component into a
Gaussianised rank against the training galaxies' values of the same score (ECDF ->
probit, extrapolated linearly in robust-z beyond the reference's range); the
combined scores of :mod:`linecube.analysis.score` are their mean and maximum.
:func:`peer_gauss_ranks` ranks each galaxy against its peers (IFU bundle class x
whether H-alpha is detected), so that neither the footprint nor a quiet galaxy's
noise reads as an anomaly.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from linecube.analysis.residual import RobustZ


def gauss_rank(ref: np.ndarray, x: np.ndarray, self_in_ref: np.ndarray | None = None) -> np.ndarray:
    """A score as a Gaussianised rank against reference values: probit of the
    mid-rank ECDF of the reference, extended beyond the reference's range by
    the value's robust z past the extreme (so the largest anomalies stay ordered).

    ``self_in_ref`` (bool per value of ``x``): the value is itself one of the
    reference values and is ranked against the others (leave-one-out), so a
    training galaxy at the top of the reference is not tied with the rest."""
    from scipy.stats import norm

    ref = np.sort(np.asarray(ref, dtype=np.float64))
    x = np.asarray(x, dtype=np.float64)
    own = np.zeros(len(x), bool) if self_in_ref is None else np.asarray(self_in_ref, bool)
    n = len(ref)
    m = np.where(own, n - 1, n).astype(np.float64)  # reference size without the value itself
    lo_n = np.searchsorted(ref, x, side="left").astype(np.float64)
    hi_n = np.searchsorted(ref, x, side="right") - own.astype(np.float64)
    p = (0.5 * (lo_n + hi_n) + 0.5) / (m + 1)
    g = norm.ppf(np.clip(p, 1e-12, 1 - 1e-12))
    spread = float(RobustZ.fit(ref).spread[0])
    # the extremes of the reference without the value itself
    top = np.where(own & (x >= ref[-1]) & (n > 1), ref[-2] if n > 1 else ref[-1], ref[-1])
    bot = np.where(own & (x <= ref[0]) & (n > 1), ref[1] if n > 1 else ref[0], ref[0])
    g_top, g_bot = norm.ppf((m + 0.5) / (m + 1)), norm.ppf(0.5 / (m + 1))
    g = np.where(x > top, g_top + (x - top) / spread, g)
    g = np.where(x < bot, g_bot - (bot - x) / spread, g)
    return g


def gauss_ranks(components: Mapping[str, np.ndarray], ref_rows: np.ndarray) -> np.ndarray:
    """(n_components, N): each component's Gaussianised rank against its own
    ``ref_rows`` values (reference rows ranked leave-one-out)."""
    own = np.zeros(len(next(iter(components.values()))), bool)
    own[np.asarray(ref_rows, dtype=int)] = True
    return np.stack([gauss_rank(v[ref_rows], v, own) for v in components.values()])


#: Halpha S/N (correlated noise) that separates "quiet" (absorption-line) galaxies
#: from line emitters in :func:`peer_groups`
QUIET_HA_SNR = 5.0

#: fewest reference galaxies a peer group needs to be ranked against on its own
MIN_PEERS = 12


def peer_groups(ifu_fibres: np.ndarray, ha_snr: np.ndarray) -> np.ndarray:
    """Each galaxy's peer group (N,) int: its IFU bundle class (19; 37; 61 fibres or
    more) x whether its Halpha is detected (S/N >= :data:`QUIET_HA_SNR`). The
    bundle is how the instrument framed the galaxy (a footprint read as
    structure is not an anomaly); a quiet galaxy's windows are mostly noise and
    continuum, unlike an emitter's. Unknown bundles (0) form their own class."""
    f = np.asarray(ifu_fibres)
    bundle = np.select([f == 19, f == 37, f >= 61], [1, 2, 3], 0)
    return bundle * 2 + (np.asarray(ha_snr) >= QUIET_HA_SNR).astype(int)


def peer_gauss_ranks(
    components: Mapping[str, np.ndarray], ref_rows: np.ndarray, groups: np.ndarray | None, min_peers: int = MIN_PEERS
) -> np.ndarray:
    """Like :func:`gauss_ranks`, but each galaxy ranked against the reference
    galaxies of its own peer group (:func:`peer_groups`): against those of its
    emission class alone when its group has fewer than ``min_peers``, against all
    when that class has too few too. ``groups`` None: :func:`gauss_ranks`."""
    if groups is None:
        return gauss_ranks(components, ref_rows)
    ref_rows = np.asarray(ref_rows, dtype=int)
    groups = np.asarray(groups)
    n = len(groups)
    own = np.zeros(n, bool)
    own[ref_rows] = True
    ref_groups = groups[ref_rows]
    emit = groups % 2
    # the reference set each galaxy is ranked against: its group's, else its emission
    # class's, else all (counts per group once; a reference galaxy does not count itself)
    n_group = {g: int((ref_groups == g).sum()) for g in np.unique(groups)}
    n_emit = {e: int((ref_groups % 2 == e).sum()) for e in (0, 1)}
    need = min_peers + own.astype(int)
    by_group = np.array([n_group[g] for g in groups]) >= need
    by_emit = ~by_group & (np.array([n_emit[e] for e in emit]) >= need)
    out = np.empty((len(components), n))
    sets = [(("group", int(g)), by_group & (groups == g), ref_rows[ref_groups == g]) for g in n_group]
    sets += [(("emission", e), by_emit & (emit == e), ref_rows[ref_groups % 2 == e]) for e in (0, 1)]
    sets.append((("all", 0), ~by_group & ~by_emit, ref_rows))
    for _, sel, refs in sets:
        rows = np.flatnonzero(sel)
        if not len(rows):
            continue
        for c, v in enumerate(components.values()):
            out[c, rows] = gauss_rank(v[refs], v[rows], own[rows] & np.isin(rows, refs))
    return out
