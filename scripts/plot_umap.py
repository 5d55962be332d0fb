"""Rule plot_umap: Fig. 2 analogues, UMAP by score and with AGN (thin wrapper)."""

import pandas as pd

from linecube.report import figures
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]):
    models = list(sm.params.models)
    emb = {m: pd.read_csv(p, dtype={"plateifu": str}) for m, p in zip(models, sm.input.embeddings)}
    sc = {m: pd.read_csv(p, dtype={"plateifu": str, "mangaid": str}) for m, p in zip(models, sm.input.scores)}
    figures.plot_umap_scores(emb, sc, sm.output.scores.removesuffix(".png"))
    figures.plot_umap_agn(emb, sc, sm.output.agn.removesuffix(".png"))
