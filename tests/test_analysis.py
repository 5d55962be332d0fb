"""Scores, per-line shares, PCA/UMAP, neighbours, the CLI, AGN join, validation metrics."""

import h5py
import numpy as np
import pandas as pd
import pytest
from analysis_fixtures import write_cubes_h5, write_results

from linecube.agn import match_agn
from linecube.neighbors import knn, neighbors_frame
from linecube.score import SCORE_COLUMNS, brightness_check, line_shares
from linecube.validate import recall_at, roc_auc, validate


def test_line_shares_sum_to_one():
    err = np.abs(np.random.default_rng(0).normal(size=(4, 190, 8, 8)))
    err[1, 20:30] *= 100  # line 2 dominates galaxy 1
    s = line_shares(err, 19, 10)
    np.testing.assert_allclose(s.sum(axis=1), 1.0)
    assert np.argmax(s[1]) == 2
    np.testing.assert_allclose(line_shares(np.zeros((1, 190, 2, 2)), 19, 10), 1 / 19)


@pytest.mark.slow
def test_score_is_mae_in_flux_units(tmp_path):
    pytest.importorskip("keras")
    from linecube.models import ModelConfig, build_model, from_model_layout, to_model_layout
    from linecube.score import score_galaxies

    cubes = tmp_path / "cubes.h5"
    pifus = write_cubes_h5(cubes, n=6)
    for scaling in ("none", "asinh"):
        mcfg = {"filters": [4, 8], "latent_dim": 8, "flux_scaling": scaling, "asinh_softening": 0.5}
        cfg = ModelConfig.from_config(mcfg)
        m = build_model(cfg, "vae", seed=1)
        m.save(tmp_path / "m.keras")
        out = tmp_path / scaling
        score_galaxies(cubes, tmp_path / "m.keras", mcfg, out, batch_size=4, top_k=2, progress=False)
        sc = pd.read_csv(out / "scores.csv").set_index("plateifu")
        with h5py.File(cubes) as h5:
            flux = h5["flux"][()]
        x = to_model_layout(np.arcsinh(flux / 0.5) if scaling == "asinh" else flux, cfg)
        xr = from_model_layout(np.asarray(m.decoder(m.encode(x))), cfg)  # VAE: through mu
        if scaling == "asinh":
            xr = 0.5 * np.sinh(xr)
        ref = np.abs(flux.astype(np.float64) - xr).reshape(6, -1).mean(axis=1)
        np.testing.assert_allclose(sc.loc[pifus, "score_paper"].to_numpy(), ref, rtol=1e-4)  # the paper's score
        assert set(SCORE_COLUMNS) <= set(sc.columns) and sc["explain_line"].notna().all()
        np.testing.assert_allclose(sc["score"], sc["score_max"])  # the default ranking
        maf = np.abs(flux.astype(np.float64)).reshape(6, -1).mean(axis=1)  # an all-zero reconstruction's MAE
        np.testing.assert_allclose(sc.loc[pifus, "mean_abs_flux"].to_numpy(), maf, rtol=1e-9)
        shares = sc[[c for c in sc.columns if c.startswith("share_")]]
        assert shares.shape[1] == 19
        np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-9)
        assert sorted(sc["rank"]) == list(range(1, 7)) and sc["rank"].idxmin() == sc["score"].idxmax()
        with h5py.File(out / "latents.h5") as h5:
            assert h5["latent"].shape == (6, 8)
        with h5py.File(out / "reconstructions.h5") as h5:
            assert h5["residual"].shape == (2, 32, 32) and h5["recon"].shape == (2, 190, 32, 32)


def test_brightness_check():
    maf = np.array([1.0, 2.0, 3.0, 4.0])
    # a model that reconstructs nothing scores each galaxy's mean |flux|
    assert brightness_check(maf, maf) == pytest.approx(
        {"median_score_over_mean_abs_flux": 1.0, "spearman_score_vs_mean_abs_flux": 1.0}
    )
    chk = brightness_check(np.array([0.4, 0.1, 0.3, 0.2]), maf)  # beats zeros; ranking not by brightness
    assert chk["median_score_over_mean_abs_flux"] == pytest.approx(np.median([0.4, 0.05, 0.1, 0.05]))
    assert chk["spearman_score_vs_mean_abs_flux"] == pytest.approx(-0.4)


def test_pca_umap_shapes_and_determinism():
    pytest.importorskip("umap")
    from linecube.embed import embed

    z = np.random.default_rng(0).normal(size=(40, 16))
    pifus = [f"8000-{1901 + i}" for i in range(40)]
    a, var = embed(z, pifus, pca_components=10, umap_components=3, umap_neighbors=8, seed=3)
    b, _ = embed(z, pifus, pca_components=10, umap_components=3, umap_neighbors=8, seed=3)
    c, _ = embed(z, pifus, pca_components=10, umap_components=3, umap_neighbors=8, seed=4)
    assert list(a.columns) == ["plateifu"] + [f"pc{i}" for i in range(1, 11)] + ["umap1", "umap2", "umap3"]
    assert len(var) == 10 and np.all(np.diff(var["cumulative"]) >= 0) and var["cumulative"].iloc[-1] <= 1 + 1e-9
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a[["umap1", "umap2", "umap3"]], c[["umap1", "umap2", "umap3"]])
    small, v2 = embed(z[:8], pifus[:8], pca_components=50, umap_neighbors=15, seed=0)
    assert len(v2) == 7  # capped at N - 1


def test_knn_matches_brute_force():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    q = np.array([0, 17, 199])
    d, i = knn(x, q, 5)
    for row, qq in enumerate(q):
        dist = np.linalg.norm(x - x[qq], axis=1)
        dist[qq] = np.inf
        ref = np.argsort(dist)[:5]
        np.testing.assert_array_equal(i[row], ref)
        np.testing.assert_allclose(d[row], dist[ref])
    emb = pd.DataFrame({"plateifu": [f"p{j}" for j in range(200)], "umap1": x[:, 0], "umap2": x[:, 1], "umap3": x[:, 2]})
    nb = neighbors_frame(emb, ["p17"], 3, "umap")
    assert list(nb["rank"]) == [1, 2, 3] and nb["distance"].is_monotonic_increasing and "p17" not in set(nb["neighbor"])


def test_cli_neighbors_known_and_unknown(tmp_path, capsys):
    from linecube.cli import main

    pifus = [f"8000-{1901 + i}" for i in range(20)]
    write_results(tmp_path, "ae", pifus)
    assert main(["neighbors", "8000-1905", "-k", "4", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "8000-1905" in out and "query" in out and "score" in out and "agn_flags" in out
    assert len([ln for ln in out.splitlines() if ln.strip()]) == 1 + 1 + 4  # header, query, 4 neighbours
    assert main(["neighbors", "8000-1995", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "8000-1995 is not in" in err and "close matches" in err and "8000-19" in err
    assert main(["neighbors", "../etc", "--results", str(tmp_path)]) == 2
    assert "malformed plate-IFU" in capsys.readouterr().err
    assert main(["neighbors", "8000-1905", "--space", "pca", "--results", str(tmp_path)]) == 0
    assert main(["neighbors", "8000-1905", "--model", "vae", "--results", str(tmp_path)]) == 2
    assert "run the workflow" in capsys.readouterr().err


def test_agn_join_by_plateifu_and_by_mangaid(tmp_path):
    pifus = ["8000-1901", "8000-1902", "8001-3701"]
    mids = ["1-1", "1-2", "1-3"]
    by_p = tmp_path / "agn_p.csv"
    pd.DataFrame(
        {
            "plateifu": ["8000-1902"],
            "mangaid": ["1-2"],
            "wise_agn": [True],
            "bat_agn": [False],
            "radio_agn": [True],
            "broad_agn": [False],
        }
    ).to_csv(by_p, index=False)
    f = match_agn(by_p, pifus, mids)
    assert list(f["agn"]) == [False, True, False] and list(f["radio_agn"]) == [False, True, False]
    by_m = tmp_path / "agn_m.csv"
    pd.DataFrame({"mangaid": ["1-3", "1-99"], "radio_agn": ["True", "False"], "broad_agn": [0, 1]}).to_csv(by_m, index=False)
    f = match_agn(by_m, pifus, mids)
    assert list(f["agn"]) == [False, False, True] and list(f["broad_agn"]) == [False, False, False]
    from astropy.table import Table

    fits_path = tmp_path / "agn.fits"
    Table({"MANGAID": ["1-1"], "RADIO_AGN": [True]}).write(fits_path)
    f = match_agn(fits_path, pifus, mids)
    assert list(f["agn"]) == [True, False, False]


def test_validation_metrics_on_a_hand_made_case():
    # scores: anomalies at ranks 1 and 3 of 10 -> AUC = 1 - (1 negative above one positive) / (2*8) = 15/16
    scores = np.array([10, 9, 8, 7, 6, 5, 4, 3, 2, 1], float)
    labels = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0], bool)
    assert roc_auc(labels, scores) == pytest.approx(15 / 16)
    assert recall_at(labels, scores, 0.10) == pytest.approx(0.5)
    assert recall_at(labels, scores, 0.30) == pytest.approx(1.0)
    pifus = [f"8000-{1901 + i}" for i in range(10)]
    sc = pd.DataFrame(
        {"plateifu": pifus, "score": scores, "rank": np.arange(1, 11), "agn": [False, True] * 5, "mean_abs_flux": scores[::-1]}
    )
    truth = pd.DataFrame(
        {
            "plateifu": pifus,
            "class": ["seyfert"] * 10,
            "is_anomaly": labels,
            "anomaly_type": ["blueberry", "", "shock"] + [""] * 7,
        }
    )
    v = validate(sc, truth)
    assert v["overall"]["roc_auc"] == pytest.approx(15 / 16)
    assert v["per_type"]["blueberry"]["roc_auc"] == pytest.approx(1.0)
    assert v["per_type"]["shock"]["roc_auc"] == pytest.approx(7 / 8)
    assert v["overall"]["recall_top_10pct"] == pytest.approx(0.5)
    assert v["overall_mean_abs_flux"]["roc_auc"] == pytest.approx(1 - 15 / 16)  # brightness baseline, reversed
    assert v["agn"]["n_agn"] == 5 and v["agn"]["median_score_agn"] == pytest.approx(5.0)


def test_cli_neighbors_validates_the_results_files(tmp_path, capsys):
    from linecube.cli import main

    pifus = [f"8000-{1901 + i}" for i in range(20)]
    write_results(tmp_path, "ae", pifus)
    emb_path, sc_path = tmp_path / "ae" / "embedding.csv", tmp_path / "ae" / "scores.csv"
    emb, sc = pd.read_csv(emb_path, dtype={"plateifu": str}), pd.read_csv(sc_path, dtype={"plateifu": str})

    def expect(fragment):
        assert main(["neighbors", "8000-1905", "--results", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err

    pd.concat([emb, emb.iloc[[4]]]).to_csv(emb_path, index=False)  # the query twice: never its own neighbour
    expect(f"{emb_path}: duplicate plate-IFU: 8000-1905 (rows 6, 22)")
    emb.to_csv(emb_path, index=False)
    pd.concat([sc.iloc[:3], sc.iloc[[2]], sc.iloc[3:]]).to_csv(sc_path, index=False)  # would shift the table
    expect(f"{sc_path}: duplicate plate-IFU")
    bad = sc.copy()
    bad.loc[7, "score"] = np.nan
    bad.to_csv(sc_path, index=False)
    expect("column score is not a finite number in row(s) 9")
    sc.iloc[:0].to_csv(sc_path, index=False)
    expect("no galaxies")
    sc_path.write_text("")
    expect("empty")
    sc.iloc[:10].to_csv(sc_path, index=False)
    expect("have no row")


def test_umap_logs_a_disconnected_graph(caplog):
    pytest.importorskip("umap")
    import logging

    from linecube.embed import umap_reduce

    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 0.01, (12, 5)), rng.normal(100, 0.01, (12, 5))])  # two far islands
    with caplog.at_level(logging.WARNING, logger="linecube"):
        umap_reduce(x, 2, 5, 0.1, 0)
    assert "not fully connected" in caplog.text
