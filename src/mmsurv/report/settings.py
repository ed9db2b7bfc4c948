"""Report settings shared by the command line and the report code (importable without torch)."""

from mmsurv.train.settings import FLOPS_REFERENCE_BAG_SIZE

DEFAULT_REFERENCE_BAG_SIZE = FLOPS_REFERENCE_BAG_SIZE  # FLOPs per patient in the report: the train jobs' bag size
MEDIAN_SPLITS = ("fold_train", "pooled")  # how Kaplan-Meier risk groups are split
DEFAULT_N_BOOT = 1000  # bootstrap resamples of the statistics' intervals and paired comparisons
DEFAULT_SEED = 0  # seed of the bootstrap resamples
