"""Snakemake glue for rule predict_external → mmsurv.predict.apply.predict_run."""
from pathlib import Path

from mmsurv.data.cohort import read_cohort_table
from mmsurv.io import write_tsv
from mmsurv.logs import setup_logging
from mmsurv.models.registry import load_plugins
from mmsurv.predict.apply import predict_run

setup_logging(snakemake.log[0])
load_plugins(snakemake.params.plugins)
folds = [Path(path).parent for path in snakemake.input.checkpoints]
frame = predict_run(
    folds[0].parent,
    read_cohort_table(snakemake.input.table, require_survival=False),
    features_dir=snakemake.input.get("features_index") and snakemake.params.features_dir,
    max_missing_genomic=snakemake.params.max_missing_genomic,
    folds=folds,
)
write_tsv(frame, snakemake.output[0], float_format="%.17g")
