"""Rule plot_pca_variance: PCA explained variance of the latents (thin wrapper)."""

import pandas as pd

from linecube.report import figures
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]):
    var = {m: pd.read_csv(p) for m, p in zip(sm.params.models, sm.input.variance)}
    figures.plot_pca_variance(var, sm.output.variance.removesuffix(".png"))
