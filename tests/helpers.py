"""Helpers that write LOGCUBEs and drpall files for tests (real formats only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from linecube.manga import logcube_path
from linecube.simulate import build_logcube, drpall_row, write_drpall, write_fits_gz


def write_cube(redux: Path, g, lines, *, arrays=None, edit=None, drpver="v3_1_1") -> Path:
    """Write galaxy ``g`` as a LOGCUBE under ``redux``; ``edit(hdul)`` may change it first."""
    hl = build_logcube(g, lines, np.random.default_rng([g.seed, 1]), arrays=arrays)
    if edit is not None:
        hl = edit(hl) or hl
    path = logcube_path(redux, drpver, g.plate, g.ifudsgn)
    write_fits_gz(hl, path)
    return path


def write_drpall_for(redux: Path, galaxies, drpver="v3_1_1", **overrides) -> Path:
    path = Path(redux) / drpver / f"drpall-{drpver}.fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_drpall([drpall_row(g, **overrides.get(g.plateifu, {})) for g in galaxies], path)
    return path
