"""Snakemake glue for rules train (one fold) and train_folds (every fold of a model, one process)
→ mmsurv.train.run.train_fold, in a GPU slot."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from mmsurv.gpu import gpu_slot
from mmsurv.logs import setup_logging
from mmsurv.models.registry import load_plugins

setup_logging(snakemake.log[0])
load_plugins(snakemake.params.plugins)
with gpu_slot():
    from mmsurv.train.run import train_fold

    model = snakemake.wildcards.model
    config = {
        "data": snakemake.params.data,
        # torch threads = the job's threads unless the config names them
        "training": {"num_threads": snakemake.threads, **snakemake.params.training},
        "models": {model: snakemake.params.model},
    }
    metrics = snakemake.output.metrics
    for path in [metrics] if isinstance(metrics, str) else list(metrics):
        out_dir = Path(path).parent
        train_fold(
            config,
            cohort_table=snakemake.input.table,
            splits_dir=snakemake.input.splits_dir,
            signatures=snakemake.input.signatures,
            pathways=snakemake.input.pathways,
            features_dir=snakemake.params.features_dir,
            fold=int(out_dir.name.removeprefix("fold")),
            model=model,
            out_dir=out_dir,
            seed=snakemake.params.seed,
        )
