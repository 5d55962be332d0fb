"""End-to-end: the real Snakefile on a tiny simulated survey (two plates), the
report, reruns of exactly what changed, and run-to-run determinism."""

import copy
import json
import os
import shutil
import time

import h5py
import numpy as np
import pandas as pd
import pytest
from fixtures import TINY, make_workdir, planned_jobs, run, write_config

DOWNSTREAM_OF_EMBED = {"embed_latents", "find_neighbors", "plot_umap", "plot_pca_variance", "plot_neighbors", "build_explorer"}


@pytest.mark.slow
def test_full_chain_outputs(tiny_run):
    wd = tiny_run
    r = wd / "results"
    sample = pd.read_csv(r / "sample.csv", dtype={"plateifu": str})
    assert len(sample) == 14 and sample.plate.nunique() == 2
    with h5py.File(r / "cubes.h5") as h5:
        assert h5["flux"].shape == (14, 190, 32, 32)
        assert [s.decode() for s in h5["plateifu"][()]] == sorted(sample.plateifu)
    for plate in sample.plate.unique():
        assert (r / "extract" / f"{plate}.h5").exists()
        assert "extracted" in (wd / "logs" / "extract_plate" / f"{plate}.log").read_text()
        assert (r / "benchmarks" / "extract_plate" / f"{plate}.tsv").exists()
    assert list(pd.read_csv(r / "rejects.csv").columns) == ["plateifu", "path", "reason", "stage"]
    for m in ("ae", "vae"):
        for f in ("models/{m}/model.keras", "models/{m}/history.csv", "models/{m}/loss.png", "models/{m}/split.csv", "{m}/latents.h5",
                  "{m}/embedding.csv", "{m}/neighbors.csv", "{m}/validation.json", "figures/{m}/gallery.png", "figures/{m}/gallery.pdf",
                  "figures/{m}/bpt.png", "figures/{m}/neighbors.png", "figures/{m}/line_heatmap.png", "figures/{m}/validation.png"):  # fmt: skip
            p = r / f.format(m=m)
            assert p.exists() and p.stat().st_size > 0, p
        sc = pd.read_csv(r / m / "scores.csv")
        assert len(sc) == 14 and sorted(sc["rank"]) == list(range(1, 15))
        assert {"wise_agn", "bat_agn", "radio_agn", "broad_agn", "agn", "score_chi", "mean_abs_flux"} <= set(sc.columns)
        v = json.loads((r / m / "validation.json").read_text())
        assert v["n_galaxies"] == 14
        assert pd.read_csv(r / m / "embedding.csv").shape == (14, 1 + 4 + 3)
    for f in ("umap_scores", "umap_agn", "score_distributions", "pca_variance"):
        assert (r / "figures" / f"{f}.png").stat().st_size > 5000 and (r / "figures" / f"{f}.pdf").exists()
    assert (r / "explorer.html").stat().st_size > 1_000_000
    # the score log says what the model has learned beyond a mean galaxy, against the noise's floor
    assert "of what the noise leaves to learn" in (wd / "logs" / "score_galaxies" / "ae.log").read_text()
    # diagnostics.json: loss ratios against PCA and the noise, the KL, divergence events, the probes
    for m in ("ae", "vae"):
        d = json.loads((r / m / "diagnostics.json").read_text())
        assert {"loss_ratio", "pca_loss_ratio", "noise_loss_ratio", "learned_fraction", "divergence_events", "probes"} <= set(d)
        assert 0 < d["noise_loss_ratio"] < 1 and d["pca_components"] == 8 and d["divergence_events"] == 0
        assert (d["kl_per_galaxy"] is None) == (m == "ae")
        assert d["probes"]["n"] >= 10 and {"class", "vsini_kms"} <= set(d["probes"]["latent"]["knn"])
        assert set(d["probes"]["pixels_pca"]["knn"]) == set(d["probes"]["latent"]["knn"])
        assert set(d["probes"]["ceiling"]) == {"knn", "linear", "knn_bpt_ratios"}  # the class probe on the true parameters
        assert d["backend"] == "tensorflow" and d["default_score"] == "score_hybrid"
        assert list(pd.read_csv(r / "models" / m / "divergence.csv").columns)[:2] == ["epoch", "batch"]
    # every rule has a log and a benchmark
    assert (wd / "logs" / "train_model" / "ae.log").exists() and (r / "benchmarks" / "train_model" / "ae.tsv").exists()


@pytest.mark.slow
def test_report(tiny_run):
    run(tiny_run, "--report", "results/report.html")
    html = (tiny_run / "results" / "report.html").read_text(errors="replace")
    for needle in ("gallery.png", "umap_scores.png", "validation.png", "explorer.html", "scores.csv"):
        assert needle in html, needle


@pytest.mark.slow
def test_nothing_to_do_after_a_full_run(tiny_run):
    assert planned_jobs(tiny_run) == {}


@pytest.mark.slow
def test_changed_umap_parameter_plans_only_embedding_and_downstream(tiny_run):
    cfg = copy.deepcopy(TINY)
    cfg["embed"]["umap_neighbors"] = 5
    jobs = planned_jobs(tiny_run, configfile=write_config(tiny_run, "umap.yaml", cfg))
    assert set(jobs) - {"all"} == DOWNSTREAM_OF_EMBED, jobs
    assert jobs["embed_latents"] == 2


@pytest.mark.slow
def test_changed_epochs_plans_training_and_downstream_not_extraction(tiny_run):
    cfg = copy.deepcopy(TINY)
    cfg["train"]["epochs"] = 3
    jobs = planned_jobs(tiny_run, configfile=write_config(tiny_run, "epochs.yaml", cfg))
    assert jobs["train_model"] == 2 and jobs["score_galaxies"] == 2
    assert not {"simulate_survey", "select_sample", "extract_plate", "assemble_cubes"} & set(jobs), jobs
    assert DOWNSTREAM_OF_EMBED <= set(jobs)


@pytest.mark.slow
def test_trained_model_is_protected_from_a_careless_rerun(tiny_run):
    """model.keras is write-protected: a run that would retrain stops and names it,
    and the model is still there, unchanged, until the user deletes it. Snakemake
    tells a protected file by os.access, which root always passes (and a root
    venv under /root cannot be run as another user), so as root only the file
    mode is checked."""
    model = tiny_run / "results" / "models" / "ae" / "model.keras"
    assert model.stat().st_mode & 0o222 == 0
    if os.geteuid() == 0:
        pytest.skip("root passes os.access: Snakemake's protected() stops only non-root users")
    before = model.read_bytes()
    cfg = copy.deepcopy(TINY)
    cfg["train"]["epochs"] = 3
    p = run(tiny_run, "results/models/ae/history.csv", check=False, configfile=write_config(tiny_run, "retrain.yaml", cfg))
    out = p.stdout + p.stderr
    assert p.returncode != 0, out[-3000:]
    assert "Write-protected output files" in out and "results/models/ae/model.keras" in out, out[-3000:]
    assert model.read_bytes() == before


@pytest.mark.slow
def test_replaced_cube_reruns_only_its_plate(tiny_run):
    wd = tiny_run
    sample = pd.read_csv(wd / "results" / "sample.csv", dtype={"plateifu": str})
    row = sample.iloc[0]
    cube = wd / row.path
    tmp = cube.with_suffix(".copy")
    shutil.copy2(cube, tmp)
    os.replace(tmp, cube)  # a new file (as a re-download would be), newer than the outputs
    now = time.time() + 5
    os.utime(cube, (now, now))
    jobs = planned_jobs(wd)
    assert jobs["extract_plate"] == 1, jobs
    assert jobs["assemble_cubes"] == 1 and jobs["train_model"] == 2
    assert not {"simulate_survey", "select_sample"} & set(jobs)
    p = run(wd, "-n", "results/cubes.h5")
    assert f"output: results/extract/{row.plate}.h5" in p.stdout
    other = [pl for pl in sample.plate.unique() if pl != row.plate][0]
    assert f"output: results/extract/{other}.h5" not in p.stdout


@pytest.mark.slow
def test_same_seed_same_results_and_other_seed_differs(tiny_run, tmp_path):
    again = make_workdir(tmp_path / "again", TINY)
    run(again, "results/ae/scores.csv")
    a, b = tiny_run / "results", again / "results"
    with h5py.File(a / "cubes.h5") as x, h5py.File(b / "cubes.h5") as y:
        for name in ("flux", "ivar", "mask", "wave", "plateifu", "z", "objra"):
            np.testing.assert_array_equal(x[name][()], y[name][()])
    pd.testing.assert_frame_equal(pd.read_csv(a / "models/ae/split.csv"), pd.read_csv(b / "models/ae/split.csv"))
    sa, sb = pd.read_csv(a / "ae/scores.csv"), pd.read_csv(b / "ae/scores.csv")
    assert list(sa.plateifu) == list(sb.plateifu)
    # to float rounding (oneDNN's sums; bitwise_reproducible: test_train's bitwise test)
    np.testing.assert_allclose(sa["score"], sb["score"], rtol=1e-4, atol=1e-6)
    # a different survey seed changes the cubes; a different training seed the split
    # (and so reruns training)
    cfg = copy.deepcopy(TINY)
    cfg["simulate"]["seed"] = 12
    other = make_workdir(tmp_path / "other", cfg)
    run(other, "results/cubes.h5")
    c = other / "results"
    with h5py.File(a / "cubes.h5") as x, h5py.File(c / "cubes.h5") as y:
        assert x["flux"].shape != y["flux"].shape or not np.array_equal(x["flux"][()], y["flux"][()])
    from linecube.data.dataset import split_galaxies

    with h5py.File(a / "cubes.h5") as x:
        pifus = [s.decode() for s in x["plateifu"][()]]
    assert [list(s) for s in split_galaxies(pifus, 1 / 6, 42)] != [list(s) for s in split_galaxies(pifus, 1 / 6, 7)]
    cfg = copy.deepcopy(TINY)
    cfg["train"]["seed"] = 7
    assert planned_jobs(tiny_run, configfile=write_config(tiny_run, "seed7.yaml", cfg)).get("train_model") == 2
