"""Snakemake glue for rule extract_features_batch → mmsurv.features.batch.extract_features_batch
(in a GPU slot)."""


from mmsurv.batch import write_batch_table
from mmsurv.gpu import gpu_slot
from mmsurv.logs import setup_logging

setup_logging(snakemake.log[0])
with gpu_slot():
    import torch

    from mmsurv.features.batch import extract_features_batch

    torch.set_num_threads(snakemake.threads)  # CPU: one encoder process per thread of the job
    slides = [(path, patches, name) for (path, name), patches in zip(snakemake.params.slides, snakemake.params.patches)]
    outcomes = extract_features_batch(
        slides,
        snakemake.params.out_dir,
        **{**snakemake.params.features, "compile_cache_dir": snakemake.params.compile_cache_dir},
    )
    write_batch_table(outcomes, snakemake.output[0])
