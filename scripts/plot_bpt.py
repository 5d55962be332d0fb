"""Rule plot_bpt: BPT diagrams of the gallery's galaxies (thin wrapper)."""

import pandas as pd

from linecube.report import figures, maps
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]):
    scores = pd.read_csv(sm.input.scores, dtype={"plateifu": str, "mangaid": str})
    pick, _ = maps.gallery_pick(sm.input.reconstructions, scores, sm.params.n)
    figures.plot_bpt(sm.input.reconstructions, pick, sm.output.bpt.removesuffix(".png"), model=sm.wildcards.model)
