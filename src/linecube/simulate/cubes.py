"""The scale mode: survey-scale synthetic data without 2 TB of LOGCUBEs.

``simulate_cubes_h5`` evaluates the simulator's galaxy models (the same
:func:`linecube.simulate.render_model`) only on the 190 wavelengths extraction
keeps (the 10-bin windows of the DRP log grid around each redshifted line) and
on the 32x32 crop around each galaxy, adds the same noise model, and streams the
cubes into the cubes.h5 layout, or into one file per plate in the layout that
``extract_plate`` writes (for benchmarking assembly). Rows are in plate-IFU
order. 9,000 galaxies take a few minutes on 2 cores.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from linecube.data.windows import window_centres, window_indices
from linecube.io.atomic import atomic_path, write_csv_atomic
from linecube.io.formats import CubeLayout, VoxelFlag, clean_masked, create_cube_file, load_lines, write_cube_row
from linecube.io.manga import DR17_DRPVER, IFU_CUBE_SIZE, IFU_DIAMETER_ARCSEC, SPAXEL_ARCSEC, log_wave_grid
from linecube.physics.noise import CORREL_SIGMA_SPAXELS
from linecube.simulate.galaxy import sky_sigma
from linecube.simulate.logcube import galaxy_pixel_offsets
from linecube.simulate.render import hexagon_mask, instrument_defects, observed_model, realise_noise, render_model
from linecube.simulate.survey import plan_survey, worker_context
from linecube.simulate.truth import truth_table

PAD = 8  # spaxels rendered beyond the crop on each side (PSF smoothing edge)


def emission_line_cube(
    g,
    lines,
    layout: CubeLayout,
    grid: np.ndarray,
    rng: np.random.Generator,
    noise_free: bool = False,
) -> dict:
    """One galaxy's (190, 32, 32) flux/ivar/mask/wave as extraction would produce
    them from its LOGCUBE (same windows, same crop centre, same flags).
    ``noise_free``: flux is the noise-free model (ivar and mask unchanged, the
    same random draws): the truth a perfect reconstruction would return. The
    windows are placed from the catalogue redshift, flagged voxels are zeroed and
    the flux is corrected for the galaxy's Galactic E(B-V), as extraction does."""
    wave_idx = window_indices(window_centres(grid, lines.rest, g.z_cat), layout.window_bins)
    wave = grid[wave_idx]
    n = IFU_CUBE_SIZE[g.ifusize]
    dx_full, dy_full, xc, yc = galaxy_pixel_offsets(g, n)
    cx, cy = int(np.floor(xc + 0.5)), int(np.floor(yc + 0.5))
    c0 = layout.crop // 2
    size = layout.crop + 2 * PAD
    yy, xx = np.mgrid[:size, :size].astype(float)
    px = xx - PAD + (cx - c0)  # cube pixel of every rendered spaxel
    py = yy - PAD + (cy - c0)
    dx = (px - xc) * SPAXEL_ARCSEC
    dy = (py - yc) * SPAXEL_ARCSEC
    model, star = render_model(g, wave, dx, dy, lines)
    sl = (slice(None), slice(PAD, PAD + layout.crop), slice(PAD, PAD + layout.crop))
    model = observed_model(np.ascontiguousarray(model[sl]), wave, g)
    star = star[PAD : PAD + layout.crop, PAD : PAD + layout.crop]
    pxc, pyc = px[PAD : PAD + layout.crop, PAD : PAD + layout.crop], py[PAD : PAD + layout.crop, PAD : PAD + layout.crop]
    in_cube = (pxc >= 0) & (pxc < n) & (pyc >= 0) & (pyc < n)
    from scipy.ndimage import binary_erosion

    hexm = hexagon_mask(n, n, IFU_DIAMETER_ARCSEC[g.ifusize])
    core_full = binary_erosion(hexm, iterations=2)  # LOWCOV rim, as in build_logcube
    inside = np.zeros_like(in_cube)
    core = np.zeros_like(in_cube)
    iy, ix = pyc[in_cube].astype(int), pxc[in_cube].astype(int)
    inside[in_cube] = hexm[iy, ix]
    core[in_cube] = core_full[iy, ix]
    coverage = np.where(core, 1.0, np.where(inside, 0.5, 0.0)).astype(np.float32)
    flux, ivar = realise_noise(model, sky_sigma(wave, g.sky_sigma), coverage, g.gain, rng, g.correlated_noise)
    if noise_free:
        flux = model
    flux[:, ~inside] = 0.0
    ivar[:, ~inside] = 0.0
    m2 = np.zeros(inside.shape, np.uint8)
    m2[~in_cube] = VoxelFlag.OUTSIDE_CUBE
    m2[in_cube & ~inside] = VoxelFlag.DRP_UNUSABLE  # NOCOV | DONOTUSE
    m2[star & inside] = VoxelFlag.DRP_UNUSABLE  # FORESTAR | DONOTUSE
    dead, bad, _ = instrument_defects(g, pxc, pyc, n, inside, len(wave))
    m2[dead] = VoxelFlag.DRP_UNUSABLE  # DEADFIBER | DONOTUSE
    mask = np.broadcast_to(m2, flux.shape).copy()
    mask[bad] |= np.uint8(VoxelFlag.DRP_UNUSABLE)
    # what extraction does next (its default options): flagged voxels zeroed, Galactic extinction corrected
    clean_masked(flux, ivar, mask)
    if g.ebvgal > 0:
        from linecube.physics.extinction import deredden

        flux, ivar = deredden(flux, ivar, wave, g.ebvgal)
    return {
        "flux": flux,
        "ivar": ivar,
        "mask": mask,
        "wave": wave,
        "plateifu": g.plateifu,
        "mangaid": g.mangaid,
        "z": g.z_cat,
        "objra": g.objra,
        "objdec": g.objdec,
        "ebvgal": g.ebvgal,
        "correl_sigma": CORREL_SIGMA_SPAXELS if g.correlated_noise else float("nan"),
        "ifu_fibres": g.ifusize,
    }


def _render(args):
    g, lines_path, noise_free = args
    lines = load_lines(lines_path)
    rng = np.random.default_rng([g.seed, 1])
    return emission_line_cube(g, lines, CubeLayout(len(lines)), log_wave_grid(), rng, noise_free)


def simulate_cubes_h5(
    out: str | os.PathLike,
    n_galaxies: int,
    seed: int,
    *,
    anomaly_fraction: float = 0.06,
    per_plate: bool = False,
    threads: int = 1,
    lines_path=None,
    compression: str | None = "none",
    progress: bool = True,
    style: str = "default",
    galaxies: list | None = None,
    noise_free: bool = False,
    dr17_effects: bool = True,
) -> int:
    """Write ``n_galaxies`` emission-line cubes to ``out`` (a cubes.h5) or, with
    ``per_plate``, to ``out/{plate}.h5`` files; plus truth.csv and agn.csv next to it.

    ``galaxies`` (a list of :class:`linecube.simulate.GalaxyParams`, unique
    plate-IFUs) replaces the planned survey (``n_galaxies``, ``seed``,
    ``anomaly_fraction`` and ``style`` are then unused). ``noise_free``: write
    each galaxy's noise-free model as its flux (:func:`emission_line_cube`).
    ``dr17_effects``: as :func:`linecube.simulate.plan_survey`."""
    import h5py
    import pandas as pd
    from tqdm.auto import tqdm

    lines = load_lines(lines_path)
    layout = CubeLayout(len(lines))
    if galaxies is None:
        galaxies = plan_survey(n_galaxies, seed, anomaly_fraction, style, dr17_effects)
    gals = sorted(galaxies, key=lambda g: g.plateifu)
    out = Path(out)
    meta_dir = out if per_plate else out.parent
    meta_dir.mkdir(parents=True, exist_ok=True)
    by_plate: dict[int, list] = {}
    for g in gals:
        by_plate.setdefault(g.plate, []).append(g)
    jobs = [(g, lines_path, noise_free) for g in gals]
    bar = tqdm(total=len(gals), desc="simulate emission-line cubes", unit="cube", disable=not progress, file=sys.stderr)

    def rows():
        """Rendered cubes in order; at most 4 per worker in flight, so memory
        does not grow with the number of galaxies."""
        if threads > 1:
            from collections import deque
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(threads, mp_context=worker_context()) as pool:
                pending: deque = deque()
                for j in jobs:
                    pending.append(pool.submit(_render, j))
                    if len(pending) >= 4 * threads:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
        else:
            for j in jobs:
                yield _render(j)

    it = rows()

    def fill(path, group, comp):
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w") as h5:
                create_cube_file(
                    h5, len(group), layout, lines, drpver=DR17_DRPVER, compression=comp, config={"simulated": "scale mode"}
                )
                for i in range(len(group)):
                    cube = next(it)
                    write_cube_row(h5, i, cube)
                    bar.update()

    if per_plate:
        for plate, group in by_plate.items():
            fill(out / f"{plate}.h5", group, "lzf")
    else:
        fill(out, gals, compression)
    bar.close()
    write_csv_atomic(truth_table(gals), meta_dir / "truth.csv")
    write_csv_atomic(
        pd.DataFrame(
            [{"mangaid": g.mangaid, "plateifu": g.plateifu, **g.agn} for g in gals if any(g.agn.values())],
            columns=["mangaid", "plateifu", "wise_agn", "bat_agn", "radio_agn", "broad_agn"],
        ),
        meta_dir / "agn.csv",
    )
    return len(gals)
