"""Report settings shared by the command line and the report code (importable without torch)."""

DEFAULT_REFERENCE_BAG_SIZE = 4096  # patches per patient of the reference FLOP count
MEDIAN_SPLITS = ("fold_train", "pooled")  # how Kaplan-Meier risk groups are split
DEFAULT_N_BOOT = 1000  # bootstrap resamples of the statistics' intervals and paired comparisons
DEFAULT_SEED = 0  # seed of the bootstrap resamples
