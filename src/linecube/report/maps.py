"""Figures of galaxies' maps: the gallery of the most anomalous galaxies (input,
reconstruction, residual per panel) and each query galaxy beside its nearest
neighbours; flux in 1e-17 erg/s/cm^2/A/spaxel, maps (y, x) as FITS orders them.
"""

from __future__ import annotations

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from linecube.io.agn import METHODS  # noqa: E402
from linecube.io.manga import BUNIT
from linecube.physics.bpt import window_flux  # noqa: E402
from linecube.report.figures import plain, save_figure


def _map_panel(ax, img, title, cmap="magma"):
    finite = img[np.isfinite(img)]
    vmax = np.percentile(finite, 99) if finite.size else 1
    im = ax.imshow(img, origin="lower", cmap=cmap, vmin=0 if cmap != "RdBu_r" else -vmax, vmax=vmax)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def gallery_pick(recon_h5, scores: pd.DataFrame, n: int) -> tuple[list[str], str]:
    """The gallery's galaxies (plate-IFUs, by rank) and its title: the ``n`` most
    anomalous AGN with a stored reconstruction, or galaxies without a catalogue."""
    import h5py

    from linecube.io.formats import read_strings

    with h5py.File(recon_h5, "r") as h5:
        have = read_strings(h5["plateifu"])
    pool = scores[scores["plateifu"].isin(have)].sort_values("rank")
    if "agn" in pool and pool["agn"].astype(bool).any():
        return list(pool.loc[pool["agn"].astype(bool), "plateifu"].iloc[:n]), "most anomalous AGN"
    return list(pool["plateifu"].iloc[:n]), "most anomalous galaxies"


def plot_gallery(recon_h5, scores: pd.DataFrame, out_base, n: int = 6, formats=("png", "pdf"), model: str = ""):
    """Fig. 3 analogue: the ``n`` most anomalous AGN (or galaxies, without a
    catalogue) that have a stored reconstruction."""
    import h5py

    from linecube.io.formats import read_strings

    pick, title = gallery_pick(recon_h5, scores, n)
    with h5py.File(recon_h5, "r") as h5:
        have = read_strings(h5["plateifu"])
        names = [s.decode() if isinstance(s, bytes) else str(s) for s in h5.attrs["line_names"]]
        wb = int(h5.attrs["window_bins"])
        pos = {p: i for i, p in enumerate(have)}
        fig, axes = plt.subplots(max(len(pick), 1), 6, figsize=(19, 2.9 * max(len(pick), 1)), squeeze=False)
        for r, p in enumerate(pick):
            i = pos[p]
            flux, recon, mask, wave, res = h5["flux"][i], h5["recon"][i], h5["mask"][i], h5["wave"][i], h5["residual"][i]
            ivar = np.where(mask == 0, 1.0, 0.0).astype(np.float32)
            row = scores.set_index("plateifu").loc[p]
            for c, ln in enumerate(("Halpha", "[OIII]5008", "[NII]6585")):
                f, _ = window_flux(flux, ivar, np.zeros_like(mask), wave, names.index(ln), wb)
                im = _map_panel(axes[r, c], f, f"{ln} (input)")
                if c == 0:
                    flags = ",".join(m.removesuffix("_agn") for m in METHODS if m in row and bool(row[m])) or "no AGN flag"
                    axes[r, c].set_ylabel(f"{p}\nrank {int(row['rank'])}, score {row['score']:.3g}\n{flags}", fontsize=8)
            fig.colorbar(im, ax=axes[r, 2], shrink=0.8).set_label(r"flux ($10^{-17}$ erg/s/cm$^2$)", fontsize=6)
            ax = axes[r, 3]
            x = np.arange(flux.shape[0])
            cy, cx = flux.shape[1] // 2, flux.shape[2] // 2
            ax.plot(x, flux[:, cy - 1 : cy + 1, cx - 1 : cx + 1].mean(axis=(1, 2)), lw=0.8, color="k", label="input")
            ax.plot(
                x, recon[:, cy - 1 : cy + 1, cx - 1 : cx + 1].mean(axis=(1, 2)), lw=0.8, color="tab:red", label="reconstruction"
            )
            for k in range(1, len(names)):
                ax.axvline(k * wb - 0.5, color="0.85", lw=0.5)
            ax.set_title("central 2x2 spaxels, 19 line windows", fontsize=8)
            ax.set_xlabel("channel (line window x bin)", fontsize=7)
            ax.set_ylabel("flux density", fontsize=7)
            ax.legend(fontsize=6)
            ax.tick_params(labelsize=6)
            im = _map_panel(axes[r, 4], res, "residual |I - I'| (mean over wavelength)", cmap="viridis")
            fig.colorbar(im, ax=axes[r, 4], shrink=0.8)
            shares = [row.get(f"share_{ln}", np.nan) for ln in names]
            ax = axes[r, 5]
            ax.barh(np.arange(len(names)), shares, color="tab:blue")
            ax.set_yticks(np.arange(len(names)))
            ax.set_yticklabels([plain(n) for n in names], fontsize=5)
            ax.invert_yaxis()
            ax.set_title("share of the score by line", fontsize=8)
            ax.tick_params(axis="x", labelsize=6)
        if not pick:
            axes[0, 0].text(0.5, 0.5, "no reconstructed galaxy to show", ha="center", transform=axes[0, 0].transAxes)
    fig.suptitle(f"{model.upper()}: {title} (flux in {BUNIT})", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_size_inches()[1]))
    return save_figure(fig, out_base, formats), pick


def plot_neighbors(
    cubes_h5, neighbors: pd.DataFrame, scores: pd.DataFrame, out_base, n_queries: int = 2, formats=("png", "pdf"), model: str = ""
):
    """Nearest-neighbour panels: for each of two queries, the query and its
    neighbours as H-alpha maps with their [OIII]/Hb-coloured central spectra."""
    import h5py

    from linecube.io.formats import halpha_index, read_strings

    queries = list(dict.fromkeys(neighbors["query"]))[:n_queries]
    k = int(neighbors["rank"].max()) if len(neighbors) else 0
    fig, axes = plt.subplots(2 * max(len(queries), 1), k + 1, figsize=(2.4 * (k + 1), 4.6 * max(len(queries), 1)), squeeze=False)
    sc = scores.set_index("plateifu")
    with h5py.File(cubes_h5, "r") as h5:
        pos = {p: i for i, p in enumerate(read_strings(h5["plateifu"]))}
        names = [s.decode() if isinstance(s, bytes) else str(s) for s in h5.attrs["line_names"]]
        wb = int(h5.attrs["window_bins"])
        for qi, q in enumerate(queries):
            nb = neighbors[neighbors["query"] == q].sort_values("rank")
            members = [(q, 0.0)] + list(zip(nb["neighbor"], nb["distance"]))
            for c, (p, d) in enumerate(members):
                i = pos[p]
                flux, mask, wave = h5["flux"][i], h5["mask"][i], h5["wave"][i]
                f, _ = window_flux(flux, np.ones_like(flux), np.zeros_like(mask), wave, halpha_index(names), wb)
                ax = axes[2 * qi, c]
                _map_panel(ax, f, ("query " if c == 0 else f"#{c} d={d:.2f} ") + p)
                s = sc.loc[p]
                ax.set_xlabel(
                    f"score {s['score']:.3g} (rank {int(s['rank'])})" + (" AGN" if "agn" in s and bool(s["agn"]) else ""),
                    fontsize=7,
                )
                ax2 = axes[2 * qi + 1, c]
                cy, cx = flux.shape[1] // 2, flux.shape[2] // 2
                ax2.plot(flux[:, cy - 1 : cy + 1, cx - 1 : cx + 1].mean(axis=(1, 2)), lw=0.7, color="k")
                ax2.set_yticks([])
                ax2.set_xticks([])
                ax2.set_title("central spectrum (19 windows)", fontsize=6)
    fig.suptitle(f"{model.upper()}: nearest neighbours in the UMAP space (H-alpha maps)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_size_inches()[1]))
    return save_figure(fig, out_base, formats)
