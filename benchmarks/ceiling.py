"""Ceiling of the science benchmark: how far can any score separate each kind's
twins from their clean galaxies, given the noise?

The science benchmark (benchmarks/science.py) renders, for every clean evaluation
galaxy, one twin per anomaly kind with the same parameters and noise realisation.
Here the same evaluation sets are rendered three ways (noisy, noise-free clean,
noise-free twin) and scored by detectors that no trained model can beat:

- ``matched``: the Neyman-Pearson bound for a detector that knows each twin's
  exact anomaly (its noise-free difference d from the clean galaxy): the twin's
  matched-filter statistic is N(s, 1) with s = sqrt(sum d^2 ivar), the clean
  galaxy's N(0, 1), so P(twin > clean) = Phi(s / sqrt(2)); averaged over twins.
  No score can exceed it (correlated noise lowers it further: ignored here).
- ``oracle_chi2``: a perfect model of the *normal* galaxy (its noise-free cube),
  knowing nothing of the anomaly: the chi^2 excess of the data over it, in units
  of its null spread, (chi^2 - n) / sqrt(2 n), over usable voxels.
- ``oracle_local``: the same perfect model, the residual localised: chi^2 of each
  line window summed over 3 x 3 spaxels, the largest excess over lines and spaxels.
- ``oracle_residual``, ``oracle_significance``: the same perfect model through the
  pipeline's own residual statistics (``score_residual``'s and
  ``score_significance``'s, robust z against the clean galaxies): whether the
  statistic or the model keeps the deep scores from the held-out kinds.

Also the share of twins whose matched-filter S/N is below 3 (invisible to any
score). Printed per kind, designed and held-out apart; ``--out`` keeps the JSON.

    python benchmarks/ceiling.py [--seed-set confirm] [--seeds 1] [--eval 80] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from science import CONFIRM_OFFSET, HELD_OUT, QUALITY_TYPES, SCIENCE_TYPES, with_twins  # noqa: E402

KINDS = SCIENCE_TYPES + HELD_OUT


def render(tmp: Path, style: str, seed: int, n_eval: int, threads: int):
    """Noisy cubes, noise-free clean and noise-free twins of one evaluation set:
    (flux, ivar, truth_clean, truth_twin, kind) with twins' rows aligned to their
    clean galaxy's truth. Cubes (N, wavelength, y, x) float32."""
    import h5py

    from linecube.io.formats import read_meta, read_strings
    from linecube.simulate import plan_survey, simulate_cubes_h5

    clean = plan_survey(n_eval, 2000 + seed, anomaly_fraction=0.0, style=style, dr17_effects=True)
    gals, meta = with_twins(clean, skip=QUALITY_TYPES)
    out = {}
    for name, free in (("noisy", False), ("truth", True)):
        path = tmp / name / "cubes.h5"
        simulate_cubes_h5(path, 0, 0, galaxies=gals, threads=threads, progress=False, noise_free=free)
        with h5py.File(path, "r") as h5:
            names = read_strings(h5["plateifu"])
            out[name] = (names, h5["flux"][:], h5["ivar"][:], h5["mask"][:], read_meta(h5, "correl_sigma"))
    names, flux, ivar, mask, correl = out["noisy"]
    tnames, tflux = out["truth"][:2]
    assert list(names) == list(tnames)
    row = {p: i for i, p in enumerate(names)}
    base = np.array([row[meta[p][0]] for p in names])
    kind = np.array([meta[p][1] for p in names], dtype=object)
    return flux, ivar, mask, correl, tflux[base], tflux, kind


def box3(a: np.ndarray) -> np.ndarray:
    """Sum over each spaxel's 3 x 3 neighbourhood of (..., y, x), zero-padded."""
    p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)])
    return sum(p[..., dy : dy + a.shape[-2], dx : dx + a.shape[-1]] for dy in range(3) for dx in range(3))


def detectors(flux, ivar, truth_clean, truth_twin, n_lines: int) -> dict[str, np.ndarray]:
    """Per-galaxy ``oracle_chi2``, ``oracle_local`` and the matched-filter S/N."""
    use = ivar > 0
    chi = np.where(use, (flux - truth_clean) ** 2 * ivar, 0.0)
    n = use.sum(axis=(1, 2, 3)).astype(float)
    z_total = (chi.sum(axis=(1, 2, 3)) - n) / np.sqrt(2 * n)
    nb, nw, ny, nx = chi.shape
    win = nw // n_lines
    cw = box3(chi.reshape(nb, n_lines, win, ny, nx).sum(axis=2))
    k = box3(use.reshape(nb, n_lines, win, ny, nx).sum(axis=2).astype(float))
    z_local = np.where(k > 0, (cw - k) / np.sqrt(2 * np.maximum(k, 1)), -np.inf).reshape(nb, -1).max(axis=1)
    snr = np.sqrt(np.where(use, (truth_twin - truth_clean) ** 2 * ivar, 0.0).sum(axis=(1, 2, 3)))
    return {"oracle_chi2": z_total, "oracle_local": z_local, "snr": snr}


def pipeline_statistics(flux, ivar, mask, correl, truth_clean, kind, names: list[str], window_bins: int) -> dict:
    """The pipeline's residual and significance scores with each clean galaxy's
    noise-free cube as the reconstruction (robust z fitted on the clean galaxies)."""
    from linecube.analysis.residual import line_residual_stats, line_significance_stats, residual_score
    from linecube.data.fluxscale import halpha_scale
    from linecube.io.formats import halpha_index

    n_lines = len(names)
    res, sig = [], []
    for s in range(0, len(flux), 32):
        f, iv, m, t = flux[s : s + 32], ivar[s : s + 32], mask[s : s + 32], truth_clean[s : s + 32]
        scale = halpha_scale(f, iv, m, halpha_index(names), window_bins, correl_sigma=correl[s : s + 32])
        res.append(line_residual_stats(f, t, iv, m, scale, n_lines, window_bins)[0])
        sig.append(line_significance_stats(f, t, iv, m, n_lines, window_bins))
    ref = np.nonzero(kind == "")[0]
    return {
        "oracle_residual": residual_score(np.concatenate(res), ref, names)[0],
        "oracle_significance": residual_score(np.concatenate(sig), ref, names)[0],
    }


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.ones(len(pos)), np.zeros(len(neg))], np.r_[pos, neg]))


def summarise(det: dict[str, np.ndarray], kind: np.ndarray) -> dict:
    from scipy.stats import norm

    clean = kind == ""
    res: dict = {"per_kind": {}}
    oracles = [k for k in det if k.startswith("oracle_")]

    def row(m):
        r = {"matched": float(norm.cdf(det["snr"][m] / np.sqrt(2)).mean())}
        r.update({k: auc(det[k][m], det[k][clean]) for k in oracles})
        r["share_snr_below_3"] = float((det["snr"][m] < 3).mean())
        return r

    for t in KINDS:
        res["per_kind"][t] = row(kind == t)
    for group, kinds in (("designed", SCIENCE_TYPES), ("held_out", HELD_OUT)):
        res[group] = row(np.isin(kind, kinds))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed-set", choices=("dev", "confirm"), default="confirm")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--eval", type=int, default=80)
    ap.add_argument("--styles", default="default,alt")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    from linecube.io.formats import load_lines

    lines = load_lines()
    n_lines = len(lines)
    first = CONFIRM_OFFSET if args.seed_set == "confirm" else 0
    dets, kinds = [], []
    for style in args.styles.split(","):
        for seed in range(first, first + args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                flux, ivar, mask, correl, tc, tt, kind = render(Path(tmp), style, seed, args.eval, args.threads)
            det = detectors(flux, ivar, tc, tt, n_lines)
            det.update(pipeline_statistics(flux, ivar, mask, correl, tc, kind, list(lines.names), flux.shape[1] // n_lines))
            dets.append(det)
            del flux, ivar, mask, tc, tt
            kinds.append(kind)
    det = {k: np.concatenate([d[k] for d in dets]) for k in dets[0]}
    res = summarise(det, np.concatenate(kinds))
    res.update(seed_set=args.seed_set, seeds=args.seeds, n_eval=args.eval, styles=args.styles.split(","))
    print(f"{'kind':>15} {'matched':>8} {'chi2':>6} {'local':>6} {'resid':>6} {'signif':>6} {'S/N<3':>6}")
    for t, r in list(res["per_kind"].items()) + [("designed", res["designed"]), ("held_out", res["held_out"])]:
        print(f"{t:>15} {r['matched']:8.3f} {r['oracle_chi2']:6.3f} {r['oracle_local']:6.3f} {r['oracle_residual']:6.3f} "
              f"{r['oracle_significance']:6.3f} {r['share_snr_below_3']:6.2f}")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
