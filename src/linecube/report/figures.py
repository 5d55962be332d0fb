"""The paper's figures and ours (matplotlib, PNG and PDF, no TensorFlow).

* Fig. 2 analogue: 3-D UMAP coloured by anomaly score with an inset score
  histogram, AE and VAE side by side; the same with AGN by selection method.
* Fig. 3 analogue: gallery of the most anomalous AGN (H-alpha, [OIII] 5008 and
  [NII] 6585 window-integrated maps, central spectrum input vs reconstruction,
  residual map, per-line score shares) and nearest-neighbour panels.
* Per-spaxel BPT diagrams of the gallery galaxies.
* Score distributions of AE vs VAE; per-line share heat map of the top 50.
* Validation (ROC curves, scores by anomaly type, AGN vs non-AGN); PCA variance.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from linecube.io.agn import METHOD_LABELS, METHODS  # noqa: E402
from linecube.io.atomic import atomic_path
from linecube.physics.bpt import bpt_ratios, kauffmann03, kewley01, kewley01_s2, kewley06_seyfert_liner  # noqa: E402


def plain(text) -> str:
    """Text from data (a line name, an anomaly type, a plate-IFU) as matplotlib shows
    it literally: its dollar signs escaped, so nothing in a user's names is parsed
    as mathtext (a '$\\frac' would stop the figure)."""
    return str(text).replace("$", r"\$")


FLUX_LABEL = r"$10^{-17}$ erg s$^{-1}$ cm$^{-2}$ $\AA^{-1}$ spaxel$^{-1}$"


SCORE_LABEL = "anomaly score (MAE, " + r"$10^{-17}$ erg/s/cm$^2$/$\AA$/spaxel)"


def score_is_log(values) -> bool:
    """Whether a score is drawn on a log axis: positive and spanning > 20x (the
    paper's MAE in flux units); rank-like scores (the default) are drawn linearly."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    return bool(len(v)) and bool((v > 0).all()) and float(v.max() / v.min()) > 20.0


def score_colour(values) -> tuple[np.ndarray, str]:
    """(values to colour by, colour-bar label): log10 for a log score, else as is."""
    v = np.asarray(values, dtype=float)
    if score_is_log(v):
        return np.log10(np.maximum(v, 1e-12)), "log10 anomaly score"
    return v, "anomaly score"


def score_label(values) -> str:
    return SCORE_LABEL if score_is_log(values) else "anomaly score (default ranking; see scores.csv)"


METHOD_STYLE = {
    "wise_agn": ("tab:red", "^"),
    "bat_agn": ("tab:purple", "s"),
    "radio_agn": ("tab:blue", "o"),
    "broad_agn": ("tab:orange", "D"),
}


def save_figure(fig, out_base: str | os.PathLike, formats: Sequence[str] = ("png", "pdf"), dpi: int = 130) -> list[Path]:
    """Save ``fig`` as ``out_base.<fmt>`` for each format, atomically; close it."""
    paths = []
    for fmt in formats:
        p = Path(f"{out_base}.{fmt}")
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        paths.append(p)
    plt.close(fig)
    return paths


def _umap_cols(emb: pd.DataFrame) -> list[str]:
    return [c for c in ("umap1", "umap2", "umap3") if c in emb]


def _merge(emb: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    return emb.merge(scores, on="plateifu", how="inner")


def _scatter3d(ax, df: pd.DataFrame, c, **kw):
    cols = _umap_cols(df)
    if len(cols) == 3:
        return ax.scatter(df[cols[0]], df[cols[1]], df[cols[2]], c=c, **kw)
    return ax.scatter(df[cols[0]], df[cols[1]], c=c, **kw)


def _umap_panels(embeddings: dict, scores: dict):
    """A figure with one UMAP panel per model, and an iterator of (index, model,
    embedding merged with scores, axes, is-3-D) to draw them."""
    models = list(embeddings)
    fig = plt.figure(figsize=(6.5 * len(models), 6))

    def panels():
        for i, m in enumerate(models):
            df = _merge(embeddings[m], scores[m])
            three = len(_umap_cols(df)) == 3
            yield i, m, df, fig.add_subplot(1, len(models), i + 1, projection="3d" if three else None), three

    return fig, panels()


def plot_umap_scores(embeddings: dict, scores: dict, out_base, formats=("png", "pdf")):
    """Fig. 2 analogue: UMAP of each model coloured by log anomaly score, with an
    inset histogram of the scores (median and 90th percentile marked)."""
    fig, panels = _umap_panels(embeddings, scores)
    for i, m, df, ax, three in panels:
        cv, clabel = score_colour(df["score"])
        logs = pd.Series(cv, index=df.index)
        order = np.argsort(logs.to_numpy())
        sc = (
            _scatter3d(ax, df.iloc[order], logs.iloc[order], cmap="viridis", s=14, alpha=0.9, depthshade=False)
            if three
            else _scatter3d(ax, df.iloc[order], logs.iloc[order], cmap="viridis", s=14)
        )
        ax.set_title(f"{m.upper()}: {len(df)} galaxies")
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        if three:
            ax.set_zlabel("UMAP 3")
        cb = fig.colorbar(sc, ax=ax, shrink=0.6, pad=0.1)
        cb.set_label(clabel)
        ins = fig.add_axes([0.06 + i / len(embeddings), 0.72, 0.12, 0.14])
        s = df["score"].to_numpy()
        ins.hist(cv, bins=25, color="0.4")
        for q, ls in ((50, "-"), (90, "--")):
            ins.axvline(np.percentile(cv, q), color="tab:red", ls=ls, lw=1)
        ins.set_xlabel(clabel.replace("anomaly ", ""), fontsize=7)
        ins.tick_params(labelsize=6)
        ins.set_title(f"median {np.median(s):.3g}, p90 {np.percentile(s, 90):.3g}", fontsize=7)
    fig.suptitle("UMAP of the latent space, coloured by anomaly score", fontsize=10)
    return save_figure(fig, out_base, formats)


def plot_umap_agn(embeddings: dict, scores: dict, out_base, formats=("png", "pdf")):
    """Fig. 2 analogue with AGN overlaid by selection method on grey galaxies."""
    fig, panels = _umap_panels(embeddings, scores)
    for _, m, df, ax, three in panels:
        _scatter3d(ax, df, "0.75", s=8, alpha=0.5, label=f"all galaxies ({len(df)})")
        for meth in METHODS:
            if meth in df and df[meth].astype(bool).any():
                sub = df[df[meth].astype(bool)]
                col, mk = METHOD_STYLE[meth]
                _scatter3d(
                    ax, sub, col, marker=mk, s=40, edgecolors="k", linewidths=0.4, label=f"{METHOD_LABELS[meth]} ({len(sub)})"
                )
        ax.set_title(f"{m.upper()}: AGN by selection method")
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
        if three:
            ax.set_zlabel("UMAP 3")
        ax.legend(loc="upper left", fontsize=7)
    return save_figure(fig, out_base, formats)


def _edge_ivar(flux: np.ndarray, wb: int) -> np.ndarray:
    """A per-window, per-spaxel noise estimate from the scatter of the window's
    outer bins, as inverse variance, broadcast over the window."""
    n = flux.shape[0] // wb
    f = flux.reshape(n, wb, *flux.shape[1:])
    edges = np.concatenate([f[:, :2], f[:, -2:]], axis=1)
    var = np.maximum(np.var(edges, axis=1), 1e-6)
    return np.repeat(1.0 / var, wb, axis=0).astype(np.float32)


def plot_bpt(recon_h5, plateifus: Sequence[str], out_base, formats=("png", "pdf"), model: str = ""):
    """Per-spaxel BPT diagrams ([OIII]/Hb vs [NII]/Ha and vs [SII]/Ha) of galaxies
    with stored cubes (window-integrated fluxes, S/N >= 3 in every line)."""
    import h5py

    from linecube.io.formats import read_strings

    n = max(len(plateifus), 1)
    fig, axes = plt.subplots(n, 2, figsize=(9, 3.6 * n), squeeze=False)
    with h5py.File(recon_h5, "r") as h5:
        have = {p: i for i, p in enumerate(read_strings(h5["plateifu"]))}
        names = [s.decode() if isinstance(s, bytes) else str(s) for s in h5.attrs["line_names"]]
        wb = int(h5.attrs["window_bins"])
        for r, p in enumerate(plateifus):
            i = have[p]
            flux, mask, wave = h5["flux"][i], h5["mask"][i], h5["wave"][i]
            # without stored ivar, S/N uses the local scatter: errors from the window edges
            ivar = _edge_ivar(flux, wb)
            n2, s2, o3 = bpt_ratios(flux, ivar, mask, wave, names, wb)
            yy, xx = np.mgrid[: flux.shape[1], : flux.shape[2]]
            rad = np.hypot(yy - flux.shape[1] / 2, xx - flux.shape[2] / 2)
            for c, (xv, lab) in enumerate(((n2, "log [NII]6585/Ha"), (s2, "log [SII]6718+6733/Ha"))):
                ax = axes[r, c]
                ok = np.isfinite(xv) & np.isfinite(o3)
                sc = ax.scatter(xv[ok], o3[ok], c=rad[ok] * 0.5, s=6, cmap="plasma", vmin=0, vmax=8)
                if c == 0:
                    g = np.linspace(-2.0, 0.04, 100)
                    ax.plot(g, kauffmann03(g), "k--", lw=1, label="Kauffmann+03")
                    g = np.linspace(-2.0, 0.46, 100)
                    ax.plot(g, kewley01(g), "k-", lw=1, label="Kewley+01")
                    ax.set_ylabel(f"{p}\nlog [OIII]5008/Hb", fontsize=8)
                else:
                    g = np.linspace(-2.0, 0.31, 100)
                    ax.plot(g, kewley01_s2(g), "k-", lw=1, label="Kewley+01")
                    g = np.linspace(-0.31, 0.6, 50)
                    ax.plot(g, kewley06_seyfert_liner(g), "k:", lw=1, label="Seyfert/LINER (Kewley+06)")
                    fig.colorbar(sc, ax=ax).set_label("radius (arcsec)", fontsize=7)
                ax.set_xlim(-2.0, 0.8)
                ax.set_ylim(-1.5, 1.5)
                ax.set_xlabel(lab, fontsize=8)
                ax.legend(fontsize=6, loc="lower left")
                ax.text(0.98, 0.95, f"{int(ok.sum())} spaxels", ha="right", va="top", transform=ax.transAxes, fontsize=7)
    fig.suptitle(f"{model.upper()}: per-spaxel BPT diagrams of the gallery galaxies", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_size_inches()[1]))
    return save_figure(fig, out_base, formats)


def plot_score_distributions(scores: dict, out_base, formats=("png", "pdf")):
    """Score distributions of the models (log-spaced bins), medians and 90th percentiles."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    allv = np.concatenate([s["score"].to_numpy() for s in scores.values()])
    log_axis = score_is_log(allv)
    bins = np.logspace(np.log10(max(allv.min(), 1e-6)), np.log10(allv.max()), 40) if log_axis else 40
    for (m, s), col in zip(scores.items(), ("tab:blue", "tab:orange", "tab:green")):
        v = s["score"].to_numpy()
        ax.hist(
            v,
            bins=bins,
            histtype="step",
            lw=1.6,
            color=col,
            label=f"{m.upper()}: median {np.median(v):.3g}, p90 {np.percentile(v, 90):.3g}",
        )
        ax.axvline(np.median(v), color=col, ls="-", lw=0.8)
        ax.axvline(np.percentile(v, 90), color=col, ls="--", lw=0.8)
    if log_axis:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(score_label(allv))
    ax.set_ylabel("galaxies")
    ax.legend(fontsize=8)
    ax.set_title("Anomaly score distributions (solid: median, dashed: 90th percentile)", fontsize=9)
    return save_figure(fig, out_base, formats)


def plot_line_heatmap(scores: pd.DataFrame, out_base, top: int = 50, formats=("png", "pdf"), model: str = ""):
    """Which lines drive the score: share of the error per line for the top galaxies."""
    cols = [c for c in scores.columns if c.startswith("share_")]
    df = scores.sort_values("rank").iloc[:top]
    fig, ax = plt.subplots(figsize=(9, 0.18 * len(df) + 2))
    im = ax.imshow(df[cols].to_numpy(), aspect="auto", cmap="viridis", vmin=0)
    ax.set_xticks(np.arange(len(cols)))
    ax.set_xticklabels([plain(c.removeprefix("share_")) for c in cols], rotation=60, fontsize=7)
    labels = [
        plain(f"{p} ({s:.3g})") + (" *" if "agn" in df and bool(a) else "")
        for p, s, a in zip(df["plateifu"], df["score"], df["agn"] if "agn" in df else [False] * len(df))
    ]
    ax.set_yticks(np.arange(len(df)))
    ax.set_yticklabels(labels, fontsize=6)
    fig.colorbar(im, ax=ax).set_label("share of the galaxy's absolute error")
    ax.set_title(f"{model.upper()}: per-line share of the score, top {len(df)} galaxies (* AGN)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out_base, formats)


def plot_validation(scores: pd.DataFrame, truth: pd.DataFrame, metrics: dict, out_base, formats=("png", "pdf"), model: str = ""):
    """ROC curves (overall, per type), score by anomaly type, AGN vs non-AGN."""
    from sklearn.metrics import roc_curve

    from linecube.analysis.validate import truth_flags

    df = scores.merge(truth, on="plateifu")
    anom = truth_flags(df["is_anomaly"])
    types = df["anomaly_type"].fillna("").astype(str).to_numpy()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    if anom.any() and (~anom).any():
        fpr, tpr, _ = roc_curve(anom, df["score"])
        ax.plot(
            fpr,
            tpr,
            "k-",
            lw=2,
            label=f"{metrics.get('score') or 'score'}, all anomalies: AUC {metrics['overall']['roc_auc']:.2f}",
        )
        for t, v in metrics["per_type"].items():
            sub = (types == t) | ~anom
            if v["roc_auc"] is not None:
                f2, t2, _ = roc_curve(types[sub] == t, df["score"].to_numpy()[sub])
                ax.plot(f2, t2, lw=1, label=plain(f"{t} (n={v['n']}): {v['roc_auc']:.2f}"))
        base = metrics.get("overall_mean_abs_flux", {}).get("roc_auc")
        if "mean_abs_flux" in df and base is not None:
            fb, tb, _ = roc_curve(anom, df["mean_abs_flux"])
            ax.plot(fb, tb, color="0.45", ls="--", lw=1.5, label=f"baseline, rank by mean |flux|: {base:.2f}")
        for alt, colr, what in (
            ("score_paper", "tab:brown", "the paper's MAE"),
            ("score_features", "tab:gray", "feature baseline"),
        ):
            a_auc = metrics.get(f"overall_{alt}", {}).get("roc_auc")
            if alt in df and a_auc is not None and metrics.get("score") != alt:
                fa, ta, _ = roc_curve(anom, df[alt])
                ax.plot(fa, ta, color=colr, ls="-.", lw=1.2, label=f"{what} ({alt}): {a_auc:.2f}")
    ax.plot([0, 1], [0, 1], color="0.7", ls=":")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(f"{model.upper()}: injected anomalies vs normal galaxies", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax = axes[1]
    cats = ["normal"] + sorted(set(types[anom]))
    data = [df["score"][~anom].to_numpy()] + [df["score"][types == t].to_numpy() for t in cats[1:]]
    ax.boxplot(data, showfliers=False)
    for j, d in enumerate(data, start=1):
        ax.scatter(np.full(len(d), j) + np.random.default_rng(j).uniform(-0.15, 0.15, len(d)), d, s=8, color="k", alpha=0.6)
    ax.set_xticks(np.arange(1, len(cats) + 1))
    ax.set_xticklabels([plain(c) for c in cats], rotation=30, fontsize=7)
    if score_is_log(df["score"]):
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylabel("anomaly score")
    r = metrics["overall"]
    ax.set_title(
        f"recall in top 1/5/10 %: {_fmt(r['recall_top_1pct'])} / {_fmt(r['recall_top_5pct'])} / {_fmt(r['recall_top_10pct'])}",
        fontsize=9,
    )
    ax = axes[2]
    if "agn" in df:
        a = df["agn"].astype(bool).to_numpy()
        log_axis = score_is_log(df["score"])
        bins = np.logspace(np.log10(df["score"].min()), np.log10(df["score"].max()), 25) if log_axis else 25
        ax.hist(df["score"][~a], bins=bins, density=True, histtype="stepfilled", alpha=0.5, label=f"non-AGN ({(~a).sum()})")
        ax.hist(df["score"][a], bins=bins, density=True, histtype="step", lw=2, label=f"AGN ({a.sum()})")
        if log_axis:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ag = metrics.get("agn", {})
        ax.set_title(f"AGN vs non-AGN: AUC {_fmt(ag.get('roc_auc_agn_vs_non'))}, KS p={_fmt(ag.get('ks_pvalue'))}", fontsize=9)
        ax.legend(fontsize=8)
        ax.set_xlabel("anomaly score")
    else:
        ax.text(0.5, 0.5, "no AGN catalogue", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    return save_figure(fig, out_base, formats)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def plot_pca_variance(variance: dict, out_base, formats=("png", "pdf")):
    """Cumulative explained variance of the PCA of each model's latents."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for m, v in variance.items():
        ax.plot(
            v["component"],
            100 * v["cumulative"],
            "o-",
            ms=3,
            label=f"{m.upper()}: {100 * v['cumulative'].iloc[-1]:.1f} % at {len(v)}",
        )
    ax.axhline(90, color="0.6", ls=":", label="90 % (the paper at 50 components)")
    ax.set_xlabel("PCA components of the latent vectors")
    ax.set_ylabel("cumulative explained variance (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, out_base, formats)


def plot_history(history_csv: str | os.PathLike, out_png: str | os.PathLike, title: str) -> None:
    """The loss curve of a training run (train and held-out test loss per epoch,
    log scale) from its history.csv, as one PNG written atomically."""
    h = pd.read_csv(history_csv)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(h["epoch"], h["loss"], "o-", label="train")
    if "test_loss" in h:
        ax.plot(h["epoch"], h["test_loss"], "s--", label="test (held-out galaxies)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (Eq. 1" + (" + beta KL" if "kl" in h else "") + ")")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
