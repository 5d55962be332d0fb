"""Science benchmark: can a score tell anomalies from normal galaxies, not bright from faint?

For each survey style (``default``: the bundled sample's simulator setting;
``alt``: other class and IFU mixes, fainter lines, 2.5x the noise, a metal-rich
star-forming sequence) and each seed:

1. a training survey of ``--train`` simulated galaxies with the natural anomaly
   fraction (6 %), rendered as extraction would cut them (cubes.h5 layout);
   the model trains on it exactly as ``train_model`` does (config/config.yaml,
   overridden by ``--config``), 1/6 of it held out as its test split;
2. an evaluation set of ``--eval`` held-out normal galaxies (never trained on)
   and, for each, one twin per anomaly type: the same galaxy, parameters and
   noise realisation, rendered with that anomaly injected;
3. every score of ``linecube.analysis.score.SCORE_COLUMNS`` (fitted on the training
   split only, as the workflow does) and three baselines on the same galaxies:
   brightness (mean |flux|), the residual from the training split's median cube,
   and the non-deep feature baseline (``score_features``).

Metrics per score (seed-averaged; per seed under "seeds"): ROC AUC clean vs the
five science types' twins with a bootstrap 95 % interval (resampling galaxies
with their twins), AUC per type, the masked foreground star apart (data
quality), the paired win rate (a twin scores above its own clean galaxy),
recall in the top 5 % of populations with 5 % anomalies (bootstrap draws),
Spearman rho of the score with mean |flux| over the clean galaxies (judged as
|rho|). And the model's test Eq. 1 loss over the median cube's, both in the
units the model is trained in, on the clean evaluation galaxies, beside the same
ratio for a perfect model (each galaxy's own noise-free cube, rendered by the
simulator): the floor that noise sets (``test_loss_floor``).

    python benchmarks/science.py [--quick] [--seeds N] [--kind ae] [--config X.yaml] --out FILE.json
        [--save-stats DIR]   keep each run's per-galaxy statistics (DIR/{style}-{seed}.npz)
        [--from-stats DIR]   re-score kept statistics in seconds: no simulation, no training

Top-level "scores"/"baselines" average the seeds of every survey style; each
style's own numbers are under "surveys". The model trains for 3 epochs
(``--epochs``; 624 optimiser steps on 1,000 galaxies, ~4x the bundled run's) so that
the default run (2 styles x 3 seeds) fits in ~60 minutes on 2 CPU cores; ``--quick``
(300 training and 80 evaluation galaxies, one seed) in ~10 minutes. On a GPU, raise
``--train``, ``--epochs`` and use ``--config config/paper.yaml`` for the paper's scale.
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

SCIENCE_TYPES = ("blueberry", "broad_balmer", "double_peaked", "off_centre", "shock")
#: kinds no score, feature or default was designed or tuned for (linecube.simulate.HELD_OUT_TYPES)
HELD_OUT = ("outflow", "misaligned_gas", "ring")
QUALITY_TYPES = ("foreground_star",)
BASELINES = ("brightness", "median_cube", "features")
TWIN_PLATE_OFFSET = 10000


def with_twins(clean: list, skip: tuple[str, ...] = ()) -> tuple[list, dict]:
    """Each clean galaxy followed by one twin per anomaly kind (designed and held-out;
    not those in ``skip``): the galaxies, and {plate-IFU: (its clean galaxy's, kind)}
    ("" for a clean one). A twin's plate is offset by TWIN_PLATE_OFFSET x (k + 1), k
    the kind's place in ANOMALY_TYPES + HELD_OUT_TYPES."""
    from linecube.simulate import ANOMALY_TYPES, HELD_OUT_TYPES, with_anomaly

    gals, meta = [], {}
    for g in clean:
        gals.append(g)
        meta[g.plateifu] = (g.plateifu, "")
        for k, t in enumerate(ANOMALY_TYPES + HELD_OUT_TYPES):
            if t in skip:
                continue
            tw = with_anomaly(g, t)
            tw.plate = g.plate + TWIN_PLATE_OFFSET * (k + 1)
            gals.append(tw)
            meta[tw.plateifu] = (g.plateifu, t)
    return gals, meta


def build_sets(tmp: Path, style: str, seed: int, n_train: int, n_eval: int, threads: int, dr17_effects: bool = True):
    """Render the training survey and the evaluation set (clean + twins);
    ``dr17_effects``: with what real DR17 cubes carry (linecube.simulate.plan_survey)."""
    import numpy as np

    from linecube.simulate import plan_survey, simulate_cubes_h5

    train_h5 = tmp / "train" / "cubes.h5"
    simulate_cubes_h5(train_h5, n_train, 1000 + seed, anomaly_fraction=0.06, style=style, threads=threads, progress=False,
                      dr17_effects=dr17_effects)  # fmt: skip
    clean = plan_survey(n_eval, 2000 + seed, anomaly_fraction=0.0, style=style, dr17_effects=dr17_effects)
    gals, meta = with_twins(clean)
    eval_h5 = tmp / "eval" / "cubes.h5"
    simulate_cubes_h5(eval_h5, 0, 0, galaxies=gals, threads=threads, progress=False)
    # the clean galaxies' noise-free cubes: the floor of the test-loss ratio
    simulate_cubes_h5(tmp / "truth" / "cubes.h5", 0, 0, galaxies=clean, threads=threads, progress=False, noise_free=True)
    import h5py

    from linecube.io.formats import read_strings

    with h5py.File(eval_h5, "r") as h5:
        order = read_strings(h5["plateifu"])
    base = np.array([meta[p][0] for p in order], dtype=object)
    kind = np.array([meta[p][1] for p in order], dtype=object)
    return train_h5, eval_h5, base, kind


def loss_floor(eval_h5: Path, truth_h5: Path, scaler, med_model, batch_size: int = 32) -> float:
    """Test-loss ratio of a perfect model: Eq. 1 of each clean galaxy's noisy cube
    against its own noise-free cube, over Eq. 1 against the median cube, in the
    model's units (as :func:`linecube.analysis.score.loss_ratios`). What is left above it is
    noise no reconstruction can (or should) follow."""
    import h5py
    import numpy as np

    from linecube.analysis.score import eq1_against
    from linecube.data.dataset import read_rows
    from linecube.io.formats import read_strings

    with h5py.File(eval_h5, "r") as a, h5py.File(truth_h5, "r") as b:
        row = {p: i for i, p in enumerate(read_strings(a["plateifu"]))}
        pairs = [(row[p], j) for j, p in enumerate(read_strings(b["plateifu"]))]
    parts = []
    for s0 in range(0, len(pairs), batch_size):
        ia, ib = map(np.array, zip(*pairs[s0 : s0 + batch_size]))
        flux, _iv, mask = read_rows(eval_h5, ia)
        truth = read_rows(truth_h5, ib)[0]
        parts.append(eq1_against(scaler, flux, mask, med_model, np.where(mask == 0, truth, 0.0)))
    med, perfect = np.concatenate(parts, axis=1).mean(axis=1)
    return float(perfect / max(med, 1e-30))


def metrics_for(score, mean_abs_flux, base, kind, rng_seed: int, n_boot: int) -> dict:
    """Every benchmark metric of one score over the evaluation set."""
    import numpy as np

    from linecube.analysis.validate import auc_fast, bootstrap_auc_ci, paired_win_rate, recall_at_prevalence, spearman

    score = np.asarray(score, dtype=float)
    clean = kind == ""
    sci = np.isin(kind, SCIENCE_TYPES)
    sel = clean | sci
    held = np.isin(kind, HELD_OUT)
    out = {
        "auc": auc_fast(sci[sel], score[sel]),
        "auc_held_out": auc_fast(held[clean | held], score[clean | held]) if held.any() else None,
        "auc_held_out_ci": bootstrap_auc_ci(score[clean | held], base[clean | held], held[clean | held], n_boot, rng_seed)
        if held.any()
        else None,
        "per_held_out_type": {t: auc_fast((kind == t)[clean | (kind == t)], score[clean | (kind == t)]) for t in HELD_OUT}
        if held.any()
        else {},
        "auc_ci": bootstrap_auc_ci(score[sel], base[sel], sci[sel], n_boot, rng_seed),
        "per_type": {t: auc_fast((kind == t)[clean | (kind == t)], score[clean | (kind == t)]) for t in SCIENCE_TYPES},
        "data_quality": {t: auc_fast((kind == t)[clean | (kind == t)], score[clean | (kind == t)]) for t in QUALITY_TYPES},
        "paired_win": paired_win_rate(score, base, kind, clean, SCIENCE_TYPES),
        "recall_top5": recall_at_prevalence(score[clean], score[sci], 0.05, 0.05, n_boot, rng_seed),
        "rho_brightness": spearman(score[clean], mean_abs_flux[clean]),
    }
    return out


RAW_SETS = ("raw_tr", "raw_ev", "med_tr", "med_ev")


def run_one(style: str, seed: int, args, cfg: dict, work: Path) -> dict:
    """Simulate, train and collect one survey's per-galaxy statistics, then score
    them (:func:`evaluate`); with ``--save-stats`` the statistics are kept."""
    stats = collect_run(style, seed, args, cfg, work)
    if args.save_stats:
        save_stats(Path(args.save_stats) / f"{style}-{seed}.npz", stats)
    return evaluate(stats, seed, args)


def collect_run(style: str, seed: int, args, cfg: dict, work: Path) -> dict:
    """Everything :func:`evaluate` needs of one (style, seed): the per-galaxy raw
    statistics of the model and of the median cube on the training survey and
    the evaluation set, the reference rows, each evaluation galaxy's clean twin
    (``base``) and anomaly type (``kind``, "" = clean), the test-loss ratio."""
    import numpy as np

    from linecube.analysis.score import loss_ratios, reference_rows
    from linecube.analysis.stats import Reconstructor, collect_stats
    from linecube.data.dataset import median_cubes
    from linecube.io.formats import read_layout
    from linecube.model.train import train

    tmp = work / f"{style}-{seed}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    t0 = time.perf_counter()
    train_h5, eval_h5, base, kind = build_sets(tmp, style, seed, args.train, args.eval, args.threads, not args.no_dr17_effects)
    t_sim = time.perf_counter() - t0
    train_cfg = {**cfg["train"], "seed": int(cfg["train"]["seed"]) + seed}
    if args.epochs:
        train_cfg["epochs"] = args.epochs
    t0 = time.perf_counter()
    summ = train(train_h5, tmp / "model", args.kind, cfg["model"], train_cfg, threads=args.threads, verbose=0)
    t_train = time.perf_counter() - t0

    import h5py

    from linecube.io.formats import read_strings

    with h5py.File(train_h5, "r") as h5:
        layout, lines = read_layout(h5)
        train_ids = read_strings(h5["plateifu"])
    names = list(lines.names)
    ref = reference_rows(train_ids, tmp / "model" / "split.csv")
    rec = Reconstructor(tmp / "model" / "model.keras", cfg["model"], layout, names)
    t0 = time.perf_counter()
    kw = {"batch_size": 32, "progress": False}
    raw = {"raw_tr": collect_stats(train_h5, rec, names, layout.window_bins, **kw)}
    raw["raw_ev"] = collect_stats(eval_h5, rec, names, layout.window_bins, **kw)
    med_flux, med_model = median_cubes(train_h5, ref, rec.scaler, max_n=len(ref))

    def median_rec(flux, mask):
        return np.zeros((len(flux), 1), np.float32), np.broadcast_to(med_flux, flux.shape)

    raw["med_tr"] = collect_stats(train_h5, median_rec, names, layout.window_bins, **kw)
    raw["med_ev"] = collect_stats(eval_h5, median_rec, names, layout.window_bins, **kw)
    t_score = time.perf_counter() - t0
    ratio, noise_ratio = loss_ratios(eval_h5, rec, np.nonzero(kind == "")[0], med_model)
    out = {
        **raw,
        "ref": ref,
        "base": base,
        "kind": kind,
        "names": names,
        "test_loss_ratio": ratio,
        "test_loss_noise_ratio": noise_ratio,  # the same floor estimated from the ivar alone
        "test_loss_floor": loss_floor(eval_h5, tmp / "truth" / "cubes.h5", rec.scaler, med_model),
        "train": {k: summ[k] for k in ("epochs", "final_loss", "final_test_loss", "wall_seconds", "parameters")},
        "seconds": {"simulate": t_sim, "train": t_train, "score": t_score},
    }
    if args.kind == "vae":
        import pandas as pd

        h = pd.read_csv(tmp / "model" / "history.csv")
        out["kl_per_galaxy"] = float(h["test_kl"].iloc[-1]) if "test_kl" in h else float(h["kl"].iloc[-1])
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def save_stats(path: Path, stats: dict) -> None:
    """One run's statistics as an .npz (arrays) whose ``meta`` entry is JSON."""
    import numpy as np

    arrays = {f"{s}.{k}": v for s in RAW_SETS for k, v in vars(stats[s]).items()}
    arrays.update(ref=stats["ref"], base=stats["base"].astype(str), kind=stats["kind"].astype(str))
    meta = {k: v for k, v in stats.items() if k not in (*RAW_SETS, "ref", "base", "kind")}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part.npz")
    np.savez(tmp, meta=np.array(json.dumps(meta, default=float)), **arrays)
    os.replace(tmp, path)


def instrument_bias(score, ifu_fibres, ha_snr, kind) -> dict:
    """Mean percentile (0-100, among the clean galaxies) of the clean galaxies of each
    IFU bundle class and of quiet (Halpha S/N < linecube.analysis.ranks.QUIET_HA_SNR) vs
    line-emitting ones: 50 everywhere when a score does not read the footprint or
    a quiet galaxy's noise as an anomaly."""
    import numpy as np
    from scipy.stats import rankdata

    from linecube.analysis.ranks import QUIET_HA_SNR

    clean = kind == ""
    pct = 100.0 * (rankdata(np.asarray(score, float)[clean]) - 0.5) / clean.sum()
    fib, snr = np.asarray(ifu_fibres)[clean], np.asarray(ha_snr)[clean]
    groups = {"ifu19": fib == 19, "ifu37": fib == 37, "ifu61plus": fib >= 61, "quiet": snr < QUIET_HA_SNR,
              "emitting": snr >= QUIET_HA_SNR}  # fmt: skip
    return {k: (float(pct[m].mean()) if m.any() else None) for k, m in groups.items()}


#: development seeds choose defaults; confirmation seeds (offset by this) only report
CONFIRM_OFFSET = 500
#: what the default score is compared with, paired on the same galaxies
PAIRED_AGAINST = ("features", "brightness", "median_cube", "score_deep")


def paired_draws(a, b, base, pos, sel, n_boot: int, seed: int) -> tuple[float, list[float]]:
    """AUC(a) - AUC(b) on the rows ``sel`` (``pos``: anomalous), and its bootstrap
    draws resampling galaxies with their twins, the same draws for both scores."""
    import numpy as np

    from linecube.analysis.validate import auc_fast

    a, b, base, pos = (np.asarray(v)[sel] for v in (a, b, base, pos))
    diff = auc_fast(pos, a) - auc_fast(pos, b)
    _, gid = np.unique(base.astype(str), return_inverse=True)
    members = [np.nonzero(gid == g)[0] for g in range(gid.max() + 1)]
    rng = np.random.default_rng([seed, 47])
    draws = []
    for _ in range(n_boot):
        rows = np.concatenate([members[g] for g in rng.integers(len(members), size=len(members))])
        da, db = auc_fast(pos[rows], a[rows]), auc_fast(pos[rows], b[rows])
        draws.append(float("nan") if da is None or db is None else da - db)
    return float(diff), draws


def paired_summary(per_run: list[dict]) -> dict:
    """Mean over runs of the paired AUC differences and the 95 % interval of that
    mean (the runs' bootstrap draws averaged draw by draw); the verdict is a tie
    when the interval holds 0."""
    import numpy as np

    out = {}
    for key in per_run[0]:
        for what in per_run[0][key]:
            diffs = [r[key][what][0] for r in per_run]
            draws = np.nanmean(np.array([r[key][what][1] for r in per_run]), axis=0)
            lo, hi = np.nanpercentile(draws, [2.5, 97.5])
            verdict = "tie" if lo <= 0 <= hi else ("better" if lo > 0 else "worse")
            out.setdefault(key, {})[what] = {"diff": float(np.mean(diffs)), "ci95": [float(lo), float(hi)], "verdict": verdict}
    return out


def load_stats(path: Path) -> dict:
    """Inverse of :func:`save_stats`."""
    import numpy as np

    from linecube.analysis.stats import RawStats

    with np.load(path) as z:
        out = json.loads(str(z["meta"]))
        for s in RAW_SETS:
            out[s] = RawStats(**{k: z[f"{s}.{k}"] for k in RawStats.__dataclass_fields__})
        out.update(ref=z["ref"], base=z["base"].astype(object), kind=z["kind"].astype(object))
    return out


def joined(a, b):
    """Two RawStats (a run's training and evaluation rows) as one, ``a``'s rows first."""
    from linecube.analysis.stats import join_stats

    return join_stats(a, b)


def evaluate(stats: dict, seed: int, args) -> dict:
    """Every score and baseline of one run (:func:`collect_run`) and its metrics."""
    import numpy as np

    from linecube.analysis.score import derive_scores

    raw_ev, med_ev = stats["raw_ev"], stats["med_ev"]
    ref, names, base, kind = stats["ref"], stats["names"], stats["base"], stats["kind"]
    ev = slice(len(stats["raw_tr"].paper), None)
    sc = derive_scores(joined(stats["raw_tr"], raw_ev), ref, names, seed)
    med_sc = derive_scores(joined(stats["med_tr"], med_ev), ref, names, seed)
    scores = {k: v[ev] for k, v in sc.items() if k.startswith("score_")}
    scores["residual_median_cube"] = med_sc["score_residual"][ev]
    baselines = {
        "brightness": raw_ev.mean_abs_flux,
        "median_cube": med_ev.paper,
        "features": sc["score_features"][ev],
    }
    maf = raw_ev.mean_abs_flux
    default = args.default_score
    everything = {**scores, **baselines}
    clean = kind == ""
    sets = {"designed": np.isin(kind, SCIENCE_TYPES), "held_out": np.isin(kind, HELD_OUT)}
    paired = {
        f"{default} - {other}": {
            name: paired_draws(scores[default], everything[other], base, m, clean | m, args.boot, seed)
            for name, m in sets.items()
            if m.any()
        }
        for other in PAIRED_AGAINST
        if other in everything and other != default
    }
    res = {
        "paired": paired,
        "scores": {k: metrics_for(v, maf, base, kind, seed, args.boot) for k, v in scores.items()},
        "baselines": {k: metrics_for(v, maf, base, kind, seed, args.boot) for k, v in baselines.items()},
        "instrument_bias": {
            k: instrument_bias(scores[k], raw_ev.ifu_fibres, raw_ev.ha_snr, kind)
            for k in ("score_hybrid", "score_deep", "score_features", "score_residual", "score_latent")
        },
        **{
            k: stats[k]
            for k in ("test_loss_ratio", "test_loss_floor", "test_loss_noise_ratio", "train", "seconds", "kl_per_galaxy")
            if k in stats
        },
    }
    if "test_loss_noise_ratio" in stats:  # the score log's definition (linecube.analysis.diagnostics)
        from linecube.analysis.diagnostics import learned_fraction

        res["test_loss_learned_fraction"] = learned_fraction(stats["test_loss_ratio"], stats["test_loss_noise_ratio"])
    return res


def average(runs: list[dict]) -> dict:
    """Seed/survey average of nested metric dicts (lists element-wise)."""
    import numpy as np

    first = runs[0]
    if isinstance(first, dict):
        return {k: average([r[k] for r in runs]) for k in first}
    if isinstance(first, list | tuple):
        return [average([r[i] for r in runs]) for i in range(len(first))]
    vals = [v for v in runs if v is not None and not (isinstance(v, float) and np.isnan(v))]
    return float(np.mean(vals)) if vals else None


def table(res: dict, title: str) -> str:
    rows = [f"\n{title}", f"{'score':<24}{'AUC':>6} {'95% CI':>13} " + " ".join(f"{t[:8]:>8}" for t in SCIENCE_TYPES)
            + f" {'star':>6} {'win':>6} {'rec5%':>6} {'rho':>6} | {'held':>5} " + " ".join(f"{t[:8]:>8}" for t in HELD_OUT)]  # fmt: skip

    def line(name, m):
        ci = m["auc_ci"]
        pt = " ".join(f"{m['per_type'][t]:8.2f}" for t in SCIENCE_TYPES)
        star = m["data_quality"]["foreground_star"]
        held = m.get("auc_held_out")
        ph = " ".join(f"{(m.get('per_held_out_type') or {}).get(t) or float('nan'):8.2f}" for t in HELD_OUT)
        return (
            f"{name:<24}{m['auc']:6.3f} [{ci[0]:.2f}, {ci[1]:.2f}] {pt} {star:6.2f} "
            f"{m['paired_win']:6.2f} {m['recall_top5']:6.2f} {m['rho_brightness']:+6.2f} | "
            + (f"{held:5.3f} {ph}" if held is not None else "  -")
        )

    for k, m in res["scores"].items():
        rows.append(line(k, m))
    for k, m in res["baselines"].items():
        rows.append(line(f"baseline:{k}", m))
    for k, b in (res.get("instrument_bias") or {}).items():
        rows.append(f"clean-galaxy mean percentile, {k}: " + ", ".join(f"{g} {v:.0f}" for g, v in b.items() if v is not None))
    floor = res.get("test_loss_floor")
    rows.append(f"test loss / median-cube loss: {res['test_loss_ratio']:.3f}"
                + (f" (a perfect model, the noise-free cubes: {floor:.3f})" if floor is not None else ""))  # fmt: skip
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer galaxies and epochs, one seed")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per survey style (default 3; --quick 1)")
    ap.add_argument("--styles", default="default,alt", help="survey styles, comma-separated")
    ap.add_argument("--kind", default="ae", choices=["ae", "vae"])
    ap.add_argument("--config", action="append", default=[], help="YAML merged over config/config.yaml (repeatable)")
    ap.add_argument("--train", type=int, default=None, help="training-survey galaxies (default 1000; --quick 300)")
    ap.add_argument("--eval", type=int, default=None, help="held-out normal galaxies (default 300; --quick 80)")
    ap.add_argument(
        "--epochs", type=int, default=None, help="override train.epochs (default 3: 624 steps on 1,000 galaxies; --quick 3)"
    )
    ap.add_argument("--boot", type=int, default=500, help="bootstrap draws")
    ap.add_argument("--no-dr17-effects", action="store_true", help="simulate without DR17's effects (an ablation)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=None, help="where the temporary cubes go (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the rendered cubes and models")
    ap.add_argument("--save-stats", default=None, help="folder: keep each run's per-galaxy statistics ({style}-{seed}.npz)")
    ap.add_argument(
        "--from-stats",
        default=None,
        help="folder written by --save-stats: re-score its runs (no simulation, no training; the scores as the code now defines them)",
    )
    ap.add_argument(
        "--seed-set",
        default="dev",
        choices=["dev", "confirm"],
        help=f"dev: seeds 0.. (defaults are chosen on these); confirm: seeds {CONFIRM_OFFSET}.. (only reported)",
    )
    ap.add_argument("--out", required=True, help="JSON file to write")
    args = ap.parse_args()
    args.seeds = args.seeds or (1 if args.quick else 3)
    args.train = args.train or (300 if args.quick else 1000)
    args.eval = args.eval or (80 if args.quick else 300)

    from linecube.config import load_config

    root = Path(__file__).resolve().parent.parent
    cfg = load_config(root / "config" / "config.yaml", *args.config)
    args.default_score = cfg["score"]["default"]
    first = CONFIRM_OFFSET if args.seed_set == "confirm" else 0
    if not args.epochs:  # the 60-minute budget on 2 CPU cores: 3 epochs of the training survey
        args.epochs = min(int(cfg["train"]["epochs"]), 3)
    styles = [s for s in args.styles.split(",") if s]
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="linecube-science-"))
    t_all = time.perf_counter()
    surveys, all_paired = {}, []
    for style in styles:
        per_seed, paired_runs = [], []
        for seed in range(first, first + args.seeds):
            if args.from_stats:
                r = evaluate(load_stats(Path(args.from_stats) / f"{style}-{seed}.npz"), seed, args)
            else:
                r = run_one(style, seed, args, cfg, work)
            paired_runs.append(r.pop("paired"))
            r["paired"] = {k: {w: d for w, (d, _) in v.items()} for k, v in paired_runs[-1].items()}
            per_seed.append(r)
            print(table(r, f"[{style}, seed {seed}] ({', '.join(f'{k} {v:.0f} s' for k, v in r['seconds'].items())})"),
                  flush=True)  # fmt: skip
        surveys[style] = {**average(per_seed), "seeds": per_seed, "paired": paired_summary(paired_runs)}
        all_paired += paired_runs
    allruns = [r for s in surveys.values() for r in s["seeds"]]
    top = average(allruns)
    top["paired"] = paired_summary(all_paired)
    best = max(top["scores"], key=lambda k: min(surveys[s]["scores"][k]["auc"] for s in styles))
    out = {
        "default_score": cfg["score"]["default"],
        "seed_set": args.seed_set,
        "seeds": list(range(first, first + args.seeds)),
        "dr17_effects": not args.no_dr17_effects,
        "best_score": best,
        "paired": top["paired"],
        "kind": args.kind,
        "config": {"model": cfg["model"], "train": cfg["train"], "score": cfg["score"]},
        "n_train": args.train,
        "n_eval": args.eval,
        "seeds_per_survey": args.seeds,
        "epochs": args.epochs,
        "scores": top["scores"],
        "baselines": top["baselines"],
        "instrument_bias": top.get("instrument_bias"),
        "test_loss_ratio": top["test_loss_ratio"],
        "test_loss_floor": top.get("test_loss_floor"),
        "test_loss_learned_fraction": top.get("test_loss_learned_fraction"),
        "surveys": surveys,
        "wall_seconds": time.perf_counter() - t_all,
    }
    if args.kind == "vae":
        out["kl_per_galaxy"] = top.get("kl_per_galaxy")
    for style in styles:
        print(table(surveys[style], f"== {style} survey, mean of {args.seeds} seed(s)"))
    print(table(out, f"== all surveys, default score {out['default_score']}, best (worst-survey AUC) {best}"))
    print(f"paired AUC differences over {len(allruns)} run(s), {args.seed_set} seeds (95 % interval; inside it: a tie)")
    for k, v in out["paired"].items():
        print("  " + k + ": " + "; ".join(f"{w} {d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}] {d['verdict']}"
                                          for w, d in v.items()))  # fmt: skip
    print(f"wall time {out['wall_seconds']:.0f} s")
    Path(args.out).write_text(json.dumps(out, indent=1))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
