"""Fixtures of the training tests: a tiny demo cohort with made-up per-slide features."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def small_cohort(tmp_path_factory):
    """A tiny demo cohort with per-slide features (pt_files) and their coordinates (h5_files)."""
    import h5py

    from mmsurv.data.cohort import read_cohort_table
    from mmsurv.demo.cohort import DemoSpec, generate_demo_cohort
    from mmsurv.naming import slide_stem

    root = tmp_path_factory.mktemp("contract_cohort")
    cohort = generate_demo_cohort(root / "cohort", DemoSpec(patients=12, seed=2, width=256, height=256, genes=30,
                                                            informative_genes=6, extra_slide_size=(256, 256), folds=2))
    rng = np.random.default_rng(0)
    (root / "features/pt_files").mkdir(parents=True)
    (root / "features/h5_files").mkdir()
    for slides in read_cohort_table(cohort.table).slides_of_case().values():
        for slide in slides:
            n = int(rng.integers(5, 15))
            torch.save(torch.from_numpy(rng.standard_normal((n, 16)).astype("float32")),
                       root / f"features/pt_files/{slide_stem(slide)}.pt")
            with h5py.File(root / f"features/h5_files/{slide_stem(slide)}.h5", "w") as handle:
                handle["coords"] = np.stack([np.arange(n) * 512, np.full(n, 1024)], axis=1).astype("int64")
    args = ["--table", str(cohort.table), "--splits-dir", str(cohort.splits_dir), "--signatures",
            str(cohort.signatures), "--pathways", str(cohort.pathways), "--features-dir", str(root / "features/pt_files")]
    return {"args": args, "cohort": cohort, "root": root}
