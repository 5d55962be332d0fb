"""Rule score_galaxies: model + cubes.h5 -> scores.csv, latents.h5, reconstructions.h5 (thin wrapper)."""

from pathlib import Path

from linecube.analysis.score import score_galaxies
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]):
    score_galaxies(
        sm.input.cubes,
        sm.input.model,
        dict(sm.params.model),
        Path(sm.output.scores).parent,
        batch_size=sm.params.batch_size,
        top_k=sm.params.top_k,
        agn_catalog=sm.input.agn or None,
        extra_plateifus=list(sm.params.extra),
        split_csv=sm.input.split,
        history_csv=sm.input.history,
        divergence_csv=sm.input.divergence,
        truth_csv=sm.input.truth or None,
        default_score=sm.params.default,
        seed=sm.params.seed,
        backend=sm.params.backend,
        bitwise=sm.params.bitwise,
        links=sm.params.links,
        outputs={k: sm.output[k] for k in ("scores", "latents", "reconstructions", "diagnostics", "stats")},
    )
