"""Snakemake glue for rule segment_and_patch_batch → mmsurv.wsi.batch.segment_and_patch_batch."""


from mmsurv.batch import write_batch_table
from mmsurv.logs import setup_logging
from mmsurv.wsi.batch import segment_and_patch_batch

setup_logging(snakemake.log[0])
outcomes = segment_and_patch_batch(
    [tuple(pair) for pair in snakemake.params.slides],
    snakemake.params.out_dir,
    settings=snakemake.params.patching,
)
write_batch_table(outcomes, snakemake.output[0])
