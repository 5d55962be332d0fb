"""Figures are written (PNG and PDF), non-empty, and the explorer page works."""

import pandas as pd

from linecube.report import figures, maps


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
    paths, pick = maps.plot_gallery(d / "ae" / "reconstructions.h5", sc["ae"], tmp_path / "gallery", n=3, model="ae")
    _check(paths)
    assert len(pick) == 3 and all(sc["ae"].set_index("plateifu").loc[pick, "agn"])  # AGN first
    _check(figures.plot_bpt(d / "ae" / "reconstructions.h5", pick[:2], tmp_path / "bpt", model="ae"))
    _check(maps.plot_neighbors(d / "cubes.h5", pd.read_csv(d / "ae" / "neighbors.csv"), sc["ae"], tmp_path / "nb", model="ae"))
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
    from linecube.analysis.validate import validate

    v = validate(sc["ae"], truth)
    _check(figures.plot_validation(sc["ae"], truth, v, tmp_path / "val", model="ae"))
