"""Snakemake glue for rule predict_external → mmsurv.predict.apply.predict_run, for every model."""
from pathlib import Path

from mmsurv.data.cohort import read_cohort_table
from mmsurv.io import write_tsv
from mmsurv.logs import setup_logging
from mmsurv.models.registry import load_plugins
from mmsurv.predict.apply import predict_run

setup_logging(snakemake.log[0])
load_plugins(snakemake.params.plugins)
table = read_cohort_table(snakemake.input.table, require_survival=False)
features_dir = snakemake.params.features_dir if snakemake.input.get("features_index") else None
for model, out in zip(snakemake.params.models, snakemake.output):
    run_dir = Path(snakemake.params.trained_on) / model
    frame = predict_run(
        run_dir,
        table,
        features_dir=features_dir,
        max_missing_genomic=snakemake.params.max_missing_genomic,
        folds=[run_dir / f"fold{fold}" for fold in snakemake.params.folds],
    )
    write_tsv(frame, out, float_format="%.17g")
