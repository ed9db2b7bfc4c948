"""Snakemake glue for rule fetch_slide → mmsurv.fetch.fetch_slide (local folder or GDC)."""


from mmsurv.fetch import fetch_slide
from mmsurv.logs import setup_logging

setup_logging(snakemake.log[0])
fetch_slide(
    snakemake.params.sample,
    snakemake.output[0],
    snakemake.params.download,
    local_source=snakemake.input.get("slide"),
)
