"""Figures are written (PNG and PDF), non-empty, and the explorer page works."""

import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import write_cubes_h5, write_results

from linecube import figures


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    pifus = write_cubes_h5(d / "cubes.h5", n=12)
    for m in ("ae", "vae"):
        write_results(d, m, pifus, seed=1 if m == "ae" else 2)
        with h5py.File(d / "cubes.h5") as src, h5py.File(d / m / "reconstructions.h5", "w") as h5:
            keep = list(pd.read_csv(d / m / "scores.csv")["plateifu"].iloc[:6])
            rows = [pifus.index(p) for p in keep]
            for a in ("line_names", "line_rest_wavelengths", "window_bins", "crop"):
                h5.attrs[a] = src.attrs[a]
            h5["plateifu"] = np.array(keep, dtype=object)
            h5["flux"] = np.stack([src["flux"][r] for r in rows])
            h5["recon"] = h5["flux"][()] * 0.9
            h5["mask"] = np.stack([src["mask"][r] for r in rows])
            h5["wave"] = np.stack([src["wave"][r] for r in rows])
            h5["residual"] = np.abs(h5["flux"][()] - h5["recon"][()]).mean(axis=1)
        nb = pd.DataFrame(
            [
                {"query": pifus[q], "rank": r + 1, "neighbor": pifus[(q + r + 1) % 12], "distance": 0.1 * (r + 1)}
                for q in (0, 5)
                for r in range(3)
            ]
        )
        nb.to_csv(d / m / "neighbors.csv", index=False)
    return d, pifus


def _check(paths):
    assert len(paths) == 2 and {p.suffix for p in paths} == {".png", ".pdf"}
    for p in paths:
        assert p.exists() and p.stat().st_size > 5000, p


def test_all_figures_written(fake_run, tmp_path):
    d, pifus = fake_run
    emb = {m: pd.read_csv(d / m / "embedding.csv") for m in ("ae", "vae")}
    sc = {m: pd.read_csv(d / m / "scores.csv") for m in ("ae", "vae")}
    _check(figures.plot_umap_scores(emb, sc, tmp_path / "umap_scores"))
    _check(figures.plot_umap_agn(emb, sc, tmp_path / "umap_agn"))
    _check(figures.plot_score_distributions(sc, tmp_path / "dist"))
    paths, pick = figures.plot_gallery(d / "ae" / "reconstructions.h5", sc["ae"], tmp_path / "gallery", n=3, model="ae")
    _check(paths)
    assert len(pick) == 3 and all(sc["ae"].set_index("plateifu").loc[pick, "agn"])  # AGN first
    _check(figures.plot_bpt(d / "ae" / "reconstructions.h5", pick[:2], tmp_path / "bpt", model="ae"))
    _check(figures.plot_neighbors(d / "cubes.h5", pd.read_csv(d / "ae" / "neighbors.csv"), sc["ae"], tmp_path / "nb", model="ae"))
    _check(figures.plot_line_heatmap(sc["ae"], tmp_path / "heat", model="ae"))
    var = {
        m: pd.DataFrame({"component": [1, 2, 3], "explained_variance_ratio": [0.5, 0.3, 0.1], "cumulative": [0.5, 0.8, 0.9]})
        for m in ("ae", "vae")
    }
    _check(figures.plot_pca_variance(var, tmp_path / "var"))
    truth = pd.DataFrame(
        {
            "plateifu": pifus,
            "class": "star-forming",
            "is_anomaly": [i < 3 for i in range(12)],
            "anomaly_type": ["blueberry"] * 3 + [""] * 9,
        }
    )
    from linecube.validate import validate

    v = validate(sc["ae"], truth)
    _check(figures.plot_validation(sc["ae"], truth, v, tmp_path / "val", model="ae"))


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _explorer(fake_run, out):
    from linecube.explorer import build_explorer

    d, pifus = fake_run
    emb = {m: pd.read_csv(d / m / "embedding.csv") for m in ("ae", "vae")}
    sc = {m: pd.read_csv(d / m / "scores.csv") for m in ("ae", "vae")}
    nb = {m: pd.read_csv(d / m / "neighbors.csv") for m in ("ae", "vae")}
    rec = {m: d / m / "reconstructions.h5" for m in ("ae", "vae")}
    return build_explorer(out, emb, sc, nb, d / "cubes.h5", rec, k=4)


def test_explorer_is_self_contained(fake_run, tmp_path):
    out = tmp_path / "explorer.html"
    assert _explorer(fake_run, out) == 12
    html = out.read_text()
    assert "<script src=" not in html and "https://" not in html.split("/*")[0][:2000]
    assert "plotly" in html.lower() and "8000-1901" in html


@pytest.mark.skipif(not _chromium() or not shutil.which("chromedriver"), reason="Debian chromium + chromium-driver not installed")
def test_explorer_in_headless_chromium(fake_run, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    out = tmp_path / "explorer.html"
    _explorer(fake_run, out)
    opts = webdriver.ChromeOptions()
    opts.binary_location = _chromium()
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
              "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        opts.add_argument(a)
    from selenium.webdriver.chrome.service import Service

    drv = webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))
    try:
        drv.get(out.as_uri())
        n = drv.execute_script("return document.getElementById('umap').data[0].x.length")
        assert n == 12
        assert drv.execute_script("return document.getElementById('umap').dataset.npoints") == "12"
        # a click on point 3, through plotly's own click event
        drv.execute_script(
            "const gd=document.getElementById('umap'); gd.emit('plotly_click', {points: [{pointNumber: 3, curveNumber: 0}]});"
        )
        sel = drv.execute_script("return document.getElementById('panel').dataset.selected")
        want = drv.execute_script("return DATA.models.ae.plateifu[3]")
        assert sel == want
        rows = drv.execute_script("return document.querySelectorAll('#nbtable tr').length")
        assert rows == 1 + 4
        # the neighbour links work too, and the colour switch redraws
        drv.execute_script("document.querySelector('#nbtable a').click()")
        assert drv.execute_script("return document.getElementById('panel').dataset.selected") != sel
        drv.execute_script("const c=document.getElementById('colour'); c.value='agn'; c.onchange();")
        assert drv.execute_script("return document.getElementById('umap').data[0].x.length") == 12
    finally:
        drv.quit()
