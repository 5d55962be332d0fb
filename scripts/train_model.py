"""Rule train_model: cubes.h5 -> results/models/{model}/ (thin wrapper)."""

from pathlib import Path

from linecube.model.train import train
from linecube.report.figures import plot_history
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]):
    out = Path(sm.output.model).parent
    s = train(
        sm.input.cubes,
        out,
        sm.wildcards.model,
        dict(sm.params.model),
        dict(sm.params.train),
        threads=sm.threads,
        backend=sm.params.backend,
        bitwise=sm.params.bitwise,
        outputs={k: sm.output[k] for k in ("model", "history", "split", "divergence", "card")},
    )
    plot_history(sm.output.history, sm.output.loss_png, f"{sm.wildcards.model.upper()} ({s['backend']}, {s['steps']} steps)")
