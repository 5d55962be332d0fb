"""Rule find_neighbors: KD-tree neighbours of the query galaxies (thin wrapper)."""

import pandas as pd

from linecube.analysis.neighbors import neighbors_frame, query_set
from linecube.io.atomic import write_csv_atomic
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    p = sm.params.neighbors
    emb = pd.read_csv(sm.input.embedding, dtype={"plateifu": str})
    scores = pd.read_csv(sm.input.scores, dtype={"plateifu": str, "mangaid": str})
    missing = [q for q in p["plateifus"] if q not in set(scores["plateifu"])]
    for q in missing:
        log.warning("neighbors.plateifus: %s is not in the sample; skipped", q)
    queries = query_set(scores, p["top_agn"], p["plateifus"])
    if not queries:  # no AGN catalogue and no list: the most anomalous galaxies
        queries = list(scores.sort_values("rank")["plateifu"].iloc[: max(p["top_agn"], 2)])
    nb = neighbors_frame(emb, queries, p["k"], p["space"])
    write_csv_atomic(nb, sm.output.neighbors)
    log.info("%d query galaxies, %d neighbours each, in %s space", len(queries), p["k"], p["space"])
