"""Shared fixtures: paths of the repository and ../shared, and a small generated demo cohort."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Small enough for a few seconds, big enough for 5 folds and every manifest oddity.
SMALL_DEMO = dict(patients=10, seed=3, width=1024, height=768, genes=30, informative_genes=6,
                  extra_slide_size=(512, 512))


def shared_path(*parts: str) -> Path:
    """A path below ../shared, or skip the test when ../shared (or that file) is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (real public data in ../shared, present in CI)")
    return path


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory):
    """A small demo cohort written once per test session (read-only for the tests)."""
    from mmsurv.demo.cohort import DemoSpec, generate_demo_cohort

    return generate_demo_cohort(tmp_path_factory.mktemp("demo"), DemoSpec(**SMALL_DEMO))
