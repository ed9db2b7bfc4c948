"""Snakemake glue for rule train (one fold, or every fold of a model in one process: train_jobs)
→ mmsurv.train.run.train_fold, in a GPU slot.

Each fold resumes from its resume checkpoint (fold folder, ``resume/state.pt``; not a rule output,
so Snakemake never deletes it). A job of several folds keeps every fold's until all are written: a job
that fails at fold k rebuilds folds < k from their final states (Snakemake deletes a failed job's
outputs). SIGTERM/SIGUSR1 exit with code 75 after the last epoch's checkpoint (mmsurv.train.resume)."""
import sys
from pathlib import Path

from mmsurv.gpu import gpu_slot
from mmsurv.logs import exit_job, setup_logging
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
    from mmsurv.train.resume import INTERRUPTED_EXIT_CODE, TrainingInterrupted, remove_resume

    paths = list(snakemake.output.metrics)  # one per fold of the job, in the order of params.folds
    for fold, path in zip(snakemake.params.folds, paths):
        out_dir = Path(path).parent
        try:
            train_fold(
                config,
                cohort_table=snakemake.input.table,
                splits_dir=snakemake.input.splits_dir,
                signatures=snakemake.input.signatures,
                pathways=snakemake.input.pathways,
                features_dir=snakemake.params.features_dir,
                fold=fold,
                model=model,
                out_dir=out_dir,
                seed=snakemake.params.seed,
                keep_resume=len(paths) > 1,
            )
        except TrainingInterrupted as stopped:
            print(f"{model} fold {out_dir.name}: {stopped}", file=sys.stderr)
            sys.exit(INTERRUPTED_EXIT_CODE)
    for path in paths:  # every fold written: the resume states are no longer needed
        remove_resume(Path(path).parent)
exit_job(0)
