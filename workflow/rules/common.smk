# Helpers shared by every rule: config validation, paths, wildcard constraints
# and the input functions that read the sample checkpoint.
import os
from pathlib import Path

import pandas as pd

from linecube.io.drpall import cube_requests, request_params
from linecube.io.manga import LOGCUBE_LAYOUT, drpall_path
from linecube.config import (
    ConfigError,
    check_inputs,
    resolve_catalogues,
    resolve_redux_dir,
    validate_config,
)

# Validate against workflow/schemas/config.schema.yaml (JSON Schema, defaults filled
# in); every error is listed with its key, not only the first.
try:
    config.update(
        validate_config(
            config, source="configuration (config/*.yaml, --configfile, --config)"
        )
    )
    # data.redux_dir null: $MANGA_SPECTRO_REDUX or $SAS_BASE_DIR (SDSS conventions)
    resolve_redux_dir(config)
except ConfigError as e:
    raise WorkflowError(str(e)) from None
# data.agn_catalog / data.truth "auto": the simulated survey's files only when simulating
resolve_catalogues(config)
# the input files every job will read, checked before any job runs
_problems = check_inputs(config)
from linecube.config import duplicate_keys

_problems += [m for m in (duplicate_keys(f) for f in workflow.configfiles) if m]
try:  # the lines the scores read by name (derived from the code, not a list kept by hand)
    from linecube.analysis.features import missing_lines
    from linecube.io.formats import load_lines

    _missing = missing_lines(load_lines(config["data"]["lines"]).names)
    if _missing:
        _problems.append(
            f"data.lines: {config['data']['lines']}: lacks {', '.join(_missing)}, which the scores read "
            "(names as in resources/emission_lines.csv, vacuum wavelengths)"
        )
except Exception:  # an unreadable list is already reported by check_inputs
    pass
if _problems:
    raise WorkflowError("input files:\n  " + "\n  ".join(_problems))

# the checkout the conda envs install linecube from (envs/*.yaml: -e ${LINECUBE_ROOT})
os.environ.update(
    LINECUBE_ROOT=str(Path(workflow.current_basedir).resolve().parents[1])
)
# train_model and score_galaxies: TensorFlow's CPU build, or its CUDA build (ml_env: gpu)
ML_ENV = {"cpu": "../../envs/ml.yaml", "gpu": "../../envs/ml-gpu.yaml"}[
    config["ml_env"]
]

DATA = config["data"]
REDUX = DATA["redux_dir"]
DRPVER = DATA["drpver"]
DRPALL = DATA["drpall"] or str(drpall_path(REDUX, DRPVER))
SIMULATE = config["simulate"]["enabled"]
DOWNLOAD = config["download"]["enabled"]
MODELS = config["models"]
FORMATS = ["png", "pdf"]
CUBE_PATTERN = str(
    Path(REDUX)
    / LOGCUBE_LAYOUT.format(drpver=DRPVER, plate="{plate}", ifudsgn="{ifudsgn}")
)

if SIMULATE and DATA["drpall"] and DATA["drpall"] != str(drpall_path(REDUX, DRPVER)):
    raise ValueError(
        "simulate.enabled writes the drpall to {redux_dir}/{drpver}/; leave data.drpall null"
    )


wildcard_constraints:
    plate=r"\d{4,5}",
    ifudsgn=r"\d{3,5}",
    model=r"ae|vae",


def get_redux_dir(wildcards):
    """The MANGA_SPECTRO_REDUX root (cubes are found below it)."""
    return REDUX


def sample_table():
    """The selected sample (checkpoint output), one row per galaxy."""
    path = checkpoints.select_sample.get().output.sample
    return pd.read_csv(path, dtype={"plateifu": str, "mangaid": str})


def plates():
    return sorted(int(p) for p in sample_table()["plate"].unique())


def get_plate_cubes(wildcards):
    s = sample_table()
    return sorted(s.loc[s["plate"] == int(wildcards.plate), "path"])


def get_plate_galaxies(wildcards):
    """The drpall values extraction needs, per galaxy of the plate: passed as
    params so that a changed redshift or position reruns exactly that plate."""
    return [request_params(r) for r in cube_requests(sample_table(), wildcards.plate)]


def get_plate_files(wildcards):
    return expand("results/extract/{plate}.h5", plate=plates())


def get_plate_rejects(wildcards):
    return expand("results/extract/{plate}.rejects.csv", plate=plates())


def get_agn_catalog(wildcards):
    return DATA["agn_catalog"] or []


def get_final_outputs(wildcards):
    out = ["results/cubes.h5", "results/rejects.csv", "results/explorer.html"]
    out += expand(
        "results/figures/{name}.{ext}",
        name=["umap_scores", "umap_agn", "score_distributions", "pca_variance"],
        ext=FORMATS,
    )
    for m in MODELS:
        out += [
            f"results/{m}/scores.csv",
            f"results/{m}/embedding.csv",
            f"results/{m}/neighbors.csv",
        ]
        out += expand(
            "results/figures/{model}/{name}.{ext}",
            model=m,
            name=["gallery", "bpt", "neighbors", "line_heatmap"],
            ext=FORMATS,
        )
        if DATA["truth"]:
            out += [f"results/{m}/validation.json"]
    return out
