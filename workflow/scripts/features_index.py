"""Snakemake glue for rule features_index → mmsurv.feature_index.write_features_index."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))

from mmsurv.feature_index import write_features_index
from mmsurv.logs import setup_logging

setup_logging(snakemake.log[0])
write_features_index(snakemake.params.files["pt"], snakemake.params.files["h5"], snakemake.output[0])
