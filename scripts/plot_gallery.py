"""Rule plot_gallery: Fig. 3 analogue, the most anomalous AGN (thin wrapper)."""

import pandas as pd

from linecube.report import maps
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    m = sm.wildcards.model
    scores = pd.read_csv(sm.input.scores, dtype={"plateifu": str, "mangaid": str})
    _, pick = maps.plot_gallery(sm.input.reconstructions, scores, sm.output.gallery.removesuffix(".png"), n=sm.params.n, model=m)
    log.info("gallery of %s: %s", m, ", ".join(pick))
