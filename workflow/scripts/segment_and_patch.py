"""Snakemake glue for rule segment_and_patch → mmsurv.wsi.segment_and_patch."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from mmsurv.logs import setup_logging
from mmsurv.wsi.from_config import segment_and_patch_from_config

setup_logging(snakemake.log[0])
segment_and_patch_from_config(
    snakemake.input.slide,
    Path(snakemake.output.summary).parent,
    slide_name=snakemake.wildcards.slide,
    settings=snakemake.params.patching,
)
