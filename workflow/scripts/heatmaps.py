"""Snakemake glue for rule heatmaps → mmsurv.heatmap.batch.draw_model_heatmaps."""
from pathlib import Path

from mmsurv.heatmap.batch import draw_model_heatmaps
from mmsurv.logs import setup_logging
from mmsurv.models.registry import load_plugins

setup_logging(snakemake.log[0])
load_plugins(snakemake.params.plugins)
draw_model_heatmaps(
    [Path(path).parent for path in snakemake.input.checkpoints],
    snakemake.output[0],
    features_dir=snakemake.params.features_dir,
    slides_dir=snakemake.params.slides_dir,
    cohort_table=snakemake.input.table,
    settings=snakemake.params.settings,
)
