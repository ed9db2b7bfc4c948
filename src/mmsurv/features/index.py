"""A cohort's feature index: one small table standing for every slide's feature files.

For the workflow: training jobs depend on this one file instead of listing thousands of feature
files each (5,000 slides × 25 models × 5 folds would otherwise put 625,000 inputs into the DAG).
It is rewritten whenever a slide's features are (re)made, so training reruns exactly then.
Columns: ``slide``, ``pt`` and ``h5`` (paths), ``pt_bytes`` and ``h5_bytes``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mmsurv.io import write_tsv

log = logging.getLogger(__name__)


def write_features_index(pt_files: Sequence[str | os.PathLike], h5_files: Sequence[str | os.PathLike],
                         out: str | os.PathLike) -> pd.DataFrame:
    """Write the index of the slides' ``.pt`` and ``.h5`` files (same order, same slides) to ``out``."""
    if len(pt_files) != len(h5_files):
        raise ValueError(f"features index: {len(pt_files)} .pt files but {len(h5_files)} .h5 files")
    rows = []
    for pt, h5 in zip(pt_files, h5_files):
        pt, h5 = Path(pt), Path(h5)
        if pt.stem != h5.stem:
            raise ValueError(f"features index: {pt} and {h5} are not the same slide")
        rows.append({"slide": pt.stem, "pt": str(pt), "h5": str(h5), "pt_bytes": pt.stat().st_size,
                     "h5_bytes": h5.stat().st_size})
    frame = pd.DataFrame(rows, columns=["slide", "pt", "h5", "pt_bytes", "h5_bytes"])
    write_tsv(frame, out)
    log.info("features index: %d slide(s) → %s", len(frame), out)
    return frame
