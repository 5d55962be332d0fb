"""Rule plot_neighbors: Fig. 3 analogue, query galaxies and their neighbours (thin wrapper)."""

import pandas as pd

from linecube.report import maps
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]):
    scores = pd.read_csv(sm.input.scores, dtype={"plateifu": str, "mangaid": str})
    nb = pd.read_csv(sm.input.neighbors, dtype={"query": str, "neighbor": str})
    maps.plot_neighbors(sm.input.cubes, nb, scores, sm.output.neighbors.removesuffix(".png"), model=sm.wildcards.model)
