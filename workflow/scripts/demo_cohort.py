"""Snakemake glue for rule demo_cohort: config['demo'] → mmsurv.demo.cohort.generate_demo_cohort."""


from mmsurv.demo.cohort import demo_spec_from_config, generate_demo_cohort
from mmsurv.logs import setup_logging

setup_logging(snakemake.log[0])
generate_demo_cohort(
    snakemake.params.demo["outdir"],
    demo_spec_from_config(snakemake.params.demo),
    workers=snakemake.threads,
)
