"""Rule extract_plate: one plate's LOGCUBEs -> results/extract/{plate}.h5 (thin wrapper)."""

from linecube.data.extract import ExtractOptions
from linecube.data.extract_survey import extract_to_h5
from linecube.io.drpall import CubeRequest
from linecube.io.formats import CubeLayout, load_lines
from linecube.runlog import rule_log

sm = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(sm.log[0]) as log:
    p = sm.params
    lines = load_lines(sm.input.lines)
    layout = CubeLayout(len(lines), p.window_bins, p.crop)
    reqs = [CubeRequest(**g) for g in p.galaxies]
    s = extract_to_h5(
        reqs,
        sm.output.h5,
        lines,
        layout,
        drpver=p.drpver,
        compression=p.compression,
        threads=sm.threads,
        max_reject_fraction=p.max_reject_fraction,
        label=f"plate {sm.wildcards.plate}",
        config={"window_bins": p.window_bins, "crop": p.crop, "galactic_extinction": p.galactic_extinction},
        options=ExtractOptions(p.galactic_extinction, p.extinction_rv, p.verify_full_file),
    )
    log.info("plate %s: %d extracted, %d rejected, %.1f s", sm.wildcards.plate, s.extracted, s.rejected, s.seconds)
    for r in s.rejects:
        log.warning("rejected %s: %s", r["plateifu"], r["reason"])
