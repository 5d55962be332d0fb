"""Checkpoint select_sample: drpall -> results/sample.csv (thin wrapper)."""

from linecube.config import min_galaxies
from linecube.data.sample import build_sample
from linecube.io.atomic import write_csv_atomic
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    p = sm.params
    sample, rejects, dropped = build_sample(
        sm.input.drpall,
        p.redux_dir,
        p.drpver,
        plateifus=p.plateifus,
        max_galaxies=p.max_galaxies,
        require_files=p.require_files,
    )
    if len(sample) < min_galaxies():
        raise SystemExit(
            f"{sm.input.drpall}: {len(sample)} galaxies pass the sample selection (and have a LOGCUBE), fewer than the "
            f"{min_galaxies()} a run needs (a training and a test split, the scores' references and probes); "
            f"widen sample.plateifus or sample.max_galaxies (dropped rows: {sm.output.dropped})"
        )
    write_csv_atomic(sample, sm.output.sample)
    write_csv_atomic(rejects, sm.output.rejects)
    write_csv_atomic(dropped, sm.output.dropped)
    log.info(
        "sample: %d galaxies on %d plates; %d without a file; %d drpall rows dropped by the cuts",
        len(sample),
        sample["plate"].nunique(),
        len(rejects),
        len(dropped),
    )
