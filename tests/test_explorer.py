"""linecube.report.explorer: the self-contained UMAP page, safe against hostile catalogue values, with flags and labels."""

import shutil

import pandas as pd
import pytest


def test_explorer_without_class_column(tmp_path):
    pytest.importorskip("plotly")
    from fixtures import write_cubes_h5, write_results

    from linecube.report.explorer import build_explorer

    cubes = tmp_path / "cubes.h5"
    pifus = write_cubes_h5(cubes, n=6)
    write_results(tmp_path, "ae", pifus)
    emb = pd.read_csv(tmp_path / "ae" / "embedding.csv", dtype={"plateifu": str})
    sc = pd.read_csv(tmp_path / "ae" / "scores.csv", dtype={"plateifu": str})
    truth = tmp_path / "truth.csv"
    truth.write_text("plateifu,is_anomaly\n" + "".join(f"{p},{i == 0}\n" for i, p in enumerate(pifus)))
    build_explorer(tmp_path / "explorer.html", {"ae": emb}, {"ae": sc}, {}, cubes, truth=truth)
    assert "anomaly" in (tmp_path / "explorer.html").read_text()


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


HOSTILE = '</script><script>window.PWNED=1</script><img src=x onerror="window.PWNED=2">'


def _explorer(fake_run, out, hostile: bool = False):
    from linecube.report.explorer import build_explorer

    d, pifus = fake_run
    emb = {m: pd.read_csv(d / m / "embedding.csv") for m in ("ae", "vae")}
    sc = {m: pd.read_csv(d / m / "scores.csv") for m in ("ae", "vae")}
    nb = {m: pd.read_csv(d / m / "neighbors.csv") for m in ("ae", "vae")}
    rec = {m: d / m / "reconstructions.h5" for m in ("ae", "vae")}
    truth = None
    if hostile:  # a catalogue value and a scores.csv string that try to break out of the page
        truth = out.parent / "truth.csv"
        pd.DataFrame({"plateifu": pifus, "class": HOSTILE, "is_anomaly": False, "anomaly_type": ""}).to_csv(truth, index=False)
        for m in sc:
            sc[m]["explain_line"] = "<b onmouseover=alert(1)>Halpha</b>"
    return build_explorer(out, emb, sc, nb, d / "cubes.h5", rec, truth=truth, k=4)


def test_explorer_is_self_contained(fake_run, tmp_path):
    out = tmp_path / "explorer.html"
    assert _explorer(fake_run, out) == 12
    html = out.read_text()
    assert "<script src=" not in html and "https://" not in html.split("/*")[0][:2000]
    assert "plotly" in html.lower() and "8000-1901" in html


def test_explorer_data_cannot_close_the_script(fake_run, tmp_path):
    out = tmp_path / "explorer.html"
    _explorer(fake_run, out, hostile=True)
    html = out.read_text()
    data = html[html.index("const DATA = ") :]
    data = data[: data.index(";\n")]
    assert "</script" not in data.lower() and "<img" not in data and "<b " not in data
    assert html.lower().count("</script>") == 2  # plotly.js's and the page's own


def _driver(tmp_path, downloads=None):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = _chromium()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
              "--disable-component-update", "--no-first-run", "--window-size=1600,900", f"--user-data-dir={tmp_path / 'profile'}"):  # fmt: skip
        opts.add_argument(a)
    if downloads:
        opts.add_experimental_option(
            "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
        )
    return webdriver.Chrome(options=opts, service=Service(shutil.which("chromedriver")))


needs_chromium = pytest.mark.skipif(
    not _chromium() or not shutil.which("chromedriver"), reason="Debian chromium + chromium-driver not installed"
)


@needs_chromium
def test_explorer_in_headless_chromium(fake_run, tmp_path):
    out = tmp_path / "explorer.html"
    _explorer(fake_run, out)
    drv = _driver(tmp_path)
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
        # the 3-D axes are named, every line of the share chart is labelled, and
        # the panel holds the BPT diagram (spaxels + 2 demarcations) and a residual map
        titles = drv.execute_script(
            "const s=document.getElementById('umap')._fullLayout.scene; return [s.xaxis.title.text, s.yaxis.title.text, s.zaxis.title.text]"
        )
        assert titles == ["UMAP 1", "UMAP 2", "UMAP 3"]
        labels = drv.execute_script("return [...document.querySelectorAll('#pshare .ytick text')].map(e => e.textContent)")
        assert labels == drv.execute_script("return DATA.lines") and len(labels) == 19
        assert drv.execute_script("return document.getElementById('pbpt').data.length") == 3
        top = drv.execute_script(
            "return DATA.models.ae.plateifu.indexOf(Object.keys(DATA.panels).find(p => DATA.panels[p].resid))"
        )
        drv.execute_script(f"show({top})")
        assert drv.execute_script("return document.getElementById('pres').data[0].type") == "heatmap"
    finally:
        drv.quit()


@needs_chromium
def test_explorer_hostile_catalogue_labels_and_rerank(fake_run, tmp_path):
    """A catalogue value with </script> and an onerror image: the page still works
    and runs none of it. Then flag two galaxies, export labels.csv through the
    button, and rerank with it (browser click -> CSV -> linecube rerank)."""
    import time

    from linecube.cli import main

    d, pifus = fake_run
    out = tmp_path / "explorer.html"
    _explorer(fake_run, out, hostile=True)
    dl = tmp_path / "downloads"
    dl.mkdir()
    drv = _driver(tmp_path, downloads=dl)
    try:
        drv.get(out.as_uri())
        assert drv.execute_script("return document.getElementById('umap').dataset.npoints") == "12"
        drv.execute_script("document.getElementById('umap').emit('plotly_click', {points: [{pointNumber: 2, curveNumber: 0}]})")
        panel = drv.execute_script("return document.getElementById('panel').textContent")
        assert HOSTILE in panel and "<b onmouseover=alert(1)>Halpha</b>" in panel  # shown as text
        drv.execute_script("const c=document.getElementById('colour'); c.value='class'; c.onchange();")
        assert drv.execute_script("return window.PWNED === undefined")
        # flag: point 2 interesting, point 5 not interesting (the panel's buttons)
        drv.execute_script("document.querySelector('#flags button[data-label=\"0\"]').click()")
        drv.execute_script("show(5); document.querySelector('#flags button[data-label=\"1\"]').click()")
        assert drv.execute_script("return document.getElementById('mylabel').textContent") == "not interesting"
        assert drv.execute_script("return Object.keys(JSON.parse(localStorage.getItem('linecube-labels'))).length") == 2
        want = drv.execute_script("return [DATA.models.ae.plateifu[2], DATA.models.ae.plateifu[5]]")
        drv.execute_script("document.getElementById('export').click()")
        for _ in range(50):
            if (dl / "labels.csv").exists():
                break
            time.sleep(0.1)
        assert drv.execute_script("return window.PWNED === undefined")
    finally:
        drv.quit()
    labels = pd.read_csv(dl / "labels.csv", dtype=str)
    assert list(labels.columns) == ["plateifu", "label", "model", "score"]
    assert dict(zip(labels.plateifu, labels.label)) == {want[0]: "interesting", want[1]: "not interesting"}
    assert set(labels.model) == {"ae"}
    res = tmp_path / "results"
    shutil.copytree(d / "ae", res / "ae")
    assert main(["rerank", "--labels", str(dl / "labels.csv"), "--results", str(res), "--model", "ae"]) == 0
    ranked = pd.read_csv(res / "ae" / "scores_ranked.csv", dtype={"plateifu": str})
    assert ranked.plateifu.iloc[0] == want[0] and ranked.plateifu.iloc[-1] == want[1]
    assert sorted(ranked["rank"]) == list(range(1, 13)) and "rank_before" in ranked


def test_halpha_map_of_a_double_peaked_galaxy_is_not_negative(tmp_path):
    """The panel's H-alpha map is the window's whole flux: a continuum taken from the
    window's edge bins would go negative where a split line fills them."""
    import numpy as np
    from fixtures import make_galaxy

    from linecube.report.explorer import _panels
    from linecube.simulate import simulate_cubes_h5
    from linecube.simulate.galaxy import with_anomaly

    g = with_anomaly(make_galaxy(ifusize=37, plate=8600, z=0.03, seed=2), "double_peaked")  # 82 % negative before
    out = tmp_path / "cubes.h5"
    simulate_cubes_h5(out, 0, 0, galaxies=[g], progress=False, noise_free=True)
    panels, _, _ = _panels(out, {}, [g.plateifu])
    ha = np.array(panels[g.plateifu]["ha"], dtype=float)
    on = np.isfinite(ha) & (ha != 0)
    assert on.sum() > 50 and (ha[on] >= -1e-6).all()


def test_every_galaxy_links_to_marvin_and_skyserver_unless_turned_off(tmp_path):
    from fixtures import write_cubes_h5, write_results

    from linecube.report.explorer import build_explorer

    cubes = tmp_path / "cubes.h5"
    pifus = write_cubes_h5(cubes, n=6)
    write_results(tmp_path, "ae", pifus)
    emb = pd.read_csv(tmp_path / "ae" / "embedding.csv", dtype={"plateifu": str})
    sc = pd.read_csv(tmp_path / "ae" / "scores.csv", dtype={"plateifu": str})
    build_explorer(tmp_path / "on.html", {"ae": emb}, {"ae": sc}, {}, cubes)
    html = (tmp_path / "on.html").read_text()
    for p in pifus:
        assert f"https:\\u002f\\u002fdr17.sdss.org\\u002fmarvin\\u002fgalaxy\\u002f{p}\\u002f" in html
    assert "skyserver.sdss.org" in html
    build_explorer(tmp_path / "off.html", {"ae": emb}, {"ae": sc}, {}, cubes, links=False)
    assert "dr17.sdss.org" not in (tmp_path / "off.html").read_text().replace("d.links", "")
