"""Snakemake glue for rule extract_features → mmsurv.features.extract_slide_features (in a GPU slot)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from mmsurv.gpu import gpu_slot
from mmsurv.logs import setup_logging

setup_logging(snakemake.log[0])
with gpu_slot():
    import torch

    from mmsurv.features import extract_slide_features

    torch.set_num_threads(snakemake.threads)  # CPU: one encoder process per thread of the job

    extract_slide_features(
        snakemake.input.slide,
        snakemake.input.patches,
        Path(snakemake.output.pt).parents[1],
        slide_name=snakemake.wildcards.slide,
        **{**snakemake.params.features, "compile_cache_dir": snakemake.params.compile_cache_dir},
    )
