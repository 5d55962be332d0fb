"""A whole survey: the plan (plates, IFUs, classes, anomalies, AGN flags) and
``simulate_survey``, which writes LOGCUBEs, the drpall, agn.csv and truth.csv.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from linecube.io.atomic import atomic_path
from linecube.io.formats import load_lines
from linecube.io.manga import DR17_DRPVER, DRP3QUAL_CRITICAL, SIMULATION_MARKER, drpall_path, foreign_survey, logcube_path
from linecube.simulate.drpall import drpall_row, write_drpall
from linecube.simulate.galaxy import (
    ANOMALY_TYPES,
    CLASSES,
    IFU_SIZES,
    SURVEY_STYLES,
    GalaxyParams,
    SurveyStyle,
    draw_dr17_effects,
    draw_galaxy,
)
from linecube.simulate.logcube import build_logcube, write_fits_gz
from linecube.simulate.truth import truth_table

THREADED_LIBRARIES = ("tensorflow", "torch", "jax")


def worker_context():
    """The multiprocessing context for the simulator's worker pools.

    ``fork`` (fast; works from a Snakemake ``script:`` whose ``__main__`` must not be
    re-imported), unless a multi-threaded deep-learning library is already loaded in
    this process: a child forked from TensorFlow's (or PyTorch's, JAX's) thread pools
    can die abruptly (``BrokenProcessPool``) or hang, so such a process starts its
    workers from a clean ``forkserver`` instead."""
    import multiprocessing as mp

    loaded = any(name in sys.modules for name in THREADED_LIBRARIES)
    return mp.get_context("forkserver" if loaded else "fork")


def plan_survey(
    n_galaxies: int,
    seed: int,
    anomaly_fraction: float = 0.06,
    style: str | SurveyStyle = "default",
    dr17_effects: bool = True,
) -> list[GalaxyParams]:
    """Draw the galaxies of a survey: plates, IFUs, classes and injected anomalies.

    Every anomaly type appears at least once when ``n_galaxies * anomaly_fraction``
    allows; anomalies are spread over random galaxies. Deterministic in ``seed``.
    ``style``: a :class:`SurveyStyle` or a name in :data:`SURVEY_STYLES`.
    ``dr17_effects``: each galaxy also gets what real DR17 cubes carry
    (:func:`linecube.simulate.galaxy.draw_dr17_effects`, from its own generator:
    the galaxies themselves are the same either way).
    """
    st = SURVEY_STYLES[style] if isinstance(style, str) else style
    rng = np.random.default_rng(seed)
    seeds = np.random.SeedSequence(seed).spawn(n_galaxies)
    n_anom = int(round(n_galaxies * anomaly_fraction))
    anomalies = [ANOMALY_TYPES[i % len(ANOMALY_TYPES)] for i in range(n_anom)] + [""] * (n_galaxies - n_anom)
    anomalies = list(rng.permutation(np.array(anomalies, dtype=object)))
    classes = rng.choice(len(CLASSES), size=n_galaxies, p=st.class_probs)
    sizes = rng.choice(IFU_SIZES, size=n_galaxies, p=st.ifu_probs)
    galaxies = []
    plate = 8000 + int(rng.integers(0, 1000)) // 10 * 10
    used: dict[int, int] = {}
    per_plate = 0
    for i in range(n_galaxies):
        if per_plate >= 12:
            plate += int(rng.integers(1, 40))
            used = {}
            per_plate = 0
        size = int(sizes[i])
        used[size] = used.get(size, 0) + 1
        ifudsgn = int(f"{size}{used[size]:02d}")
        per_plate += 1
        sub = np.random.default_rng(seeds[i])
        galaxies.append(
            draw_galaxy(
                i, plate, ifudsgn, size, CLASSES[classes[i]], str(anomalies[i]), sub, int(seeds[i].generate_state(1)[0]), st
            )
        )
    for g in galaxies:
        _assign_agn(g, np.random.default_rng([seed, g.index, 7]))
        if dr17_effects:
            draw_dr17_effects(g, np.random.default_rng([seed, g.index, 17]))
    return galaxies


def _assign_agn(g: GalaxyParams, rng: np.random.Generator) -> None:
    """AGN selection flags in the proportions of Comerford et al. (2020): radio
    dominates, mid-IR next, hard X-ray and broad lines rare."""
    p_radio = {"seyfert": 0.5, "liner": 0.4, "composite": 0.1, "star-forming": 0.03, "quiescent": 0.1}[g.cls]
    p_wise = {"seyfert": 0.45, "liner": 0.05, "composite": 0.05, "star-forming": 0.005, "quiescent": 0.01}[g.cls]
    p_bat = {"seyfert": 0.12, "liner": 0.0, "composite": 0.0, "star-forming": 0.0, "quiescent": 0.0}[g.cls]
    flags = {
        "wise_agn": bool(rng.random() < p_wise),
        "bat_agn": bool(rng.random() < p_bat),
        "radio_agn": bool(rng.random() < p_radio),
        "broad_agn": g.anomaly == "broad_balmer",
    }
    if g.cls == "seyfert" and not any(flags.values()):
        flags["radio_agn" if rng.random() < 0.6 else "wise_agn"] = True
    g.agn = flags


def _write_one(args) -> tuple[str, int]:
    g, out, drpver, lines_path, level = args
    lines = load_lines(lines_path)
    rng = np.random.default_rng([g.seed, 1])
    hdul = build_logcube(g, lines, rng)
    path = logcube_path(out, drpver, g.plate, g.ifudsgn)
    write_fits_gz(hdul, path, level=level)
    return g.plateifu, path.stat().st_size


def simulate_survey(
    out: str | os.PathLike,
    n_galaxies: int,
    seed: int,
    *,
    drpver: str = DR17_DRPVER,
    anomaly_fraction: float = 0.06,
    lines_path: str | os.PathLike | None = None,
    threads: int = 1,
    compresslevel: int = 1,
    extras: bool = True,
    progress: bool = True,
    dr17_effects: bool = True,
) -> list[GalaxyParams]:
    """Write a synthetic survey in the real DR17 formats under ``out``.

    ``dr17_effects``: the cubes and the drpall carry what real DR17 ones do
    (Galactic extinction, catalogue-redshift errors, off-centre galaxies, dead
    fibres, flagged voxels holding zeros or spikes, correlated noise:
    :func:`plan_survey`).

    ``extras`` adds drpall rows that a real drpall also has and that sample
    selection must drop: a star (mngtarg2 only), a CRITICAL cube, a galaxy with
    no redshift and a repeat observation of a galaxy in a smaller IFU. Their
    cubes are not written (none would be used).
    """
    import pandas as pd
    from tqdm.auto import tqdm

    out = Path(out)
    why = foreign_survey(out, drpver)
    if why:
        raise FileExistsError(why)
    galaxies = plan_survey(n_galaxies, seed, anomaly_fraction, dr17_effects=dr17_effects)
    rows = [drpall_row(g) for g in galaxies]
    if extras and galaxies:
        g0 = galaxies[0]
        last_plate = max(g.plate for g in galaxies) + 7
        rows.append(drpall_row(g0, plate=last_plate, ifudsgn="1901", plateifu=f"{last_plate}-1901", ifudesignsize=19))
        rows.append(
            drpall_row(
                g0, plate=last_plate, ifudsgn="1902", plateifu=f"{last_plate}-1902", mangaid="1-999001", mngtarg1=0, mngtarg2=64
            )
        )
        rows.append(
            drpall_row(
                g0,
                plate=last_plate,
                ifudsgn="3701",
                plateifu=f"{last_plate}-3701",
                mangaid="1-999002",
                drp3qual=DRP3QUAL_CRITICAL,
            )
        )
        rows.append(
            drpall_row(
                g0, plate=last_plate, ifudsgn="3702", plateifu=f"{last_plate}-3702", mangaid="1-999003", z=-999.0, nsa_z=-999.0
            )
        )
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / SIMULATION_MARKER) as tmp:  # claimed before the first cube: a rerun may finish it
        tmp.write_text(json.dumps({"status": "writing", "n_galaxies": n_galaxies, "seed": seed, "drpver": drpver}))
    jobs = [(g, out, drpver, lines_path, compresslevel) for g in galaxies]
    bar = tqdm(total=len(jobs), desc="simulate LOGCUBEs", unit="cube", disable=not progress, file=sys.stderr)
    if threads > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=threads, mp_context=worker_context()) as pool:
            for _ in pool.map(_write_one, jobs):
                bar.update()
    else:
        for job in jobs:
            _write_one(job)
            bar.update()
    bar.close()
    write_drpall(rows, drpall_path(out, drpver))
    agn = pd.DataFrame(
        [{"mangaid": g.mangaid, "plateifu": g.plateifu, **g.agn} for g in galaxies if any(g.agn.values())],
        columns=["mangaid", "plateifu", "wise_agn", "bat_agn", "radio_agn", "broad_agn"],
    )
    truth = truth_table(galaxies)
    from linecube.io.atomic import write_csv_atomic

    write_csv_atomic(agn, out / "agn.csv")
    write_csv_atomic(truth, out / "truth.csv")
    with atomic_path(out / SIMULATION_MARKER) as tmp:
        tmp.write_text(
            json.dumps(
                {"n_galaxies": n_galaxies, "seed": seed, "anomaly_fraction": anomaly_fraction, "drpver": drpver,
                 "galaxies": [_params_json(g) for g in galaxies]},
                indent=1,
            )
        )  # fmt: skip
    return galaxies


def _params_json(g: GalaxyParams) -> dict:
    d = asdict(g)
    return json.loads(json.dumps(d, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
