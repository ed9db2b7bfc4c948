"""Snakemake glue for checkpoint clean_manifest → mmsurv.gdc.manifest.clean_manifest_files."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from mmsurv.gdc.manifest import clean_manifest_files
from mmsurv.logs import setup_logging

setup_logging(snakemake.log.main)
clean_manifest_files(
    snakemake.input.get("manifest"),
    snakemake.input.table,
    snakemake.output.manifest,
    snakemake.output.samples,
    snakemake.output.dropped,
    sample_sheet=snakemake.input.get("samples"),
    tcga=snakemake.params.tcga,
    out_summary=snakemake.output.summary,
    diagnostics=str(Path(snakemake.log.main).with_suffix("")),
)
