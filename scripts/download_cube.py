"""Rule download_cube: fetch one missing LOGCUBE from the SAS mirror (thin wrapper)."""

from linecube.data.download import cube_url, download_cube
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]):
    p, w = sm.params, sm.wildcards
    download_cube(
        cube_url(p.base_url, p.drpver, int(w.plate), int(w.ifudsgn)),
        sm.output[0],
        retries=p.retries,
        backoff_s=p.backoff_s,
        timeout_s=p.timeout_s,
    )
