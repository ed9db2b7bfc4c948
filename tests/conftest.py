"""Shared fixtures: paths of the repository and ../shared, and a small generated demo cohort."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmsurv_testdata import REPO, SHARED, shared_path  # noqa: F401  (re-exported for tests)

# Small enough for a few seconds, big enough for 5 folds and every manifest oddity.
SMALL_DEMO = dict(patients=10, seed=3, width=1024, height=768, genes=30, informative_genes=6,
                  extra_slide_size=(512, 512))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory):
    """A small demo cohort written once per test session (read-only for the tests)."""
    from mmsurv.demo.cohort import DemoSpec, generate_demo_cohort

    return generate_demo_cohort(tmp_path_factory.mktemp("demo"), DemoSpec(**SMALL_DEMO))


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory):
    """A tiny demo cohort with per-slide features (pt_files, 16 columns) and their coordinates (h5_files)."""
    from mmsurv.demo.cohort import DemoSpec, generate_demo_cohort
    from mmsurv.demo.features import write_random_features

    root = tmp_path_factory.mktemp("contract_cohort")
    cohort = generate_demo_cohort(root / "cohort", DemoSpec(patients=12, seed=2, width=256, height=256, genes=30,
                                                            informative_genes=6, extra_slide_size=(256, 256), folds=2))
    features = write_random_features(cohort.table, root / "features", dim=16)
    args = ["--table", str(cohort.table), "--splits-dir", str(cohort.splits_dir), "--signatures",
            str(cohort.signatures), "--pathways", str(cohort.pathways), "--features-dir", str(features)]
    return {"args": args, "cohort": cohort, "root": root}


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (a disk that fills up); the test is skipped where tmpfs cannot be mounted (not root)."""
    import subprocess

    mount = tmp_path / "small_disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip() or result.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
