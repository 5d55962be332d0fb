"""The Python API (linecube.Run), scoring new cubes against a run, the model card and links."""

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    """A run built in-process from 14 simulated LOGCUBEs: cubes.h5, an (untrained)
    tiny AE with its card and split, scores, latents, raw stats and embedding."""
    pytest.importorskip("keras")
    from linecube.analysis.embed import pca_reduce
    from linecube.analysis.score import score_galaxies
    from linecube.data.extract_survey import extract_to_h5
    from linecube.data.sample import build_sample
    from linecube.io.drpall import cube_requests
    from linecube.io.formats import load_lines
    from linecube.io.manga import drpall_path
    from linecube.model.autoencoder import build_model
    from linecube.model.card import build_card, write_card
    from linecube.model.spec import ModelConfig
    from linecube.simulate import simulate_survey

    root = tmp_path_factory.mktemp("run")
    redux = root / "redux"
    simulate_survey(redux, 14, seed=3, threads=2, progress=False)
    drpall = drpall_path(redux, "v3_1_1")
    sample, _, _ = build_sample(drpall, redux, "v3_1_1")
    res = root / "results"
    cubes = res / "cubes.h5"
    cfg = {"data": {"drpall": str(drpall)}, "extract": {"galactic_extinction": "CCM89"}}
    extract_to_h5(cube_requests(sample), cubes, load_lines(), drpver="v3_1_1", progress=False, config=cfg)
    mdir = res / "models" / "ae"
    mdir.mkdir(parents=True)
    mcfg = {"filters": [4], "stem_filters": 4, "latent_dim": 8}
    build_model(ModelConfig.from_config(mcfg), "ae", seed=1).save(mdir / "model.keras")
    ids = sorted(sample["plateifu"])
    pd.DataFrame({"plateifu": ids, "split": ["train"] * 9 + ["test"] * 5}).to_csv(mdir / "split.csv", index=False)
    write_card(mdir / "model_card.json", build_card(cubes, "ae", mcfg, {}, {"backend": "tensorflow"}, mdir / "split.csv"))
    score_galaxies(
        cubes, mdir / "model.keras", mcfg, res / "ae", batch_size=4, top_k=3, split_csv=mdir / "split.csv", progress=False
    )
    import h5py

    with h5py.File(res / "ae" / "latents.h5") as h5:
        z = h5["latent"][()]
        lat_ids = [s.decode() for s in h5["plateifu"][()]]
    pcs, _ = pca_reduce(z, 6, 0)
    emb = pd.DataFrame({"plateifu": lat_ids, **{f"pc{i + 1}": pcs[:, i] for i in range(pcs.shape[1])}})
    for i in range(3):
        emb[f"umap{i + 1}"] = pcs[:, i]
    emb.to_csv(res / "ae" / "embedding.csv", index=False)
    return root, sample, mcfg


@pytest.mark.slow
def test_run_object_reads_scores_galaxy_neighbors_and_links(mini_run):
    import linecube

    root, sample, _ = mini_run
    run = linecube.Run(root)
    sc = run.scores("ae")
    assert len(sc) == 14 and sc["rank"].iloc[0] == 1
    assert sc["marvin"].iloc[0] == f"https://dr17.sdss.org/marvin/galaxy/{sc['plateifu'].iloc[0]}/"
    assert sc["skyserver"].iloc[0].startswith("https://skyserver.sdss.org/dr17/")
    g = run.galaxy(sc["plateifu"].iloc[0])
    assert g.flux.shape == (190, 32, 32) and g.flux.dtype == np.float32 and g.recon is not None
    assert not g.flux[g.mask != 0].any()
    assert g.residuals().index[0] == g.line_names[0]
    g.plot_line_maps()
    g.plot_spectrum()
    nb = run.neighbors(sc["plateifu"].iloc[0], k=3, space="pca")
    from linecube.analysis.neighbors import neighbors_table

    pd.testing.assert_frame_equal(nb, neighbors_table(sc["plateifu"].iloc[0], k=3, space="pca", results=root / "results"))
    assert run.latents("ae").shape == (14, 8)
    with pytest.raises(linecube.RunError, match="not in"):
        run.galaxy("9999-1901")
    with pytest.raises(linecube.RunError, match="no results"):
        linecube.Run(root / "redux")


@pytest.mark.slow
def test_a_run_galaxy_scored_as_a_new_cube_gives_its_own_scores_and_itself_first(mini_run, tmp_path):
    from linecube.analysis.score import SCORE_COLUMNS
    from linecube.cli import main

    root, sample, _ = mini_run
    runsc = pd.read_csv(root / "results" / "ae" / "scores.csv").set_index("plateifu")
    test_ids = set(pd.read_csv(root / "results" / "models" / "ae" / "split.csv").query("split == 'test'")["plateifu"])
    row = sample[sample["plateifu"].isin(test_ids)].iloc[0]
    out = tmp_path / "new.csv"
    assert main(["score", "--run", str(root), "--model", "ae", "--out", str(out), row["path"]]) == 0
    got = pd.read_csv(out).set_index("plateifu").loc[row["plateifu"]]
    for c in SCORE_COLUMNS:
        assert got[c] == pytest.approx(runsc.loc[row["plateifu"], c], rel=1e-3, abs=1e-6), c
    assert got["neighbors"].split(";")[0] == row["plateifu"]
    assert 0 <= got["percentile"] <= 100 and got["explain_line"]
    import h5py

    with h5py.File(tmp_path / "new.latents.h5") as a, h5py.File(root / "results" / "ae" / "latents.h5") as b:
        ids = [s.decode() for s in b["plateifu"][()]]
        np.testing.assert_allclose(a["latent"][0], b["latent"][ids.index(row["plateifu"])], rtol=1e-3, atol=1e-5)
    # never into the run; a model whose card names another sample is refused
    assert main(["score", "--run", str(root), "--out", str(root / "results" / "x.csv"), row["path"]]) == 2
    import json

    card = root / "results" / "models" / "ae" / "model_card.json"
    keep = card.read_text()
    c = json.loads(keep)
    c["sample"]["plateifu_sha256"] = "0" * 64
    card.write_text(json.dumps(c))
    try:
        assert main(["score", "--run", str(root), "--out", str(tmp_path / "y.csv"), row["path"]]) == 2
    finally:
        card.write_text(keep)


@pytest.mark.slow
def test_the_tutorial_runs_on_a_run(mini_run, monkeypatch):
    """docs/tutorial.py (a jupytext page) executes top to bottom, scoring a new cube, in under 60 s."""
    import runpy
    import time
    from pathlib import Path

    root, sample, _ = mini_run
    monkeypatch.setenv("LINECUBE_RUN", str(root))
    monkeypatch.setenv("LINECUBE_NEW_CUBE", str(sample["path"].iloc[-1]))
    t0 = time.perf_counter()
    ns = runpy.run_path(str(Path(__file__).resolve().parents[1] / "docs" / "tutorial.py"))
    assert time.perf_counter() - t0 < 60
    assert ns["table"]["neighbors"].iloc[0].split(";")[0] == sample["plateifu"].iloc[-1]
