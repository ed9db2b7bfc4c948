"""Snakemake glue for rule features_index → mmsurv.features.index.write_features_index."""


from mmsurv.features.index import write_features_index
from mmsurv.logs import setup_logging

setup_logging(snakemake.log[0])
write_features_index(snakemake.params.files["pt"], snakemake.params.files["h5"], snakemake.output[0])
