"""Snakemake glue for rule demo_cohort: config['demo'] → mmsurv.demo.cohort.generate_demo_cohort."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from mmsurv.demo.cohort import demo_spec_from_config, generate_demo_cohort
from mmsurv.logs import setup_logging

setup_logging(snakemake.log[0])
generate_demo_cohort(
    snakemake.params.demo["outdir"],
    demo_spec_from_config(snakemake.params.demo),
    workers=snakemake.threads,
)
