"""Rule assemble_cubes: per-plate files -> results/cubes.h5 and results/rejects.csv (thin wrapper)."""

from linecube.data.assemble import assemble, check_reject_fraction, merge_rejects
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    p = sm.params
    # the survey's threshold, before anything is written (the plate jobs keep every good cube)
    check_reject_fraction(sm.input.plates, [sm.input.sample_rejects, *sm.input.plate_rejects], p.max_reject_fraction)
    n = assemble(sm.input.plates, sm.output.cubes, drpver=p.drpver, config=p.config, compression=p.compression)
    n_rej = merge_rejects([sm.input.sample_rejects, *sm.input.plate_rejects], sm.output.rejects)
    log.info(
        "cubes.h5: %d galaxies from %d plates; %d rejected cubes listed in %s", n, len(sm.input.plates), n_rej, sm.output.rejects
    )
