"""mmsurv: an end-to-end pipeline for multimodal (WSI + genomics) cancer survival prediction.

Each stage of the Snakemake workflow is a function of this package, so every stage also runs from
Python or from the ``mmsurv`` command line without Snakemake.
"""

__version__ = "0.1.0"
