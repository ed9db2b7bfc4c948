"""Snakemake glue for rule train → mmsurv.train.run.train_fold (in a GPU slot)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from mmsurv.gpu import gpu_slot
from mmsurv.logs import setup_logging

setup_logging(snakemake.log[0])
with gpu_slot():
    from mmsurv.train.run import train_fold

    train_fold(
        snakemake.params.train,
        cohort_table=snakemake.input.table,
        splits_dir=snakemake.input.splits_dir,
        signatures=snakemake.input.signatures,
        features_dir=snakemake.params.features_dir,
        fold=int(snakemake.wildcards.fold),
        model=snakemake.wildcards.model,
        out_dir=Path(snakemake.output.metrics).parent,
        seed=snakemake.params.seed,
    )
