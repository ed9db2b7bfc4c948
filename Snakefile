# mmsurv: multimodal (WSI + genomics) survival prediction, from a GDC manifest to paper tables.
# Rules live in rules/*.smk, helpers and config validation in rules/common.smk, the real code in
# the mmsurv package (src/mmsurv); workflow/scripts/ only passes Snakemake's values to it.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"


# Cheap bookkeeping jobs run where Snakemake runs, not as cluster jobs.
localrules:
    all,
    clean_manifest,
    slide_inventory,
    patching_summary,


include: "rules/demo.smk"
include: "rules/manifest.smk"
include: "rules/fetch.smk"
include: "rules/wsi.smk"
include: "rules/features.smk"
include: "rules/train.smk"
include: "rules/external.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
