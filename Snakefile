# linecube: spatio-spectral representation learning on MaNGA emission-line cubes.
# Run on the bundled sample:  snakemake --cores 2
# Real MaNGA DR17:            snakemake --cores 8 --configfile config/manga-dr17.yaml
# SLURM:                      snakemake --workflow-profile profiles/slurm --configfile ...
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/analysis.smk"
include: "workflow/rules/figures.smk"


localrules:
    all,


rule all:
    default_target: True
    input:
        get_final_outputs,
