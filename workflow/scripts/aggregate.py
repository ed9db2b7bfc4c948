"""Snakemake glue for rule aggregate → mmsurv.report.build_report."""
from pathlib import Path

from mmsurv.logs import setup_logging
from mmsurv.models.registry import load_plugins
from mmsurv.report import build_report

setup_logging(snakemake.log[0])
load_plugins(snakemake.params.plugins)
report_dir = Path(snakemake.output.summary).parent
build_report(
    report_dir.parent,
    snakemake.params.cohorts,
    snakemake.params.models,
    report_dir,
    folds=snakemake.params.folds,
    model_params=snakemake.params.model_params,
    external=snakemake.params.external,
    **snakemake.params.settings,
)
