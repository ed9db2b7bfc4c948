"""Snakemake glue for rule slide_inventory → mmsurv.fetch.inventory.write_inventory."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from mmsurv.fetch.inventory import write_inventory
from mmsurv.logs import setup_logging

setup_logging(snakemake.log[0])
write_inventory(snakemake.input.samples, Path(snakemake.output[0]).parent / "slides", snakemake.output[0])
