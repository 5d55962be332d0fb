"""A finished linecube run, from Python: ``linecube.Run(path)``.

``path`` is the folder the workflow ran in (it holds ``results/``). Everything is
read-only: nothing here writes into the run. The CLI and the explorer use the same
functions (:func:`linecube.analysis.neighbors.neighbors_table`, :func:`marvin_url`,
:func:`skyserver_url`).

Example::

    import linecube
    run = linecube.Run(".")
    top = run.scores("ae").head(10)
    g = run.galaxy(top.plateifu[0])
    g.plot_line_maps(); g.plot_spectrum()
    run.neighbors(g.plateifu, k=5)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from linecube.io.manga import marvin_url, skyserver_url


class RunError(ValueError):
    """A folder that is not a finished linecube run, with what is missing."""


@dataclass
class Galaxy:
    """One galaxy of a run: its extracted line cube and what the run says of it.

    ``flux``, ``ivar``: float32 (wavelength, y, x), flux in 1e-17
    erg/s/cm^2/A/spaxel (0 where ``mask`` flags the voxel); ``mask`` uint8
    (nonzero: do not use); ``wave`` the observed vacuum wavelength of each
    channel (A); ``line_names`` and ``window_bins`` give the channels' lines;
    ``recon`` the model's reconstruction (flux units) when the run kept it
    (reconstructions.h5: the top galaxies and AGN), else None; ``scores`` the
    galaxy's row of scores.csv; ``marvin`` and ``skyserver`` its pages."""

    plateifu: str
    model: str
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    wave: np.ndarray
    line_names: list[str]
    window_bins: int
    meta: dict
    scores: pd.Series
    recon: np.ndarray | None = None
    marvin: str = ""
    skyserver: str = ""
    extra: dict = field(default_factory=dict)

    def line(self, name: str) -> np.ndarray:
        """One line's window (window_bins, y, x), flux units."""
        i = self.line_names.index(name)
        return self.flux[i * self.window_bins : (i + 1) * self.window_bins]

    def residuals(self) -> pd.Series | None:
        """Mean |flux - reconstruction| per line over the usable voxels (flux units), or None."""
        if self.recon is None:
            return None
        use = self.mask == 0
        err = np.abs(self.flux - self.recon) * use
        b = self.window_bins
        per = [err[i * b : (i + 1) * b].sum() / max(use[i * b : (i + 1) * b].sum(), 1) for i in range(len(self.line_names))]
        return pd.Series(per, index=self.line_names, name="mean_abs_residual")

    def plot_line_maps(self, lines=("Halpha", "[NII]6585", "[OIII]5008", "Hbeta")):
        """Continuum-subtracted maps of a few lines (and the reconstruction's, when kept): a matplotlib Figure."""
        import matplotlib.pyplot as plt

        from linecube.report.figures import plain

        lines = [ln for ln in lines if ln in self.line_names]
        rows = 2 if self.recon is not None else 1
        fig, axes = plt.subplots(rows, len(lines), figsize=(2.6 * len(lines), 2.6 * rows), squeeze=False)
        for j, ln in enumerate(lines):
            for r, cube in enumerate([self.flux] + ([self.recon] if self.recon is not None else [])):
                i = self.line_names.index(ln)
                w = cube[i * self.window_bins : (i + 1) * self.window_bins]
                cont = 0.25 * (w[0] + w[1] + w[-2] + w[-1])
                img = np.where(self.mask[i * self.window_bins] == 0, (w - cont).sum(axis=0), np.nan)
                ax = axes[r, j]
                ax.imshow(img, origin="lower", cmap="magma")
                ax.set_title(plain(f"{ln}{' (model)' if r else ''}"), fontsize=8)
                ax.set_xticks([])
                ax.set_yticks([])
        fig.suptitle(plain(f"{self.plateifu} ({self.model})"), fontsize=9)
        fig.tight_layout()
        return fig

    def plot_spectrum(self, radius: int = 2):
        """The central spectrum (the 19 windows side by side) and the reconstruction's: a matplotlib Figure."""
        import matplotlib.pyplot as plt

        from linecube.report.figures import FLUX_LABEL, plain

        ny, nx = self.flux.shape[1:]
        cy, cx = ny // 2, nx // 2
        sl = (slice(None), slice(cy - radius, cy + radius), slice(cx - radius, cx + radius))
        use = (self.mask[sl] == 0).sum(axis=(1, 2))
        fig, ax = plt.subplots(figsize=(10, 3))
        x = np.arange(self.flux.shape[0])
        ax.plot(x, self.flux[sl].sum(axis=(1, 2)) / np.maximum(use, 1), lw=0.8, color="k", label="input")
        if self.recon is not None:
            ax.plot(x, self.recon[sl].sum(axis=(1, 2)) / np.maximum(use, 1), lw=0.8, color="tab:red", label="reconstruction")
        b = self.window_bins
        ax.set_xticks(np.arange(len(self.line_names)) * b + b / 2)
        ax.set_xticklabels([plain(n) for n in self.line_names], rotation=60, fontsize=6)
        ax.set_ylabel(FLUX_LABEL, fontsize=7)
        ax.set_title(plain(f"{self.plateifu}: central {2 * radius}x{2 * radius} spaxels"), fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


class Run:
    """A finished run of the workflow, opened read-only.

    Parameters
    ----------
    path : str or os.PathLike
        The folder the workflow ran in (it holds ``results/``), or ``results/`` itself.

    Raises
    ------
    RunError
        When the folder holds no ``results/cubes.h5`` or no model's ``scores.csv``,
        naming what is missing.
    """

    def __init__(self, path: str | os.PathLike = "."):
        p = Path(path)
        res = p if (p / "cubes.h5").exists() and not (p / "results").exists() else p / "results"
        if not res.is_dir():
            raise RunError(f"{p}: no results/ folder: not a linecube run (run snakemake there first)")
        if not (res / "cubes.h5").is_file():
            raise RunError(f"{res}: no cubes.h5: the run has not extracted its cubes yet")
        models = [m for m in ("ae", "vae") if (res / m / "scores.csv").is_file()]
        if not models:
            raise RunError(f"{res}: no ae/scores.csv or vae/scores.csv: the run has not scored its galaxies yet")
        self.root, self.results, self.models = p, res, models
        self._index: dict[str, int] | None = None

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r}, models={self.models})"

    def _model(self, model: str) -> Path:
        if model not in self.models:
            raise RunError(f"{self.results}: model {model!r} has no scores.csv (this run has {', '.join(self.models)})")
        return self.results / model

    def scores(self, model: str = "ae") -> pd.DataFrame:
        """scores.csv of ``model``: one row per galaxy, by rank (1 = most anomalous),
        every score column (docs/scores.md) and ``marvin`` / ``skyserver`` links."""
        from linecube.analysis.neighbors import read_results_table

        df = read_results_table(self._model(model) / "scores.csv")
        if "marvin" not in df:  # a run scored with figures.links: false, or before links existed
            pos = self.catalogue().reindex(df["plateifu"])
            df["marvin"] = [marvin_url(p) for p in df["plateifu"]]
            df["skyserver"] = [skyserver_url(r, d) for r, d in zip(pos["objra"], pos["objdec"])]
        return df.sort_values("rank").reset_index(drop=True) if "rank" in df else df

    def catalogue(self) -> pd.DataFrame:
        """The per-galaxy values of cubes.h5 (z, objra, objdec, ebvgal, ...) by plate-IFU."""
        import h5py

        from linecube.io.formats import META_DATASETS, read_meta, read_strings

        with h5py.File(self.results / "cubes.h5", "r") as h5:
            cols = {n: read_meta(h5, n) for n in META_DATASETS if n not in ("plateifu", "mangaid")}
            cols["mangaid"] = read_strings(h5["mangaid"])
            return pd.DataFrame(cols, index=pd.Index(read_strings(h5["plateifu"]), name="plateifu"))

    def latents(self, model: str = "ae") -> pd.DataFrame:
        """The latent vectors (AE: z; VAE: mu) by plate-IFU, columns z0..z{d-1}."""
        import h5py

        from linecube.io.formats import read_strings

        with h5py.File(self._model(model) / "latents.h5", "r") as h5:
            z = h5["latent"][()]
            ids = read_strings(h5["plateifu"])
        return pd.DataFrame(z, index=pd.Index(ids, name="plateifu"), columns=[f"z{i}" for i in range(z.shape[1])])

    def embedding(self, model: str = "ae") -> pd.DataFrame:
        """embedding.csv: PCA (pc1..) and UMAP (umap1..) coordinates by plate-IFU."""
        from linecube.analysis.neighbors import read_results_table

        return read_results_table(self._model(model) / "embedding.csv").set_index("plateifu")

    def neighbors(self, plateifu: str, k: int = 5, model: str = "ae", space: str = "umap") -> pd.DataFrame:
        """The galaxy and its ``k`` nearest neighbours in ``space`` (``umap`` or
        ``pca``), with their scores: exactly what ``linecube neighbors`` prints."""
        from linecube.analysis.neighbors import neighbors_table

        self._model(model)
        return neighbors_table(plateifu, k=k, model=model, space=space, results=self.results)

    def galaxy(self, plateifu: str, model: str = "ae") -> Galaxy:
        """One galaxy: its cube from cubes.h5, its reconstruction where the run kept
        it, its scores and links (:class:`Galaxy`)."""
        import h5py

        from linecube.io.formats import read_layout, read_strings

        scores = self.scores(model).set_index("plateifu")
        pifu = str(plateifu).strip()
        with h5py.File(self.results / "cubes.h5", "r") as h5:
            if self._index is None:
                self._index = {p: i for i, p in enumerate(read_strings(h5["plateifu"]))}
            if pifu not in self._index:
                import difflib

                close = difflib.get_close_matches(pifu, list(self._index), n=5, cutoff=0.5)
                raise RunError(
                    f"{pifu} is not in {self.results / 'cubes.h5'}" + (f"; close: {', '.join(close)}" if close else "")
                )
            i = self._index[pifu]
            layout, lines = read_layout(h5)
            flux, ivar, mask, wave = (h5[n][i] for n in ("flux", "ivar", "mask", "wave"))
        meta = self.catalogue().loc[pifu].to_dict()
        recon = None
        rpath = self._model(model) / "reconstructions.h5"
        if rpath.exists():
            with h5py.File(rpath, "r") as h5:
                ids = read_strings(h5["plateifu"])
                if pifu in ids:
                    recon = h5["recon"][ids.index(pifu)]
        flux = np.where(mask == 0, flux, 0).astype(np.float32)
        ivar = np.where(mask == 0, ivar, 0).astype(np.float32)
        row = scores.loc[pifu] if pifu in scores.index else pd.Series(dtype=object)
        return Galaxy(
            pifu, model, flux, ivar, mask, wave, list(lines.names), layout.window_bins, meta, row, recon,
            marvin_url(pifu), skyserver_url(meta["objra"], meta["objdec"]),
        )  # fmt: skip


__all__ = ["Galaxy", "Run", "RunError", "marvin_url", "skyserver_url"]
