"""Made-up per-slide features of a demo cohort, for tests and benches that train without extracting.

``write_random_features(table, features_dir)`` writes, for every slide of a cohort table,
``features_dir/pt_files/{slide}.pt`` (N×dim float32 standard-normal noise, N drawn in ``rows``)
and the CLAM-format ``features_dir/h5_files/{slide}.h5`` with N coordinates, as the feature stage
lays them out; seeded, so the same call writes the same files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_random_features(table: str | os.PathLike, features_dir: str | os.PathLike, *, dim: int = 1024,
                          rows: tuple[int, int] = (5, 15), seed: int = 0) -> Path:
    """Write noise features and coordinates for every slide of ``table``; return the pt_files folder."""
    import h5py
    import torch

    from mmsurv.data.cohort import read_cohort_table
    from mmsurv.naming import slide_stem

    root = Path(features_dir)
    (root / "pt_files").mkdir(parents=True, exist_ok=True)
    (root / "h5_files").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for slides in read_cohort_table(table).slides_of_case().values():
        for slide in slides:
            n = int(rng.integers(*rows))
            torch.save(torch.from_numpy(rng.standard_normal((n, dim)).astype("float32")),
                       root / "pt_files" / f"{slide_stem(slide)}.pt")
            with h5py.File(root / "h5_files" / f"{slide_stem(slide)}.h5", "w") as handle:
                handle["coords"] = np.stack([np.arange(n) * 512, np.full(n, 1024)], axis=1).astype("int64")
                handle["coords"].attrs.update(patch_size=512, patch_level=0, patch_size_level0=512)
    return root / "pt_files"
