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
from linecube.io.formats import read_strings


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
        ha = names.index("Halpha")
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
    html = _TEMPLATE.replace("/*DATA*/", payload).replace("/*PLOTLY*/", get_plotlyjs())
    with atomic_path(out_html) as tmp:
        tmp.write_text(html)
    return len(first)


_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>linecube explorer</title>
<style>
body{font-family:system-ui,sans-serif;margin:0;display:flex;height:100vh}
#left{flex:3;display:flex;flex-direction:column}#bar{padding:6px 10px;background:#f3f3f3;font-size:14px}
#umap{flex:1}#panel{flex:2;overflow:auto;padding:10px;border-left:1px solid #ccc;font-size:13px}
table{border-collapse:collapse}td,th{padding:2px 6px;border-bottom:1px solid #eee;text-align:left}
a{color:#1a5fb4;cursor:pointer}
</style>
<script>/*PLOTLY*/</script>
</head><body>
<div id="left"><div id="bar">
model <select id="model"></select>
colour by <select id="colour"><option value="pct" selected>anomaly percentile</option><option value="score">anomaly score (raw)</option><option value="agn">AGN</option><option value="class">class (simulation truth)</option><option value="label">your labels</option></select>
<span id="count"></span> &middot; click a galaxy, or open <code>explorer.html#PLATE-IFU</code>
&middot; <button id="export">export labels</button> <span id="nlabels"></span>
</div><div id="umap"></div></div>
<div id="panel"><h3>linecube explorer</h3><p>The anomaly score is the ranking scores.csv calls <code>score</code> (by default <code>score_hybrid</code>: the larger of the line-ratio/kinematic features' score and the model's localised reconstruction residual and latent density together, as ranks against the training galaxies); rank 1 = most anomalous. "Driven by" names the line whose residual stands out most. Every score, the paper's MAE included, is a column of scores.csv.</p>
<p>Mark galaxies interesting, not interesting or artefact in their panel; the labels stay in this browser. "export labels" saves <code>labels.csv</code>; <code>linecube rerank --labels labels.csv</code> reorders the ranking with them.</p></div>
<script>
const DATA = /*DATA*/;
const LABELS = ['interesting', 'not interesting', 'artefact'];
const STORE = 'linecube-labels';
const gd = document.getElementById('umap');
const sel = document.getElementById('model'), col = document.getElementById('colour');
function esc(s) { return String(s).replace(/[&<>"'`=\/]/g, c => '&#' + c.charCodeAt(0) + ';'); }
function loadLabels() { try { return JSON.parse(localStorage.getItem(STORE) || '{}'); } catch (e) { return {}; } }
function saveLabels(l) { localStorage.setItem(STORE, JSON.stringify(l)); countLabels(); }
function countLabels() { const n = Object.keys(loadLabels()).length; document.getElementById('nlabels').textContent = n ? `(${n} labelled)` : ''; }
function labelsCSV() {
  const l = loadLabels(); const q = v => /[",\n]/.test(v) ? '"' + String(v).replace(/"/g, '""') + '"' : String(v);
  return 'plateifu,label,model,score\n' + Object.keys(l).sort().map(p => [p, l[p].label, l[p].model, l[p].score].map(q).join(',')).join('\n') + '\n';
}
function setLabel(i, label) {
  const d = cur(), p = d.plateifu[i], l = loadLabels();
  if (label) l[p] = {label: label, model: sel.value, score: d.score[i]}; else delete l[p];
  saveLabels(l); show(i); if (col.value === 'label') draw();
}
document.getElementById('export').onclick = () => {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([labelsCSV()], {type: 'text/csv'})); a.download = 'labels.csv';
  document.body.appendChild(a); a.click(); a.remove();
};
Object.keys(DATA.models).forEach(m => { const o = document.createElement('option'); o.value = m; o.text = m.toUpperCase(); sel.appendChild(o); });
if (!Object.values(DATA.models)[0].class) col.querySelector('option[value=class]').disabled = true;
function cur() { return DATA.models[sel.value]; }
function palette(vals) { const u = [...new Set(vals)].sort(); const c = ['#bbbbbb','#d62728','#1f77b4','#ff7f0e','#9467bd','#2ca02c','#8c564b','#e377c2','#17becf','#bcbd22'];
  return vals.map(v => c[u.indexOf(v) % c.length]); }
function draw() {
  const d = cur(), n = d.plateifu.length, l = loadLabels();
  const text = d.plateifu.map((p, i) => `${esc(p)}<br>score ${d.score[i]} (rank ${d.rank[i]})` + (d.explain[i] ? `<br>driven by ${esc(d.explain[i])}` : '') + `<br>AGN: ${esc(d.agn[i] || 'no')}` + (d.class ? `<br>${esc(d.class[i])}` : '') + (l[p] ? `<br>your label: ${esc(l[p].label)}` : ''));
  let marker;
  if (col.value === 'pct') marker = {size: 4, color: d.pct, colorscale: 'Viridis', cmin: 0, cmax: 100, colorbar: {title: {text: 'anomaly percentile (100 = most anomalous)'}}};
  else if (col.value === 'score') marker = {size: 4, color: d.colour, colorscale: 'Viridis', colorbar: {title: {text: d.colour_label}}};
  else if (col.value === 'agn') marker = {size: 4, color: palette(d.agn.map(a => a ? a : 'not AGN'))};
  else if (col.value === 'label') { const c = {'interesting': '#d62728', 'not interesting': '#1f77b4', 'artefact': '#ff7f0e'}; marker = {size: 4, color: d.plateifu.map(p => l[p] ? c[l[p].label] : '#dddddd')}; }
  else marker = {size: 4, color: palette(d.class)};
  const tr = {type: 'scatter3d', mode: 'markers', x: d.xyz[0], y: d.xyz[1], z: d.xyz[2] || d.xyz[0].map(() => 0), text: text, hoverinfo: 'text', marker: marker};
  Plotly.react(gd, [tr], {margin: {l: 0, r: 0, t: 0, b: 0}, scene: {xaxis: {title: {text: 'UMAP 1'}}, yaxis: {title: {text: 'UMAP 2'}}, zaxis: {title: {text: 'UMAP 3'}}}});
  document.getElementById('count').textContent = `${n} galaxies`;
  gd.dataset.npoints = n;
}
function show(i) {
  const d = cur(), p = d.plateifu[i], P = DATA.panels[p], mine = loadLabels()[p];
  let h = `<h3>${esc(p)}` + (d.links ? ` <small><a href="${esc(d.links[i][0])}" target="_blank" rel="noopener">Marvin</a> &middot; <a href="${esc(d.links[i][1])}" target="_blank" rel="noopener">SkyServer</a></small>` : '') + `</h3><p>score <b>${d.score[i]}</b> (rank ${d.rank[i]} of ${d.plateifu.length})` + (d.explain[i] ? ` &middot; driven by <b>${esc(d.explain[i])}</b>` : '') + ` &middot; AGN: ${esc(d.agn[i] || 'no')}` + (d.class ? ` &middot; ${esc(d.class[i])}` : '') + `</p>`;
  h += `<p id="flags">mark: ` + LABELS.map((lab, k) => `<button data-label="${k}"${mine && mine.label === lab ? ' style="font-weight:bold;background:#ffd"' : ''}>${lab}</button>`).join(' ') + (mine ? ` <button data-label="clear">clear</button> &middot; yours: <b id="mylabel">${esc(mine.label)}</b>` : '') + `</p>`;
  h += `<div style="display:flex"><div id="pha" style="height:260px;flex:1"></div><div id="pres" style="height:260px;flex:1"></div></div>`;
  h += `<div id="pspec" style="height:220px"></div><div id="pbpt" style="height:280px"></div><div id="pshare" style="height:${90 + 17 * DATA.lines.length}px"></div>`;
  h += `<h4>Nearest neighbours (UMAP, ${esc(sel.value.toUpperCase())})</h4><table id="nbtable"><tr><th>#</th><th>plate-IFU</th><th>score</th><th>rank</th><th>AGN</th></tr>`;
  d.neighbors[i].forEach((j, r) => { h += `<tr><td>${r + 1}</td><td><a data-row="${j}">${esc(d.plateifu[j])}</a></td><td>${d.score[j]}</td><td>${d.rank[j]}</td><td>${esc(d.agn[j] || '')}</td></tr>`; });
  h += `</table>`;
  const panel = document.getElementById('panel'); panel.innerHTML = h; panel.dataset.selected = p;
  panel.querySelectorAll('#nbtable a').forEach(a => { a.onclick = () => show(Number(a.dataset.row)); });
  panel.querySelectorAll('#flags button').forEach(b => { b.onclick = () => setLabel(i, b.dataset.label === 'clear' ? null : LABELS[Number(b.dataset.label)]); });
  location.hash = p;
  const small = {size: 12};
  if (P) {
    const s = P.side, grid = a => { const z = []; for (let r = 0; r < s; r++) z.push(a.slice(r * s, (r + 1) * s)); return z; };
    Plotly.newPlot('pha', [{type: 'heatmap', z: grid(P.ha), colorscale: 'Hot'}], {title: {text: 'H-alpha window flux, line + continuum (input)', font: small}, margin: {t: 48, b: 20, l: 30, r: 10}, yaxis: {scaleanchor: 'x'}});
    if (P.resid && P.resid[sel.value]) Plotly.newPlot('pres', [{type: 'heatmap', z: grid(P.resid[sel.value]), colorscale: 'Viridis'}], {title: {text: 'mean |input - reconstruction| (' + esc(sel.value.toUpperCase()) + ')', font: small}, margin: {t: 48, b: 20, l: 30, r: 10}, yaxis: {scaleanchor: 'x'}});
    else document.getElementById('pres').textContent = '(residual map stored for the top-ranked galaxies only)';
    const tr = [{y: P.spec, name: 'input', line: {color: 'black', width: 1}}];
    if (P.recon && P.recon[sel.value]) tr.push({y: P.recon[sel.value], name: 'reconstruction', line: {color: 'red', width: 1}});
    Plotly.newPlot('pspec', tr, {title: {text: 'central spectrum, ' + DATA.lines.length + ' line windows x ' + DATA.window_bins + ' bins', font: small}, margin: {t: 48, b: 30, l: 40, r: 10}});
    const C = DATA.bpt_curves;
    Plotly.newPlot('pbpt', [
      {x: P.bpt[0], y: P.bpt[1], mode: 'markers', type: 'scatter', name: 'spaxels (S/N >= 3)', marker: {size: 4, color: '#444', opacity: 0.6}},
      {x: C.ka[0], y: C.ka[1], mode: 'lines', name: 'Kauffmann+03', line: {color: '#1f77b4', dash: 'dash'}},
      {x: C.ke[0], y: C.ke[1], mode: 'lines', name: 'Kewley+01', line: {color: '#d62728'}}],
      {title: {text: P.bpt[0].length ? 'BPT: ' + P.bpt[0].length + ' spaxels (S/N >= 3 in all six lines)' : 'BPT: no spaxel has S/N >= 3 in all six lines<br>(faint lines, or broad / split lines filling the window edges that set the continuum)', font: small}, margin: {t: 48, b: 40, l: 50, r: 10},
       xaxis: {title: {text: 'log [NII]6585 / H-alpha'}, range: [-1.6, 0.6]}, yaxis: {title: {text: 'log [OIII]5008 / H-beta'}, range: [-1.2, 1.5]}, showlegend: true, legend: {font: {size: 10}}});
  } else { document.getElementById('pha').textContent = '(no panel data stored for this galaxy)'; }
  Plotly.newPlot('pshare', [{type: 'bar', orientation: 'h', x: d.shares[i], y: DATA.lines}], {title: {text: 'share of the score by line', font: small}, margin: {t: 48, b: 30, l: 90, r: 10},
    yaxis: {autorange: 'reversed', tickmode: 'array', tickvals: DATA.lines, ticktext: DATA.lines, tickfont: {size: 11}}});
}
sel.onchange = () => { draw(); const p = document.getElementById('panel').dataset.selected; if (p) { const i = cur().plateifu.indexOf(p); if (i >= 0) show(i); } };
col.onchange = draw;
draw(); countLabels();
gd.on('plotly_click', ev => { if (ev.points && ev.points.length) show(ev.points[0].pointNumber); });
function fromHash() { const p = decodeURIComponent(location.hash.slice(1)); const i = cur().plateifu.indexOf(p); if (i >= 0 && document.getElementById('panel').dataset.selected !== p) show(i); }
window.addEventListener('hashchange', fromHash); fromHash();
</script></body></html>
"""
