"""Representation benchmark: does the learned space carry the physics, better than the pixels?

For each survey style (``default``, ``alt``: see benchmarks/science.py) and seed:

1. a training survey of ``--train`` galaxies with the natural anomaly fraction
   (6 %) and ``--eval`` held-out normal galaxies (never trained on), rendered as
   extraction cuts them, with the simulator's truth table (every parameter it
   draws: linecube.simulate.truth);
2. the model trains on the training survey exactly as ``train_model`` does
   (config/config.yaml, overridden by ``--config``);
3. spaces of the held-out galaxies: the latent (AE z / VAE mu, what latents.h5
   holds), whitened PCA of the latents (16 components, fitted on the training
   survey: what ``score_latent`` uses), UMAP (the workflow's embed stage: PCA to
   50 then UMAP to 3, fitted on training and held-out galaxies together), and
   ``neighbors`` (the space ``linecube neighbors`` searches by default); and the
   baselines on the same galaxies: PCA of the flux-normalised cubes at the
   latent's dimension (fitted on the training survey), the hand-made features
   (``galaxy_features``, robustly standardised), the summary head's targets and
   their nuclear ratios alone, two hand numbers of H-alpha's velocity field
   (``halpha_kinematics``), a Gaussian random projection of the flux-normalised
   cubes to the latent's dimension;
4. probes (linecube.analysis.probes): distance-weighted kNN (k = 10) and linear
   (ridge / logistic), 5-fold cross-validated on the held-out galaxies: balanced
   accuracy of the excitation class, R^2 of every continuous parameter;
   neighbour purity (5 nearest); invariance (the distance between a galaxy and
   its flipped / rotated / shifted / re-noised copy, and a copy with a random
   combination as in training, over its distance to its nearest other held-out
   galaxy; the share below 1); and the probes' ceilings (``oracles``): the same
   probes on the true parameters themselves, standardised (the two BPT ratios;
   every probed parameter); and ``footprint``: the disc scale from the IFU size
   alone, and per space the IFU size and the disc scale within one IFU size
   (MaNGA gives larger galaxies larger bundles, and a cube's zeros show its bundle);
5. reconstruction on the held-out galaxies: Eq. 1 over the median cube's for
   the model, for PCA at the latent's dimension and for the noise alone (from
   the ivar), the learned fraction (1 - model) / (1 - noise) (the score log's
   definition), and the floor of a perfect model measured on the simulator's
   noise-free cubes;
6. a learning curve (``--curve``, seed 0 of each style): the same after N
   optimiser steps (each a run of its own with its one-cycle schedule over N;
   the latent against pixels-PCA, reusing the survey's copies and baselines).

Each run's JSON ``seconds`` splits its time: simulate, train, encode, embed (UMAP),
reconstruction (the loss ratios and the perfect-model floor), copies, baselines,
probes.

Printed as tables (with the issue's targets) and written as JSON:
``{"spaces": {NAME: {"knn": {PARAM: x}, "linear": {...}, "purity": x,
"invariance": x}}, "baselines": {...}, "oracles": {...}, "footprint": {...}, "reconstruction": {...}, "curve": [...],
"surveys": {STYLE: {... per seed ...}}}``; top-level numbers are the mean over
styles and seeds.

    python benchmarks/representation.py --out rep.json [--quick] [--seed-set dev|confirm] [--kind ae|vae]
        [--config X.yaml] [--seeds 3] [--first-seed N] [--styles default,alt] [--train 1000] [--eval 300] [--curve 100,300]

``--quick`` (one seed of each style, 300 training and 150 held-out galaxies,
no curve) takes ~10 minutes on 2 CPU cores; the full run ~60-70. On a GPU: raise
``--train``, ``--curve 100,300,1000,3000`` and ``--config config/paper.yaml``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

INVARIANCE_OPS = {
    "flip": {"flip": True},
    "rotate": {"rotate": 1},
    "shift": {"shift": (2, -1)},
    "noise": {"noise": True},
}
SPACES = ("latent", "latent_whitened_pca", "umap", "neighbors")
BASELINES = ("pixels_pca", "features", "random_projection", "summary_targets", "nuclear_ratios", "halpha_kinematics")


def build_sets(tmp: Path, style: str, seed: int, n_train: int, n_eval: int, threads: int):
    from linecube.simulate import plan_survey, simulate_cubes_h5

    train_h5 = tmp / "train" / "cubes.h5"
    simulate_cubes_h5(train_h5, n_train, 1000 + seed, anomaly_fraction=0.06, style=style, threads=threads, progress=False)
    clean = plan_survey(n_eval, 2000 + seed, anomaly_fraction=0.0, style=style)
    eval_h5 = tmp / "eval" / "cubes.h5"
    simulate_cubes_h5(eval_h5, 0, 0, galaxies=clean, threads=threads, progress=False)
    truth_h5 = tmp / "truth" / "cubes.h5"
    simulate_cubes_h5(truth_h5, 0, 0, galaxies=clean, threads=threads, progress=False, noise_free=True)
    return train_h5, eval_h5, truth_h5


def copies(eval_h5: Path, aug, seed: int) -> dict:
    """Each held-out galaxy's copy under every op of INVARIANCE_OPS (fixed
    parameters: a 90-degree turn, a 2-spaxel shift, one noise draw) and under a
    random combination as training draws them: {op: (flux, ivar, mask)}."""
    import h5py
    import numpy as np

    from linecube.data.dataset import apply_ops, draw_ops, read_rows

    with h5py.File(eval_h5) as h5:
        n = h5["flux"].shape[0]
    flux, ivar, mask = read_rows(eval_h5, np.arange(n))
    out = {}
    for name, ops in {**INVARIANCE_OPS, "random": None}.items():
        got = []
        for i in range(n):
            rng = np.random.default_rng([seed, 99, i, len(out)])
            o = draw_ops(rng, aug.max_shift) if ops is None else ops
            got.append(apply_ops(flux[i], ivar[i], mask[i], o, rng, aug))
        out[name] = tuple(np.stack(a) for a in zip(*got))
    return out


def encode_arrays(rec, flux, mask, batch: int = 32):
    import numpy as np

    return np.concatenate([rec(flux[s : s + batch], mask[s : s + batch])[0] for s in range(0, len(flux), batch)])


def encode_file(rec, path: Path, batch: int = 32):
    import numpy as np

    from linecube.analysis.stats import iter_batches

    return np.concatenate([rec(f, m)[0] for _s, f, _iv, m in iter_batches(path, batch)])


def spaces_of(args, cfg, rec, train_h5: Path, eval_h5: Path, cps: dict, seed: int, full: bool = True) -> tuple[dict, dict, dict]:
    """(spaces {name: (N, d)}, their copies {name: {op: (N, d)}}, timings); not
    ``full`` (a learning-curve point): the latent only, no UMAP."""
    import numpy as np
    from sklearn.decomposition import PCA

    from linecube.analysis.embed import embed

    t0 = time.perf_counter()
    z_ev = encode_file(rec, eval_h5)
    z_cp = {op: encode_arrays(rec, f, m) for op, (f, _iv, m) in cps.items()}
    if not full:
        return {"latent": z_ev}, {"latent": z_cp}, {"encode": time.perf_counter() - t0, "embed": 0.0}
    z_tr = encode_file(rec, train_h5)
    t_enc = time.perf_counter() - t0
    white = PCA(min(16, z_tr.shape[1]), whiten=True, random_state=seed).fit(z_tr)
    t0 = time.perf_counter()
    e = cfg["embed"]
    emb, _ = embed(
        np.concatenate([z_tr, z_ev]),
        [str(i) for i in range(len(z_tr) + len(z_ev))],
        pca_components=e["pca_components"],
        umap_components=e["umap_components"],
        umap_neighbors=e["umap_neighbors"],
        umap_min_dist=e["umap_min_dist"],
        seed=e["seed"],
    )
    t_umap = time.perf_counter() - t0
    umap = emb[[c for c in emb.columns if c.startswith("umap")]].to_numpy(float)[len(z_tr) :]
    pcs = emb[[c for c in emb.columns if c.startswith("pc")]].to_numpy(float)[len(z_tr) :]
    spaces = {
        "latent": z_ev,
        "latent_whitened_pca": white.transform(z_ev),
        "umap": umap,
        "neighbors": umap if cfg["neighbors"]["space"] == "umap" else pcs,
    }
    cp = {"latent": z_cp, "latent_whitened_pca": {op: white.transform(v) for op, v in z_cp.items()}}
    return spaces, cp, {"encode": t_enc, "embed": t_umap}


def baselines_of(train_h5: Path, eval_h5: Path, cps: dict, scaler, k: int, names, window_bins: int, seed: int,
                 nucleus_radius: float = 3.0):  # fmt: skip
    """(baseline spaces {name: (N, d)}, their copies, PCA object, H-alpha detected
    (N,) bool: S/N >= QUIET_HA_SNR, the scores' quiet / emitting split) on the held-out galaxies.

    Beside pixels-PCA, the features and a random projection: the summary head's own
    targets (``summary_targets``: :func:`linecube.model.summaries.cube_summaries` of each cube,
    robustly standardised on the training survey) and their nuclear line ratios alone
    (``nuclear_ratios``): what the latent is trained to predict, probed the same way;
    and two hand numbers of H-alpha's velocity field (``halpha_kinematics``:
    :func:`halpha_kinematics`), the kinematic baseline."""
    import h5py
    import numpy as np

    from linecube.analysis.diagnostics import fit_pixel_pca, pixel_pca_scores
    from linecube.analysis.features import FEATURE_NAMES, galaxy_features
    from linecube.analysis.ranks import QUIET_HA_SNR
    from linecube.analysis.residual import RobustZ
    from linecube.data.dataset import read_rows

    with h5py.File(train_h5) as h5:
        n_tr = h5["flux"].shape[0]
    with h5py.File(eval_h5) as h5:
        n_ev = h5["flux"].shape[0]
    pca = fit_pixel_pca(train_h5, np.arange(n_tr), scaler, k, seed=seed)
    px = pixel_pca_scores(pca, eval_h5, np.arange(n_ev), scaler)

    def scaled(flux, mask):
        return scaler.forward(flux, scaler.galaxy_scale(flux, mask)).reshape(len(flux), -1)

    rp = np.random.default_rng([seed, 5]).standard_normal((pca.components_.shape[1], k)).astype(np.float32) / np.sqrt(k)
    fe, ivar_ev, me = read_rows(eval_h5, np.arange(n_ev))
    ftr, ivtr, mtr = read_rows(train_h5, np.arange(min(n_tr, 400)))  # fits each baseline's standardisation
    rz = RobustZ.fit(galaxy_features(ftr, ivtr, mtr, names, window_bins))

    def clipped(z, v):  # a robust z, clipped at +-50, NaN as 0
        return np.nan_to_num(np.clip(z(v), -50, 50), nan=0.0)

    def feats(flux, ivar, mask):
        return clipped(rz, galaxy_features(flux, ivar, mask, names, window_bins))

    fe_raw, fe_snr = galaxy_features(fe, ivar_ev, me, names, window_bins, with_snr=True)
    emitting = fe_snr[:, FEATURE_NAMES.index("nii_ha")] >= QUIET_HA_SNR  # a ratio to H-alpha: H-alpha's S/N

    from linecube.io.formats import halpha_index
    from linecube.model.summaries import cube_summaries

    n_lines, ha = len(names), halpha_index(names)
    radius = float(nucleus_radius) if nucleus_radius and nucleus_radius > 0 else 3.0

    def summ(flux, mask):
        x = scaler.forward(flux, scaler.galaxy_scale(flux, mask)).astype(np.float32)
        return np.asarray(cube_summaries(x, n_lines, window_bins, ha, radius), dtype=np.float64)

    sz = RobustZ.fit(summ(ftr, mtr))
    kin_z = RobustZ.fit(halpha_kinematics(ftr, n_lines, window_bins, ha))
    del ftr, ivtr, mtr
    nuc = slice(n_lines - 1, 2 * (n_lines - 1))

    def targets(flux, mask):
        return clipped(sz, summ(flux, mask))

    tg = targets(fe, me)

    def kin(flux):
        return clipped(kin_z, halpha_kinematics(flux, n_lines, window_bins, ha))

    spaces = {"pixels_pca": px, "random_projection": scaled(fe, me) @ rp,
              "features": clipped(rz, fe_raw),
              "summary_targets": tg, "nuclear_ratios": tg[:, nuc], "halpha_kinematics": kin(fe)}  # fmt: skip
    cp = {
        "pixels_pca": {op: pca.transform(scaled(f, m)) for op, (f, _iv, m) in cps.items()},
        "random_projection": {op: scaled(f, m) @ rp for op, (f, _iv, m) in cps.items()},
        "features": {op: feats(f, iv, m) for op, (f, iv, m) in cps.items()},
        "summary_targets": {op: targets(f, m) for op, (f, _iv, m) in cps.items()},
    }
    cp["nuclear_ratios"] = {op: v[:, nuc] for op, v in cp["summary_targets"].items()}
    cp["halpha_kinematics"] = {op: kin(f) for op, (f, _iv, _m) in cps.items()}
    return spaces, cp, pca, emitting


def halpha_kinematics(flux, n_lines: int, window_bins: int, ha: int, bright: float = 0.1):
    """Two hand numbers of the velocity field, (N, 2), from H-alpha's window of cubes
    (N, T, H, W) in the wavelength layout: over the brighter spaxels (continuum-
    subtracted window flux >= ``bright`` times the 99th percentile spaxel's), the
    flux-weighted spread of the per-spaxel centroid and its 10-90 percentile range
    (bins). The kinematic baseline of the representation probes; the continuum is
    the mean of the window's two outermost bins per side."""
    import numpy as np

    from linecube.io.formats import line_windows

    f = line_windows(flux, n_lines, window_bins)[:, ha].astype(np.float64)
    cont = (f[:, :2].sum(1) + f[:, -2:].sum(1)) / 4.0
    f = np.clip(f - cont[:, None], 0.0, None)
    s = f.sum(1)
    c = (f * np.arange(window_bins)[None, :, None, None]).sum(1) / np.maximum(s, 1e-12)
    out = np.zeros((len(flux), 2))
    for i in range(len(flux)):
        keep = s[i] >= bright * np.percentile(s[i], 99)
        if keep.sum() >= 3 and s[i][keep].sum() > 0:
            w, cc = s[i][keep], c[i][keep]
            mu = np.average(cc, weights=w)
            lo, hi = np.percentile(cc, [10, 90])
            out[i] = np.sqrt(np.average((cc - mu) ** 2, weights=w)), hi - lo
    return out


def invariance(space, copies_of) -> dict:
    import numpy as np

    from linecube.analysis.probes import invariance_ratios

    out = {}
    for op, c in copies_of.items():
        r = invariance_ratios(space, c)
        out[op] = {"below_1": float((r < 1).mean()), "median": float(np.median(r))}
    allr = np.concatenate([invariance_ratios(space, c) for c in copies_of.values()])
    out["all"] = {"below_1": float((allr < 1).mean()), "median": float(np.median(allr))}
    return out


def probe_all(spaces: dict, cps: dict, truth: dict, params, seed: int, emitting=None) -> dict:
    """Every probe of every space; with ``emitting`` (a boolean row mask) also
    v sin i over those galaxies alone (``vsini_kms_emitting``): the gas's velocity
    field is readable only where H-alpha is detected."""
    import numpy as np

    from linecube.analysis.probes import knn_probe, linear_probe, probe_space

    out = {}
    for name, x in spaces.items():
        r = probe_space(x, truth, parameters=params, seed=seed)
        if emitting is not None and "vsini_kms" in truth and emitting.sum() >= 20:
            y = np.asarray(truth["vsini_kms"], float)[emitting]
            r["knn"]["vsini_kms_emitting"] = knn_probe(x[emitting], y, classify=False, seed=seed)
            r["linear"]["vsini_kms_emitting"] = linear_probe(x[emitting], y, classify=False, seed=seed)
        if name in cps:
            r["invariance_detail"] = invariance(x, cps[name])
            r["invariance"] = r["invariance_detail"]["all"]["below_1"]
        else:
            r["invariance"] = None
        out[name] = r
    return out


def footprint(spaces: dict, base: dict, size, disc, seed: int, instrument: dict | None = None) -> dict:
    """How much of the disc-scale probe is the IFU footprint: MaNGA (and the simulator)
    gives larger galaxies larger bundles (``size``: fibres, the truth table's
    ``ifusize``), and a cube's zeros outside its hexagon show the bundle. kNN R^2 of
    the disc scale from the IFU size alone, and per space: of the IFU size, and of the
    disc scale within one IFU size (:func:`within_groups`); and what a space tells of
    the catalogue redshift's error, the galaxy's offset from the IFU centre and the
    Galactic E(B-V) (``instrument``: truth columns, :data:`INSTRUMENT_COLUMNS`; 0 or
    below: nothing)."""
    import numpy as np

    from linecube.analysis.probes import knn_probe, within_groups

    size = size.astype(float)
    resid = within_groups(disc, size)
    out = {"disc_scale_from_ifu_size": knn_probe(size[:, None], disc, classify=False, seed=seed)}
    for name, x in {**spaces, **base}.items():
        out[name] = {
            "ifu_size": knn_probe(x, size, classify=False, seed=seed),
            "disc_scale_within_ifu": knn_probe(x, resid, classify=False, seed=seed),
        }
        for col, key in INSTRUMENT_COLUMNS.items():  # what the instrument and the catalogue add (DR17's effects)
            if instrument is not None and col in instrument:
                out[name][key] = knn_probe(x, np.asarray(instrument[col], float), classify=False, seed=seed)
    return out


#: truth-table columns of what the instrument and the catalogue add, and their
#: names in the footprint block: none of them is physics a space should carry
INSTRUMENT_COLUMNS = {
    "z_cat_offset_kms": "catalogue_z_offset",
    "centre_offset_arcsec": "centre_offset",
    "ebvgal": "galactic_ebv",
}


def train_and_measure(
    args, cfg, tmp: Path, style: str, seed: int, sets, steps: int | None, full: bool, cache: dict | None = None
) -> dict:
    """Train once (``steps``: that many optimiser steps, else the config's epochs) and measure.
    ``cache``: what does not depend on the trained model (the held-out copies, the
    baselines, the median cube and the perfect-model floor, kept while the median's
    reference rows stay the same), shared by the runs of one survey (the default run and
    its learning-curve points)."""
    import h5py
    import numpy as np
    import pandas as pd

    from linecube.analysis.diagnostics import learned_fraction, pca_loss_ratio
    from linecube.analysis.score import loss_ratios, reference_rows
    from linecube.analysis.stats import Reconstructor
    from linecube.data.dataset import AugmentConfig, median_cubes
    from linecube.io.formats import PROBE_PARAMETERS, read_layout, read_strings
    from linecube.model.train import train

    train_h5, eval_h5, truth_h5 = sets
    train_cfg = {**cfg["train"], "seed": int(cfg["train"]["seed"]) + seed}
    epochs = int(train_cfg["epochs"])
    spe = None
    if steps:  # exactly that many steps: the config's epochs, each of steps / epochs batches
        spe = max(1, int(round(steps / epochs)))
        train_cfg["min_steps"] = 0
    name = f"model-{steps or 'default'}"
    t0 = time.perf_counter()
    summ = train(train_h5, tmp / name, args.kind, cfg["model"], train_cfg, threads=args.threads, verbose=0, steps_per_epoch=spe)
    t_train = time.perf_counter() - t0
    hist = pd.read_csv(tmp / name / "history.csv")
    with h5py.File(train_h5) as h5:
        layout, lines = read_layout(h5)
        train_ids = read_strings(h5["plateifu"])
    names = list(lines.names)
    t0 = time.perf_counter()
    rec = Reconstructor(tmp / name / "model.keras", cfg["model"], layout, names)
    from science import loss_floor  # the perfect model's ratio on the noise-free cubes

    ref = np.asarray(reference_rows(train_ids, tmp / name / "split.csv"))
    cache = {} if cache is None else cache
    if cache.get("ref") is None or not np.array_equal(cache["ref"], ref):  # the median's rows
        cache.clear()
        _, med = median_cubes(train_h5, ref, rec.scaler, seed=seed)
        cache.update(ref=ref, med_model=med, floor=loss_floor(eval_h5, truth_h5, rec.scaler, med))
    med_model, floor = cache["med_model"], cache["floor"]
    with h5py.File(eval_h5) as h5:
        n_ev = h5["flux"].shape[0]
        eval_ids = read_strings(h5["plateifu"])
    ratio, noise = loss_ratios(eval_h5, rec, np.arange(n_ev), med_model)
    phases = {"reconstruction": time.perf_counter() - t0}

    out = {
        "style": style,
        "seed": seed,
        "steps": summ["steps"],
        "train": {
            "seconds": t_train,
            "ms_per_step": 1000 * sum(hist["seconds"]) / max(summ["steps"], 1),
            "divergence_events": summ["divergence_events"],
            "max_epoch_loss_over_first": float(hist["loss"].max() / hist["loss"].iloc[0]),
            "epochs": summ["epochs"],
        },
        "reconstruction": {
            "loss_ratio": ratio,
            "noise_loss_ratio": noise,
            "learned_fraction": learned_fraction(ratio, noise),
            "perfect_model_ratio": floor,
        },
    }
    if args.kind == "vae" and "test_kl" in hist:
        out["kl_per_galaxy"] = float(hist["test_kl"].iloc[-1])
    aug = AugmentConfig.from_config(train_cfg)
    t0 = time.perf_counter()
    if "copies" not in cache:
        cache["copies"] = copies(eval_h5, aug, seed)
    cps = cache["copies"]
    phases["copies"] = time.perf_counter() - t0
    spaces, cp, t = spaces_of(args, cfg, rec, train_h5, eval_h5, cps, seed, full)
    k = rec.model.latent_dim
    t0 = time.perf_counter()
    if "baselines" not in cache:
        base, bcp, pca, emitting = baselines_of(train_h5, eval_h5, cps, rec.scaler, k, names, layout.window_bins, seed,
                                      cfg["model"].get("summary_nucleus_radius", 3.0))  # fmt: skip
        cache["baselines"] = (base, bcp, pca_loss_ratio(pca, eval_h5, np.arange(n_ev), rec.scaler, med_model), emitting)
        out["emitting_share"] = float(emitting.mean())
    base, bcp, out["reconstruction"]["pca_loss_ratio"], em = cache["baselines"]
    phases["baselines"] = time.perf_counter() - t0
    tt = pd.read_csv(eval_h5.parent / "truth.csv", dtype={"plateifu": str}).set_index("plateifu").loc[eval_ids]
    truth = {c: tt[c].to_numpy() for c in tt.columns}
    params = [p for p in PROBE_PARAMETERS if p in truth]
    if not full:  # a curve point: the latent and its baseline only
        base = {"pixels_pca": base["pixels_pca"]}
    t0 = time.perf_counter()
    out["spaces"] = probe_all(spaces, cp, truth, params, seed, em)
    out["baselines"] = probe_all(base, bcp, truth, params, seed, em)
    if full:
        from linecube.analysis.probes import oracle_spaces

        out["oracles"] = probe_all(oracle_spaces(truth, params), {}, truth, params, seed)
        if "disc_scale_arcsec" in truth and "ifusize" in truth:
            out["footprint"] = footprint(spaces, base, truth["ifusize"], truth["disc_scale_arcsec"], seed, truth)
    phases["probes"] = time.perf_counter() - t0
    out["seconds"] = {"train": t_train, **t, **phases}
    return out


def run_one(args, cfg, work: Path, style: str, seed: int, curve: list[int]) -> tuple[dict, list[dict]]:
    tmp = work / f"{style}-{seed}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    sets = build_sets(tmp, style, seed, args.train, args.eval, args.threads)
    t_sim = time.perf_counter() - t0
    cache: dict = {}
    main = train_and_measure(args, cfg, tmp, style, seed, sets, None, True, cache)
    main["seconds"]["simulate"] = t_sim
    points = [train_and_measure(args, cfg, tmp, style, seed, sets, n, False, cache) for n in curve]
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return main, points


def average(runs: list):
    import numpy as np

    first = runs[0]
    if isinstance(first, dict):
        keys = [k for k in first if all(isinstance(r, dict) and k in r for r in runs)]
        return {k: average([r[k] for r in runs]) for k in keys}
    if isinstance(first, str):
        return first
    vals = [float(v) for v in runs if isinstance(v, int | float) and v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


TARGET_ROWS = [
    ("class kNN, latent", lambda r: r["spaces"]["latent"]["knn"]["class"], lambda r: r["baselines"]["pixels_pca"]["knn"]["class"] + 0.05, ">= pixels-PCA + 0.05"),
    ("class kNN, neighbors space", lambda r: r["spaces"]["neighbors"]["knn"]["class"], lambda r: r["baselines"]["pixels_pca"]["knn"]["class"], ">= pixels-PCA"),
    ("purity, neighbors space", lambda r: r["spaces"]["neighbors"]["purity"], lambda r: r["baselines"]["pixels_pca"]["purity"], ">= pixels-PCA"),
    ("v sin i kNN R^2, latent", lambda r: r["spaces"]["latent"]["knn"]["vsini_kms"], lambda r: max(0.5, r["baselines"]["pixels_pca"]["knn"]["vsini_kms"]), ">= 0.5 and pixels-PCA"),
    ("v sin i kNN R^2, latent, H-alpha detected", lambda r: r["spaces"]["latent"]["knn"].get("vsini_kms_emitting", float("nan")), lambda r: r["baselines"].get("halpha_kinematics", {}).get("knn", {}).get("vsini_kms_emitting", float("nan")), ">= the H-alpha kinematics baseline"),
    ("invariance < 1, latent", lambda r: r["spaces"]["latent"]["invariance"], lambda r: 0.9, ">= 0.90"),
    ("test Eq. 1 / median", lambda r: -r["reconstruction"]["loss_ratio"], lambda r: -r["reconstruction"]["pca_loss_ratio"], "<= PCA's"),
    ("learned fraction", lambda r: r["reconstruction"]["learned_fraction"], lambda r: 0.5, ">= 0.5"),
]  # fmt: skip


def tables(res: dict, title: str) -> str:
    spaces, base = res["spaces"], res["baselines"]
    cols = ["class", *[p for p in res["params"]]]
    if "vsini_kms_emitting" in spaces["latent"]["knn"]:
        cols.append("vsini_kms_emitting")
    short = {c: c.replace("_kms", "").replace("log_", "").replace("_arcsec", "")[:8] for c in cols}
    lines = [f"\n{title}", "kNN probe (k = 10; class: balanced accuracy, others R^2), purity, invariance (share < 1)"]
    lines.append(f"{'space':<28}" + "".join(f"{short[c]:>9}" for c in cols) + f"{'purity':>8}{'agn':>6}{'inv':>6}")

    def row(name, r, kind="knn"):
        inv = r.get("invariance")
        return (f"{name:<28}" + "".join(f"{r[kind].get(c, float('nan')):9.2f}" for c in cols)
                + f"{r.get('purity', float('nan')):8.2f}{r.get('agn_purity', float('nan')):6.2f}"
                + (f"{inv:6.2f}" if inv is not None else "     -"))  # fmt: skip

    for k, r in spaces.items():
        lines.append(row(k, r))
    oracles = {f"oracle:{k}": v for k, v in (res.get("oracles") or {}).items()}
    for k, r in {**{f"baseline:{b}": v for b, v in base.items()}, **oracles}.items():
        lines.append(row(k, r))
    lines.append("linear probe (ridge / logistic)")
    for k, r in {**spaces, **{f"baseline:{b}": v for b, v in base.items()}, **oracles}.items():
        lines.append(row(k, r, "linear"))
    rc = res["reconstruction"]
    lines.append(
        f"reconstruction (held-out, model units): model {rc['loss_ratio']:.3f}, PCA at the latent's dimension "
        f"{rc['pca_loss_ratio']:.3f}, noise alone {rc['noise_loss_ratio']:.3f}, perfect model (noise-free truth) "
        f"{rc['perfect_model_ratio']:.3f}; learned fraction {rc['learned_fraction']:.2f}"
    )
    if res.get("kl_per_galaxy") is not None:
        lines.append(f"VAE KL per galaxy: {res['kl_per_galaxy']:.1f} nats")
    tr = res["train"]
    lines.append(f"training: {res['steps']:.0f} steps, {tr['ms_per_step']:.0f} ms/step, divergence events {tr['divergence_events']:.0f}, "
                 f"largest epoch loss / first {tr['max_epoch_loss_over_first']:.2f}")  # fmt: skip
    lines.append("targets:")
    for name, got, goal, text in TARGET_ROWS:
        try:
            g, b = got(res), goal(res)
            ok = "met" if g >= b - 1e-12 else "NOT met"
            sg, sb = (-g, -b) if text.startswith("<=") else (g, b)  # "<=" rows compare negated values
            lines.append(f"  {name:<28} {sg:.3f} vs {sb:.3f} ({text}): {ok}")
        except (KeyError, TypeError):
            continue
    fp = res.get("footprint")
    if fp and "latent" in fp:
        sp = [k for k in ("latent", "neighbors", "pixels_pca", "features") if k in fp]
        lines.append(
            f"disc scale and the IFU footprint (kNN R^2): from the IFU size alone {fp['disc_scale_from_ifu_size']:.2f}; "
            + "within one IFU size "
            + ", ".join(f"{k} {fp[k]['disc_scale_within_ifu']:.2f}" for k in sp)
            + "; the IFU size from "
            + ", ".join(f"{k} {fp[k]['ifu_size']:.2f}" for k in sp)
        )
        for key in INSTRUMENT_COLUMNS.values():
            if key in fp["latent"]:
                lines.append(f"{key} (kNN R^2, 0 or below: not readable): " + ", ".join(f"{k} {fp[k][key]:.2f}" for k in sp))
    if "true_parameters" in (res.get("oracles") or {}):
        o = res["oracles"]
        bpt = o.get("true_bpt_ratios", {}).get("knn", {}).get("class", float("nan"))
        lines.append(f"  ceiling of the class kNN probe: {o['true_parameters']['knn']['class']:.3f} on the true parameters, "
                     f"{bpt:.3f} on the two true BPT ratios")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one seed per style, smaller surveys, no learning curve (~10 min)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per style (default 3; --quick 1)")
    ap.add_argument(
        "--seed-set",
        choices=("dev", "confirm"),
        default="dev",
        help="dev: seeds 0.. (defaults are chosen here); confirm: seeds 500.. (reported; nothing chosen on them)",
    )
    ap.add_argument(
        "--first-seed",
        type=int,
        default=None,
        help="run seeds first-seed .. first-seed + seeds - 1 (default: the seed set's first; to add seeds to an earlier "
        "run); the curve runs on the first",
    )
    ap.add_argument("--styles", default="default,alt")
    ap.add_argument("--kind", default="ae", choices=["ae", "vae"])
    ap.add_argument("--config", action="append", default=[], help="YAML merged over config/config.yaml (repeatable)")
    ap.add_argument("--train", type=int, default=None, help="training-survey galaxies (default 1000; --quick 300)")
    ap.add_argument("--eval", type=int, default=None, help="held-out normal galaxies (default 300; --quick 150)")
    ap.add_argument("--curve", default=None, help="learning-curve steps, comma-separated (default 100,300; --quick none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args()
    args.seeds = args.seeds or (1 if args.quick else 3)
    if args.first_seed is None:
        from science import CONFIRM_OFFSET

        args.first_seed = CONFIRM_OFFSET if args.seed_set == "confirm" else 0
    args.train = args.train or (300 if args.quick else 1000)
    args.eval = args.eval or (150 if args.quick else 300)
    if args.curve is None:
        args.curve = "" if args.quick else "100,300"
    curve = [int(v) for v in args.curve.split(",") if v.strip()]

    from linecube.config import load_config
    from linecube.io.formats import PROBE_PARAMETERS

    root = Path(__file__).resolve().parent.parent
    cfg = load_config(root / "config" / "config.yaml", *args.config)
    styles = [s for s in args.styles.split(",") if s]
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="linecube-representation-"))
    t_all = time.perf_counter()
    surveys, curves = {}, []
    for style in styles:
        runs = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            r, pts = run_one(args, cfg, work, style, seed, curve if seed == args.first_seed else [])
            r["params"] = list(PROBE_PARAMETERS)
            runs.append(r)
            curves += pts
            print(
                tables(r, f"[{style}, seed {seed}] ({', '.join(f'{k} {v:.0f} s' for k, v in r['seconds'].items())})"), flush=True
            )
        surveys[style] = {**average(runs), "params": list(PROBE_PARAMETERS), "seeds": runs}
    top = average([r for s in surveys.values() for r in s["seeds"]])
    top["params"] = list(PROBE_PARAMETERS)
    curve_rows = []
    for n in curve:
        pts = [p for p in curves if p.get("steps") and abs(p["steps"] - n) <= max(3, 0.05 * n)] or [
            p for p in curves if p is not None
        ][: len(styles)]
        a = average(pts)
        curve_rows.append({
            "steps_asked": n, "steps": a["steps"],
            "loss_ratio": a["reconstruction"]["loss_ratio"], "learned_fraction": a["reconstruction"]["learned_fraction"],
            "pca_loss_ratio": a["reconstruction"]["pca_loss_ratio"],
            "knn": a["spaces"]["latent"]["knn"], "pixels_pca_knn": a["baselines"]["pixels_pca"]["knn"],
            "purity": a["spaces"]["latent"]["purity"], "invariance": a["spaces"]["latent"]["invariance"],
            "seconds": a["seconds"]["train"],
        })  # fmt: skip
    curve_rows.append({
        "steps": top["steps"], "loss_ratio": top["reconstruction"]["loss_ratio"],
        "learned_fraction": top["reconstruction"]["learned_fraction"], "pca_loss_ratio": top["reconstruction"]["pca_loss_ratio"],
        "knn": top["spaces"]["latent"]["knn"], "pixels_pca_knn": top["baselines"]["pixels_pca"]["knn"],
        "purity": top["spaces"]["latent"]["purity"], "invariance": top["spaces"]["latent"]["invariance"],
        "seconds": top["seconds"]["train"], "default": True,
    })  # fmt: skip
    out = {
        "kind": args.kind,
        "config": {"model": cfg["model"], "train": cfg["train"], "embed": cfg["embed"], "neighbors": cfg["neighbors"]},
        "n_train": args.train,
        "n_eval": args.eval,
        "seeds_per_style": args.seeds,
        "seed_set": args.seed_set,
        "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
        "knn_k": 10,
        "spaces": top["spaces"],
        "baselines": top["baselines"],
        "oracles": top.get("oracles", {}),
        "footprint": top.get("footprint", {}),
        "reconstruction": top["reconstruction"],
        "train": top["train"],
        "steps": top["steps"],
        "curve": curve_rows,
        "surveys": surveys,
        "wall_seconds": time.perf_counter() - t_all,
    }
    if args.kind == "vae":
        out["kl_per_galaxy"] = top.get("kl_per_galaxy")
    for style in styles:
        print(tables(surveys[style], f"== {style} survey, mean of {args.seeds} seed(s)"))
    print(tables({**top, **out}, f"== all surveys ({args.kind}), mean of {len(styles) * args.seeds} runs"))
    if len(curve_rows) > 1:
        print("\nlearning curve (seed 0 of each style; the last row: the default run, all seeds)")
        print(
            f"{'steps':>6} {'Eq.1/med':>9} {'PCA':>6} {'learned':>8} {'class':>6} {'(px)':>6} {'vsini':>6} {'purity':>7} {'inv':>5} {'train s':>8}"
        )
        for c in curve_rows:
            print(f"{c['steps']:6.0f} {c['loss_ratio']:9.3f} {c['pca_loss_ratio']:6.3f} {c['learned_fraction']:8.2f} "
                  f"{c['knn']['class']:6.2f} {c['pixels_pca_knn']['class']:6.2f} {c['knn'].get('vsini_kms', float('nan')):6.2f} "
                  f"{c['purity']:7.2f} {c['invariance']:5.2f} {c['seconds']:8.0f}")  # fmt: skip
    print(f"wall time {out['wall_seconds']:.0f} s")
    Path(args.out).write_text(json.dumps(out, indent=1, default=float))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
