"""Faults at the workflow level: downloads through the rule from a local server,
Snakemake killed during extraction/assembly, a broken cube among good ones."""

import http.server
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from functools import partial
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml
from fixtures import make_workdir, rule_properties, run, snakemake_bin

REPO = Path(__file__).resolve().parents[1]

DATA_ONLY = {"simulate": {"enabled": True, "n_galaxies": 14, "seed": 5}}


@pytest.mark.slow
def test_download_rule_fetches_missing_cubes_from_local_server(tiny_survey, tmp_path):
    sas, gals = tiny_survey
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(sas))
    handler.log_message = lambda *a: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        redux = tmp_path / "mirror"
        (redux / "v3_1_1").mkdir(parents=True)
        shutil.copy2(sas / "v3_1_1" / "drpall-v3_1_1.fits", redux / "v3_1_1")  # only the catalogue is local
        cfg = {
            "data": {"redux_dir": str(redux)},
            "simulate": {"enabled": False},
            "download": {
                "enabled": True,
                "base_url": f"http://127.0.0.1:{srv.server_address[1]}",
                "retries": 1,
                "backoff_s": 0.1,
            },
        }
        wd = make_workdir(tmp_path / "wf", cfg)
        run(wd, "results/cubes.h5")
        with h5py.File(wd / "results" / "cubes.h5") as h5:
            assert h5["flux"].shape[0] == len(gals)
        for g in gals:
            cube = redux / "v3_1_1" / str(g.plate) / "stack" / f"manga-{g.plate}-{g.ifudsgn}-LOGCUBE.fits.gz"
            src = sas / "v3_1_1" / str(g.plate) / "stack" / cube.name
            assert cube.read_bytes() == src.read_bytes()
        assert len(list((wd / "logs" / "download_cube").glob("*.log"))) == len(gals)
    finally:
        srv.shutdown()


@pytest.mark.slow
def test_cluster_downloads_run_on_the_submitting_node_from_manga_spectro_redux(tiny_survey, tmp_path, monkeypatch):
    """data.redux_dir null + $MANGA_SPECTRO_REDUX (the SDSS convention); with the
    SLURM profile, download_cube is a local rule (compute nodes are often offline)
    and extraction is submitted; both profiles bound concurrent downloads."""
    import yaml

    sas, gals = tiny_survey
    redux = tmp_path / "mirror"
    (redux / "v3_1_1").mkdir(parents=True)
    shutil.copy2(sas / "v3_1_1" / "drpall-v3_1_1.fits", redux / "v3_1_1")
    cfg = {
        "data": {"redux_dir": None},
        "simulate": {"enabled": False},
        "download": {"enabled": True, "base_url": "http://127.0.0.1:9"},
    }
    wd = make_workdir(tmp_path / "wf", cfg)
    monkeypatch.delenv("MANGA_SPECTRO_REDUX", raising=False)
    monkeypatch.delenv("SAS_BASE_DIR", raising=False)
    p = run(wd, "-n", check=False)
    assert p.returncode != 0 and "neither $MANGA_SPECTRO_REDUX nor $SAS_BASE_DIR is set" in p.stdout + p.stderr
    monkeypatch.setenv("MANGA_SPECTRO_REDUX", str(redux))
    run(wd, "results/sample.csv")
    assert len(pd.read_csv(wd / "results" / "sample.csv")) == len(gals)
    p = run(wd, "-n", "--workflow-profile", "profiles/slurm")
    out = p.stdout + p.stderr
    assert re.search(rf"\ndownload_cube\s+{len(gals)}\n", out) and str(redux / "v3_1_1") in out
    rules = rule_properties(wd)
    assert rules["download_cube"]["local"] and rules["all"]["local"]
    assert not any(v["local"] for k, v in rules.items() if k not in ("all", "download_cube"))
    # deterministic rules are never retried (the profiles' default, 0); training, scoring and UMAP say 2
    assert {k for k, v in rules.items() if v["retries"] is not None} == {"train_model", "score_galaxies", "embed_latents"}
    assert all(rules[k]["retries"] == 2 for k in ("train_model", "score_galaxies", "embed_latents"))
    assert [p.replace(",ae|vae", "") for p in rules["train_model"]["protected"]] == ["results/models/{model}/model.keras"]
    for prof in ("default", "slurm"):
        res = yaml.safe_load((wd / "profiles" / prof / "config.yaml").read_text())["resources"]
        assert any(r.startswith("downloads=") for r in res), prof


@pytest.mark.slow
def test_killed_snakemake_then_rerun_completes_with_whole_files(tmp_path):
    wd = make_workdir(tmp_path / "wf", DATA_ONLY)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [snakemake_bin(), "results/cubes.h5", "--cores", "2", "--configfile", "test-config.yaml"]
    p = subprocess.Popen(cmd, cwd=wd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        if list((wd / "logs").glob("extract_plate/*.log")):
            time.sleep(0.5)
            break
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # Snakemake and its jobs, mid-extraction
    p.wait()
    assert not (wd / "results" / "cubes.h5").exists()
    # nothing under a final name is half-written: every extract file present opens
    for f in (wd / "results" / "extract").glob("*.h5"):
        with h5py.File(f) as h5:
            assert "flux" in h5
    (wd / ".snakemake" / "locks").exists() and shutil.rmtree(wd / ".snakemake" / "locks", ignore_errors=True)
    run(wd, "results/cubes.h5")  # the default profile sets rerun-incomplete
    sample = pd.read_csv(wd / "results" / "sample.csv")
    with h5py.File(wd / "results" / "cubes.h5") as h5:
        assert h5["flux"].shape[0] == len(sample) == 14
    assert not list((wd / "results").rglob(".*.tmp"))  # no stray temporary files left behind as outputs


@pytest.mark.slow
def test_broken_cube_rejected_others_processed_and_strict_plate_fails(tmp_path):
    wd = make_workdir(tmp_path / "wf", DATA_ONLY)
    run(wd, "results/sample.csv")
    sample = pd.read_csv(wd / "results" / "sample.csv", dtype={"plateifu": str})
    victim = sample.iloc[3]
    (wd / victim.path).write_bytes(b"\x1f\x8b\x08\x00broken")
    run(wd, "results/cubes.h5")
    rej = pd.read_csv(wd / "results" / "rejects.csv", dtype={"plateifu": str})
    assert list(rej.plateifu) == [victim.plateifu]
    assert "corrupt gzip" in rej.reason[0] or "truncated" in rej.reason[0] or "not a FITS" in rej.reason[0]
    assert rej.stage[0] == f"extract plate {victim.plate}"
    with h5py.File(wd / "results" / "cubes.h5") as h5:
        assert h5["flux"].shape[0] == 13
    # the same survey with a strict max_reject_fraction: assembling it fails, naming the reason (the plates ran)
    (wd / "strict.yaml").write_text("extract: {max_reject_fraction: 0.01}\nsimulate: {enabled: true, n_galaxies: 14, seed: 5}\n")
    # (with the SLURM profile's retries, 0 but for the transient rules: a deterministic failure is not retried)
    slurm = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert slurm["retries"] == 0
    p = run(
        wd,
        "results/cubes.h5",
        "--forcerun",
        "assemble_cubes",
        "--retries",
        str(slurm["retries"]),
        check=False,
        configfile="strict.yaml",
    )
    assert p.returncode != 0
    assert "Trying to restart" not in p.stdout + p.stderr
    log = (wd / "logs" / "assemble_cubes.log").read_text()
    assert "max_reject_fraction=0.01" in log and victim.plateifu in log
    for pl in sample.plate.unique():
        assert (wd / "results" / "extract" / f"{pl}.h5").exists()  # every plate kept its good cubes


def test_snakemake_rejects_a_bad_config_naming_the_key(tmp_path):
    wd = make_workdir(tmp_path / "wf", {"train": {"epochs": "many"}, "extract": {"windowbins": 3}})
    p = run(wd, "-n", check=False)
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "epochs" in out and "windowbins" in out
