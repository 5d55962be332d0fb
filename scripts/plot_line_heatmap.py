"""Rule plot_line_heatmap: per-line shares of the score, top galaxies (thin wrapper)."""

import pandas as pd

from linecube.report import figures
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]):
    scores = pd.read_csv(sm.input.scores, dtype={"plateifu": str, "mangaid": str})
    figures.plot_line_heatmap(scores, sm.output.heatmap.removesuffix(".png"), model=sm.wildcards.model)
