"""Rule plot_score_distributions: each model's score histogram (thin wrapper)."""

import pandas as pd

from linecube.report import figures
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]):
    sc = {m: pd.read_csv(p, dtype={"plateifu": str, "mangaid": str}) for m, p in zip(sm.params.models, sm.input.scores)}
    figures.plot_score_distributions(sc, sm.output.distributions.removesuffix(".png"))
