"""Rule embed_latents: latents.h5 -> embedding.csv (PCA then UMAP) (thin wrapper)."""

from linecube.analysis.embed import embed_file
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]):
    e = sm.params.embed
    embed_file(
        sm.input.latents,
        sm.output.embedding,
        sm.output.variance,
        pca_components=e["pca_components"],
        umap_components=e["umap_components"],
        umap_neighbors=e["umap_neighbors"],
        umap_min_dist=e["umap_min_dist"],
        seed=e["seed"],
        n_jobs=sm.threads,
    )
