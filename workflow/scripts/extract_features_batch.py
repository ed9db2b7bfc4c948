"""Snakemake glue for rule extract_features_batch → mmsurv.features.batch.extract_features_batch
(in a GPU slot)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from mmsurv.batch import write_batch_table
from mmsurv.gpu import gpu_slot
from mmsurv.logs import setup_logging

setup_logging(snakemake.log[0])
with gpu_slot():
    import torch

    from mmsurv.features.batch import extract_features_batch

    torch.set_num_threads(snakemake.threads)  # CPU: one encoder process per thread of the job
    cohort_dir = Path(snakemake.output[0]).parents[2]
    slides = [
        (path, cohort_dir / "wsi" / "patches" / f"{name}.h5", name) for path, name in snakemake.params.slides
    ]
    outcomes = extract_features_batch(
        slides,
        cohort_dir / "features",
        **{**snakemake.params.features, "compile_cache_dir": snakemake.params.compile_cache_dir},
    )
    write_batch_table(outcomes, snakemake.output[0])
