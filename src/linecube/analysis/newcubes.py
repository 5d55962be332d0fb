"""Score cubes the model never saw against a finished run (``linecube score``).

Each new LOGCUBE is extracted with the run's exact settings (line list, window,
crop, Galactic extinction: the model card's), passed through the trained model,
and scored with every score of the run fitted on the run's own training galaxies
(the stored :class:`linecube.analysis.stats.RawStats`, ``raw_stats.npz``): the run's
galaxies keep exactly their scores, the new galaxy is placed among them. Its
neighbours are the ``k`` nearest survey galaxies in the PCA space of the latents
(embedding.csv's ``pc`` columns, what ``linecube neighbors --space pca`` searches).
Nothing is written into the run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


class CannotScore(ValueError):
    """The run or the cubes do not allow scoring, with the reason."""


def _run_files(results: Path, model: str) -> dict:
    files = {
        "cubes": results / "cubes.h5",
        "model": results / "models" / model / "model.keras",
        "card": results / "models" / model / "model_card.json",
        "stats": results / model / "raw_stats.npz",
        "latents": results / model / "latents.h5",
        "embedding": results / model / "embedding.csv",
    }
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise CannotScore(f"{results}: not a finished run for model {model!r}: missing {', '.join(missing)}")
    return files


def score_cubes(run: str | os.PathLike, cubes, *, model: str = "ae", drpall=None, k: int = 5, progress: bool = False) -> tuple:
    """Score LOGCUBEs (paths) against the run at ``run`` (the folder holding
    ``results/``, or ``results/`` itself).

    Returns (table, latents, rejects): a DataFrame with one row per scored cube
    (``plateifu``, ``score``, every score column of scores.csv, ``percentile`` of
    the default score among the run's galaxies, ``explain_line``,
    ``explain_spaxel`` (y, x of the largest localised residual), ``neighbors``:
    the ``k`` nearest survey galaxies, nearest first, separated by ';'), the
    latents (N, d), and the cubes that could not be used with their reasons.
    ``drpall``: the catalogue with the new cubes' z, objra, objdec (default: the
    run's, as its model card records it)."""
    import h5py
    import pandas as pd

    from linecube.analysis.embed import fit_pca
    from linecube.analysis.score import SCORE_COLUMNS, derive_scores
    from linecube.analysis.stats import Reconstructor, collect_stats, join_stats, load_raw_stats
    from linecube.data.extract import ExtractOptions
    from linecube.data.extract_survey import extract_to_h5
    from linecube.io.drpall import requests_from_drpall
    from linecube.io.formats import CubeLayout, LineList, read_strings
    from linecube.model.card import check_card, read_card

    root = Path(run)
    results = root if (root / "cubes.h5").exists() else root / "results"
    f = _run_files(results, model)
    card = read_card(f["card"])
    why = check_card(card, f["cubes"])
    if why:
        raise CannotScore(f"{f['card']}: {'; '.join(why)}")
    ex = card["extraction"]
    drpall = drpall or card["sample"].get("drpall")
    if not drpall or not Path(drpall).is_file():
        raise CannotScore(f"no drpall with the new cubes' z and position: give --drpall (the run's {drpall!r} is not there)")
    lines = LineList(tuple(ex["line_names"]), np.asarray(ex["line_rest_wavelengths"], dtype=float))
    layout = CubeLayout(len(lines), int(ex["window_bins"]), int(ex["crop"]))
    opts = ExtractOptions.from_config({"galactic_extinction": ex.get("galactic_extinction", "CCM89")})
    reqs, rejects = requests_from_drpall(drpall, [str(c) for c in cubes])
    with tempfile.TemporaryDirectory(prefix="linecube-score-") as tmp:
        new_h5 = Path(tmp) / "new.h5"
        s = extract_to_h5(reqs, new_h5, lines, layout, drpver="new", progress=progress, pre_rejects=rejects,
                          allow_empty=True, options=opts)  # fmt: skip
        rejects = s.rejects
        with h5py.File(new_h5, "r") as h5:
            new_ids = read_strings(h5["plateifu"])
        if not new_ids:
            return pd.DataFrame(columns=["plateifu", "score"]), np.zeros((0, 0), np.float32), rejects
        from linecube.model import backend as kb

        kb.select(None)
        kb.configure(0)
        rec = Reconstructor(f["model"], card["model"], layout, list(lines.names))
        raw_new = collect_stats(new_h5, rec, list(lines.names), layout.window_bins, progress=progress, desc="score new")
    raw_run, run_ids, ref, names, seed = load_raw_stats(f["stats"])
    n_run = len(run_ids)
    sc = derive_scores(join_stats(raw_run, raw_new), ref, names, seed)
    default = _run_default(results / model / "scores.csv")
    new = slice(n_run, None)
    out = pd.DataFrame({"plateifu": new_ids, "score": sc[default][new]})
    run_default = sc[default][:n_run]
    out["percentile"] = [100.0 * float(np.mean(run_default <= v)) for v in out["score"]]
    out["score_name"] = default
    out["explain_line"] = sc["explain_line"][new]
    out["explain_spaxel"] = [
        f"{y},{x}" for y, x in (np.unravel_index(int(i), (layout.crop, layout.crop)) for i in raw_new.resid_peak)
    ]
    for c in SCORE_COLUMNS:
        out[c] = sc[c][new]
    # neighbours in the PCA space of the latents (embedding.csv's pc columns)
    with h5py.File(f["latents"], "r") as h5:
        z_run = h5["latent"][()]
        lat_ids = read_strings(h5["plateifu"])
    emb = pd.read_csv(f["embedding"], dtype={"plateifu": str}).set_index("plateifu").loc[lat_ids]
    pcs = [c for c in emb.columns if c.startswith("pc")]
    pca = fit_pca(z_run, len(pcs))
    if not np.allclose(np.abs(pca.transform(z_run.astype(np.float64))), np.abs(emb[pcs].to_numpy()), rtol=1e-4, atol=1e-4):
        raise CannotScore(f"{f['embedding']}: its PCA does not follow from {f['latents']}: rerun the workflow's embed_latents")
    x_run = emb[pcs].to_numpy()
    # the run's own signs (PCA components are defined up to sign)
    sign = np.sign(np.sum(pca.transform(z_run.astype(np.float64)) * x_run, axis=0))
    x_new = pca.transform(raw_new.latents.astype(np.float64)) * np.where(sign == 0, 1, sign)
    d = np.linalg.norm(x_new[:, None, :] - x_run[None], axis=2)
    kk = max(1, min(int(k), len(lat_ids)))
    order = np.argsort(d, axis=1, kind="stable")[:, :kk]
    out["neighbors"] = [";".join(lat_ids[j] for j in row) for row in order]
    out["neighbor_distances"] = [";".join(f"{d[i, j]:.4g}" for j in row) for i, row in enumerate(order)]
    return out, raw_new.latents, rejects


def _run_default(scores_csv: Path) -> str:
    import pandas as pd

    return str(pd.read_csv(scores_csv, nrows=1)["score_name"].iloc[0])


def write_scores(table, latents, out: str | os.PathLike, run: str | os.PathLike) -> Path:
    """The table (CSV) and the latents beside it (``<stem>.latents.h5``), atomically;
    never inside the run's ``results/``."""
    import h5py

    from linecube.io.atomic import atomic_path, write_csv_atomic

    out = Path(out)
    root = Path(run).resolve()
    res = root if (root / "cubes.h5").exists() else root / "results"
    if out.resolve().is_relative_to(res.resolve()):
        raise CannotScore(f"{out}: inside the run's {res}; linecube score never writes into the run: choose another --out")
    write_csv_atomic(table, out)
    lat = out.with_name(out.name.removesuffix(".csv") + ".latents.h5")
    with atomic_path(lat) as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.create_dataset("latent", data=np.asarray(latents, np.float32))
            h5.create_dataset("plateifu", data=np.array(list(table["plateifu"]), dtype=object), dtype=h5py.string_dtype("utf-8"))
    return lat


__all__ = ["CannotScore", "score_cubes", "write_scores"]
