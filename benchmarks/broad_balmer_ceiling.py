"""How findable is the simulator's broad Balmer line at all? A ceiling for the science benchmark's broad-Balmer AUC.

The science benchmark finds broad-Balmer twins at AUC ~0.55 with every score. This
script asks what a detector that *knows* the anomaly's form could reach on the same
galaxies, and whether the paper's 10-bin windows are what limits it:

1. For ``--pairs`` normal galaxies of each survey style and their broad-Balmer twins
   (the same galaxy and noise realisation, ``with_anomaly``), render the 32x32 crop
   the benchmark renders (same centre, coverage, masks and noise model) over
   +-``--half-width`` km/s around H-alpha and H-beta on the DRP log-lambda grid.
2. Per galaxy and Balmer line: the nucleus (r < 3 spaxels) minus the 3-8 spaxel ring
   scaled to the nucleus's continuum (a broad-line region is a point source; the
   host's stellar absorption and continuum cancel), narrow lines masked +-600 km/s,
   fitted by weighted least squares as a line plus a Gaussian centred on the line
   (sigma 1,300, 2,100 or 3,000 km/s); the statistic is the Gaussian's largest
   signal-to-noise. A matched filter for the injected form: an upper reference for
   any anomaly detector, which does not know the form.
3. The same fit on only the two outermost bins on each side of every 10-bin window
   in that range (what cubes.h5 holds beside the narrow-line cores).

Printed per style: AUC of broad twins against the clean galaxies for H-alpha,
H-beta and their sum, wide and windows-only, and the median signal-to-noise.

With ``--stats DIR`` (the science benchmark's ``--save-stats``), it also re-scores
those runs with the feature baseline's nuclear H-alpha pedestal alone and with the
default score's larger of itself and that pedestal (a targeted broad-line detector
fused into the default), to show what such a detector would cost the other types.

    python benchmarks/broad_balmer_ceiling.py [--pairs 300] [--stats DIR] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

C_KMS = 299792.458
NARROW_MASK_KMS = 600.0
BROAD_SIGMAS_KMS = (1300.0, 2100.0, 3000.0)
BALMER = ("Halpha", "Hbeta")


def render_nucleus(g, lines, grid: np.ndarray, half_bins: int, rng: np.random.Generator):
    """Observed wavelengths (W,), flux and ivar (W, 32, 32) of galaxy ``g``'s crop, as
    the benchmark renders it (:func:`linecube.simulate.cubes.emission_line_cube`),
    over +-``half_bins`` DRP bins around each Balmer line (concatenated)."""
    from linecube.formats import CubeLayout
    from linecube.simulate.cubes import emission_line_cube

    rest = dict(zip(lines.names, lines.rest))
    centres = [int(np.argmin(np.abs(grid - rest[b] * (1 + g.z)))) for b in BALMER]
    idx = np.concatenate([np.arange(c - half_bins, c + half_bins + 1) for c in centres])
    d = emission_line_cube(g, lines, CubeLayout(len(lines)), grid, rng, wave_idx=idx)
    return d["wave"], d["flux"], d["ivar"]


def narrow_free(wave: np.ndarray, z: float, lines) -> np.ndarray:
    """Bins (W,) farther than NARROW_MASK_KMS from every redshifted narrow line."""
    near = np.zeros(wave.size, bool)
    for lam in lines.rest:
        near |= np.abs(wave / (lam * (1 + z)) - 1) * C_KMS < NARROW_MASK_KMS
    return ~near


def window_edges(wave: np.ndarray, z: float, lines, grid: np.ndarray, window_bins: int = 10) -> np.ndarray:
    """Bins (W,) that are one of the two outermost bins on either side of a 10-bin
    window: within cubes.h5, the bins a narrow line's core leaves to the continuum
    and a broad pedestal (what the feature baseline's pedestals read)."""
    from linecube.extract import window_centres, window_indices

    win = window_indices(window_centres(grid, lines.rest, z), window_bins)
    win = np.asarray(win).reshape(len(lines.rest), window_bins)
    edges = np.concatenate([win[:, :2], win[:, -2:]], axis=1)
    return np.isin(wave, grid[edges.ravel()])


def broad_snr(wave, flux, ivar, z: float, lines, free: np.ndarray) -> list[float]:
    """Per Balmer line: the largest signal-to-noise of a broad Gaussian fitted to the
    nucleus-minus-ring spectrum (module docstring), using the bins where ``free``."""
    from linecube.anomaly import NUCLEUS_RADIUS, RING_RADII, _radius
    from linecube.formats import sigma_from_ivar

    rest = dict(zip(lines.names, lines.rest))
    r = _radius(*flux.shape[-2:])
    inner, ring = r < NUCLEUS_RADIUS, (r >= RING_RADII[0]) & (r < RING_RADII[1])
    var = sigma_from_ivar(ivar).astype(np.float64) ** 2  # 0 where masked (flux 0 there too)
    nuc, rg = flux[:, inner].sum(1).astype(float), flux[:, ring].sum(1).astype(float)
    vn, vr = var[:, inner].sum(1), var[:, ring].sum(1)
    n_per = wave.size // len(BALMER)
    out = []
    for k, b in enumerate(BALMER):
        sl = slice(k * n_per, (k + 1) * n_per)
        use = free[sl]
        vel = (wave[sl] / (rest[b] * (1 + z)) - 1) * C_KMS
        scale = np.median(nuc[sl][use]) / max(np.median(rg[sl][use]), 1e-9)
        res, v = nuc[sl] - scale * rg[sl], vn[sl] + scale**2 * vr[sl]
        best = -np.inf
        for s in BROAD_SIGMAS_KMS:
            x = np.stack([np.ones_like(vel), vel / 1e4, np.exp(-0.5 * (vel / s) ** 2)], 1)[use]
            w = 1.0 / v[use]
            a = x.T @ (x * w[:, None])
            if np.linalg.cond(a) > 1e12:
                continue
            cov = np.linalg.inv(a)
            p = cov @ (x.T @ (w * res[use]))
            best = max(best, p[2] / np.sqrt(cov[2, 2]))
        out.append(float(best))
    return out


def ceiling(style: str, pairs: int, half_kms: float, seed: int) -> dict:
    """AUCs of the matched filter, wide and windows-only, for one survey style."""
    from linecube.formats import load_lines
    from linecube.manga import log_wave_grid
    from linecube.simulate import plan_survey
    from linecube.simulate.galaxy import with_anomaly
    from linecube.validate import auc_fast

    lines = load_lines(None)
    grid = log_wave_grid()
    half_bins = int(round(np.log10(1 + half_kms / C_KMS) / 1e-4))
    stats = {"wide": ([], []), "windows": ([], [])}
    for g in plan_survey(pairs, seed, anomaly_fraction=0.0, style=style):
        twin = with_anomaly(g, "broad_balmer")
        for j, gg in enumerate((g, twin)):
            wave, flux, ivar = render_nucleus(gg, lines, grid, half_bins, np.random.default_rng([g.seed, 1]))
            stats["wide"][j].append(broad_snr(wave, flux, ivar, gg.z, lines, narrow_free(wave, gg.z, lines)))
            stats["windows"][j].append(broad_snr(wave, flux, ivar, gg.z, lines, window_edges(wave, gg.z, lines, grid)))
    out = {}
    for name, (clean, broad) in stats.items():
        c, b = np.array(clean), np.array(broad)
        y = np.r_[np.zeros(len(c), bool), np.ones(len(b), bool)]
        row = {f"auc_{ln}": auc_fast(y, np.r_[c[:, i], b[:, i]]) for i, ln in enumerate(BALMER)}
        row["auc_sum"] = auc_fast(y, np.r_[c.sum(1), b.sum(1)])
        row["median_snr_clean"] = np.median(c, 0).round(2).tolist()
        row["median_snr_broad"] = np.median(b, 0).round(2).tolist()
        out[name] = row
    return out


def fused(stats_dir: Path) -> dict:
    """Science-benchmark metrics of the nuclear H-alpha pedestal alone and of
    max(score_hybrid, pedestal), re-scored from ``--save-stats`` files."""
    from science import joined, load_stats, metrics_for

    from linecube.anomaly import FEATURE_NAMES, gauss_rank
    from linecube.score import derive_scores

    j = FEATURE_NAMES.index("nuclear_pedestal_Halpha")
    res: dict[str, dict] = {}
    for f in sorted(stats_dir.glob("*.npz")):
        st = load_stats(f)
        seed = int(f.stem.split("-")[-1])
        raw = joined(st["raw_tr"], st["raw_ev"])
        sc = derive_scores(raw, st["ref"], st["names"], seed)
        ev = slice(len(st["raw_tr"].paper), None)
        ped = gauss_rank(raw.features[st["ref"], j], raw.features[:, j])
        rules = {
            "score_hybrid": sc["score_hybrid"],
            "pedestal": ped,
            "max(hybrid, pedestal)": np.maximum(sc["score_hybrid"], ped),
        }
        for k, v in rules.items():
            res.setdefault(k, {})[f.stem] = metrics_for(v[ev], st["raw_ev"].mean_abs_flux, st["base"], st["kind"], seed, 50)
    out = {}
    for k, runs in res.items():
        ms = list(runs.values())
        out[k] = {
            "auc": float(np.mean([m["auc"] for m in ms])),
            "per_type": {t: float(np.mean([m["per_type"][t] for m in ms])) for t in ms[0]["per_type"]},
            "paired_win": float(np.mean([m["paired_win"] for m in ms])),
            "recall_top5": float(np.mean([m["recall_top5"] for m in ms])),
        }
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=300, help="normal galaxies (each with its broad twin) per style")
    ap.add_argument("--styles", nargs="+", default=["default", "alt"])
    ap.add_argument("--half-width", type=float, default=12000.0, help="km/s rendered each side of H-alpha and H-beta")
    ap.add_argument("--seed", type=int, default=5000)
    ap.add_argument("--stats", type=Path, help="the science benchmark's --save-stats DIR: also re-score a fused detector")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    t0 = time.time()
    result: dict = {"pairs": a.pairs, "half_width_kms": a.half_width, "styles": {}}
    print(f"{'style':<8} {'bins':<8} {'AUC Ha':>7} {'AUC Hb':>7} {'AUC sum':>8}  median S/N clean -> broad (Ha, Hb)")
    for style in a.styles:
        r = ceiling(style, a.pairs, a.half_width, a.seed)
        result["styles"][style] = r
        for name, row in r.items():
            print(f"{style:<8} {name:<8} {row['auc_Halpha']:7.3f} {row['auc_Hbeta']:7.3f} {row['auc_sum']:8.3f}  "
                  f"{row['median_snr_clean']} -> {row['median_snr_broad']}")  # fmt: skip
    if a.stats:
        result["fused"] = fused(a.stats)
        print(f"\n{'rule':<24} {'AUC':>6} {'broad':>6} {'worst other type':>17} {'win':>5} {'recall':>6}")
        for k, m in result["fused"].items():
            others = min(v for t, v in m["per_type"].items() if t != "broad_balmer")
            print(
                f"{k:<24} {m['auc']:6.3f} {m['per_type']['broad_balmer']:6.2f} {others:17.2f} {m['paired_win']:5.2f} {m['recall_top5']:6.2f}"
            )
    result["wall_seconds"] = round(time.time() - t0, 1)
    print(f"\n{result['wall_seconds']:.0f} s")
    if a.out:
        from linecube.atomic import atomic_path

        with atomic_path(a.out) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
