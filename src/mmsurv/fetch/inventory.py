"""The slide inventory of a cohort: which verified slide file stands for which sample-sheet row.

Written once every slide of a cohort is in the run's slide folder; it is what the downstream
stages (patching, features, training) and a person checking a run read.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mmsurv.gdc.manifest import read_samples
from mmsurv.io import write_tsv


def write_inventory(samples_path: str | os.PathLike, slides_dir: str | os.PathLike, out: str | os.PathLike) -> pd.DataFrame:
    """List every sample-sheet slide with its path in ``slides_dir`` (``slides_dir/<slide_id>``: the
    file keeps its name and format); fail naming a missing slide."""
    samples = read_samples(samples_path)
    slides_dir = Path(slides_dir)
    paths = [slides_dir / slide_id for slide_id in samples["slide_id"]]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} slide(s) of {samples_path} are not in {slides_dir}: {', '.join(missing[:5])}")
    inventory = samples.loc[:, ["slide", "slide_id", "case_id", "file_id", "size"]].copy()
    inventory["path"] = [str(path) for path in paths]
    write_tsv(inventory, out)
    return inventory
