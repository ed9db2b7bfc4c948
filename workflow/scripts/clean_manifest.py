"""Snakemake glue for checkpoint clean_manifest → mmsurv.gdc.manifest.clean_manifest_files."""
from pathlib import Path

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
