"""Rule plot_gallery: Fig. 3 analogues, BPT of the gallery, per-line heat map (thin wrapper)."""

import pandas as pd

from linecube import figures
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    m = sm.wildcards.model
    scores = pd.read_csv(sm.input.scores, dtype={"plateifu": str, "mangaid": str})
    nb = pd.read_csv(sm.input.neighbors, dtype={"query": str, "neighbor": str})
    _, pick = figures.plot_gallery(
        sm.input.reconstructions, scores, sm.output.gallery.removesuffix(".png"), n=sm.params.n, model=m
    )
    figures.plot_bpt(sm.input.reconstructions, pick, sm.output.bpt.removesuffix(".png"), model=m)
    figures.plot_neighbors(sm.input.cubes, nb, scores, sm.output.neighbors.removesuffix(".png"), model=m)
    figures.plot_line_heatmap(scores, sm.output.heatmap.removesuffix(".png"), model=m)
    log.info("gallery of %s: %s", m, ", ".join(pick))
