"""The tests' one shared helper module: running the real Snakefile in a scratch
copy of the workflow, small real-format inputs (LOGCUBEs, drpall, cubes.h5, the
results of a fake run), and galaxies drawn with controllable parameters."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from linecube.data.extract import ExtractOptions, extract_cube
from linecube.io.drpall import CubeRequest
from linecube.io.formats import CubeLayout, create_cube_file, load_lines
from linecube.io.logcube import CubeError
from linecube.io.manga import logcube_path
from linecube.simulate import build_logcube, drpall_row, write_drpall, write_fits_gz

# --------------------------------------------------------------------------
# Run the real Snakefile in a scratch copy of the workflow (as a user's clone).
# --------------------------------------------------------------------------


REPO = Path(__file__).resolve().parents[1]
#: real MaNGA spectra beside the checkout, for tests only (skipped when absent)
#: extraction as the DRP wrote the cube: no Galactic extinction correction
RAW = ExtractOptions("none", 3.1, True)
REAL_SPECTRA = REPO.parent / "shared" / "data" / "manga-real-spectra"


#: the end-to-end workflow tests' configuration (two plates, tiny models); the
#: SLURM test runs the same with the AE only and compares with the local run
TINY = {
    "simulate": {"enabled": True, "n_galaxies": 14, "seed": 11},
    "model": {"filters": [4], "stem_filters": 4, "latent_dim": 8, "pose_dim": 2},
    "train": {"epochs": 2, "min_steps": 0},
    "embed": {"pca_components": 4},
    "score": {"top_k": 4},
    "figures": {"gallery_n": 2},
}
COPY = ("Snakefile", "workflow", "config", "resources", "scripts", "envs", "profiles")


def snakemake_bin() -> str:
    exe = Path(sys.executable).with_name("snakemake")
    return str(exe) if exe.exists() else "snakemake"


def make_workdir(dest: Path, config: dict) -> Path:
    """Copy the workflow into ``dest`` and write ``dest/test-config.yaml``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest / name)
    (dest / "test-config.yaml").write_text(yaml.safe_dump(config))
    return dest


def run(
    workdir: Path, *args: str, check: bool = True, timeout: int = 900, configfile: str = "test-config.yaml"
) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    cmd = [snakemake_bin(), *args, "--cores", "2", "--configfile", configfile]
    p = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        logs = ""
        for f in sorted((workdir / "logs").rglob("*.log")) if (workdir / "logs").exists() else []:
            logs += f"\n--- {f}\n" + f.read_text()[-3000:]
        raise AssertionError(f"snakemake {' '.join(args)} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-6000:]}{logs}")
    return p


def write_config(workdir: Path, name: str, config: dict) -> str:
    (workdir / name).write_text(yaml.safe_dump(config))
    return name


def planned_jobs(workdir: Path, *targets: str, configfile: str = "test-config.yaml") -> dict[str, int]:
    """Jobs a dry run would execute, by rule (the 'Job stats' table)."""
    p = run(workdir, "-n", "--quiet", "rules", *targets, configfile=configfile)
    if "Nothing to be done" in p.stdout + p.stderr:
        return {}
    counts: dict[str, int] = {}
    started = False
    for line in (p.stdout + p.stderr).splitlines():
        parts = line.split()
        if line.startswith("job") and "count" in line:
            started = True
            continue
        if started and len(parts) == 2 and parts[1].isdigit() and not line.startswith("-"):
            if parts[0] == "total":
                break
            counts[parts[0]] = int(parts[1])
    return counts


_RULES_PY = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings()) as api:
    w = api.workflow(resource_settings=ResourceSettings(cores=1), config_settings=ConfigSettings(configfiles=[Path(sys.argv[1])]),
                     snakefile=Path("Snakefile"), workdir=Path("."))._workflow
    out = {r.name: {"local": r.name in w._localrules, "retries": r._restart_times,
                    "protected": [str(f) for f in r.output if getattr(f, "is_protected", False) or f.flags.get("protected")]}
           for r in w.rules}
print("RULES" + json.dumps(out))
"""


def rule_properties(workdir: Path, configfile: str = "test-config.yaml") -> dict:
    """Each rule of the workflow as Snakemake parsed it: a localrule?, its own retries
    (None = the --retries default), protected outputs."""
    import json

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    p = subprocess.run(
        [sys.executable, "-c", _RULES_PY, configfile], cwd=workdir, env=env, capture_output=True, text=True, timeout=120
    )
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RULES")]
    assert line, p.stdout[-2000:] + p.stderr[-3000:]
    return json.loads(line[0][5:])


# --------------------------------------------------------------------------
# Helpers that write LOGCUBEs and drpall files for tests (real formats only).
# --------------------------------------------------------------------------


def write_cube(redux: Path, g, lines, *, arrays=None, edit=None, drpver="v3_1_1") -> Path:
    """Write galaxy ``g`` as a LOGCUBE under ``redux``; ``edit(hdul)`` may change it first."""
    hl = build_logcube(g, lines, np.random.default_rng([g.seed, 1]), arrays=arrays)
    if edit is not None:
        hl = edit(hl) or hl
    path = logcube_path(redux, drpver, g.plate, g.ifudsgn)
    write_fits_gz(hl, path)
    return path


def write_drpall_for(redux: Path, galaxies, drpver="v3_1_1", **overrides) -> Path:
    path = Path(redux) / drpver / f"drpall-{drpver}.fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_drpall([drpall_row(g, **overrides.get(g.plateifu, {})) for g in galaxies], path)
    return path


# --------------------------------------------------------------------------
# Small, real-format inputs for the analysis tests (cubes.h5 written by our own writer).
# --------------------------------------------------------------------------


def write_cubes_h5(path: Path, n: int = 12, seed: int = 0) -> list[str]:
    """A cubes.h5 with n galaxies of Gaussian 'lines' on noise, in the contract layout."""
    lines = load_lines()
    layout = CubeLayout()
    rng = np.random.default_rng(seed)
    pifus = [f"{8000 + i // 6}-{1901 + i}" for i in range(n)]
    with h5py.File(path, "w") as h5:
        create_cube_file(h5, n, layout, lines, drpver="v3_1_1")
        yy, xx = np.mgrid[:32, :32]
        prof = np.exp(-((yy - 16) ** 2 + (xx - 16) ** 2) / 40.0)
        spec = np.tile(np.exp(-0.5 * ((np.arange(10) - 5) / 1.2) ** 2), 19)
        for i, p in enumerate(pifus):
            amp = rng.uniform(0.5, 5, 19).repeat(10)
            f = (amp * spec)[:, None, None] * prof[None] + rng.normal(0, 0.05, (190, 32, 32))
            h5["flux"][i] = f.astype(np.float32)
            h5["ivar"][i] = np.full((190, 32, 32), 400.0, np.float32)
            m = np.zeros((190, 32, 32), np.uint8)
            m[:, :2, :] = 1
            h5["mask"][i] = m
            z = 0.02 + 0.001 * i
            h5["wave"][i] = np.repeat(lines.rest * (1 + z), 10) + np.tile(np.arange(-5, 5), 19)
            h5["plateifu"][i] = p
            h5["mangaid"][i] = f"1-{300000 + i}"
            h5["z"][i] = z
            h5["objra"][i] = 150.0 + i
            h5["objdec"][i] = 20.0
    return pifus


def write_results(res: Path, model: str, pifus: list[str], seed: int = 0) -> None:
    """embedding.csv and scores.csv of a fake run (for the neighbours CLI and figures)."""
    rng = np.random.default_rng(seed)
    n = len(pifus)
    d = res / model
    d.mkdir(parents=True, exist_ok=True)
    emb = pd.DataFrame({"plateifu": pifus})
    for i in range(5):
        emb[f"pc{i + 1}"] = rng.normal(size=n)
    for i in range(3):
        emb[f"umap{i + 1}"] = rng.normal(size=n)
    emb.to_csv(d / "embedding.csv", index=False)
    sc = pd.DataFrame({"plateifu": pifus, "mangaid": [f"1-{300000 + i}" for i in range(n)], "score": rng.lognormal(0, 1, n)})
    sc["rank"] = sc["score"].rank(ascending=False, method="first").astype(int)
    sc["percentile"] = 100 * sc["score"].rank(pct=True)
    sc["mean_abs_flux"] = sc["score"] * rng.uniform(1.1, 2.0, n)
    lines = load_lines()
    sh = rng.dirichlet(np.ones(19), n)
    for k, name in enumerate(lines.names):
        sc[f"share_{name}"] = sh[:, k]
    sc["wise_agn"] = [i % 5 == 0 for i in range(n)]
    sc["bat_agn"] = False
    sc["radio_agn"] = [i % 3 == 0 for i in range(n)]
    sc["broad_agn"] = False
    sc["agn"] = sc[["wise_agn", "radio_agn"]].any(axis=1)
    sc.sort_values("rank").to_csv(d / "scores.csv", index=False)


# --------------------------------------------------------------------------
# Galaxies and extraction requests
# --------------------------------------------------------------------------


def make_galaxy(index=0, ifusize=19, plate=8485, ifudsgn=None, z=0.03, seed=1, **kw):
    """Draw one star-forming galaxy with controllable IFU, plate and redshift."""
    from linecube.simulate import draw_galaxy

    g = draw_galaxy(index, plate, ifudsgn or int(f"{ifusize}01"), ifusize, "star-forming", "", np.random.default_rng(seed), seed)
    g.z = z
    for k, v in kw.items():
        setattr(g, k, v)
    return g


def req(g, path, **kw):
    d = dict(plateifu=g.plateifu, path=str(path), mangaid=g.mangaid, z=g.z, objra=g.objra, objdec=g.objdec)
    d.update(kw)
    return CubeRequest(**d)


def check(r, lines, *needles):
    with pytest.raises(CubeError) as e:
        extract_cube(r, lines)
    msg = str(e.value)
    assert r.plateifu in msg and r.path in msg, msg
    for n in needles:
        assert n.lower() in msg.lower(), msg
    return msg


def evaluate_test_split(cubes, model_path, model_keys: dict, train_keys: dict) -> dict:
    """Keras's ``evaluate`` of a trained model on its run's test batches (the split and
    test source ``train()`` made from ``train_keys``): what history.csv's test losses
    must equal. Imports Keras: call it after the backend is chosen."""
    from linecube.config import with_defaults
    from linecube.data.dataset import AugmentConfig, split_galaxies
    from linecube.data.fluxscale import FluxScaler
    from linecube.io.formats import read_layout, read_strings
    from linecube.model.autoencoder import load_model
    from linecube.model.batches import make_dataset
    from linecube.model.spec import ModelConfig
    from linecube.model.train import training_sources

    mk, tk = with_defaults("model", model_keys), with_defaults("train", train_keys)
    with h5py.File(cubes) as f:
        layout, lines = read_layout(f)
        ids = read_strings(f["plateifu"])
    mcfg = ModelConfig.from_config(mk, layout.n_lines, layout.window_bins, layout.crop)
    seed = int(tk["seed"])
    tr, te = split_galaxies(ids, float(tk["test_fraction"]), seed)
    scaler = FluxScaler.from_config(mk, lines.names, layout.window_bins)
    _, src = training_sources(cubes, tr, te, seed, AugmentConfig.from_config(tk), mcfg, scaler)
    ds = make_dataset(src, mcfg, scaler, int(tk["batch_size"]), mcfg.uses_weights)
    model = load_model(model_path)
    model.compile(optimizer="adam")
    try:
        out = model.evaluate(ds, verbose=0, return_dict=True)
    finally:
        ds.close()
        src.close()
    out["n_batches"] = ds.num_batches
    return out
