"""Rule simulate_survey: write the synthetic MaNGA-format survey (thin wrapper)."""

from linecube.runlog import rule_log
from linecube.simulate import simulate_survey

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    p = sm.params
    gals = simulate_survey(
        p.redux_dir,
        p.n_galaxies,
        p.seed,
        drpver=p.drpver,
        anomaly_fraction=p.anomaly_fraction,
        threads=sm.threads,
        compresslevel=p.compresslevel,
    )
    log.info("simulated %d galaxies into %s", len(gals), p.redux_dir)
