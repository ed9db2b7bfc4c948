"""Snakemake glue for rule slide_inventory → mmsurv.fetch.inventory.write_inventory."""
from pathlib import Path

from mmsurv.fetch.inventory import write_inventory
from mmsurv.logs import setup_logging

setup_logging(snakemake.log[0])
write_inventory(snakemake.input.samples, Path(snakemake.output[0]).parent / "slides", snakemake.output[0])
