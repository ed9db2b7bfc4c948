"""Snakemake glue for rule patching_summary → mmsurv.wsi.summary.summarise_patching."""


from mmsurv.logs import setup_logging
from mmsurv.wsi.summary import summarise_patching

setup_logging(snakemake.log[0])
summarise_patching(snakemake.params.summaries, snakemake.output[0])
