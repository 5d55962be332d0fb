"""``results/explorer.html``: one self-contained page (plotly.js inlined, no server,
opens from disk) to explore the UMAP embedding.

3-D UMAP of every galaxy; colour by anomaly score, AGN or class; hover shows
plate-IFU, score and AGN flags; a click (or ``#PLATEIFU`` in the address) opens
that galaxy's panel: H-alpha map, residual map and central spectrum (input, and
the reconstruction where stored), its spaxels on the [NII] BPT diagram, per-line
score shares, and its neighbours in the UMAP space (clickable). Panel data are
embedded for at most ``max_panels`` galaxies (the most anomalous and the AGN
first) to bound the size.

Flagging (as in Astronomaly, Lochner & Bassett 2021): the panel's buttons mark a
galaxy interesting / not interesting / artefact; labels stay in the browser's
localStorage and "export labels" saves ``labels.csv`` (plateifu,label,model,score)
for ``linecube rerank --labels``.

Data go into the page through plotly's own JSON encoder, which escapes ``<``, ``>``
and ``/`` (a catalogue value holding ``</script>`` cannot end the script), and
every catalogue string is escaped again before it reaches ``innerHTML``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from linecube.io.atomic import atomic_path
from linecube.io.formats import halpha_index, read_strings


def _round(a: np.ndarray, sig: int = 4) -> list:
    a = np.asarray(a, dtype=float)
    out = np.where(np.isfinite(a), a, 0.0)
    return [float(f"{v:.{sig}g}") for v in out.ravel()]


def _panels(cubes_h5, recon_h5s: dict, keep: list[str]) -> tuple[dict, list[str], int]:
    import h5py

    from linecube.physics.bpt import bpt_ratios

    panels: dict = {}
    rng = np.random.default_rng(0)
    with h5py.File(cubes_h5, "r") as h5:
        pos = {p: i for i, p in enumerate(read_strings(h5["plateifu"]))}
        names = [s.decode() if isinstance(s, bytes) else str(s) for s in h5.attrs["line_names"]]
        wb = int(h5.attrs["window_bins"])
        ha = halpha_index(names)
        for p in keep:
            i = pos[p]
            flux, ivar, mask, wave = h5["flux"][i], h5["ivar"][i], h5["mask"][i], h5["wave"][i]
            # the whole window (line + continuum): a continuum from the window's edge
            # bins goes negative where a broad or split line fills them (double peaks)
            sl = slice(ha * wb, (ha + 1) * wb)
            f = np.sum(flux[sl].astype(np.float64) * (wave[sl] * np.log(10.0) * 1e-4)[:, None, None], axis=0)
            cy, cx = flux.shape[1] // 2, flux.shape[2] // 2
            n2, _, o3 = bpt_ratios(flux, ivar, mask, wave, names, wb)
            ok = np.flatnonzero(np.isfinite(n2.ravel()) & np.isfinite(o3.ravel()))
            if len(ok) > MAX_BPT_SPAXELS:
                ok = np.sort(rng.choice(ok, MAX_BPT_SPAXELS, replace=False))
            panels[p] = {
                "ha": _round(f, 3),
                "side": int(f.shape[0]),
                "spec": _round(flux[:, cy - 1 : cy + 1, cx - 1 : cx + 1].mean(axis=(1, 2)), 4),
                "bpt": [_round(n2.ravel()[ok], 3), _round(o3.ravel()[ok], 3)],
            }
    for model, path in recon_h5s.items():
        if not path or not Path(path).exists():
            continue
        with h5py.File(path, "r") as h5:
            for j, p in enumerate(read_strings(h5["plateifu"])):
                if p in panels:
                    r = h5["recon"][j]
                    cy, cx = r.shape[1] // 2, r.shape[2] // 2
                    panels[p].setdefault("recon", {})[model] = _round(r[:, cy - 1 : cy + 1, cx - 1 : cx + 1].mean(axis=(1, 2)), 4)
                    if "residual" in h5:
                        panels[p].setdefault("resid", {})[model] = _round(h5["residual"][j], 3)
    return panels, names, wb


#: spaxels per galaxy drawn on the panel's BPT diagram (a random subset beyond it)
MAX_BPT_SPAXELS = 300


def _bpt_curves() -> dict:
    """Kauffmann et al. (2003) and Kewley et al. (2001) lines, log N2 -> log O3."""
    from linecube.physics.bpt import kauffmann03, kewley01

    ka = np.linspace(-1.6, -0.01, 60)
    ke = np.linspace(-1.6, 0.4, 60)
    return {"ka": [_round(ka, 3), _round(kauffmann03(ka), 3)], "ke": [_round(ke, 3), _round(kewley01(ke), 3)]}


def build_explorer(
    out_html: str | os.PathLike,
    embeddings: dict,
    scores: dict,
    neighbors: dict,
    cubes_h5: str | os.PathLike,
    recon_h5s: dict | None = None,
    truth: str | os.PathLike | None = None,
    k: int = 5,
    max_panels: int = 2000,
    links: bool = True,
) -> int:
    """Write the explorer page; returns the number of galaxies plotted. ``links``:
    every galaxy's panel links to its Marvin (DR17) page and SkyServer's navigate
    view (``figures.links: false`` for private data)."""
    from plotly.io.json import to_json_plotly
    from plotly.offline import get_plotlyjs

    from linecube.analysis.neighbors import knn, space_columns
    from linecube.analysis.validate import truth_flags

    models = list(embeddings)
    data: dict = {"models": {}, "lines": None}
    first = scores[models[0]]
    order = first.sort_values("rank")
    keep = list(order["plateifu"].iloc[:max_panels])
    if "agn" in first:
        keep = list(dict.fromkeys(list(order.loc[order["agn"].astype(bool), "plateifu"]) + keep))[:max_panels]
    panels, names, wb = _panels(cubes_h5, recon_h5s or {}, keep)
    classes = None
    if truth and Path(truth).exists():
        t = pd.read_csv(truth, dtype={"plateifu": str}, keep_default_na=False)
        cls = t["class"].astype(str) if "class" in t else pd.Series([""] * len(t))
        kind = t["anomaly_type"].astype(str) if "anomaly_type" in t else pd.Series(["anomaly"] * len(t))
        anom = truth_flags(t["is_anomaly"]) if "is_anomaly" in t else np.zeros(len(t), bool)
        label = np.where(anom, np.where(cls != "", cls + " + " + kind, kind), cls)
        classes = dict(zip(t["plateifu"], label))
    import h5py

    from linecube.io.formats import read_strings
    from linecube.io.manga import marvin_url, skyserver_url
    from linecube.report.figures import score_colour

    with h5py.File(cubes_h5, "r") as h5:
        pos = dict(zip(read_strings(h5["plateifu"]), zip(h5["objra"][()], h5["objdec"][()])))

    for m in models:
        df = embeddings[m].merge(scores[m], on="plateifu")
        cols = space_columns(df, "umap")
        coords = df[cols].to_numpy(float)
        _, idx = knn(coords, np.arange(len(df)), k)
        flags = [c for c in ("wise_agn", "bat_agn", "radio_agn", "broad_agn") if c in df]
        colour, colour_label = score_colour(df["score"])
        data["models"][m] = {
            "plateifu": list(df["plateifu"]),
            "xyz": [_round(coords[:, j], 5) for j in range(coords.shape[1])],
            "score": _round(df["score"], 5),
            "colour": _round(colour, 5),
            "colour_label": colour_label,
            "pct": _round(df["percentile"] if "percentile" in df else 100.0 * df["score"].rank(pct=True), 3),
            "explain": [str(v) for v in df["explain_line"]] if "explain_line" in df else [""] * len(df),
            "rank": [int(v) for v in df["rank"]],
            "agn": [",".join(f.removesuffix("_agn") for f in flags if bool(r[f])) for _, r in df.iterrows()]
            if flags
            else [""] * len(df),
            "shares": [_round(r, 3) for r in df[[f"share_{n}" for n in names]].to_numpy()],
            "neighbors": [[int(j) for j in row] for row in idx],
            "class": [classes.get(p, "") for p in df["plateifu"]] if classes else None,
            "links": [[marvin_url(p), skyserver_url(*pos.get(p, (np.nan, np.nan)))] for p in df["plateifu"]] if links else None,
        }
    data["lines"] = names
    data["window_bins"] = wb
    data["panels"] = panels
    data["bpt_curves"] = _bpt_curves()
    # plotly's encoder writes <, > and / as \u003c, \u003e, \u002f: no catalogue
    # value can close the <script> the data sit in
    payload = to_json_plotly(data)
    html = _template().replace("/*DATA*/", payload).replace("/*PLOTLY*/", get_plotlyjs())
    with atomic_path(out_html) as tmp:
        tmp.write_text(html)
    return len(first)


def _template() -> str:
    """The page (package data ``explorer.html``): /*PLOTLY*/ and /*DATA*/ are filled in."""
    from importlib import resources

    return (resources.files("linecube.report") / "explorer.html").read_text(encoding="utf-8")
