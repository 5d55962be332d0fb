"""Rule build_explorer: the self-contained explorer.html (thin wrapper)."""

import pandas as pd

from linecube.report.explorer import build_explorer
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    models = list(sm.params.models)
    emb = {m: pd.read_csv(p, dtype={"plateifu": str}) for m, p in zip(models, sm.input.embeddings)}
    sc = {m: pd.read_csv(p, dtype={"plateifu": str, "mangaid": str}) for m, p in zip(models, sm.input.scores)}
    nb = {m: pd.read_csv(p, dtype={"query": str, "neighbor": str}) for m, p in zip(models, sm.input.neighbors)}
    rec = dict(zip(models, sm.input.reconstructions))
    n = build_explorer(sm.output.html, emb, sc, nb, sm.input.cubes, rec, truth=sm.input.truth or None, k=sm.params.k,
                       links=sm.params.links)  # fmt: skip
    log.info("explorer with %d galaxies: %s", n, sm.output.html)
