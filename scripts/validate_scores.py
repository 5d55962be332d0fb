"""Rule validate_scores: scores vs the simulator's truth.csv (thin wrapper)."""

import json

import pandas as pd

from linecube.analysis.validate import validate
from linecube.io.atomic import atomic_path
from linecube.report.figures import plot_validation
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    scores = pd.read_csv(sm.input.scores, dtype={"plateifu": str, "mangaid": str})
    truth = pd.read_csv(sm.input.truth, dtype={"plateifu": str}, keep_default_na=False)
    metrics = validate(scores, truth)
    with atomic_path(sm.output.metrics) as tmp:
        tmp.write_text(json.dumps(metrics, indent=2))
    plot_validation(scores, truth, metrics, sm.output.figure.removesuffix(".png"), model=sm.wildcards.model)
    log.info("%s: %s", sm.wildcards.model, json.dumps(metrics["overall"]))
