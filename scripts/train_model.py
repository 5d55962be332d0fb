"""Rule train_model: cubes.h5 -> results/models/{model}/ (thin wrapper)."""

from pathlib import Path

from linecube.runlog import rule_log
from linecube.train import train

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]):
    train(
        sm.input.cubes,
        Path(sm.output.model).parent,
        sm.wildcards.model,
        dict(sm.params.model),
        dict(sm.params.train),
        threads=sm.threads,
    )
