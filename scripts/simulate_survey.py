"""Rule simulate_survey: write the synthetic MaNGA-format survey (thin wrapper)."""

from pathlib import Path

from linecube.runlog import rule_log
from linecube.simulate import simulate_survey

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    p = sm.params
    redux_dir = Path(sm.output.agn).parent  # agn.csv sits at the top of redux_dir
    gals = simulate_survey(
        redux_dir,
        p.n_galaxies,
        p.seed,
        drpver=p.drpver,
        anomaly_fraction=p.anomaly_fraction,
        threads=sm.threads,
        compresslevel=p.compresslevel,
        dr17_effects=p.dr17_effects,
    )
    log.info("simulated %d galaxies into %s", len(gals), redux_dir)
